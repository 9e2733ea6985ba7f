//! [`KeyState`]: what a storage thread holds for one key, deletes included.
//!
//! A delete is a tombstone that merges like any lattice: the state is the
//! pair (time of the latest delete, value written since), ordered
//! lexicographically. A later delete replaces everything; at equal delete
//! times the values merge. A put merges into the value of the delete epoch
//! its replica knows, so a put that races with a delete at another replica
//! may be removed by it; a delete acknowledged by every replica (the
//! default for deletes) is seen by every later put.
//!
//! Tombstones are kept: removing one safely needs every replica to agree it
//! has been seen, which is coordination the data path does not do.

use super::{Lattice, LatticeValue, Timestamp, TypeMismatch};
use serde::{Deserialize, Serialize};

/// One key's stored state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyState {
    deleted_at: Option<Timestamp>,
    value: Option<LatticeValue>,
}

impl KeyState {
    /// A state holding `value`, never deleted.
    pub fn from_value(value: LatticeValue) -> Self {
        KeyState {
            deleted_at: None,
            value: Some(value),
        }
    }

    /// A tombstone of a delete at `at`.
    pub fn tombstone(at: Timestamp) -> Self {
        KeyState {
            deleted_at: Some(at),
            value: None,
        }
    }

    /// The value written since the latest delete, if any.
    pub fn value(&self) -> Option<&LatticeValue> {
        self.value.as_ref()
    }

    /// When the key was last deleted, if ever.
    pub fn deleted_at(&self) -> Option<Timestamp> {
        self.deleted_at
    }

    /// Merges a client's write into the current epoch, refusing a value of
    /// another lattice type than the one stored. Returns whether the state
    /// changed.
    pub fn put(&mut self, value: LatticeValue) -> Result<bool, TypeMismatch> {
        match &mut self.value {
            Some(stored) => stored.try_merge(value),
            None => {
                self.value = Some(value);
                Ok(true)
            }
        }
    }

    /// Deletes the key at `at`; returns whether the state changed.
    pub fn delete(&mut self, at: Timestamp) -> bool {
        self.merge(KeyState::tombstone(at))
    }

    /// An estimate of the bytes this state occupies, for statistics.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.value.as_ref().map_or(0, LatticeValue::approx_bytes)
    }
}

impl Lattice for KeyState {
    fn merge(&mut self, other: Self) -> bool {
        match other.deleted_at.cmp(&self.deleted_at) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Greater => {
                *self = other;
                true
            }
            std::cmp::Ordering::Equal => match (&mut self.value, other.value) {
                (_, None) => false,
                (None, Some(v)) => {
                    self.value = Some(v);
                    true
                }
                (Some(mine), Some(theirs)) => mine.merge(theirs),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::{check_laws, Counter, Max, WriterId};

    fn at(ms: u64) -> Timestamp {
        Timestamp {
            wall_ms: ms,
            logical: 0,
            writer: WriterId(1),
        }
    }

    fn max(n: i64) -> LatticeValue {
        LatticeValue::Max(Max::new(n))
    }

    #[test]
    fn a_delete_removes_earlier_writes_and_later_writes_survive_it() {
        let mut s = KeyState::from_value(max(5));
        assert!(s.delete(at(10)));
        assert_eq!(s.value(), None);
        assert!(s.put(max(1)).unwrap());
        assert_eq!(s.value(), Some(&max(1)));
        // A replica that never saw the delete still holds the old value; the
        // merge takes the later epoch.
        let stale = KeyState::from_value(max(5));
        assert!(!s.merge(stale));
        assert_eq!(s.value(), Some(&max(1)));
    }

    #[test]
    fn a_put_of_another_type_is_refused_and_changes_nothing() {
        let mut s = KeyState::from_value(max(5));
        let err = s
            .put(LatticeValue::Counter(Counter::default()))
            .unwrap_err();
        assert_eq!(err.incoming, crate::lattice::LatticeKind::Counter);
        assert_eq!(s.value(), Some(&max(5)));
    }

    #[test]
    fn key_states_obey_the_laws() {
        let items = [
            KeyState::default(),
            KeyState::from_value(max(1)),
            KeyState::from_value(max(2)),
            KeyState::tombstone(at(1)),
            KeyState::tombstone(at(2)),
            KeyState {
                deleted_at: Some(at(1)),
                value: Some(max(3)),
            },
        ];
        check_laws(&items);
    }
}
