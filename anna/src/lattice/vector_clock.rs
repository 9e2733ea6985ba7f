//! Vector clocks: per-writer event counts, merged by maximum.
//!
//! A missing entry counts as zero. [`VectorClock::causal_cmp`] gives the
//! causal (partial) order the causal lattices prune by; the derived `Ord` is
//! only a canonical order for storing clocks in sorted collections.

use super::counter::merge_max_entries;
use super::{Lattice, WriterId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A vector clock. Bottom is the empty clock.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VectorClock(BTreeMap<WriterId, u64>);

/// How two vector clocks relate causally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CausalOrder {
    /// Every entry is equal.
    Equal,
    /// `self` happened before `other`: no entry greater, at least one less.
    Before,
    /// `self` happened after `other`.
    After,
    /// Neither dominates.
    Concurrent,
}

impl VectorClock {
    /// The clock holding `entries`.
    pub fn new(entries: impl IntoIterator<Item = (WriterId, u64)>) -> Self {
        VectorClock(entries.into_iter().collect())
    }

    /// Counts one more event of `writer`; returns the new count.
    pub fn increment(&mut self, writer: WriterId) -> u64 {
        let e = self.0.entry(writer).or_default();
        *e = e.saturating_add(1);
        *e
    }

    /// The count of `writer`, zero if absent.
    pub fn get(&self, writer: WriterId) -> u64 {
        self.0.get(&writer).copied().unwrap_or(0)
    }

    /// The entries.
    pub fn reveal(&self) -> &BTreeMap<WriterId, u64> {
        &self.0
    }

    /// The causal relation of `self` to `other`.
    pub fn causal_cmp(&self, other: &VectorClock) -> CausalOrder {
        let (mut less, mut greater) = (false, false);
        for (w, &mine) in &self.0 {
            let theirs = other.get(*w);
            less |= mine < theirs;
            greater |= mine > theirs;
        }
        for (w, &theirs) in &other.0 {
            if !self.0.contains_key(w) {
                less |= theirs > 0;
            }
        }
        match (less, greater) {
            (false, false) => CausalOrder::Equal,
            (true, false) => CausalOrder::Before,
            (false, true) => CausalOrder::After,
            (true, true) => CausalOrder::Concurrent,
        }
    }

    /// Whether `self` happened strictly before `other`.
    pub fn happened_before(&self, other: &VectorClock) -> bool {
        self.causal_cmp(other) == CausalOrder::Before
    }
}

impl Lattice for VectorClock {
    fn merge(&mut self, other: Self) -> bool {
        merge_max_entries(&mut self.0, other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vc(entries: &[(u64, u64)]) -> VectorClock {
        VectorClock::new(entries.iter().map(|&(w, n)| (WriterId(w), n)))
    }

    #[test]
    fn causal_order_of_clocks() {
        assert_eq!(
            vc(&[(1, 1)]).causal_cmp(&vc(&[(1, 2)])),
            CausalOrder::Before
        );
        assert_eq!(vc(&[(1, 2)]).causal_cmp(&vc(&[(1, 1)])), CausalOrder::After);
        assert_eq!(
            vc(&[(1, 1)]).causal_cmp(&vc(&[(2, 1)])),
            CausalOrder::Concurrent
        );
        assert_eq!(vc(&[(1, 0)]).causal_cmp(&vc(&[])), CausalOrder::Equal);
        assert!(vc(&[]).happened_before(&vc(&[(3, 1)])));
    }

    #[test]
    fn merge_takes_entrywise_maximum() {
        let mut a = vc(&[(1, 3), (2, 1)]);
        assert!(a.merge(vc(&[(2, 4), (3, 1)])));
        assert_eq!(a, vc(&[(1, 3), (2, 4), (3, 1)]));
        assert!(!a.merge(vc(&[(1, 1)])));
    }
}
