//! Grow-only sets: merge is union.
//!
//! [`SetLattice`] is a hash set (fast membership, unordered iteration);
//! [`OrderedSetLattice`] keeps its elements sorted, for range reads and a
//! deterministic order.

use super::Lattice;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use std::hash::Hash;

/// A grow-only set. Bottom is the empty set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "T: Serialize + Eq + Hash",
    deserialize = "T: Deserialize<'de> + Eq + Hash"
))]
pub struct SetLattice<T: Eq + Hash>(HashSet<T>);

impl<T: Eq + Hash> Default for SetLattice<T> {
    fn default() -> Self {
        SetLattice(HashSet::new())
    }
}

impl<T: Eq + Hash> SetLattice<T> {
    /// The set holding `items`.
    pub fn new(items: impl IntoIterator<Item = T>) -> Self {
        SetLattice(items.into_iter().collect())
    }

    /// Adds one element; returns whether it was new.
    pub fn insert(&mut self, item: T) -> bool {
        self.0.insert(item)
    }

    /// The elements.
    pub fn reveal(&self) -> &HashSet<T> {
        &self.0
    }

    /// The elements, by value.
    pub fn into_reveal(self) -> HashSet<T> {
        self.0
    }
}

impl<T: Clone + Eq + Hash + std::fmt::Debug> Lattice for SetLattice<T> {
    fn merge(&mut self, other: Self) -> bool {
        let before = self.0.len();
        if before == 0 {
            self.0 = other.0;
        } else {
            self.0.extend(other.0);
        }
        self.0.len() != before
    }
}

/// A grow-only set kept in order. Bottom is the empty set.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderedSetLattice<T: Ord>(BTreeSet<T>);

impl<T: Ord> Default for OrderedSetLattice<T> {
    fn default() -> Self {
        OrderedSetLattice(BTreeSet::new())
    }
}

impl<T: Ord> OrderedSetLattice<T> {
    /// The set holding `items`.
    pub fn new(items: impl IntoIterator<Item = T>) -> Self {
        OrderedSetLattice(items.into_iter().collect())
    }

    /// Adds one element; returns whether it was new.
    pub fn insert(&mut self, item: T) -> bool {
        self.0.insert(item)
    }

    /// The elements, in order.
    pub fn reveal(&self) -> &BTreeSet<T> {
        &self.0
    }

    /// The elements, by value.
    pub fn into_reveal(self) -> BTreeSet<T> {
        self.0
    }
}

impl<T: Clone + Ord + std::fmt::Debug> Lattice for OrderedSetLattice<T> {
    fn merge(&mut self, mut other: Self) -> bool {
        let before = self.0.len();
        if other.0.len() > before {
            std::mem::swap(&mut self.0, &mut other.0);
        }
        self.0.append(&mut other.0);
        self.0.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_grows_and_reports_it() {
        let mut a = SetLattice::new([1, 2]);
        assert!(a.merge(SetLattice::new([2, 3])));
        assert!(!a.merge(SetLattice::new([1, 3])));
        assert_eq!(a, SetLattice::new([1, 2, 3]));
    }

    #[test]
    fn ordered_union_keeps_order_whichever_side_is_larger() {
        let mut a = OrderedSetLattice::new([5]);
        assert!(a.merge(OrderedSetLattice::new([1, 2, 3])));
        let items: Vec<_> = a.reveal().iter().copied().collect();
        assert_eq!(items, vec![1, 2, 3, 5]);
        assert!(!a.merge(OrderedSetLattice::new([2, 5])));
    }
}
