//! The priority lattice: the entry with the lowest priority wins.
//!
//! Equal priorities are broken by the value bytes (the smaller wins) so that
//! merge is commutative. Priorities are `f64` ordered by IEEE 754 total order
//! (`f64::total_cmp`), so NaN and negative zero have a place too.

use super::Lattice;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// An `f64` priority with a total order.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct PriorityKey(pub f64);

impl PartialEq for PriorityKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for PriorityKey {}
impl PartialOrd for PriorityKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for PriorityKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The lowest-priority entry seen. Bottom is no entry (priority +∞ beyond
/// every float).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Priority(Option<(PriorityKey, Vec<u8>)>);

impl Priority {
    /// The lattice holding one entry.
    pub fn new(priority: f64, value: Vec<u8>) -> Self {
        Priority(Some((PriorityKey(priority), value)))
    }

    /// The winning priority and value, or `None` at bottom.
    pub fn reveal(&self) -> Option<(f64, &[u8])> {
        self.0.as_ref().map(|(p, v)| (p.0, v.as_slice()))
    }
}

impl Lattice for Priority {
    fn merge(&mut self, other: Self) -> bool {
        let Some(theirs) = other.0 else {
            return false;
        };
        let wins = match &self.0 {
            None => true,
            Some(mine) => theirs < *mine,
        };
        if wins {
            self.0 = Some(theirs);
        }
        wins
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_priority_wins_then_smallest_value() {
        let mut p = Priority::new(2.0, b"b".to_vec());
        assert!(p.merge(Priority::new(1.0, b"z".to_vec())));
        assert!(!p.merge(Priority::new(1.5, b"a".to_vec())));
        assert!(p.merge(Priority::new(1.0, b"a".to_vec())));
        assert_eq!(p.reveal(), Some((1.0, &b"a"[..])));
    }

    #[test]
    fn nan_has_a_fixed_place() {
        let a = Priority::new(f64::NAN, b"n".to_vec());
        let b = Priority::new(f64::INFINITY, b"i".to_vec());
        assert_eq!(a.clone().join(b.clone()), b.clone().join(a.clone()));
        assert_eq!(a.clone().join(a.clone()), a);
    }
}
