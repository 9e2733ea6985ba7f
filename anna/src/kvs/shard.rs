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
use std::borrow::Cow;
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
    /// `key`'s committed state (the disk tier's read).
    fn get(&mut self, key: &str) -> Result<Option<KeyState>, StoreError>;
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

/// How a shard's keys sit between its tiers, and how reads found them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierStats {
    /// Keys in memory (and on disk, with a store).
    pub memory_keys: u64,
    /// Their bytes (`KeyState::approx_bytes`) with a memory budget: exact
    /// at each demotion round, an over-estimate between rounds (every key
    /// written or promoted since adds its size). 0 without a budget.
    pub memory_bytes: u64,
    /// Keys on disk only.
    pub disk_keys: u64,
    /// Their bytes, as they were when demoted.
    pub disk_bytes: u64,
    /// Reads and writes that found their key in memory (counted with a
    /// memory budget only).
    pub memory_hits: u64,
    /// Reads and writes that found their key on disk only (and promoted it).
    pub disk_hits: u64,
    /// Keys moved to disk only, and back.
    pub demoted: u64,
    pub promoted: u64,
    /// Disk reads that failed.
    pub read_errors: u64,
}

/// A storage thread's keys: in memory (the memory tier), and, with a
/// store, on disk too. With a memory budget, keys not read or written
/// since the last demotion round leave memory when the shard is over its
/// budget (the disk tier: still served, read from the store, and promoted
/// back when read or written).
pub struct Shard {
    map: StableHashMap<Key, KeyState>,
    /// Keys on the store only, with their bytes when demoted.
    cold: StableHashMap<Key, usize>,
    store: Option<Box<dyn ShardStore>>,
    /// Keys changed since the last flush (only with a store).
    dirty: StableHashSet<Key>,
    /// Writes waiting for a sync before they are acknowledged.
    sync_owed: bool,
    /// Bytes the memory tier may hold (0: no limit).
    budget: usize,
    /// Keys read or written since the last demotion round (with a budget).
    touched: StableHashSet<Key>,
    /// The bytes of the keys in `cold`, kept as they move.
    cold_bytes: u64,
    /// Hits, moves and the memory estimate; the key counts are the maps'.
    stats: TierStats,
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
            cold: StableHashMap::default(),
            store: None,
            dirty: StableHashSet::default(),
            sync_owed: false,
            budget: 0,
            touched: StableHashSet::default(),
            cold_bytes: 0,
            stats: TierStats::default(),
        }
    }

    /// A shard kept in `store`, starting with what the store holds: in
    /// memory up to `budget` bytes (0: all of it), the rest on disk only.
    pub fn recover(
        mut store: Box<dyn ShardStore>,
        budget: usize,
    ) -> Result<(Self, u64), StoreError> {
        let recovered = store.load()?;
        let mut shard = Shard::in_memory();
        shard.store = Some(store);
        shard.budget = budget;
        let mut bytes = 0usize;
        for (key, state) in recovered.entries {
            let size = key.len() + state.approx_bytes();
            if budget > 0 && bytes + size > budget {
                shard.cold_bytes += size as u64;
                shard.cold.insert(key, size);
            } else {
                bytes += size;
                shard.map.insert(key, state);
            }
        }
        shard.stats.memory_bytes = if budget > 0 { bytes as u64 } else { 0 };
        Ok((shard, recovered.skipped))
    }

    /// The bytes the memory tier may hold (0: no limit).
    pub fn budget(&self) -> usize {
        if self.store.is_some() {
            self.budget
        } else {
            0
        }
    }

    /// Whether the shard has a store.
    pub fn persistent(&self) -> bool {
        self.store.is_some()
    }

    /// Keys, bytes and hits per tier.
    pub fn tiers(&self) -> TierStats {
        TierStats {
            memory_keys: self.map.len() as u64,
            disk_keys: self.cold.len() as u64,
            disk_bytes: self.cold_bytes,
            ..self.stats
        }
    }

    /// `key`'s state if it is in memory (a key on disk only is `None`: see
    /// [`Shard::peek`] and [`Shard::read`]).
    pub fn get(&self, key: &str) -> Option<&KeyState> {
        self.map.get(key)
    }

    /// `key`'s state wherever it is, without promoting it (for gossip,
    /// anti-entropy and handoff, which must not fill the memory tier). A
    /// failed disk read is logged, counted and answered as no state: those
    /// paths run again.
    pub fn peek(&mut self, key: &str) -> Option<Cow<'_, KeyState>> {
        if self.map.contains_key(key) {
            return self.map.get(key).map(Cow::Borrowed);
        }
        if !self.cold.contains_key(key) {
            return None;
        }
        match self.load_cold(key) {
            Ok(state) => state.map(Cow::Owned),
            Err(_) => None,
        }
    }

    /// `key`'s state for a client's read or write: a key on disk only is
    /// promoted to memory.
    pub fn read(&mut self, key: &str) -> Result<Option<&KeyState>, StoreError> {
        self.touch(key);
        self.promote(key)?;
        Ok(self.map.get(key))
    }

    /// A client read or wrote `key`: it stays in memory through the next
    /// demotion round.
    pub fn touch(&mut self, key: &str) {
        if self.budget > 0 && !self.touched.contains(key) {
            self.touched.insert(key.to_string());
        }
    }

    /// Moves `key` from disk only into memory, if it is there; counts the
    /// tier it was found in (gossip and handoff merges count too).
    fn promote(&mut self, key: &str) -> Result<(), StoreError> {
        // Without a budget nothing is ever on disk only: no lookup here.
        if self.budget == 0 {
            return Ok(());
        }
        if !self.cold.contains_key(key) {
            if self.map.contains_key(key) {
                self.stats.memory_hits += 1;
            }
            return Ok(());
        }
        let state = self.load_cold(key)?;
        let size = self.cold.remove(key).unwrap_or_default();
        self.cold_bytes = self.cold_bytes.saturating_sub(size as u64);
        self.stats.disk_hits += 1;
        self.stats.promoted += 1;
        self.stats.memory_bytes = self.stats.memory_bytes.saturating_add(size as u64);
        if let Some(state) = state {
            self.map.insert(key.to_string(), state);
        }
        Ok(())
    }

    fn load_cold(&mut self, key: &str) -> Result<Option<KeyState>, StoreError> {
        let Some(store) = self.store.as_mut() else {
            return Ok(None);
        };
        store.get(key).inspect_err(|e| {
            self.stats.read_errors += 1;
            if self.stats.read_errors.is_power_of_two() {
                tracing::error!(%key, error = %e, errors = self.stats.read_errors, "reading a key from disk failed");
            }
        })
    }

    /// The keys in memory, with their states.
    pub fn memory(&self) -> &StableHashMap<Key, KeyState> {
        &self.map
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.map.contains_key(key) || self.cold.contains_key(key)
    }

    /// Every key held, in memory first, then on disk only.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.map.keys().chain(self.cold.keys())
    }

    pub fn len(&self) -> usize {
        self.map.len() + self.cold.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty() && self.cold.is_empty()
    }

    /// `key`'s state to change (bottom if it had none), promoted to memory
    /// if it was on disk only.
    pub fn entry(&mut self, key: &Key) -> Result<&mut KeyState, StoreError> {
        self.promote(key)?;
        self.note(key);
        if !self.map.contains_key(key) {
            self.map.insert(key.clone(), KeyState::default());
        }
        Ok(self.map.get_mut(key).expect("inserted above"))
    }

    /// Drops `key`; whether it was held.
    pub fn remove(&mut self, key: &str) -> bool {
        let cold = self.cold.remove(key);
        if let Some(size) = cold {
            self.cold_bytes = self.cold_bytes.saturating_sub(size as u64);
        }
        let held = self.map.remove(key).is_some() | cold.is_some();
        if held && self.store.is_some() {
            self.dirty.insert(key.to_string());
        }
        self.touched.remove(key);
        held
    }

    fn note(&mut self, key: &Key) {
        if self.store.is_some() && !self.dirty.contains(key) {
            self.dirty.insert(key.clone());
        }
    }

    /// Whether the memory tier may hold more than its budget: a demotion
    /// round is due.
    pub fn over_budget(&self) -> bool {
        self.budget > 0 && self.store.is_some() && self.stats.memory_bytes > self.budget as u64
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
        let mut grown = 0usize;
        // A failed write leaves every key dirty, to be written again.
        for key in &self.dirty {
            match self.map.get(key) {
                Some(state) => {
                    store.put(key, state)?;
                    if self.budget > 0 {
                        grown += key.len() + state.approx_bytes();
                    }
                }
                None => store.remove(key)?,
            }
        }
        self.stats.memory_bytes = self.stats.memory_bytes.saturating_add(grown as u64);
        self.dirty.clear();
        store.commit(sync)?;
        if sync {
            self.sync_owed = false;
        }
        self.demote();
        Ok(written)
    }

    /// With a budget, after a flush (every key in memory is on the store):
    /// if memory holds more than the budget, keys leave it until it holds
    /// nine tenths of it, those not read or written since the last round
    /// first, the largest first. Starts the next round.
    fn demote(&mut self) {
        if !self.over_budget() {
            return;
        }
        let mut sizes: Vec<(bool, usize, &Key)> = (self.map.iter())
            .map(|(k, s)| (self.touched.contains(k), k.len() + s.approx_bytes(), k))
            .collect();
        let mut total: usize = sizes.iter().map(|(_, b, _)| b).sum();
        if total > self.budget {
            let target = self.budget / 10 * 9;
            // Untouched first, then the largest, then by key (a fixed order).
            sizes.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2)));
            let mut leaving = Vec::new();
            for (_, bytes, key) in sizes {
                if total <= target {
                    break;
                }
                total -= bytes;
                leaving.push((key.clone(), bytes));
            }
            for (key, bytes) in leaving {
                self.map.remove(&key);
                self.cold_bytes += bytes as u64;
                self.cold.insert(key, bytes);
                self.stats.demoted += 1;
            }
        }
        self.stats.memory_bytes = total as u64;
        self.touched.clear();
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

    fn get(&mut self, key: &str) -> Result<Option<KeyState>, StoreError> {
        self.check()?;
        match self.written.get(key) {
            Some(state) => Ok(state.clone()),
            None => Ok(self.synced.get(key).cloned()),
        }
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
    fn get(&mut self, key: &str) -> Result<Option<KeyState>, StoreError> {
        self.with(|s| s.get(key))
    }
    fn commit(&mut self, sync: bool) -> Result<(), StoreError> {
        self.with(|s| s.commit(sync))
    }
}
