//! Observed-remove maps: a map of lattices whose fields can be removed.
//!
//! Each field holds a [`Presence`] (the tags of the observed-remove set,
//! see [`super::or_set`]) beside its lattice value. An update of a field
//! adds a tag of its writer and merges its value; a removal removes the
//! tags it observed. The field is visible while a tag is live, so:
//!
//! - a removed field stays removed when a replica that still holds it
//!   merges, and
//! - an update the remover did not see (concurrent, or later) brings the
//!   field back.
//!
//! **A removal hides the field; it does not empty its value.** Lattice
//! values only grow, and dropping a removed field's value would lose the
//! merge of a concurrent update made on top of it, so a removed field keeps
//! its value (a tombstone) and an update after the removal merges into it:
//! a last-writer-wins field shows the later write, as expected; a counter
//! field goes on from its old count and a set field keeps its old
//! elements. It also keeps its type: an update of another lattice type is
//! refused as a type mismatch. Fields whose value should start afresh are
//! last-writer-wins, or are observed-remove sets that remove their
//! elements.
//!
//! Merge is field by field, the product of two lattices per field: a
//! lattice. Bottom is the empty map.

use super::or_set::Presence;
use super::{Lattice, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One field: its tags and its value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Field<V> {
    /// Whether the field is there (see [`Presence`]).
    pub presence: Presence,
    /// Its value, kept while it is removed; `None` where only removes of
    /// the field arrived (a removal carries no value, so it merges with a
    /// field of any lattice type).
    pub value: Option<V>,
}

impl<V> Default for Field<V> {
    fn default() -> Self {
        Field {
            presence: Presence::default(),
            value: None,
        }
    }
}

impl<V> Field<V> {
    /// The removal of the tags `presence` shows, with no value.
    pub fn removal(presence: Presence) -> Self {
        Field {
            presence,
            value: None,
        }
    }

    /// The value, if the field is there.
    pub fn visible(&self) -> Option<&V> {
        self.value.as_ref().filter(|_| self.presence.is_present())
    }
}

impl<V: Lattice> Lattice for Field<V> {
    fn merge(&mut self, other: Self) -> bool {
        let p = self.presence.merge(other.presence);
        let v = match (&mut self.value, other.value) {
            (_, None) => false,
            (None, Some(v)) => {
                self.value = Some(v);
                true
            }
            (Some(mine), Some(theirs)) => mine.merge(theirs),
        };
        p | v
    }
}

/// An observed-remove map of lattices (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ORMapLattice<K: Ord, V>(BTreeMap<K, Field<V>>);

impl<K: Ord, V> Default for ORMapLattice<K, V> {
    fn default() -> Self {
        ORMapLattice(BTreeMap::new())
    }
}

impl<K: Ord, V> ORMapLattice<K, V> {
    /// The map of these fields, tags and all.
    pub fn from_fields(fields: impl IntoIterator<Item = (K, Field<V>)>) -> Self {
        ORMapLattice(fields.into_iter().collect())
    }

    /// The value of `key`, if the field is there.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.0.get(key)?.visible()
    }

    /// The fields that are there, in key order.
    pub fn fields(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        (self.0.iter()).filter_map(|(k, f)| Some((k, f.visible()?)))
    }

    /// Every field, removed ones (tombstones) included.
    pub fn entries(&self) -> &BTreeMap<K, Field<V>> {
        &self.0
    }

    /// Every field, by value.
    pub fn into_entries(self) -> BTreeMap<K, Field<V>> {
        self.0
    }
}

impl<K: Ord + Clone, V: Lattice> ORMapLattice<K, V> {
    /// Merges `field` into the field under `key`; returns whether the map
    /// changed (a new key always changes it).
    pub fn merge_field(&mut self, key: K, field: Field<V>) -> bool {
        match self.0.get_mut(&key) {
            Some(mine) => mine.merge(field),
            None => {
                self.0.insert(key, field);
                true
            }
        }
    }

    /// Updates `key` with `value`, tagged `at`: the field is there, its
    /// value merged with `value`.
    pub fn update(&mut self, key: K, at: Timestamp, value: V) -> bool {
        let field = Field {
            presence: Presence::added(at),
            value: Some(value),
        };
        self.merge_field(key, field)
    }

    /// The delta that removes `key` as this replica sees it, or `None` if
    /// the field is not there.
    pub fn removal(&self, key: &K) -> Option<ORMapLattice<K, V>> {
        let f = self.0.get(key).filter(|f| f.presence.is_present())?;
        let field = Field::removal(Presence::removing(&f.presence));
        Some(ORMapLattice(BTreeMap::from([(key.clone(), field)])))
    }

    /// Removes `key` as this replica sees it; returns whether it was there.
    pub fn remove(&mut self, key: &K) -> bool {
        match self.0.get_mut(key).filter(|f| f.presence.is_present()) {
            Some(f) => f.presence.merge(Presence::removing(&f.presence)),
            None => false,
        }
    }
}

impl<K: Clone + Ord + std::fmt::Debug, V: Lattice> Lattice for ORMapLattice<K, V> {
    fn merge(&mut self, other: Self) -> bool {
        let mut changed = false;
        for (k, f) in other.0 {
            changed |= self.merge_field(k, f);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::{check_laws, Max, WriterId};

    fn at(ms: u64, writer: u64) -> Timestamp {
        Timestamp {
            wall_ms: ms,
            logical: 0,
            writer: WriterId(writer),
        }
    }

    #[test]
    fn a_removed_field_is_gone_and_a_concurrent_update_brings_it_back() {
        let mut a = ORMapLattice::default();
        a.update("f", at(1, 1), Max::new(1));
        a.update("g", at(1, 1), Max::new(7));
        let mut b = a.clone();
        assert!(a.remove(&"f"));
        assert_eq!(a.get(&"f"), None);
        assert_eq!(a.get(&"g"), Some(&Max::new(7)));
        // Concurrently, b updates f.
        b.update("f", at(2, 2), Max::new(3));
        let merged = a.clone().join(b.clone());
        assert_eq!(merged.get(&"f"), Some(&Max::new(3)));
        // Without the concurrent update, the removal wins over stale copies.
        let stale = a.clone().join(ORMapLattice::from_fields(
            b.entries()
                .iter()
                .filter(|(k, _)| **k == "g")
                .map(|(k, f)| (*k, f.clone())),
        ));
        assert_eq!(stale.get(&"f"), None);
        assert_eq!(stale.fields().count(), 1);
    }

    #[test]
    fn or_maps_obey_the_laws() {
        let mut removed = ORMapLattice::default();
        removed.update("f", at(1, 1), Max::new(2));
        removed.remove(&"f");
        let mut two = ORMapLattice::default();
        two.update("f", at(1, 1), Max::new(1));
        two.update("g", at(2, 2), Max::new(5));
        let mut later = ORMapLattice::default();
        later.update("f", at(3, 1), Max::new(0));
        check_laws(&[ORMapLattice::default(), removed, two, later]);
    }
}
