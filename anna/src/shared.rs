//! Large values answered in shared memory, by a node's cache to its
//! executors and by a storage thread to readers on its machine.
//!
//! A read whose answer carries a last-writer-wins value of at least
//! `min_bytes`, asked by a reader that can map this process's files (the
//! caller says so: an executor's `ipc://` address at its node's cache, a
//! request naming the same shared memory at a storage thread, see
//! [`crate::protocol::KvsRequest::shared_memory`]), is answered with the
//! value's bytes in a file of shared memory ([`ValueFiles`], a directory
//! on a `tmpfs` such as `/dev/shm`) and only its state in the frame
//! ([`crate::protocol::SharedValue`]). The reader maps the file: the value
//! crosses once, however many read it, instead of being copied, sealed,
//! sent, opened and decoded for each read.
//!
//! A key's file is written at its first such read and answered to every
//! later one while the key holds that version. A newer version, a delete,
//! an eviction of the key or room needed for another value *retires* the
//! file: no answer names it any more, and it is removed [`GRACE`] later
//! (a reader maps the file as soon as it has the answer, and a mapping
//! outlives the name). The files, retired ones included, take at most
//! `max_bytes`: beyond that the least recently read are retired first,
//! and a value that still does not fit (a writer replacing a large value
//! faster than retired files go) is answered in the frame.

use crate::lattice::Timestamp;
use crate::protocol::{Key, Outcome, SharedValue};
use crate::time::Time;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

/// How long a retired file stays after the last answer that named it.
pub const GRACE: Duration = Duration::from_secs(2);

/// Where values in shared memory are written: files, each written once
/// and named so that only a reader told the name finds it.
pub trait ValueFiles: Send {
    /// Writes `bytes` as a new file, complete before its name appears;
    /// returns the path a reader opens.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<String>;
    /// Gives the file at `source` (another process's, holding the same
    /// bytes) a new name here without copying it, as
    /// [`ValueFiles::write`] would have written it; an error where that
    /// cannot be done (the caller then writes the bytes).
    fn link(&mut self, source: &str) -> std::io::Result<String> {
        let _ = source;
        Err(std::io::ErrorKind::Unsupported.into())
    }
    /// Removes the file at `path` (one [`ValueFiles::write`] returned).
    fn remove(&mut self, path: &str);
}

/// A key's current file.
struct File {
    stamp: Timestamp,
    path: String,
    len: u64,
    /// Its place in `lru`.
    used: u64,
}

/// A process's values in shared memory: which key's version is in which
/// file, what was retired, and what they take.
pub struct Shared {
    files: Option<Box<dyn ValueFiles>>,
    min_bytes: u64,
    max_bytes: u64,
    current: HashMap<Key, File>,
    /// Current files by last read.
    lru: BTreeMap<u64, Key>,
    /// Retired files and when each may go.
    retired: VecDeque<(Time, String, u64)>,
    /// Bytes of current files.
    bytes: u64,
    /// Bytes of retired files not yet removed.
    retired_bytes: u64,
    next_use: u64,
    /// Files written, and failures to write one (answered in the frame).
    pub written: u64,
    pub failures: u64,
    /// Of the files written, those that are a second name of the file the
    /// value was read from ([`ValueFiles::link`]): nothing copied.
    pub linked: u64,
}

impl Shared {
    pub fn new(min_bytes: u64, max_bytes: u64) -> Self {
        Shared {
            files: None,
            min_bytes,
            max_bytes,
            current: HashMap::new(),
            lru: BTreeMap::new(),
            retired: VecDeque::new(),
            bytes: 0,
            retired_bytes: 0,
            next_use: 0,
            written: 0,
            failures: 0,
            linked: 0,
        }
    }

    /// Answers large values in files of `files` from now on.
    pub fn set_files(&mut self, files: Box<dyn ValueFiles>) {
        self.files = Some(files);
    }

    /// Bytes of the files in shared memory, retired ones included.
    pub fn bytes(&self) -> u64 {
        self.bytes + self.retired_bytes
    }

    /// Its counters, for status replies.
    pub fn counters(&self) -> [(&'static str, u64); 5] {
        [
            ("shared_keys", self.keys() as u64),
            ("shared_bytes", self.bytes()),
            ("shared_written", self.written),
            ("shared_linked", self.linked),
            ("shared_failures", self.failures),
        ]
    }

    /// How many keys have a current file.
    pub fn keys(&self) -> usize {
        self.current.len()
    }

    /// `outcome`, the answer to a read of `key`, with its value in shared
    /// memory if it is large and `reader_maps` (the reader can map this
    /// process's files); unchanged otherwise (or if no file could be
    /// written).
    ///
    /// `source` is a file this process read the value from (a storage
    /// thread's, [`crate::client::ClientCore::shared_source`]) with the
    /// version it held: if it still holds the answer's version, the new
    /// file is a second name of it ([`ValueFiles::link`]), not a copy.
    pub fn share(
        &mut self,
        now: Time,
        key: &str,
        outcome: Outcome,
        reader_maps: bool,
        source: Option<(Timestamp, &str)>,
    ) -> Outcome {
        if self.files.is_none() || !reader_maps {
            return outcome;
        }
        let Some((stamp, bytes)) = SharedValue::candidate(&outcome, self.min_bytes as usize) else {
            return outcome;
        };
        let len = bytes.len() as u64;
        let fresh = self
            .current
            .get(key)
            .is_some_and(|f| f.stamp == stamp && f.len == len);
        if !fresh {
            self.retire(now, key);
            if !self.make_room(now, len) {
                return outcome;
            }
            let Some(files) = self.files.as_mut() else {
                return outcome;
            };
            let linked = source
                .filter(|(from, _)| *from == stamp)
                .and_then(|(_, path)| files.link(path).ok());
            self.linked += u64::from(linked.is_some());
            match linked.map_or_else(|| files.write(bytes), Ok) {
                Ok(path) => {
                    self.written += 1;
                    self.bytes += len;
                    let used = self.touch();
                    self.lru.insert(used, key.to_string());
                    let file = File {
                        stamp,
                        path,
                        len,
                        used,
                    };
                    self.current.insert(key.to_string(), file);
                }
                Err(error) => {
                    self.failures += 1;
                    if self.failures.is_power_of_two() {
                        tracing::warn!(%key, %error, failures = self.failures,
                            "could not write a value to shared memory; answering it in the frame");
                    }
                    return outcome;
                }
            }
        }
        let used = self.touch();
        let Some(file) = self.current.get_mut(key) else {
            return outcome;
        };
        self.lru.remove(&file.used);
        file.used = used;
        self.lru.insert(used, key.to_string());
        SharedValue::share(outcome, file.path.clone())
    }

    /// `key` is no longer answered from its file (deleted, evicted,
    /// replaced): the file goes after [`GRACE`].
    pub fn retire(&mut self, now: Time, key: &str) {
        if let Some(file) = self.current.remove(key) {
            self.lru.remove(&file.used);
            self.bytes = self.bytes.saturating_sub(file.len);
            self.retired_bytes += file.len;
            self.retired.push_back((now + GRACE, file.path, file.len));
        }
    }

    /// Removes the retired files whose grace has passed.
    pub fn tick(&mut self, now: Time) {
        while self.retired.front().is_some_and(|(at, _, _)| *at <= now) {
            let Some((_, path, len)) = self.retired.pop_front() else {
                break;
            };
            self.retired_bytes = self.retired_bytes.saturating_sub(len);
            if let Some(files) = self.files.as_mut() {
                files.remove(&path);
            }
        }
    }

    /// When the next retired file may go.
    pub fn next_tick(&self) -> Option<Time> {
        self.retired.front().map(|(at, _, _)| *at)
    }

    /// Whether `len` more bytes fit beside the current files and the
    /// retired ones kept. If not, the least recently read files, as many
    /// bytes as `len`, are retired, so that room comes after their grace.
    fn make_room(&mut self, now: Time, len: u64) -> bool {
        self.tick(now);
        if self.bytes + self.retired_bytes + len <= self.max_bytes {
            return true;
        }
        let mut freed = 0;
        while freed < len && len <= self.max_bytes {
            let Some((_, key)) = self.lru.pop_first() else {
                break;
            };
            freed += self.current.get(&key).map_or(0, |f| f.len);
            self.retire(now, &key);
        }
        false
    }

    fn touch(&mut self) -> u64 {
        self.next_use += 1;
        self.next_use
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(files) = self.files.as_mut() {
            let current = self.current.values().map(|f| &f.path);
            for path in current.chain(self.retired.iter().map(|(_, p, _)| p)) {
                files.remove(path);
            }
        }
    }
}
