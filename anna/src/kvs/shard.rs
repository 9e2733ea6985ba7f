//! [`Shard`]: a storage thread's keys, in memory, and kept in a
//! [`ShardStore`] beyond it.
//!
//! Every change of a key goes through the shard, which remembers the key
//! as dirty; [`Shard::flush`] writes the dirty keys' states to the store
//! (a removed key is removed there) and makes them durable. The worker
//! flushes on its own schedule (`[storage] flush`): after every batch of
//! requests (`always`), every `flush_period` (`periodic`, the default), or
//! only writes and leaves the syncing to the operating system (`never`);
//! and always before it acknowledges a write at `Ack::Durable`.
//!
//! The store is a trait so the core stays pure: the disk store lives in
//! crate `squall-disk`; [`MemoryStore`] keeps what was synced in memory for
//! the simulator and tests (a crash loses what was not synced), and a
//! worker without a store keeps nothing beyond memory.

use crate::lattice::KeyState;
use crate::protocol::Key;
use crate::role::{StableHashMap, StableHashSet};
use std::collections::HashMap;
use std::fmt;

/// Why the store failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

/// Where a storage thread keeps its keys beyond memory. Writes may be
/// buffered until [`ShardStore::commit`]; committed writes must survive a
/// crash of the process, synced ones a crash of the machine.
pub trait ShardStore: Send {
    /// Every key kept, with its state (what a restarted thread serves).
    /// Records that do not decode are skipped, counted in
    /// [`Recovered::skipped`], and logged by the store.
    fn load(&mut self) -> Result<Recovered, StoreError>;
    /// Keeps `state` as `key`'s.
    fn put(&mut self, key: &str, state: &KeyState) -> Result<(), StoreError>;
    /// Forgets `key`.
    fn remove(&mut self, key: &str) -> Result<(), StoreError>;
    /// Hands every write so far to the operating system, and with `sync`
    /// makes it durable (fsync).
    fn commit(&mut self, sync: bool) -> Result<(), StoreError>;
}

/// What [`ShardStore::load`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recovered {
    pub entries: Vec<(Key, KeyState)>,
    /// Records that did not decode (skipped).
    pub skipped: u64,
}

/// When the worker writes its dirty keys to its store and syncs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushPolicy {
    /// After every batch of requests that changed a key, before any of
    /// them is acknowledged: no acknowledged write is lost.
    Always,
    /// Every `flush_period`: a crash loses at most that much.
    #[default]
    Periodic,
    /// Written every `flush_period`, synced by the operating system
    /// whenever it chooses.
    Never,
}

/// A storage thread's keys.
pub struct Shard {
    map: StableHashMap<Key, KeyState>,
    store: Option<Box<dyn ShardStore>>,
    /// Keys changed since the last flush (only with a store).
    dirty: StableHashSet<Key>,
    /// Writes waiting for a sync before they are acknowledged.
    sync_owed: bool,
}

impl Default for Shard {
    fn default() -> Self {
        Shard::in_memory()
    }
}

impl Shard {
    /// A shard kept in memory only.
    pub fn in_memory() -> Self {
        Shard {
            map: StableHashMap::default(),
            store: None,
            dirty: StableHashSet::default(),
            sync_owed: false,
        }
    }

    /// A shard kept in `store`, starting with what the store holds.
    pub fn recover(mut store: Box<dyn ShardStore>) -> Result<(Self, u64), StoreError> {
        let recovered = store.load()?;
        let map = recovered.entries.into_iter().collect();
        Ok((
            Shard {
                map,
                store: Some(store),
                dirty: StableHashSet::default(),
                sync_owed: false,
            },
            recovered.skipped,
        ))
    }

    /// Whether the shard has a store.
    pub fn persistent(&self) -> bool {
        self.store.is_some()
    }

    pub fn get(&self, key: &str) -> Option<&KeyState> {
        self.map.get(key)
    }

    /// Every key held, with its state.
    pub fn map(&self) -> &StableHashMap<Key, KeyState> {
        &self.map
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.map.keys()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// `key`'s state to change (bottom if it had none).
    pub fn entry(&mut self, key: &Key) -> &mut KeyState {
        self.note(key);
        if !self.map.contains_key(key) {
            self.map.insert(key.clone(), KeyState::default());
        }
        self.map.get_mut(key).expect("inserted above")
    }

    /// Drops `key`.
    pub fn remove(&mut self, key: &str) -> Option<KeyState> {
        let removed = self.map.remove(key);
        if removed.is_some() && self.store.is_some() {
            self.dirty.insert(key.to_string());
        }
        removed
    }

    fn note(&mut self, key: &Key) {
        if self.store.is_some() && !self.dirty.contains(key) {
            self.dirty.insert(key.clone());
        }
    }

    /// Whether keys changed since the last flush.
    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// A write waits for the next sync before it is acknowledged.
    pub fn owe_sync(&mut self) {
        self.sync_owed = self.store.is_some();
    }

    /// Whether a write waits for a sync.
    pub fn sync_owed(&self) -> bool {
        self.sync_owed
    }

    /// No write waits for a sync any more (they were answered with an
    /// error).
    pub fn forgive_sync(&mut self) {
        self.sync_owed = false;
    }

    /// Writes the dirty keys to the store and commits them (synced, if
    /// `sync`); the number of keys written. Without a store, nothing.
    pub fn flush(&mut self, sync: bool) -> Result<usize, StoreError> {
        let Some(store) = self.store.as_mut() else {
            return Ok(0);
        };
        let written = self.dirty.len();
        // A failed write leaves every key dirty, to be written again.
        for key in &self.dirty {
            match self.map.get(key) {
                Some(state) => store.put(key, state)?,
                None => store.remove(key)?,
            }
        }
        self.dirty.clear();
        store.commit(sync)?;
        if sync {
            self.sync_owed = false;
        }
        Ok(written)
    }
}

impl Drop for Shard {
    /// A worker that stops (not one killed) leaves nothing unwritten.
    fn drop(&mut self) {
        if self.has_dirty() || self.sync_owed {
            if let Err(e) = self.flush(true) {
                tracing::error!(error = %e, "the last flush of a stopping storage thread failed");
            }
        }
    }
}

/// A store in memory that models a disk: writes reach `written`, and only
/// a synced [`ShardStore::commit`] makes them `synced`, which is all a
/// [`MemoryStore::crash`] (of the machine) keeps.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    written: HashMap<Key, Option<KeyState>>,
    synced: HashMap<Key, KeyState>,
    /// Syncs so far.
    pub syncs: u64,
    /// Fail every operation with this (a full disk, say).
    pub failing: Option<String>,
}

impl MemoryStore {
    /// What survives a crash now: the synced keys.
    pub fn crash(&self) -> MemoryStore {
        MemoryStore {
            synced: self.synced.clone(),
            ..MemoryStore::default()
        }
    }

    /// The synced state of `key`.
    pub fn synced(&self, key: &str) -> Option<&KeyState> {
        self.synced.get(key)
    }

    fn check(&self) -> Result<(), StoreError> {
        match &self.failing {
            Some(why) => Err(StoreError(why.clone())),
            None => Ok(()),
        }
    }
}

impl ShardStore for MemoryStore {
    fn load(&mut self) -> Result<Recovered, StoreError> {
        self.check()?;
        let mut entries: Vec<_> = (self.synced.iter())
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Recovered {
            entries,
            skipped: 0,
        })
    }

    fn put(&mut self, key: &str, state: &KeyState) -> Result<(), StoreError> {
        self.check()?;
        self.written.insert(key.to_string(), Some(state.clone()));
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<(), StoreError> {
        self.check()?;
        self.written.insert(key.to_string(), None);
        Ok(())
    }

    fn commit(&mut self, sync: bool) -> Result<(), StoreError> {
        self.check()?;
        if !sync {
            return Ok(());
        }
        for (key, state) in self.written.drain() {
            match state {
                Some(s) => self.synced.insert(key, s),
                None => self.synced.remove(&key),
            };
        }
        self.syncs += 1;
        Ok(())
    }
}

/// A [`MemoryStore`] shared with its observer (a test or the simulator),
/// which can look at it or crash it while the worker owns the handle.
#[derive(Clone, Debug, Default)]
pub struct SharedStore(pub std::sync::Arc<std::sync::Mutex<MemoryStore>>);

impl SharedStore {
    pub fn with<T>(&self, f: impl FnOnce(&mut MemoryStore) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl ShardStore for SharedStore {
    fn load(&mut self) -> Result<Recovered, StoreError> {
        self.with(|s| s.load())
    }
    fn put(&mut self, key: &str, state: &KeyState) -> Result<(), StoreError> {
        self.with(|s| s.put(key, state))
    }
    fn remove(&mut self, key: &str) -> Result<(), StoreError> {
        self.with(|s| s.remove(key))
    }
    fn commit(&mut self, sync: bool) -> Result<(), StoreError> {
        self.with(|s| s.commit(sync))
    }
}
