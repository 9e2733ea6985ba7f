//! # squall-disk — a storage node's keys on disk
//!
//! A storage node started with a data directory opens one [`Disk`] there:
//! an embedded LSM store (fjall) with one journal for the node and one
//! keyspace per worker thread (`thread-0`, `thread-1`, ...). Each worker
//! gets a [`DiskStore`], anna's [`ShardStore`] over its keyspace: the
//! worker's flushes become write batches, committed to the operating
//! system (`commit(false)`) or fsync'd (`commit(true)`, one fsync for the
//! whole batch: group commit).
//!
//! A record is one key's whole state, encoded as a format byte
//! ([`FORMAT`]) then the state in the wire encoding. On open, fjall replays
//! its journal: a torn or corrupt tail (a crash mid-write, a cut file)
//! costs the damaged batch only, and the store opens. A record that does
//! not decode is skipped, counted and logged, never a panic.
//!
//! With a memory budget the worker reads keys that left memory back
//! through [`ShardStore::get`] (the disk tier).
//!
//! Keys of threads the node no longer runs (it was restarted with fewer)
//! are adopted by thread 0 at load (merged into its keyspace, synced, and
//! their keyspace dropped); the worker then hands them to their owners
//! like any key it does not own.
//!
//! Why fjall: `benches/store-compare/README.md` measured it against redb
//! on this workload; ARCHITECTURE.md records the decision.

use anna::kvs::{Recovered, ShardStore, StoreError};
use anna::lattice::{KeyState, Lattice};
use anna::protocol::compute::{decode_value, encode_value};
use anna::protocol::Key;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The first byte of every record: the layout of what follows.
pub const FORMAT: u8 = 1;

/// The name of thread `t`'s keyspace.
fn keyspace_name(t: u32) -> String {
    format!("thread-{t}")
}

fn error(what: &str, dir: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{what} {}: {e}", dir.display()))
}

/// A node's data directory, open.
#[derive(Clone)]
pub struct Disk {
    db: Database,
    dir: PathBuf,
}

impl Disk {
    /// Opens (creating) the store in `dir`, replaying its journal.
    pub fn open(dir: &Path) -> Result<Disk, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| error("creating", dir, e))?;
        let db = Database::builder(dir)
            .open()
            .map_err(|e| error("opening the store in", dir, e))?;
        Ok(Disk {
            db,
            dir: dir.to_path_buf(),
        })
    }

    /// Where it lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The store of worker thread `thread` of a node running `threads`.
    pub fn thread_store(&self, thread: u32, threads: u32) -> Result<DiskStore, StoreError> {
        let keyspace = self.keyspace(&keyspace_name(thread))?;
        let mut orphans = Vec::new();
        if thread == 0 {
            for name in self.db.list_keyspace_names() {
                let name = name.to_string();
                let orphan = (name.strip_prefix("thread-"))
                    .and_then(|t| t.parse::<u32>().ok())
                    .is_some_and(|t| t >= threads);
                if orphan {
                    orphans.push((name.clone(), self.keyspace(&name)?));
                }
            }
        }
        Ok(DiskStore {
            db: self.db.clone(),
            dir: self.dir.clone(),
            keyspace,
            orphans,
            pending: Vec::new(),
        })
    }

    fn keyspace(&self, name: &str) -> Result<Keyspace, StoreError> {
        self.db
            .keyspace(name, KeyspaceCreateOptions::default)
            .map_err(|e| error(&format!("opening keyspace {name} of"), &self.dir, e))
    }
}

/// One worker thread's keys on disk.
pub struct DiskStore {
    db: Database,
    dir: PathBuf,
    keyspace: Keyspace,
    /// Keyspaces of threads the node no longer runs (thread 0 only).
    orphans: Vec<(String, Keyspace)>,
    /// Writes since the last commit: a state, or a removal.
    pending: Vec<(Key, Option<Vec<u8>>)>,
}

/// A record: the format byte, then the state.
fn encode(state: &KeyState) -> Vec<u8> {
    let body = encode_value(state);
    let mut record = Vec::with_capacity(body.len() + 1);
    record.push(FORMAT);
    record.extend_from_slice(&body);
    record
}

fn decode(record: &[u8]) -> Option<KeyState> {
    match record.split_first() {
        Some((&FORMAT, body)) => decode_value(body),
        _ => None,
    }
}

impl DiskStore {
    /// Every record of `keyspace`, decoded into `into` (merged with what
    /// is there); the number skipped.
    fn read_all(
        &self,
        keyspace: &Keyspace,
        into: &mut BTreeMap<Key, KeyState>,
    ) -> Result<u64, StoreError> {
        let mut skipped = 0;
        for item in keyspace.iter() {
            let (key, record) = item
                .into_inner()
                .map_err(|e| error("reading", &self.dir, e))?;
            let decoded = std::str::from_utf8(&key).ok().zip(decode(&record));
            match decoded {
                Some((key, state)) => match into.get_mut(key) {
                    Some(held) => {
                        held.merge(state);
                    }
                    None => {
                        into.insert(key.to_string(), state);
                    }
                },
                None => {
                    skipped += 1;
                    tracing::warn!(
                        dir = %self.dir.display(),
                        key = %String::from_utf8_lossy(&key),
                        bytes = record.len(),
                        "a record on disk does not decode; skipped"
                    );
                }
            }
        }
        Ok(skipped)
    }
}

impl ShardStore for DiskStore {
    fn load(&mut self) -> Result<Recovered, StoreError> {
        let mut keys = BTreeMap::new();
        let mut skipped = self.read_all(&self.keyspace.clone(), &mut keys)?;
        if !self.orphans.is_empty() {
            let mut adopted = BTreeMap::new();
            for (_, orphan) in &self.orphans.clone() {
                skipped += self.read_all(orphan, &mut adopted)?;
            }
            tracing::info!(
                keys = adopted.len(),
                keyspaces = ?self.orphans.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                "adopting the keys of threads this node no longer runs"
            );
            for (key, state) in adopted {
                match keys.get_mut(&key) {
                    Some(held) => {
                        held.merge(state);
                    }
                    None => {
                        keys.insert(key, state);
                    }
                }
            }
            // Copied and synced before the old keyspaces go.
            for (key, state) in &keys {
                self.pending.push((key.clone(), Some(encode(state))));
            }
            self.commit(true)?;
            for (name, orphan) in std::mem::take(&mut self.orphans) {
                self.db
                    .delete_keyspace(orphan)
                    .map_err(|e| error(&format!("dropping keyspace {name} of"), &self.dir, e))?;
            }
        }
        Ok(Recovered {
            entries: keys.into_iter().collect(),
            skipped,
        })
    }

    fn put(&mut self, key: &str, state: &KeyState) -> Result<(), StoreError> {
        self.pending.push((key.to_string(), Some(encode(state))));
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<(), StoreError> {
        self.pending.push((key.to_string(), None));
        Ok(())
    }

    fn get(&mut self, key: &str) -> Result<Option<KeyState>, StoreError> {
        // A write not yet committed is the latest.
        if let Some((_, record)) = self.pending.iter().rev().find(|(k, _)| k == key) {
            return Ok(record.as_deref().and_then(decode));
        }
        let record = self
            .keyspace
            .get(key.as_bytes())
            .map_err(|e| error("reading", &self.dir, e))?;
        match record {
            None => Ok(None),
            Some(record) => decode(&record).map(Some).ok_or_else(|| {
                StoreError(format!(
                    "the record of `{key}` in {} does not decode",
                    self.dir.display()
                ))
            }),
        }
    }

    fn commit(&mut self, sync: bool) -> Result<(), StoreError> {
        // Unsynced batches still go to the operating system (`Buffer`): a
        // batch left in fjall's own buffer would die with the process.
        let mode = if sync {
            PersistMode::SyncData
        } else {
            PersistMode::Buffer
        };
        if self.pending.is_empty() {
            if sync {
                self.db
                    .persist(mode)
                    .map_err(|e| error("syncing", &self.dir, e))?;
            }
            return Ok(());
        }
        let mut batch = self.db.batch().durability(Some(mode));
        for (key, record) in &self.pending {
            match record {
                Some(record) => batch.insert(&self.keyspace, key.as_bytes(), record.as_slice()),
                None => batch.remove(&self.keyspace, key.as_bytes()),
            }
        }
        batch
            .commit()
            .map_err(|e| error("writing to", &self.dir, e))?;
        self.pending.clear();
        Ok(())
    }
}
