//! The lattice laws, for every lattice type, on random values.
//!
//! For each type, two properties:
//!
//! - `merge_obeys_the_lattice_laws`: [`check_laws`] on one to five values
//!   (associativity, commutativity, idempotence, bottom as identity, merging
//!   a value twice changes nothing, and `merge` reports a change exactly when
//!   the value changed);
//! - `merge_ignores_delivery_order_and_duplicates`:
//!   [`check_order_insensitive`] on one to five updates delivered in a
//!   shuffled order with duplicates.
//!
//! The types are each lattice struct (`typed::*`; the observed-remove set
//! and maps too, whose remove semantics `observed_remove.rs` checks),
//! [`LatticeValue`] holding
//! one kind (`lattice_value::*`), and [`LatticeValue`] of mixed kinds, whose
//! cross-type merge is an ordinal sum and must obey the laws too
//! (`lattice_value_of_mixed_kinds`). The store's own lattices too:
//! [`KeyState`](anna::lattice::KeyState) holding each kind through puts
//! and deletes (`key_state::*`, and `covers` as its order), and
//! [`ClusterState`](anna::cluster::ClusterState) through joins, departures,
//! heartbeats and replication overrides (`cluster_state::*`). Last,
//! `try_merge` refuses mixed kinds and otherwise agrees with the typed
//! merge.

mod strategies;

use anna::lattice::laws::check_order_insensitive;
use anna::lattice::{check_laws, Lattice, LatticeKind, LatticeValue, MapLattice, TypeMismatch};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use strategies::*;

/// Cases per property per type. `check_laws` merges O(n³) triples of
/// `MAX_ITEMS` values, so this is what the file's run time scales with.
const CASES: u32 = 512;

/// The most values one case checks the laws over, or updates it delivers.
const MAX_ITEMS: usize = 5;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    }
}

/// For each `name: strategy`, a module `name` with both law properties over
/// values from `strategy`.
macro_rules! law_tests {
    ($($name:ident: $strategy:expr;)*) => {$(
        mod $name {
            use super::*;

            proptest! {
                #![proptest_config(config())]

                #[test]
                fn merge_obeys_the_lattice_laws(items in vec($strategy, 1..=MAX_ITEMS)) {
                    check_laws(&items);
                }

                #[test]
                fn merge_ignores_delivery_order_and_duplicates(
                    (updates, order) in updates_and_order($strategy, MAX_ITEMS),
                ) {
                    check_order_insensitive(&updates, &order);
                }
            }
        }
    )*};
}

mod typed {
    use super::*;

    law_tests! {
        lww: strategies::lww();
        set: strategies::set();
        ordered_set: strategies::ordered_set();
        max: strategies::max();
        min: strategies::min();
        counter: strategies::counter();
        max_map: strategies::max_map();
        value_map: strategies::value_map(MAX_MAP_DEPTH);
        vector_clock: strategies::vector_clock();
        single_key_causal: strategies::single_key_causal();
        multi_key_causal: strategies::multi_key_causal();
        priority: strategies::priority();
        or_set: strategies::or_set();
        or_max_map: strategies::or_max_map();
        value_or_map: strategies::value_or_map(MAX_MAP_DEPTH);
    }
}

mod lattice_value {
    use super::*;

    law_tests! {
        lww: any_value_of_kind(LatticeKind::Lww);
        set: any_value_of_kind(LatticeKind::Set);
        ordered_set: any_value_of_kind(LatticeKind::OrderedSet);
        max: any_value_of_kind(LatticeKind::Max);
        min: any_value_of_kind(LatticeKind::Min);
        counter: any_value_of_kind(LatticeKind::Counter);
        map: any_value_of_kind(LatticeKind::Map);
        vector_clock: any_value_of_kind(LatticeKind::VectorClock);
        single_key_causal: any_value_of_kind(LatticeKind::SingleKeyCausal);
        multi_key_causal: any_value_of_kind(LatticeKind::MultiKeyCausal);
        priority: any_value_of_kind(LatticeKind::Priority);
        or_set: any_value_of_kind(LatticeKind::ORSet);
        or_map: any_value_of_kind(LatticeKind::ORMap);
    }
}

law_tests! {
    lattice_value_of_mixed_kinds: any_lattice_value();
}

/// [`KeyState`](anna::lattice::KeyState)s holding each kind, through puts
/// and deletes: what a storage thread merges for every write, gossip and
/// handoff.
mod key_state {
    use super::*;

    law_tests! {
        lww: strategies::key_state(LatticeKind::Lww);
        set: strategies::key_state(LatticeKind::Set);
        ordered_set: strategies::key_state(LatticeKind::OrderedSet);
        max: strategies::key_state(LatticeKind::Max);
        min: strategies::key_state(LatticeKind::Min);
        counter: strategies::key_state(LatticeKind::Counter);
        map: strategies::key_state(LatticeKind::Map);
        vector_clock: strategies::key_state(LatticeKind::VectorClock);
        single_key_causal: strategies::key_state(LatticeKind::SingleKeyCausal);
        multi_key_causal: strategies::key_state(LatticeKind::MultiKeyCausal);
        priority: strategies::key_state(LatticeKind::Priority);
        or_set: strategies::key_state(LatticeKind::ORSet);
        or_map: strategies::key_state(LatticeKind::ORMap);
    }
}

/// [`ClusterState`](anna::cluster::ClusterState)s built from joins,
/// departures, heartbeats and replication overrides: what routers merge
/// and broadcast.
mod cluster_state {
    use super::*;

    law_tests! {
        states: strategies::cluster_state();
        single_changes: strategies::cluster_op().prop_map(|op| {
            let mut state = anna::cluster::ClusterState::default();
            apply_cluster_op(&mut state, op);
            state
        });
    }
}

proptest! {
    #![proptest_config(config())]

    /// Key states with delete tombstones and counters' baselines (a delete
    /// keeps the counters it ends) are a lattice, and `covers` is its
    /// order.
    #[test]
    fn key_states_with_counter_baselines_obey_the_laws(
        items in any::<bool>().prop_flat_map(|in_map| vec(counter_key_state(in_map), 1..=MAX_ITEMS)),
    ) {
        check_laws(&items);
        for a in &items {
            for b in &items {
                prop_assert_eq!(a.covers(b), !a.clone().merge(b.clone()));
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Replicas that accepted writes of different kinds concurrently still
    /// converge: key states of mixed kinds are a lattice too (the higher
    /// kind wins an epoch; the counters of a kind that lost go to the
    /// baseline, as they would when the epoch ends).
    #[test]
    fn key_states_of_mixed_kinds_obey_the_laws(
        items in vec(strategies::key_state_of_mixed_kinds(), 1..=MAX_ITEMS),
    ) {
        check_laws(&items);
        for a in &items {
            for b in &items {
                prop_assert!(a.clone().join(b.clone()).covers(b), "{:?} ⊔ {:?}", a, b);
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// `covers` is a key state's lattice order, for every kind: `a` covers
    /// `b` exactly when merging `b` into `a` changes nothing. Causal values
    /// (and maps, which may hold them) compare by clock only (a version is
    /// held when one of an equal or later clock is), so for them merging
    /// changing nothing implies covering, not the converse.
    #[test]
    fn key_state_covers_is_its_order_for_every_kind(
        (kind, items) in any_kind()
            .prop_flat_map(|k| (Just(k), vec(strategies::key_state(k), 1..=MAX_ITEMS))),
    ) {
        // Maps may hold causal fields, which compare by clock too.
        let by_clock = matches!(
            kind,
            LatticeKind::SingleKeyCausal
                | LatticeKind::MultiKeyCausal
                | LatticeKind::Map
                | LatticeKind::ORMap
        );
        for a in &items {
            for b in &items {
                let unchanged = !a.clone().merge(b.clone());
                if by_clock {
                    prop_assert!(!unchanged || a.covers(b), "{:?} does not cover {:?}", a, b);
                } else {
                    prop_assert_eq!(a.covers(b), unchanged, "{:?} covers {:?}", a, b);
                }
                prop_assert!(a.clone().join(b.clone()).covers(b));
            }
        }
    }

    /// A cluster state's ring version only grows as it merges, and states
    /// that merged the same changes in any order place every key alike.
    #[test]
    fn cluster_states_version_grows_and_equal_states_place_keys_alike(
        (updates, order) in updates_and_order(strategies::cluster_state(), MAX_ITEMS),
    ) {
        use anna::cluster::{ClusterState, Placement, ReplicationFactor};
        let defaults = ReplicationFactor { global: 2, local: 1 };
        let mut state = ClusterState::default();
        for &i in &order {
            let before = state.ring_version();
            state.merge(updates[i].clone());
            prop_assert!(state.ring_version() >= before);
        }
        let in_order = updates
            .iter()
            .fold(ClusterState::default(), |acc, u| acc.join(u.clone()));
        prop_assert_eq!(state.ring_version(), in_order.ring_version());
        let (p, q) = (Placement::new(&state, defaults), Placement::new(&in_order, defaults));
        prop_assert_eq!(p.nodes(), q.nodes());
        for key in ["a", "b", "c", "d"] {
            prop_assert_eq!(p.owners(key), q.owners(key));
        }
    }
}

/// The merge of two values of one kind, done on the typed structs.
fn typed_join(a: LatticeValue, b: LatticeValue) -> LatticeValue {
    use LatticeValue as V;
    match (a, b) {
        (V::Lww(a), V::Lww(b)) => V::Lww(a.join(b)),
        (V::Set(a), V::Set(b)) => V::Set(a.join(b)),
        (V::OrderedSet(a), V::OrderedSet(b)) => V::OrderedSet(a.join(b)),
        (V::Max(a), V::Max(b)) => V::Max(a.join(b)),
        (V::Min(a), V::Min(b)) => V::Min(a.join(b)),
        (V::Counter(a), V::Counter(b)) => V::Counter(a.join(b)),
        (V::Map(a), V::Map(b)) => V::Map(a.join(b)),
        (V::VectorClock(a), V::VectorClock(b)) => V::VectorClock(a.join(b)),
        (V::SingleKeyCausal(a), V::SingleKeyCausal(b)) => V::SingleKeyCausal(a.join(b)),
        (V::MultiKeyCausal(a), V::MultiKeyCausal(b)) => V::MultiKeyCausal(a.join(b)),
        (V::Priority(a), V::Priority(b)) => V::Priority(a.join(b)),
        (V::ORSet(a), V::ORSet(b)) => V::ORSet(a.join(b)),
        (V::ORMap(a), V::ORMap(b)) => V::ORMap(a.join(b)),
        (a, b) => panic!("typed_join of {} and {}", a.kind(), b.kind()),
    }
}

/// Whether some field path both values hold (the top level included) holds
/// different kinds on the two sides. Written independently of
/// `check_compatible`, as the oracle for it.
fn kinds_clash(stored: &LatticeValue, incoming: &LatticeValue) -> bool {
    match (stored, incoming) {
        (LatticeValue::Map(mine), LatticeValue::Map(theirs)) => {
            mine.reveal().iter().any(|(field, value)| {
                theirs
                    .get(field)
                    .is_some_and(|other| kinds_clash(value, other))
            })
        }
        // Removed fields keep their values, and their kinds; a removal
        // has no value.
        (LatticeValue::ORMap(mine), LatticeValue::ORMap(theirs)) => {
            mine.entries().iter().any(|(field, f)| {
                let other = theirs.entries().get(field).and_then(|o| o.value.as_ref());
                matches!((&f.value, other), (Some(a), Some(b)) if kinds_clash(a, b))
            })
        }
        _ => stored.kind() != incoming.kind(),
    }
}

/// `leaf` under the field `path`, with the fields `siblings[i]` beside the
/// path at depth `i`. Sibling names must not be path names.
fn nest(
    path: &[String],
    leaf: LatticeValue,
    siblings: &[Vec<(String, LatticeValue)>],
) -> LatticeValue {
    assert!(siblings.len() >= path.len(), "siblings for every level");
    path.iter()
        .zip(siblings)
        .rev()
        .fold(leaf, |inner, (field, beside)| {
            let mut level = MapLattice::new(beside.iter().cloned());
            level.insert(field.clone(), inner);
            LatticeValue::Map(level)
        })
}

/// The value at a dotted field path, or `None` if a field is missing.
fn at_path<'v>(value: &'v LatticeValue, path: &str) -> Option<&'v LatticeValue> {
    if path.is_empty() {
        return Some(value);
    }
    path.split('.').try_fold(value, |v, field| match v {
        LatticeValue::Map(m) => m.get(&field.to_string()),
        LatticeValue::ORMap(m) => m.entries().get(field)?.value.as_ref(),
        _ => None,
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn try_merge_of_different_kinds_is_refused_naming_both_kinds_and_changes_nothing(
        (mut stored, incoming) in two_different_kinds()
            .prop_flat_map(|(s, i)| (any_value_of_kind(s), any_value_of_kind(i))),
    ) {
        let before = stored.clone();
        let result = stored.try_merge(incoming.clone());
        prop_assert_eq!(
            result,
            Err(TypeMismatch {
                path: String::new(),
                stored: before.kind(),
                incoming: incoming.kind(),
            })
        );
        prop_assert_eq!(stored, before);
    }

    #[test]
    fn try_merge_of_one_well_typed_kind_succeeds_and_equals_the_typed_merge(
        (mut stored, incoming) in any_kind()
            .prop_flat_map(|k| (any_well_typed_value_of_kind(k), any_well_typed_value_of_kind(k))),
    ) {
        let before = stored.clone();
        let changed = stored.try_merge(incoming.clone());
        prop_assert_eq!(changed, Ok(stored != before));
        prop_assert_eq!(stored, typed_join(before, incoming));
    }

    #[test]
    fn try_merge_of_one_kind_equals_the_typed_merge_or_names_a_nested_clash_and_changes_nothing(
        // Maps half the time: only maps can clash below the top level.
        (mut stored, incoming) in prop_oneof![any_kind(), Just(LatticeKind::Map)]
            .prop_flat_map(|k| (any_value_of_kind(k), any_value_of_kind(k))),
    ) {
        let before = stored.clone();
        match stored.try_merge(incoming.clone()) {
            Ok(changed) => {
                prop_assert!(!kinds_clash(&before, &incoming));
                prop_assert_eq!(changed, stored != before);
                prop_assert_eq!(stored, typed_join(before, incoming));
            }
            Err(err) => {
                prop_assert!(kinds_clash(&before, &incoming));
                prop_assert!(!err.path.is_empty(), "same top-level kinds, yet {err}");
                prop_assert_eq!(at_path(&before, &err.path).map(|v| v.kind()), Some(err.stored));
                prop_assert_eq!(
                    at_path(&incoming, &err.path).map(|v| v.kind()),
                    Some(err.incoming)
                );
                prop_assert_ne!(err.stored, err.incoming);
                prop_assert_eq!(stored, before);
            }
        }
    }

    #[test]
    fn try_merge_names_the_path_of_a_clash_nested_in_maps_and_changes_nothing(
        path in vec(field_name(), 1..=MAX_MAP_DEPTH),
        siblings in vec(
            vec((select(&["x", "y"][..]).prop_map(str::to_string), any_lattice_value()), 0..=2),
            MAX_MAP_DEPTH,
        ),
        (leaf_stored, leaf_incoming) in two_different_kinds()
            .prop_flat_map(|(s, i)| (any_value_of_kind(s), any_value_of_kind(i))),
    ) {
        let mut stored = nest(&path, leaf_stored.clone(), &siblings);
        let incoming = nest(&path, leaf_incoming.clone(), &siblings);
        let before = stored.clone();
        prop_assert_eq!(
            stored.try_merge(incoming),
            Err(TypeMismatch {
                path: path.join("."),
                stored: leaf_stored.kind(),
                incoming: leaf_incoming.kind(),
            })
        );
        prop_assert_eq!(stored, before);
    }
}
