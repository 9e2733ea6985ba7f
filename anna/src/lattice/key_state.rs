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
//!
//! **Counters start again after a delete.** A counter's writers send their
//! running per-writer totals (merge keeps maxima, so a duplicate never
//! counts twice), and a writer does not learn of a delete. So a delete keeps
//! the counters of the epochs it ends as the state's *baseline* (per-writer
//! maxima too, counters nested in maps included) and a read answers the
//! count since it ([`KeyState::visible`]): a writer at 5 before the delete
//! that writes its total 6 after it counts 1. A state of an older epoch that
//! arrives late adds its counters to the baseline. The baseline is a
//! homomorphic image of the older epochs (the join of their counters), so
//! the state stays a lattice; `key_states_obey_the_laws` checks it.

use super::version::{baseline_covers, merge_baseline};
use super::{Lattice, LatticeValue, Timestamp, TypeMismatch};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// One key's stored state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyState {
    deleted_at: Option<Timestamp>,
    value: Option<LatticeValue>,
    /// The counters of every epoch before `deleted_at`.
    baseline: Option<LatticeValue>,
}

impl KeyState {
    /// A state holding `value`, never deleted.
    pub fn from_value(value: LatticeValue) -> Self {
        KeyState {
            deleted_at: None,
            value: Some(value),
            baseline: None,
        }
    }

    /// The state a write of `value` makes in delete epoch `epoch` (see
    /// `Outcome::Stored`): `value` written after the delete at `epoch`.
    pub fn written(epoch: Option<Timestamp>, value: LatticeValue) -> Self {
        KeyState {
            deleted_at: epoch,
            value: Some(value),
            baseline: None,
        }
    }

    /// A tombstone of a delete at `at`.
    pub fn tombstone(at: Timestamp) -> Self {
        KeyState {
            deleted_at: Some(at),
            value: None,
            baseline: None,
        }
    }

    /// The value written since the latest delete, if any, as merged:
    /// counters hold their writers' whole totals. Readers want
    /// [`KeyState::visible`].
    pub fn value(&self) -> Option<&LatticeValue> {
        self.value.as_ref()
    }

    /// The value a read answers: [`KeyState::value`] with counters counted
    /// since the latest delete (borrowed when nothing was deleted).
    pub fn visible(&self) -> Option<Cow<'_, LatticeValue>> {
        let value = self.value.as_ref()?;
        Some(match &self.baseline {
            None => Cow::Borrowed(value),
            Some(base) => Cow::Owned(value.since(base)),
        })
    }

    /// The counters of the epochs before the latest delete.
    pub fn baseline(&self) -> Option<&LatticeValue> {
        self.baseline.as_ref()
    }

    /// Whether this state already holds everything `other` holds (merging
    /// it in would change nothing): a read of this state is at least at
    /// the version `other` stands for (see [`super::version`]).
    pub fn covers(&self, other: &KeyState) -> bool {
        use std::cmp::Ordering;
        let counters = || other.value.as_ref().and_then(LatticeValue::counters);
        match other.deleted_at.cmp(&self.deleted_at) {
            Ordering::Greater => false,
            Ordering::Less => {
                baseline_covers(self.baseline.as_ref(), counters().as_ref())
                    && baseline_covers(self.baseline.as_ref(), other.baseline.as_ref())
            }
            Ordering::Equal => {
                let value = match (&self.value, &other.value) {
                    (_, None) => true,
                    (None, Some(_)) => false,
                    (Some(mine), Some(theirs)) => {
                        mine.covers(theirs)
                            && baseline_covers(
                                self.baseline.as_ref(),
                                mine.lost_counters(theirs).as_ref(),
                            )
                    }
                };
                value && baseline_covers(self.baseline.as_ref(), other.baseline.as_ref())
            }
        }
    }

    /// Empties every last-writer-wins payload (see [`KeyState::witness`]).
    pub(super) fn strip(&mut self) {
        if let Some(v) = &mut self.value {
            *v = v.witness();
        }
    }

    /// Swaps the bytes of this state's last-writer-wins value for
    /// `bytes`, returning the ones it held (`None`, and nothing changed, if
    /// the value is not last-writer-wins): how a large value travels
    /// beside its state rather than in it (see
    /// [`crate::protocol::SharedValue`]).
    pub fn swap_lww_bytes(&mut self, bytes: bytes::Bytes) -> Option<bytes::Bytes> {
        match &mut self.value {
            Some(LatticeValue::Lww(l)) => {
                let held = l.bytes().clone();
                *l = super::Lww::shared(l.timestamp(), bytes);
                Some(held)
            }
            _ => None,
        }
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
        let value = self.value.as_ref().map_or(0, LatticeValue::approx_bytes);
        let baseline = self.baseline.as_ref().map_or(0, LatticeValue::approx_bytes);
        std::mem::size_of::<Self>() + value + baseline
    }

    /// Adds the counters of `older` (a state of an earlier epoch) to the
    /// baseline; returns whether it grew.
    fn fold_history(&mut self, older: KeyState) -> bool {
        let counters = older.value.as_ref().and_then(LatticeValue::counters);
        let a = merge_baseline(&mut self.baseline, counters);
        let b = merge_baseline(&mut self.baseline, older.baseline);
        a | b
    }
}

impl Lattice for KeyState {
    fn merge(&mut self, other: Self) -> bool {
        match other.deleted_at.cmp(&self.deleted_at) {
            std::cmp::Ordering::Less => self.fold_history(other),
            std::cmp::Ordering::Greater => {
                let older = std::mem::replace(self, other);
                self.fold_history(older);
                true
            }
            std::cmp::Ordering::Equal => {
                let mut base = merge_baseline(&mut self.baseline, other.baseline);
                let value = match (&mut self.value, other.value) {
                    (_, None) => false,
                    (None, Some(v)) => {
                        self.value = Some(v);
                        true
                    }
                    (Some(mine), Some(theirs)) => {
                        // A type race: the counters of the kind that loses
                        // end with it, as at a delete.
                        base |= merge_baseline(&mut self.baseline, mine.lost_counters(&theirs));
                        mine.merge(theirs)
                    }
                };
                base | value
            }
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
                baseline: None,
            },
            KeyState::from_value(counter(1, 5)),
            KeyState::from_value(counter(2, 1)),
            KeyState {
                deleted_at: Some(at(2)),
                value: Some(counter(1, 6)),
                baseline: Some(counter(1, 5)),
            },
        ];
        check_laws(&items);
    }

    fn counter(writer: u64, total: u64) -> LatticeValue {
        let mut c = Counter::default();
        c.increment(crate::lattice::WriterId(writer), total);
        LatticeValue::Counter(c)
    }

    fn count(s: &KeyState) -> Option<i128> {
        match s.visible()?.as_ref() {
            LatticeValue::Counter(c) => Some(c.value()),
            other => panic!("not a counter: {other:?}"),
        }
    }

    #[test]
    fn a_counter_counts_from_zero_after_a_delete_whoever_incremented_before() {
        let mut s = KeyState::from_value(counter(1, 5));
        assert!(s.delete(at(10)));
        assert_eq!(count(&s), None);
        // Writer 1 knows nothing of the delete: it sends its running total.
        s.put(counter(1, 6)).unwrap();
        assert_eq!(count(&s), Some(1));
        s.put(counter(2, 2)).unwrap();
        assert_eq!(count(&s), Some(3));
        // A replica that increments late in the old epoch: its increments
        // happened before the delete reached it, and stay history.
        let mut late = KeyState::from_value(counter(1, 5));
        late.put(counter(3, 4)).unwrap();
        assert!(s.merge(late.clone()));
        s.put(counter(3, 5)).unwrap();
        assert_eq!(count(&s), Some(4));
        // The merge goes the same way from the other side.
        let mut other = late;
        other.merge(s.clone());
        assert_eq!(other, s);
    }

    #[test]
    fn covers_is_the_order_of_merge() {
        let states = [
            KeyState::default(),
            KeyState::from_value(counter(1, 5)),
            KeyState::from_value(counter(1, 6)),
            KeyState::tombstone(at(1)),
            KeyState::tombstone(at(2)),
            KeyState {
                deleted_at: Some(at(2)),
                value: Some(counter(1, 6)),
                baseline: Some(counter(1, 5)),
            },
            KeyState {
                deleted_at: Some(at(2)),
                value: None,
                baseline: Some(counter(2, 1)),
            },
        ];
        for a in &states {
            for b in &states {
                let unchanged = !a.clone().merge(b.clone());
                assert_eq!(a.covers(b), unchanged, "{a:?} covers {b:?}");
            }
        }
    }
}
