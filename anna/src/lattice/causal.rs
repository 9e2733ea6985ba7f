//! Causal lattices: values tagged with vector clocks, where a value whose
//! clock happened before another's is dropped and concurrent values are kept
//! side by side for the reader to reconcile.
//!
//! The state is the set of versions no other version causally dominates (the
//! maximal antichain). Merge is the union followed by dropping dominated
//! versions. Keeping each value's own clock, rather than one clock for all
//! concurrent values, is what makes the merge associative: a single merged
//! clock would let a later write that dominates only one of two concurrent
//! values wrongly keep or drop the other depending on merge order.
//!
//! - [`SingleKeyCausal`]: a clock and a value per version.
//! - [`MultiKeyCausal`]: additionally the clocks of the keys the value depends
//!   on, for causal reads across keys (Cloudburst's multi-key causal mode).

use super::{Lattice, VectorClock};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One version: a payload and the clock it was written at.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CausalVersion<P> {
    /// When the payload was written, causally.
    pub clock: VectorClock,
    /// What was written.
    pub payload: P,
}

/// The causally maximal versions of a key. Bottom is no version.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Causal<P: Ord>(BTreeSet<CausalVersion<P>>);

/// Single-key causal: concurrent values, each with its vector clock.
pub type SingleKeyCausal = Causal<Vec<u8>>;

/// Multi-key causal: concurrent values with their clocks and dependencies.
pub type MultiKeyCausal = Causal<Dependent>;

/// The payload of a multi-key causal version.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dependent {
    /// For each key this value was computed from, the clock read there.
    pub dependencies: BTreeMap<String, VectorClock>,
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

impl<P: Ord> Default for Causal<P> {
    fn default() -> Self {
        Causal(BTreeSet::new())
    }
}

impl<P: Ord + Clone> Causal<P> {
    /// One version written at `clock`.
    pub fn new(clock: VectorClock, payload: P) -> Self {
        Causal(BTreeSet::from([CausalVersion { clock, payload }]))
    }

    /// The surviving versions, in canonical order.
    pub fn versions(&self) -> impl Iterator<Item = &CausalVersion<P>> {
        self.0.iter()
    }

    /// The merge of every surviving version's clock: the clock a writer that
    /// read this value must exceed for its write to supersede all of it.
    pub fn vector_clock(&self) -> VectorClock {
        self.0
            .iter()
            .fold(VectorClock::default(), |acc, v| acc.join(v.clock.clone()))
    }

    /// The surviving payloads: one, or several concurrent ones.
    pub fn payloads(&self) -> impl Iterator<Item = &P> {
        self.0.iter().map(|v| &v.payload)
    }
}

impl MultiKeyCausal {
    /// The merged dependencies of every surviving version.
    pub fn dependencies(&self) -> BTreeMap<String, VectorClock> {
        let mut deps: BTreeMap<String, VectorClock> = BTreeMap::new();
        for v in &self.0 {
            for (k, clock) in &v.payload.dependencies {
                deps.entry(k.clone()).or_default().merge(clock.clone());
            }
        }
        deps
    }
}

impl<P: Ord + Clone + std::fmt::Debug> Lattice for Causal<P> {
    fn merge(&mut self, other: Self) -> bool {
        let before = self.0.clone();
        self.0.extend(other.0);
        let dominated: Vec<CausalVersion<P>> = self
            .0
            .iter()
            .filter(|v| self.0.iter().any(|w| v.clock.happened_before(&w.clock)))
            .cloned()
            .collect();
        for v in &dominated {
            self.0.remove(v);
        }
        self.0 != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::WriterId;

    fn vc(entries: &[(u64, u64)]) -> VectorClock {
        VectorClock::new(entries.iter().map(|&(w, n)| (WriterId(w), n)))
    }

    fn values(c: &SingleKeyCausal) -> Vec<&[u8]> {
        c.payloads().map(|p| p.as_slice()).collect()
    }

    #[test]
    fn a_dominated_value_is_dropped() {
        let mut c = SingleKeyCausal::new(vc(&[(1, 1)]), b"old".to_vec());
        assert!(c.merge(SingleKeyCausal::new(vc(&[(1, 2)]), b"new".to_vec())));
        assert_eq!(values(&c), vec![b"new"]);
        assert!(!c.merge(SingleKeyCausal::new(vc(&[(1, 1)]), b"old".to_vec())));
    }

    #[test]
    fn concurrent_values_are_kept_until_a_write_supersedes_both() {
        let mut c = SingleKeyCausal::new(vc(&[(1, 1)]), b"a".to_vec());
        c.merge(SingleKeyCausal::new(vc(&[(2, 1)]), b"b".to_vec()));
        assert_eq!(values(&c), vec![b"a", b"b"]);
        assert_eq!(c.vector_clock(), vc(&[(1, 1), (2, 1)]));
        c.merge(SingleKeyCausal::new(vc(&[(1, 1), (2, 2)]), b"ab".to_vec()));
        assert_eq!(values(&c), vec![b"ab"]);
    }

    #[test]
    fn merge_order_does_not_matter_when_a_write_dominates_one_of_two() {
        let a = SingleKeyCausal::new(vc(&[(1, 1)]), b"a".to_vec());
        let b = SingleKeyCausal::new(vc(&[(2, 1)]), b"b".to_vec());
        let c = SingleKeyCausal::new(vc(&[(1, 2)]), b"c".to_vec());
        let left = a.clone().join(b.clone()).join(c.clone());
        let right = a.join(b.join(c));
        assert_eq!(left, right);
        let mut survivors = values(&left);
        survivors.sort();
        assert_eq!(survivors, vec![b"b", b"c"]);
    }

    #[test]
    fn multi_key_dependencies_merge_across_concurrent_versions() {
        let dep = |k: &str, clock| Dependent {
            dependencies: BTreeMap::from([(k.to_string(), clock)]),
            value: b"v".to_vec(),
        };
        let mut m = MultiKeyCausal::new(vc(&[(1, 1)]), dep("x", vc(&[(9, 1)])));
        m.merge(MultiKeyCausal::new(vc(&[(2, 1)]), dep("x", vc(&[(9, 2)]))));
        assert_eq!(m.dependencies()["x"], vc(&[(9, 2)]));
    }
}
