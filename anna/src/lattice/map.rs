//! A map whose values are lattices, merged key by key.
//!
//! A key present on one side only is taken as is; a key on both sides holds
//! the merge of the two values. Bottom is the empty map.

use super::Lattice;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A map of lattices.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MapLattice<K: Ord, V>(BTreeMap<K, V>);

impl<K: Ord, V> Default for MapLattice<K, V> {
    fn default() -> Self {
        MapLattice(BTreeMap::new())
    }
}

impl<K: Ord, V> MapLattice<K, V> {
    /// The map holding `entries`. Duplicate keys are not merged here: build
    /// with [`MapLattice::insert`] for that.
    pub fn new(entries: impl IntoIterator<Item = (K, V)>) -> Self {
        MapLattice(entries.into_iter().collect())
    }

    /// The entries.
    pub fn reveal(&self) -> &BTreeMap<K, V> {
        &self.0
    }

    /// The entries, by value.
    pub fn into_reveal(self) -> BTreeMap<K, V> {
        self.0
    }

    /// The value under `key`, if any.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.0.get(key)
    }
}

impl<K: Ord, V: Lattice> MapLattice<K, V> {
    /// Merges `value` into the entry under `key`; returns whether the map
    /// changed (a new key always changes it, even one holding bottom).
    pub fn insert(&mut self, key: K, value: V) -> bool {
        match self.0.get_mut(&key) {
            Some(existing) => existing.merge(value),
            None => {
                self.0.insert(key, value);
                true
            }
        }
    }
}

impl<K: Clone + Ord + std::fmt::Debug, V: Lattice> Lattice for MapLattice<K, V> {
    fn merge(&mut self, other: Self) -> bool {
        let mut changed = false;
        for (k, v) in other.0 {
            changed |= self.insert(k, v);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::Max;

    #[test]
    fn merges_shared_keys_and_keeps_the_rest() {
        let mut a = MapLattice::new([("x", Max::new(1)), ("y", Max::new(5))]);
        assert!(a.merge(MapLattice::new([("x", Max::new(3)), ("z", Max::new(0))])));
        assert_eq!(a.get(&"x"), Some(&Max::new(3)));
        assert_eq!(a.get(&"y"), Some(&Max::new(5)));
        assert_eq!(a.get(&"z"), Some(&Max::new(0)));
        assert!(!a.merge(MapLattice::new([("y", Max::new(4))])));
    }
}
