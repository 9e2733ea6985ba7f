//! Versions: what a write guarantees a later read holds.
//!
//! A session (a client's calls, see `anna::protocol::Session`) remembers,
//! per key it wrote, a *witness*: the write's [`KeyState`] with
//! last-writer-wins bytes emptied, so it stays small. A replica or a cache
//! serves a read of the session "at least at that version" exactly when its
//! state [`KeyState::covers`] the witness: merging the witness in would
//! change nothing. Emptied bytes compare lowest among values of one
//! timestamp, so a state holding the write (or a later one) covers it.
//!
//! Also here: the counters inside a value ([`LatticeValue::counters`]), kept
//! as a deleted key's baseline, and a counter's count since a baseline
//! ([`LatticeValue::since`]): how a delete makes counters start again.

use super::or_map::Field;
use super::{Causal, Counter, KeyState, Lattice, LatticeValue, Lww, MapLattice, ORMapLattice};

impl LatticeValue {
    /// Whether `self` already holds everything `other` holds (`other ⊑
    /// self`): the lattice order, except that causal values compare by
    /// clock only (see below). Allocation-free for last-writer-wins,
    /// counters, sets, causal values and maps of them.
    pub fn covers(&self, other: &LatticeValue) -> bool {
        use LatticeValue as V;
        match (self, other) {
            (V::Lww(a), V::Lww(b)) => (a.timestamp(), a.value()) >= (b.timestamp(), b.value()),
            (V::Counter(a), V::Counter(b)) => a.covers(b),
            (V::Set(a), V::Set(b)) => b.reveal().is_subset(a.reveal()),
            (V::OrderedSet(a), V::OrderedSet(b)) => b.reveal().is_subset(a.reveal()),
            (V::Max(a), V::Max(b)) => a.reveal() >= b.reveal(),
            (V::Map(a), V::Map(b)) => b
                .reveal()
                .iter()
                .all(|(field, v)| a.get(field).is_some_and(|mine| mine.covers(v))),
            // A causal write is named by its clock (a writer counts one
            // event of its own per write), so a version is held when a
            // version of an equal or later clock is: a dependency's clock
            // with no payload is a witness of it.
            (V::ORSet(a), V::ORSet(b)) => b
                .entries()
                .iter()
                .all(|(e, theirs)| a.entries().get(e).is_some_and(|mine| mine.covers(theirs))),
            (V::ORMap(a), V::ORMap(b)) => b.entries().iter().all(|(field, theirs)| {
                a.entries().get(field).is_some_and(|mine| {
                    let value = match (&mine.value, &theirs.value) {
                        (_, None) => true,
                        (None, Some(_)) => false,
                        (Some(m), Some(t)) => m.covers(t),
                    };
                    mine.presence.covers(&theirs.presence) && value
                })
            }),
            (V::SingleKeyCausal(a), V::SingleKeyCausal(b)) => clocks_cover(a, b),
            (V::MultiKeyCausal(a), V::MultiKeyCausal(b)) => clocks_cover(a, b),
            (mine, theirs) if mine.kind() == theirs.kind() => !mine.clone().merge(theirs.clone()),
            (mine, theirs) => mine.kind() > theirs.kind(),
        }
    }

    /// This value with every last-writer-wins payload emptied (inside maps
    /// too): what a session keeps of a write.
    pub fn witness(&self) -> LatticeValue {
        match self {
            LatticeValue::Lww(l) => LatticeValue::Lww(Lww::new(l.timestamp(), Vec::new())),
            LatticeValue::Map(m) => LatticeValue::Map(MapLattice::new(
                m.reveal().iter().map(|(k, v)| (k.clone(), v.witness())),
            )),
            LatticeValue::ORMap(m) => or_map_fields(m, |_, f| {
                Some(Field {
                    presence: f.presence.clone(),
                    value: f.value.as_ref().map(LatticeValue::witness),
                })
            }),
            other => other.clone(),
        }
    }

    /// The counters inside this value: a counter itself, the fields of a
    /// map that hold counters (recursively), nothing for other types. A
    /// deleted key keeps them as its baseline.
    pub fn counters(&self) -> Option<LatticeValue> {
        match self {
            LatticeValue::Counter(c) => Some(LatticeValue::Counter(c.clone())),
            LatticeValue::Map(m) => {
                let fields: Vec<(String, LatticeValue)> = (m.reveal().iter())
                    .filter_map(|(k, v)| Some((k.clone(), v.counters()?)))
                    .collect();
                (!fields.is_empty()).then(|| LatticeValue::Map(MapLattice::new(fields)))
            }
            LatticeValue::ORMap(m) => {
                let counters = or_map_fields(m, |_, f| f.value.as_ref()?.counters().map(bare));
                let LatticeValue::ORMap(c) = &counters else {
                    unreachable!("or_map_fields makes an observed-remove map")
                };
                (!c.entries().is_empty()).then_some(counters)
            }
            _ => None,
        }
    }

    /// The counters of `self` and `other` that merging them loses: where
    /// their kinds differ (a type race between replicas), the counters of
    /// the kind that loses; inside two maps, the same field by field. A
    /// key state keeps them in its baseline, as a delete would, so that
    /// replicas converge whatever order they merge in.
    pub fn lost_counters(&self, other: &LatticeValue) -> Option<LatticeValue> {
        match (self, other) {
            (LatticeValue::Map(a), LatticeValue::Map(b)) => {
                let fields: Vec<(String, LatticeValue)> = (b.reveal().iter())
                    .filter_map(|(k, theirs)| {
                        let mine = a.get(k)?;
                        Some((k.clone(), mine.lost_counters(theirs)?))
                    })
                    .collect();
                (!fields.is_empty()).then(|| LatticeValue::Map(MapLattice::new(fields)))
            }
            (LatticeValue::ORMap(a), LatticeValue::ORMap(b)) => {
                let fields: Vec<(String, Field<LatticeValue>)> = (b.entries().iter())
                    .filter_map(|(k, theirs)| {
                        let mine = a.entries().get(k)?.value.as_ref()?;
                        let value = mine.lost_counters(theirs.value.as_ref()?)?;
                        Some((k.clone(), bare(value)))
                    })
                    .collect();
                (!fields.is_empty()).then(|| LatticeValue::ORMap(ORMapLattice::from_fields(fields)))
            }
            (a, b) if a.kind() == b.kind() => None,
            (a, b) if a.kind() > b.kind() => b.counters(),
            (a, _) => a.counters(),
        }
    }

    /// This value as counted since `baseline`: each counter (and counter
    /// field of a map) less the baseline's per-writer totals; other types
    /// as they are.
    pub fn since(&self, baseline: &LatticeValue) -> LatticeValue {
        match (self, baseline) {
            (LatticeValue::Counter(c), LatticeValue::Counter(b)) => {
                LatticeValue::Counter(c.since(b))
            }
            (LatticeValue::Map(m), LatticeValue::Map(b)) => {
                LatticeValue::Map(MapLattice::new(m.reveal().iter().map(|(k, v)| {
                    let v = match b.get(k) {
                        Some(base) => v.since(base),
                        None => v.clone(),
                    };
                    (k.clone(), v)
                })))
            }
            (LatticeValue::ORMap(m), LatticeValue::ORMap(b)) => or_map_fields(m, |k, f| {
                let base = b.entries().get(k).and_then(|base| base.value.as_ref());
                let value = match (&f.value, base) {
                    (Some(v), Some(base)) => Some(v.since(base)),
                    (v, _) => v.clone(),
                };
                Some(Field {
                    presence: f.presence.clone(),
                    value,
                })
            }),
            (v, _) => v.clone(),
        }
    }
}

/// The observed-remove map of `f` of each of `m`'s fields (those it
/// gives one for).
fn or_map_fields(
    m: &ORMapLattice<String, LatticeValue>,
    f: impl Fn(&String, &Field<LatticeValue>) -> Option<Field<LatticeValue>>,
) -> LatticeValue {
    LatticeValue::ORMap(ORMapLattice::from_fields(
        (m.entries().iter()).filter_map(|(k, field)| Some((k.clone(), f(k, field)?))),
    ))
}

/// A field holding `value` and no tags: how a baseline keeps the counters
/// of an observed-remove map's fields (their tags do not count).
fn bare(value: LatticeValue) -> Field<LatticeValue> {
    Field {
        presence: Default::default(),
        value: Some(value),
    }
}

/// Whether every version of `theirs` has a version of `mine` at the same
/// or a later clock.
fn clocks_cover<P: Ord + Clone>(mine: &Causal<P>, theirs: &Causal<P>) -> bool {
    theirs.versions().all(|t| {
        mine.versions()
            .any(|m| m.clock == t.clock || t.clock.happened_before(&m.clock))
    })
}

impl Counter {
    /// Whether every writer's totals here are at least `other`'s.
    pub fn covers(&self, other: &Counter) -> bool {
        let at_least = |mine: &std::collections::BTreeMap<_, u64>,
                        theirs: &std::collections::BTreeMap<_, u64>| {
            theirs
                .iter()
                .all(|(w, &n)| mine.get(w).is_some_and(|&m| m >= n))
        };
        at_least(self.increments(), other.increments())
            && at_least(self.decrements(), other.decrements())
    }
}

/// Merges `from` into an optional baseline.
pub(super) fn merge_baseline(into: &mut Option<LatticeValue>, from: Option<LatticeValue>) -> bool {
    match (into.as_mut(), from) {
        (_, None) => false,
        (None, Some(v)) => {
            *into = Some(v);
            true
        }
        (Some(mine), Some(theirs)) => mine.merge(theirs),
    }
}

/// Whether baseline `mine` holds all of `theirs`.
pub(super) fn baseline_covers(mine: Option<&LatticeValue>, theirs: Option<&LatticeValue>) -> bool {
    match (mine, theirs) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(m), Some(t)) => m.covers(t),
    }
}

impl KeyState {
    /// What a session keeps of this state (a write it made): the same
    /// state with last-writer-wins payloads emptied. See the module docs.
    pub fn witness(&self) -> KeyState {
        let mut w = self.clone();
        w.strip();
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::{Max, Timestamp, WriterId};

    fn lww(ms: u64, v: &[u8]) -> LatticeValue {
        let ts = Timestamp {
            wall_ms: ms,
            logical: 0,
            writer: WriterId(1),
        };
        LatticeValue::Lww(Lww::new(ts, v.to_vec()))
    }

    fn counter(w: u64, up: u64) -> LatticeValue {
        let mut c = Counter::default();
        c.increment(WriterId(w), up);
        LatticeValue::Counter(c)
    }

    fn map(fields: &[(&str, LatticeValue)]) -> LatticeValue {
        LatticeValue::Map(MapLattice::new(
            fields.iter().map(|(k, v)| (k.to_string(), v.clone())),
        ))
    }

    /// `covers` is the lattice order: `a` covers `b` exactly when merging
    /// `b` into `a` changes nothing.
    #[test]
    fn covers_agrees_with_merge() {
        let values = [
            lww(1, b"a"),
            lww(2, b"b"),
            lww(2, b""),
            counter(1, 1),
            counter(1, 3),
            counter(2, 1),
            LatticeValue::Max(Max::new(3)),
            LatticeValue::Max(Max::new(5)),
            map(&[("x", counter(1, 2))]),
            map(&[("x", counter(1, 2)), ("y", lww(3, b"z"))]),
            map(&[("y", lww(4, b"q"))]),
        ];
        for a in &values {
            for b in &values {
                let unchanged = !a.clone().merge(b.clone());
                assert_eq!(a.covers(b), unchanged, "{a:?} covers {b:?}");
            }
        }
    }

    #[test]
    fn a_causal_version_is_covered_by_its_clock_or_a_later_one() {
        use crate::lattice::{Dependent, MultiKeyCausal, VectorClock, WriterId as W};
        let clock = |a: u64, b: u64| VectorClock::new([(W(1), a), (W(2), b)]);
        let v = |c: VectorClock, bytes: &[u8]| {
            LatticeValue::MultiKeyCausal(MultiKeyCausal::new(
                c,
                Dependent {
                    dependencies: Default::default(),
                    value: bytes.to_vec(),
                },
            ))
        };
        let stored = v(clock(2, 1), b"post");
        // A dependency on the clock, with no payload, is held.
        assert!(stored.covers(&v(clock(2, 1), b"")));
        assert!(stored.covers(&v(clock(1, 1), b"")));
        assert!(!stored.covers(&v(clock(2, 2), b"")));
        assert!(!stored.covers(&v(clock(3, 0), b"")));
        assert!(!LatticeValue::MultiKeyCausal(MultiKeyCausal::default()).covers(&stored));
    }

    #[test]
    fn a_witness_is_covered_by_the_write_and_by_later_writes_only() {
        let write = lww(5, b"payload");
        let witness = write.witness();
        assert!(write.covers(&witness));
        assert!(lww(6, b"").covers(&witness));
        assert!(!lww(4, b"zzzz").covers(&witness));
        let nested = map(&[("f", write.clone())]);
        assert!(nested.covers(&nested.witness()));
        assert!(!map(&[("f", lww(4, b"x"))]).covers(&nested.witness()));
    }

    #[test]
    fn counters_since_a_baseline_start_from_zero() {
        let base = counter(1, 5);
        let later = counter(1, 6).join(counter(2, 2));
        let LatticeValue::Counter(c) = later.since(&base) else {
            panic!("a counter");
        };
        assert_eq!(c.value(), 3);
        let in_map = map(&[("n", later.clone()), ("s", lww(1, b"x"))]);
        assert_eq!(in_map.counters(), Some(map(&[("n", later)])));
        assert_eq!(lww(1, b"x").counters(), None);
    }
}
