//! Proptest strategies for every lattice type, shared by the integration
//! tests (declare with `mod strategies;`).
//!
//! The ranges are deliberately small. Laws break at collisions: two writes at
//! the same hybrid-logical-clock time with different bytes, two clocks that
//! are equal but spelled differently (an explicit zero entry against a missing
//! one), a set element both sides hold, a map field both sides hold with
//! different lattice types. Wide ranges would almost never produce those, so
//! writer ids, clock components, byte strings and field names are all drawn
//! from a handful of values.
//!
//! Values are built the way the system builds them: through the public
//! constructors and merges (a causal value is a merge of single versions, a
//! counter a sequence of increments and decrements), so every generated value
//! is one a real replica could hold.
//!
//! # Layout
//!
//! - Building blocks: [`writer_id`], [`small_bytes`], [`timestamp`],
//!   [`field_name`], [`priority_key`], [`dependent`].
//! - One strategy per lattice type: [`lww`], [`set`], [`ordered_set`],
//!   [`max`], [`min`], [`counter`], [`max_map`], [`vector_clock`],
//!   [`single_key_causal`], [`multi_key_causal`], [`priority`],
//!   [`or_set`], [`or_max_map`], and maps of [`LatticeValue`]s nested up to
//!   [`MAX_MAP_DEPTH`] deep: [`value_map`] and [`value_or_map`] (fields of
//!   any kind), [`well_typed_value_map`] and [`well_typed_value_or_map`] (a
//!   field's name fixes its kind).
//! - [`LatticeValue`]s: [`any_value_of_kind`], [`any_lattice_value`],
//!   [`any_well_typed_value_of_kind`] (any two values of one kind merge
//!   without a type mismatch), [`any_kind`] and [`two_different_kinds`].
//! - Delivery: [`delivery_order`] and [`updates_and_order`], a batch of
//!   updates with a shuffled, duplicating order to deliver them in.
//! - The store's own lattices: [`key_state`] (values of one kind, puts and
//!   deletes), [`counter_key_state`], and [`cluster_state`] (joins,
//!   departures, heartbeats, replication overrides: [`cluster_op`]).

// Each test crate that declares this module uses only some of it.
#![allow(dead_code)]

use anna::cluster::{ClusterState, ReplicationFactor};
use anna::lattice::{
    Causal, Counter, Dependent, KeyState, Lattice, LatticeKind, LatticeValue, Lww, MapLattice, Max,
    Min, MultiKeyCausal, ORMapLattice, ORSetLattice, OrderedSetLattice, Presence, Priority,
    SetLattice, SingleKeyCausal, Timestamp, VectorClock, WriterId,
};
use anna::protocol::{Address, NodeId, NodeInfo};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

/// How many lattice maps deep [`any_value_of_kind`] nests a
/// [`LatticeKind::Map`] value (the outer map counts as one).
pub const MAX_MAP_DEPTH: usize = 3;

/// One of four writers, so counters and clocks share entries often.
pub fn writer_id() -> impl Strategy<Value = WriterId> {
    (0u64..4).prop_map(WriterId)
}

/// A byte string of at most two bytes over a three-letter alphabet: thirteen
/// values in all, so equal and different values both come up often.
pub fn small_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(b'a'..=b'c', 0..=2)
}

/// A timestamp from a 3 × 2 × 4 grid, so equal timestamps (and equal times
/// from different writers) are common.
pub fn timestamp() -> impl Strategy<Value = Timestamp> {
    (0u64..3, 0u32..2, writer_id()).prop_map(|(wall_ms, logical, writer)| Timestamp {
        wall_ms,
        logical,
        writer,
    })
}

/// A map field name from a pool of three, so maps share fields often.
pub fn field_name() -> impl Strategy<Value = String> {
    select(&["a", "b", "c"][..]).prop_map(str::to_string)
}

/// A last-writer-wins value; bottom sometimes.
pub fn lww() -> impl Strategy<Value = Lww> {
    prop_oneof![
        1 => Just(Lww::default()),
        9 => (timestamp(), small_bytes()).prop_map(|(ts, v)| Lww::new(ts, v)),
    ]
}

/// A set of up to four small byte strings (empty, which is bottom, included).
pub fn set() -> impl Strategy<Value = SetLattice<Vec<u8>>> {
    vec(small_bytes(), 0..=4).prop_map(SetLattice::new)
}

/// An ordered set of up to four small byte strings (empty included).
pub fn ordered_set() -> impl Strategy<Value = OrderedSetLattice<Vec<u8>>> {
    vec(small_bytes(), 0..=4).prop_map(OrderedSetLattice::new)
}

/// What a replica does to an observed-remove set or map: add (update) an
/// element (field) with a tag, remove it as the replica sees it, or merge
/// the remove of one tag another replica observed.
#[derive(Clone, Debug)]
pub enum ObservedOp<T> {
    Add(T),
    Remove,
    RemoveTag(Timestamp),
}

/// One [`ObservedOp`] at `at`, over `what`.
fn observed_op<S>(what: S) -> impl Strategy<Value = (String, ObservedOp<S::Value>, Timestamp)>
where
    S: Strategy,
    S::Value: Clone + std::fmt::Debug,
{
    let op = prop_oneof![
        3 => what.prop_map(ObservedOp::Add),
        2 => Just(ObservedOp::Remove),
        1 => timestamp().prop_map(ObservedOp::RemoveTag),
    ];
    (field_name(), op, timestamp())
}

/// An observed-remove set of three small elements after up to six adds,
/// removes and removes of tags seen elsewhere, by four writers at a
/// handful of times: removed elements, concurrent adds and tags removed
/// on one side only are all common.
pub fn or_set() -> impl Strategy<Value = ORSetLattice<Vec<u8>>> {
    vec(observed_op(Just(())), 0..=6).prop_map(|ops| {
        let mut s = ORSetLattice::default();
        for (e, op, at) in ops {
            let e = e.into_bytes();
            match op {
                ObservedOp::Add(()) => {
                    s.add(e, at);
                }
                ObservedOp::Remove => {
                    s.remove(&e);
                }
                ObservedOp::RemoveTag(t) => {
                    s.merge_presence(e, Presence::removed([t]));
                }
            }
        }
        s
    })
}

/// An observed-remove map of fields to values from `value`, after up to
/// six updates, removes and removes of tags seen elsewhere.
fn or_map_of<V, S>(value: S) -> impl Strategy<Value = ORMapLattice<String, V>>
where
    V: Lattice + 'static,
    S: Strategy<Value = V>,
{
    vec(observed_op(value), 0..=6).prop_map(|ops| {
        let mut m = ORMapLattice::default();
        for (field, op, at) in ops {
            match op {
                ObservedOp::Add(v) => {
                    m.update(field, at, v);
                }
                ObservedOp::Remove => {
                    m.remove(&field);
                }
                ObservedOp::RemoveTag(t) => {
                    let removed = anna::lattice::or_map::Field::removal(Presence::removed([t]));
                    m.merge_field(field, removed);
                }
            }
        }
        m
    })
}

/// An observed-remove map of up to three fields to maxima.
pub fn or_max_map() -> impl Strategy<Value = ORMapLattice<String, Max<i64>>> {
    or_map_of(max())
}

/// An observed-remove map of lattice values of any kind, nested up to
/// `depth` maps deep, like [`value_map`]'s loose half (its fields often
/// hold different kinds on two sides).
pub fn value_or_map(depth: usize) -> BoxedStrategy<ORMapLattice<String, LatticeValue>> {
    assert!(depth >= 1, "a map is at least one map deep");
    or_map_of(any_value_below(depth)).boxed()
}

/// An observed-remove map in which a field named after a kind always
/// holds a value of that kind (see [`well_typed_value_map`]): any two
/// merge without a type mismatch.
pub fn well_typed_value_or_map(depth: usize) -> BoxedStrategy<ORMapLattice<String, LatticeValue>> {
    assert!(depth >= 1, "a map is at least one map deep");
    let kinds: Vec<LatticeKind> = LatticeKind::ALL
        .into_iter()
        .filter(|&k| !is_map(k) || depth > 1)
        .collect();
    let field = select(kinds).prop_flat_map(move |kind| {
        let value = match kind {
            LatticeKind::Map => well_typed_value_map(depth - 1)
                .prop_map(LatticeValue::Map)
                .boxed(),
            LatticeKind::ORMap => well_typed_value_or_map(depth - 1)
                .prop_map(LatticeValue::ORMap)
                .boxed(),
            other => any_value_of_kind(other),
        };
        (Just(kind.name().to_string()), value)
    });
    let op = prop_oneof![
        3 => field.prop_map(|(f, v)| (f, Some(v))),
        1 => select(LatticeKind::ALL.map(|k| k.name().to_string()).to_vec()).prop_map(|f| (f, None)),
    ];
    vec((op, timestamp()), 0..=4)
        .prop_map(|ops| {
            let mut m = ORMapLattice::default();
            for ((field, value), at) in ops {
                match value {
                    Some(v) => {
                        m.update(field, at, v);
                    }
                    None => {
                        m.remove(&field);
                    }
                }
            }
            m
        })
        .boxed()
}

/// Whether values of `kind` are maps that nest other values.
fn is_map(kind: LatticeKind) -> bool {
    matches!(kind, LatticeKind::Map | LatticeKind::ORMap)
}

/// An integer that is usually small (so values tie) and sometimes extreme.
fn extremum_input() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => -3i64..=3,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        1 => any::<i64>(),
    ]
}

/// A maximum; bottom (nothing seen) sometimes.
pub fn max() -> impl Strategy<Value = Max<i64>> {
    prop_oneof![
        1 => Just(Max::default()),
        9 => extremum_input().prop_map(Max::new),
    ]
}

/// A minimum; bottom (nothing seen) sometimes.
pub fn min() -> impl Strategy<Value = Min<i64>> {
    prop_oneof![
        1 => Just(Min::default()),
        9 => extremum_input().prop_map(Min::new),
    ]
}

/// A counter built from up to six increments and decrements by four writers.
///
/// Two generated counters may disagree arbitrarily on a writer's totals,
/// which a real writer (whose totals only grow) would not produce; merge
/// takes the per-writer maximum, so the laws must hold for those too. A zero
/// step leaves an explicit zero entry, which compares unequal to a missing
/// one.
pub fn counter() -> impl Strategy<Value = Counter> {
    let step = prop_oneof![5 => 0u64..4, 1 => Just(u64::MAX)];
    vec((writer_id(), any::<bool>(), step), 0..=6).prop_map(|ops| {
        let mut c = Counter::default();
        for (writer, up, by) in ops {
            if up {
                c.increment(writer, by);
            } else {
                c.decrement(writer, by);
            }
        }
        c
    })
}

/// A map of up to three fields to maxima.
pub fn max_map() -> impl Strategy<Value = MapLattice<String, Max<i64>>> {
    btree_map(field_name(), max(), 0..=3).prop_map(MapLattice::new)
}

/// A vector clock of up to three entries from four writers, counts 0..=2:
/// one clock dominating another and two clocks being concurrent are both
/// common, and so are explicit zero entries.
pub fn vector_clock() -> impl Strategy<Value = VectorClock> {
    btree_map(writer_id(), 0u64..=2, 0..=3).prop_map(VectorClock::new)
}

/// A causal value: the merge of up to three versions, so it holds a
/// maximal antichain of one or more concurrent versions, or none (bottom).
fn causal<P>(payload: impl Strategy<Value = P>) -> impl Strategy<Value = Causal<P>>
where
    P: Ord + Clone + std::fmt::Debug,
{
    vec((vector_clock(), payload), 0..=3).prop_map(|versions| {
        versions
            .into_iter()
            .fold(Default::default(), |acc: Causal<P>, (clock, p)| {
                acc.join(Causal::new(clock, p))
            })
    })
}

/// A single-key causal value of up to three merged versions.
pub fn single_key_causal() -> impl Strategy<Value = SingleKeyCausal> {
    causal(small_bytes())
}

/// A multi-key causal payload: small bytes and up to two dependencies.
pub fn dependent() -> impl Strategy<Value = Dependent> {
    (
        btree_map(field_name(), vector_clock(), 0..=2),
        small_bytes(),
    )
        .prop_map(|(dependencies, value)| Dependent {
            dependencies,
            value,
        })
}

/// A multi-key causal value of up to three merged versions.
pub fn multi_key_causal() -> impl Strategy<Value = MultiKeyCausal> {
    causal(dependent())
}

/// A priority: usually a small integer (so priorities tie), often one of the
/// floats with a surprising order (both NaNs, both zeros, the infinities),
/// sometimes any float.
pub fn priority_key() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => (-2i8..=2).prop_map(f64::from),
        2 => select(&[
            f64::NAN,
            -f64::NAN,
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            f64::MAX,
        ][..]),
        1 => any::<f64>(),
    ]
}

/// A lowest-priority-wins entry; bottom sometimes.
pub fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![
        1 => Just(Priority::default()),
        9 => (priority_key(), small_bytes()).prop_map(|(p, v)| Priority::new(p, v)),
    ]
}

/// A map of lattice values, nested up to `depth` maps deep (at least one).
///
/// Half the maps are loosely typed: one to three fields from a pool of three,
/// each holding a value of any kind, so two maps often hold one field with
/// different types (the ordinal-sum merge and nested type mismatches). The
/// other half are well typed (see [`well_typed_value_map`]). The loose pool
/// is three of the well-typed field names, so a loose map clashes with a
/// well-typed one as well.
pub fn value_map(depth: usize) -> BoxedStrategy<MapLattice<String, LatticeValue>> {
    assert!(depth >= 1, "a map is at least one map deep");
    let loose_field = select(&["map", "max", "set"][..]).prop_map(str::to_string);
    let loose = btree_map(loose_field, any_value_below(depth), 1..=3).prop_map(MapLattice::new);
    prop_oneof![loose, well_typed_value_map(depth)].boxed()
}

/// A map of lattice values, nested up to `depth` maps deep, in which a field
/// named after a kind (`max`, `map`, ...) always holds a value of that kind,
/// at every level. Any two such maps merge without a type mismatch.
pub fn well_typed_value_map(depth: usize) -> BoxedStrategy<MapLattice<String, LatticeValue>> {
    assert!(depth >= 1, "a map is at least one map deep");
    let kinds: Vec<LatticeKind> = LatticeKind::ALL
        .into_iter()
        .filter(|&k| !is_map(k) || depth > 1)
        .collect();
    let most = kinds.len().min(4);
    subsequence(kinds, 0..=most)
        .prop_flat_map(move |fields| {
            fields
                .into_iter()
                .map(|kind| {
                    let value = match kind {
                        LatticeKind::Map => well_typed_value_map(depth - 1)
                            .prop_map(LatticeValue::Map)
                            .boxed(),
                        LatticeKind::ORMap => well_typed_value_or_map(depth - 1)
                            .prop_map(LatticeValue::ORMap)
                            .boxed(),
                        _ => any_value_of_kind(kind),
                    };
                    (Just(kind.name().to_string()), value)
                })
                .collect::<Vec<_>>()
        })
        .prop_map(MapLattice::new)
        .boxed()
}

/// A value of any kind that fits inside a map `depth` maps deep: a map half
/// the time while `depth` leaves room for one (so nested clashes come
/// up), otherwise any other kind, uniformly.
fn any_value_below(depth: usize) -> BoxedStrategy<LatticeValue> {
    let kinds: Vec<LatticeKind> = LatticeKind::ALL
        .into_iter()
        .filter(|&k| !is_map(k))
        .collect();
    let leaf = select(kinds).prop_flat_map(any_value_of_kind);
    if depth > 1 {
        prop_oneof![
            1 => value_map(depth - 1).prop_map(LatticeValue::Map),
            1 => value_or_map(depth - 1).prop_map(LatticeValue::ORMap),
            2 => leaf,
        ]
        .boxed()
    } else {
        leaf.boxed()
    }
}

/// A [`LatticeValue`] of `kind`. Maps nest up to [`MAX_MAP_DEPTH`] deep and
/// may hold fields of different kinds (see [`value_map`]).
pub fn any_value_of_kind(kind: LatticeKind) -> BoxedStrategy<LatticeValue> {
    match kind {
        LatticeKind::Lww => lww().prop_map(LatticeValue::Lww).boxed(),
        LatticeKind::Set => set().prop_map(LatticeValue::Set).boxed(),
        LatticeKind::OrderedSet => ordered_set().prop_map(LatticeValue::OrderedSet).boxed(),
        LatticeKind::Max => max().prop_map(LatticeValue::Max).boxed(),
        LatticeKind::Min => min().prop_map(LatticeValue::Min).boxed(),
        LatticeKind::Counter => counter().prop_map(LatticeValue::Counter).boxed(),
        LatticeKind::Map => value_map(MAX_MAP_DEPTH).prop_map(LatticeValue::Map).boxed(),
        LatticeKind::VectorClock => vector_clock().prop_map(LatticeValue::VectorClock).boxed(),
        LatticeKind::SingleKeyCausal => single_key_causal()
            .prop_map(LatticeValue::SingleKeyCausal)
            .boxed(),
        LatticeKind::MultiKeyCausal => multi_key_causal()
            .prop_map(LatticeValue::MultiKeyCausal)
            .boxed(),
        LatticeKind::Priority => priority().prop_map(LatticeValue::Priority).boxed(),
        LatticeKind::ORSet => or_set().prop_map(LatticeValue::ORSet).boxed(),
        LatticeKind::ORMap => prop_oneof![
            value_or_map(MAX_MAP_DEPTH),
            well_typed_value_or_map(MAX_MAP_DEPTH),
        ]
        .prop_map(LatticeValue::ORMap)
        .boxed(),
    }
}

/// A [`LatticeValue`] of `kind` such that any two values this strategy
/// produces for one kind merge with [`LatticeValue::try_merge`] without a
/// type mismatch: maps are [`well_typed_value_map`]s.
pub fn any_well_typed_value_of_kind(kind: LatticeKind) -> BoxedStrategy<LatticeValue> {
    match kind {
        LatticeKind::Map => well_typed_value_map(MAX_MAP_DEPTH)
            .prop_map(LatticeValue::Map)
            .boxed(),
        LatticeKind::ORMap => well_typed_value_or_map(MAX_MAP_DEPTH)
            .prop_map(LatticeValue::ORMap)
            .boxed(),
        other => any_value_of_kind(other),
    }
}

/// Any kind, uniformly.
pub fn any_kind() -> impl Strategy<Value = LatticeKind> {
    select(&LatticeKind::ALL[..])
}

/// A [`LatticeValue`] of any kind, kinds drawn uniformly.
pub fn any_lattice_value() -> BoxedStrategy<LatticeValue> {
    any_kind().prop_flat_map(any_value_of_kind).boxed()
}

/// Two different kinds, every ordered pair equally likely.
pub fn two_different_kinds() -> impl Strategy<Value = (LatticeKind, LatticeKind)> {
    let n = LatticeKind::ALL.len();
    (0..n, 1..n).prop_map(move |(i, step)| (LatticeKind::ALL[i], LatticeKind::ALL[(i + step) % n]))
}

/// An order to deliver `n` updates in: every index at least once, up to `n`
/// of them again, shuffled.
pub fn delivery_order(n: usize) -> impl Strategy<Value = Vec<usize>> {
    vec(0..n.max(1), 0..=n)
        .prop_map(move |duplicates| (0..n).chain(duplicates).collect::<Vec<_>>())
        .prop_shuffle()
}

/// One to `most` updates from `update`, with a [`delivery_order`] for them.
pub fn updates_and_order<S>(
    update: S,
    most: usize,
) -> impl Strategy<Value = (Vec<S::Value>, Vec<usize>)>
where
    S: Strategy,
    S::Value: Clone,
{
    vec(update, 1..=most).prop_flat_map(|updates| {
        let n = updates.len();
        (Just(updates), delivery_order(n))
    })
}

/// A key's state as replicas reach it: counters (alone, or as the field
/// of a map beside a maximum) written and deleted in random order, so
/// states of several delete epochs carry baselines. One shape of value per
/// case (`in_map`), as a key's writes have (the KVS refuses another type).
pub fn counter_key_state(in_map: bool) -> impl Strategy<Value = KeyState> {
    let op = prop_oneof![
        3 => counter().prop_map(Some),
        1 => Just(None),
    ];
    vec((op, 0u64..4), 0..=5).prop_map(move |ops| {
        let mut state = KeyState::default();
        for (op, at) in ops {
            match op {
                Some(c) => {
                    let v = LatticeValue::Counter(c);
                    let v = if in_map {
                        LatticeValue::Map(MapLattice::new([
                            ("n".to_string(), v),
                            ("m".to_string(), LatticeValue::Max(Max::new(at as i64))),
                        ]))
                    } else {
                        v
                    };
                    state.put(v).expect("one shape per case");
                }
                None => {
                    state.delete(Timestamp {
                        wall_ms: at,
                        logical: 0,
                        writer: WriterId(1),
                    });
                }
            }
        }
        state
    })
}

/// A key's state as replicas reach it, holding values of `kind`: up to six
/// puts (well-typed, so one key's writes merge without a type mismatch, as
/// the KVS refuses another type) and deletes at a handful of times, in
/// random order. States of several delete epochs carry counters'
/// baselines wherever `kind` holds counters (counters, maps).
pub fn key_state(kind: LatticeKind) -> impl Strategy<Value = KeyState> {
    let op = prop_oneof![
        3 => any_well_typed_value_of_kind(kind).prop_map(Some),
        1 => Just(None),
    ];
    vec((op, timestamp()), 0..=6).prop_map(|ops| {
        let mut state = KeyState::default();
        for (op, at) in ops {
            match op {
                Some(v) => {
                    state.put(v).expect("one kind per case, maps well typed");
                }
                None => {
                    state.delete(at);
                }
            }
        }
        state
    })
}

/// A key's state as a replica reaches it after replicas accepted writes of
/// different kinds concurrently (a type race the KVS cannot refuse, as no
/// one replica saw both): key states of random kinds, merged.
pub fn key_state_of_mixed_kinds() -> impl Strategy<Value = KeyState> {
    vec(any_kind().prop_flat_map(key_state), 1..=3).prop_map(|states| {
        let mut merged = KeyState::default();
        for s in states {
            merged.merge(s);
        }
        merged
    })
}

/// One of three nodes, of one or two threads, in one of two boots: two
/// records of one incarnation may differ in their addresses or boot, as
/// they do when routers record two boots of a node concurrently.
pub fn node_info() -> impl Strategy<Value = NodeInfo> {
    (1u64..=3, 1usize..=2, 0u64..2).prop_map(|(id, threads, boot)| NodeInfo {
        id: NodeId(id),
        boot,
        direct: Vec::new(),
        threads: (0..threads)
            .map(|t| Address(format!("node{id}/b{boot}/t{t}")))
            .collect(),
    })
}

/// A replication factor of one to three nodes, one or two threads each.
pub fn replication_factor() -> impl Strategy<Value = ReplicationFactor> {
    (1u8..=3, 1u8..=2).prop_map(|(global, local)| ReplicationFactor { global, local })
}

/// What changes a cluster state: a join, a departure or a heartbeat of a
/// node, or a replication override of a key.
#[derive(Clone, Debug)]
pub enum ClusterOp {
    Join(NodeInfo),
    Depart(NodeId, u64),
    Alive(NodeInfo, u64),
    Replicate(String, Timestamp, ReplicationFactor),
}

/// One [`ClusterOp`], from small pools (three nodes, incarnations 1..=3,
/// three keys), so that two states often speak of the same node or key.
pub fn cluster_op() -> impl Strategy<Value = ClusterOp> {
    prop_oneof![
        3 => node_info().prop_map(ClusterOp::Join),
        2 => ((1u64..=3).prop_map(NodeId), 1u64..=3).prop_map(|(n, i)| ClusterOp::Depart(n, i)),
        1 => (node_info(), 1u64..=3).prop_map(|(n, i)| ClusterOp::Alive(n, i)),
        2 => (field_name(), timestamp(), replication_factor())
            .prop_map(|(k, at, f)| ClusterOp::Replicate(k, at, f)),
    ]
}

/// Applies `op` to `state` the way a router does.
pub fn apply_cluster_op(state: &mut ClusterState, op: ClusterOp) {
    match op {
        ClusterOp::Join(info) => {
            state.record_join(info);
        }
        ClusterOp::Depart(node, incarnation) => {
            state.record_departure(node, incarnation);
        }
        ClusterOp::Alive(info, incarnation) => {
            state.record_alive(info, incarnation);
        }
        ClusterOp::Replicate(key, at, factor) => {
            state.set_replication(key, at, factor);
        }
    }
}

/// A cluster state as one router reaches it: up to six joins, departures,
/// heartbeats and replication overrides, in random order.
pub fn cluster_state() -> impl Strategy<Value = ClusterState> {
    vec(cluster_op(), 0..=6).prop_map(|ops| {
        let mut state = ClusterState::default();
        for op in ops {
            apply_cluster_op(&mut state, op);
        }
        state
    })
}
