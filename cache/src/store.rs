//! [`Store`]: the cache's replica of the keys it holds, bounded in bytes,
//! least recently used first out.
//!
//! Every key's state is a [`KeyState`] (value and delete tombstone), merged
//! like at a storage thread. "Used" means read or written by an executor;
//! updates pushed by the KVS do not make a key recent.

use anna::lattice::{KeyState, Lattice, LatticeValue, TypeMismatch};
use anna::protocol::Key;
use anna::role::StableHashMap;
use std::collections::BTreeMap;

struct Entry {
    state: KeyState,
    bytes: u64,
    used: u64,
}

/// Held keys, their sizes and recency.
pub(crate) struct Store {
    entries: StableHashMap<Key, Entry>,
    lru: BTreeMap<u64, Key>,
    clock: u64,
    bytes: u64,
    capacity: u64,
}

fn size_of(key: &str, state: &KeyState) -> u64 {
    (key.len() + state.approx_bytes()) as u64
}

impl Store {
    pub(crate) fn new(capacity: u64) -> Self {
        Store {
            entries: StableHashMap::default(),
            lru: BTreeMap::new(),
            clock: 0,
            bytes: 0,
            capacity,
        }
    }

    /// The state of `key`, marking it used.
    pub(crate) fn read(&mut self, key: &str) -> Option<&KeyState> {
        self.touch(key);
        self.entries.get(key).map(|e| &e.state)
    }

    /// The state of `key`, without marking it used.
    pub(crate) fn peek(&self, key: &str) -> Option<&KeyState> {
        self.entries.get(key).map(|e| &e.state)
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Merges `state` into `key`, holding it from now on, marked used.
    /// Returns whether the state changed.
    pub(crate) fn fill(&mut self, key: &str, state: KeyState) -> bool {
        if !self.entries.contains_key(key) {
            self.clock += 1;
            self.lru.insert(self.clock, key.to_string());
            self.entries.insert(
                key.to_string(),
                Entry {
                    state: KeyState::default(),
                    bytes: 0,
                    used: self.clock,
                },
            );
        } else {
            self.touch(key);
        }
        self.update(key, |s| s.merge(state)).unwrap_or(false)
    }

    /// Merges `state` into `key` if held (gossip); returns whether it
    /// changed, `None` if the key is not held.
    pub(crate) fn merge_held(&mut self, key: &str, state: KeyState) -> Option<bool> {
        self.update(key, |s| s.merge(state))
    }

    /// Merges an executor's write into `key` if held, marked used: `Ok(None)`
    /// if not held, an error (the state untouched) if the kinds differ.
    pub(crate) fn put_held(
        &mut self,
        key: &str,
        value: LatticeValue,
    ) -> Result<Option<bool>, TypeMismatch> {
        if !self.entries.contains_key(key) {
            return Ok(None);
        }
        self.touch(key);
        let mut result = Ok(false);
        self.update(key, |s| match s.put(value) {
            Ok(changed) => {
                result = Ok(changed);
                changed
            }
            Err(e) => {
                result = Err(e);
                false
            }
        });
        result.map(Some)
    }

    /// Stops holding `key`.
    pub(crate) fn remove(&mut self, key: &str) -> Option<KeyState> {
        let entry = self.entries.remove(key)?;
        self.lru.remove(&entry.used);
        self.bytes -= entry.bytes;
        Some(entry.state)
    }

    /// Evicts least recently used keys while over capacity; returns them.
    pub(crate) fn evict(&mut self) -> Vec<Key> {
        let mut evicted = Vec::new();
        while self.bytes > self.capacity {
            let Some((_, key)) = self.lru.pop_first() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&key) {
                self.bytes -= entry.bytes;
            }
            evicted.push(key);
        }
        evicted
    }

    /// Every held key with its approximate size.
    pub(crate) fn sizes(&self) -> impl Iterator<Item = (&Key, u64)> + '_ {
        self.entries.iter().map(|(k, e)| (k, e.bytes))
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &Key> + '_ {
        self.entries.keys()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    fn touch(&mut self, key: &str) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        self.lru.remove(&entry.used);
        self.clock += 1;
        entry.used = self.clock;
        self.lru.insert(self.clock, key.to_string());
    }

    /// Applies `f` to a held key's state and re-measures it.
    fn update(&mut self, key: &str, f: impl FnOnce(&mut KeyState) -> bool) -> Option<bool> {
        let entry = self.entries.get_mut(key)?;
        let changed = f(&mut entry.state);
        if changed || entry.bytes == 0 {
            let bytes = size_of(key, &entry.state);
            self.bytes = self.bytes - entry.bytes + bytes;
            entry.bytes = bytes;
        }
        Some(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anna::lattice::{LatticeKind, Max, SetLattice};

    fn max(n: i64) -> LatticeValue {
        LatticeValue::Max(Max::new(n))
    }

    #[test]
    fn bytes_follow_merges_and_removals() {
        let mut s = Store::new(1 << 20);
        assert!(s.fill("k", KeyState::from_value(max(1))));
        let one = s.bytes();
        assert!(one > 0);
        let set = LatticeValue::Set(SetLattice::new([vec![0u8; 100]]));
        s.fill("s", KeyState::from_value(set));
        assert!(s.bytes() >= one + 100);
        s.remove("s");
        assert_eq!(s.bytes(), one);
        assert_eq!(s.merge_held("absent", KeyState::from_value(max(3))), None);
        assert!(!s.contains("absent"));
    }

    #[test]
    fn a_put_of_another_kind_is_refused_and_leaves_the_state() {
        let mut s = Store::new(1 << 20);
        s.fill("k", KeyState::from_value(max(5)));
        let set = LatticeValue::Set(SetLattice::new([b"x".to_vec()]));
        let err = s.put_held("k", set).unwrap_err();
        assert_eq!(
            (err.stored, err.incoming),
            (LatticeKind::Max, LatticeKind::Set)
        );
        assert_eq!(s.peek("k").and_then(KeyState::value), Some(&max(5)));
        assert_eq!(s.put_held("k", max(9)), Ok(Some(true)));
        assert_eq!(s.put_held("other", max(9)), Ok(None));
    }

    #[test]
    fn eviction_takes_the_least_recently_used_first() {
        let mut s = Store::new(u64::MAX);
        for k in ["a", "b", "c"] {
            s.fill(k, KeyState::from_value(max(1)));
        }
        s.read("a");
        let each = s.bytes() / 3;
        s.capacity = each * 2;
        assert_eq!(s.evict(), vec!["b".to_string()]);
        s.capacity = each;
        assert_eq!(s.evict(), vec!["c".to_string()]);
        assert!(s.contains("a"));
    }
}
