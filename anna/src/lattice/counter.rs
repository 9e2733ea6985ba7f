//! A counter that replicas increment and decrement without coordination.
//!
//! Each writer owns two monotone totals, increments and decrements; merge
//! keeps the per-writer maximum of each, so replaying or duplicating a
//! writer's state never counts it twice. A writer must only ever grow its own
//! entries (through [`Counter::increment`] and [`Counter::decrement`]).

use super::{Lattice, WriterId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A positive-negative counter. Bottom is zero with no writers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Counter {
    increments: BTreeMap<WriterId, u64>,
    decrements: BTreeMap<WriterId, u64>,
}

impl Counter {
    /// Adds `by` on behalf of `writer`.
    pub fn increment(&mut self, writer: WriterId, by: u64) {
        let e = self.increments.entry(writer).or_default();
        *e = e.saturating_add(by);
    }

    /// Subtracts `by` on behalf of `writer`.
    pub fn decrement(&mut self, writer: WriterId, by: u64) {
        let e = self.decrements.entry(writer).or_default();
        *e = e.saturating_add(by);
    }

    /// The count: all increments less all decrements.
    pub fn value(&self) -> i128 {
        let up: i128 = self.increments.values().map(|&v| i128::from(v)).sum();
        let down: i128 = self.decrements.values().map(|&v| i128::from(v)).sum();
        up - down
    }

    /// This counter less `baseline`'s per-writer totals (a writer below its
    /// baseline counts zero): the count since a delete.
    pub fn since(&self, baseline: &Counter) -> Counter {
        let less = |mine: &BTreeMap<WriterId, u64>, base: &BTreeMap<WriterId, u64>| {
            (mine.iter())
                .map(|(w, &n)| (*w, n.saturating_sub(base.get(w).copied().unwrap_or(0))))
                .filter(|&(_, n)| n > 0)
                .collect()
        };
        Counter {
            increments: less(&self.increments, &baseline.increments),
            decrements: less(&self.decrements, &baseline.decrements),
        }
    }

    /// Per-writer increment totals.
    pub fn increments(&self) -> &BTreeMap<WriterId, u64> {
        &self.increments
    }

    /// Per-writer decrement totals.
    pub fn decrements(&self) -> &BTreeMap<WriterId, u64> {
        &self.decrements
    }
}

/// Merges per-writer totals by maximum; returns whether `into` changed.
pub(crate) fn merge_max_entries<K: Ord>(
    into: &mut BTreeMap<K, u64>,
    from: BTreeMap<K, u64>,
) -> bool {
    let mut changed = false;
    for (k, v) in from {
        let e = into.entry(k).or_insert_with(|| {
            changed |= v == 0;
            0
        });
        if v > *e {
            *e = v;
            changed = true;
        }
    }
    changed
}

impl Lattice for Counter {
    fn merge(&mut self, other: Self) -> bool {
        let up = merge_max_entries(&mut self.increments, other.increments);
        let down = merge_max_entries(&mut self.decrements, other.decrements);
        up | down
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_count_every_writer_once() {
        let (a, b) = (WriterId(1), WriterId(2));
        let mut r1 = Counter::default();
        r1.increment(a, 5);
        let mut r2 = Counter::default();
        r2.increment(b, 3);
        r2.decrement(b, 1);
        r1.merge(r2.clone());
        r1.merge(r2);
        assert_eq!(r1.value(), 7);
    }

    #[test]
    fn a_stale_copy_of_a_writer_does_not_undo_its_later_increments() {
        let w = WriterId(1);
        let mut c = Counter::default();
        c.increment(w, 1);
        let stale = c.clone();
        c.increment(w, 1);
        assert!(!c.merge(stale));
        assert_eq!(c.value(), 2);
    }
}
