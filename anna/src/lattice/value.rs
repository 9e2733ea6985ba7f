//! [`LatticeValue`]: the one tagged enum that carries any lattice on the wire.
//!
//! The KVS stores a `LatticeValue` per key and merges incoming writes with
//! [`LatticeValue::try_merge`], which refuses to merge two different lattice
//! types (anywhere inside nested maps, too) with a [`TypeMismatch`] and leaves
//! the stored value untouched. A silent overwrite is never an outcome.
//!
//! The variant order is part of the wire format: append, never reorder.

use super::{
    Counter, Lattice, Lww, MapLattice, Max, Min, MultiKeyCausal, ORMapLattice, ORSetLattice,
    OrderedSetLattice, Priority, SetLattice, SingleKeyCausal, VectorClock,
};
use serde::{Deserialize, Deserializer, Serialize};
use std::cell::Cell;

/// How many lattice maps deep a decoded value may nest. Deeper input is a
/// decode error: unbounded nesting would let a crafted message overflow the
/// decoder's stack.
pub const MAX_NESTING: usize = 32;

thread_local! {
    static DECODE_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Counts one level of map nesting for as long as it lives.
struct NestingGuard;

impl NestingGuard {
    fn enter<E: serde::de::Error>() -> Result<Self, E> {
        DECODE_DEPTH.with(|depth| {
            if depth.get() >= MAX_NESTING {
                return Err(E::custom(format_args!(
                    "lattice maps nested deeper than {MAX_NESTING}"
                )));
            }
            depth.set(depth.get() + 1);
            Ok(NestingGuard)
        })
    }
}

impl Drop for NestingGuard {
    fn drop(&mut self) {
        DECODE_DEPTH.with(|depth| depth.set(depth.get() - 1));
    }
}

fn deserialize_nested_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<MapLattice<String, LatticeValue>, D::Error> {
    let _level = NestingGuard::enter::<D::Error>()?;
    MapLattice::deserialize(deserializer)
}

fn deserialize_nested_or_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<ORMapLattice<String, LatticeValue>, D::Error> {
    let _level = NestingGuard::enter::<D::Error>()?;
    ORMapLattice::deserialize(deserializer)
}

/// Any lattice the KVS can store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LatticeValue {
    /// Last-writer-wins bytes.
    Lww(Lww),
    /// Grow-only set of byte strings.
    Set(SetLattice<Vec<u8>>),
    /// Grow-only ordered set of byte strings.
    OrderedSet(OrderedSetLattice<Vec<u8>>),
    /// Maximum of integers.
    Max(Max<i64>),
    /// Minimum of integers.
    Min(Min<i64>),
    /// Increment/decrement counter.
    Counter(Counter),
    /// Map from field names to nested lattices, at most [`MAX_NESTING`]
    /// maps deep.
    Map(#[serde(deserialize_with = "deserialize_nested_map")] MapLattice<String, LatticeValue>),
    /// A vector clock.
    VectorClock(VectorClock),
    /// Single-key causal values.
    SingleKeyCausal(SingleKeyCausal),
    /// Multi-key causal values.
    MultiKeyCausal(MultiKeyCausal),
    /// Lowest-priority-wins entry.
    Priority(Priority),
    /// Observed-remove set of byte strings: elements can be removed; an
    /// add the remover did not see survives.
    ORSet(ORSetLattice<Vec<u8>>),
    /// Observed-remove map from field names to nested lattices: fields
    /// can be removed; an update the remover did not see survives. Counts
    /// towards [`MAX_NESTING`] like [`LatticeValue::Map`].
    ORMap(
        #[serde(deserialize_with = "deserialize_nested_or_map")] ORMapLattice<String, LatticeValue>,
    ),
}

/// The type of a [`LatticeValue`], without its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LatticeKind {
    Lww,
    Set,
    OrderedSet,
    Max,
    Min,
    Counter,
    Map,
    VectorClock,
    SingleKeyCausal,
    MultiKeyCausal,
    Priority,
    ORSet,
    ORMap,
}

impl LatticeKind {
    /// Every kind, in wire order.
    pub const ALL: [LatticeKind; 13] = [
        LatticeKind::Lww,
        LatticeKind::Set,
        LatticeKind::OrderedSet,
        LatticeKind::Max,
        LatticeKind::Min,
        LatticeKind::Counter,
        LatticeKind::Map,
        LatticeKind::VectorClock,
        LatticeKind::SingleKeyCausal,
        LatticeKind::MultiKeyCausal,
        LatticeKind::Priority,
        LatticeKind::ORSet,
        LatticeKind::ORMap,
    ];

    /// The name users type (CLI, config, Python): `lww`, `ordered-set`, ...
    pub fn name(self) -> &'static str {
        match self {
            LatticeKind::Lww => "lww",
            LatticeKind::Set => "set",
            LatticeKind::OrderedSet => "ordered-set",
            LatticeKind::Max => "max",
            LatticeKind::Min => "min",
            LatticeKind::Counter => "counter",
            LatticeKind::Map => "map",
            LatticeKind::VectorClock => "vector-clock",
            LatticeKind::SingleKeyCausal => "single-key-causal",
            LatticeKind::MultiKeyCausal => "multi-key-causal",
            LatticeKind::Priority => "priority",
            LatticeKind::ORSet => "or-set",
            LatticeKind::ORMap => "or-map",
        }
    }
}

impl std::fmt::Display for LatticeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LatticeKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LatticeKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = LatticeKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown lattice type `{s}`; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// A merge of two different lattice types, refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("type mismatch{}: stored value is {stored}, incoming value is {incoming}", at_path(.path))]
pub struct TypeMismatch {
    /// Where inside nested maps the types differ, as `field.field`; empty at
    /// the top level.
    pub path: String,
    /// The type already stored.
    pub stored: LatticeKind,
    /// The type of the refused value.
    pub incoming: LatticeKind,
}

fn at_path(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" at `{path}`")
    }
}

impl LatticeValue {
    /// The type of this value.
    pub fn kind(&self) -> LatticeKind {
        match self {
            LatticeValue::Lww(_) => LatticeKind::Lww,
            LatticeValue::Set(_) => LatticeKind::Set,
            LatticeValue::OrderedSet(_) => LatticeKind::OrderedSet,
            LatticeValue::Max(_) => LatticeKind::Max,
            LatticeValue::Min(_) => LatticeKind::Min,
            LatticeValue::Counter(_) => LatticeKind::Counter,
            LatticeValue::Map(_) => LatticeKind::Map,
            LatticeValue::VectorClock(_) => LatticeKind::VectorClock,
            LatticeValue::SingleKeyCausal(_) => LatticeKind::SingleKeyCausal,
            LatticeValue::MultiKeyCausal(_) => LatticeKind::MultiKeyCausal,
            LatticeValue::Priority(_) => LatticeKind::Priority,
            LatticeValue::ORSet(_) => LatticeKind::ORSet,
            LatticeValue::ORMap(_) => LatticeKind::ORMap,
        }
    }

    /// An estimate of the bytes this value occupies (payloads and entries;
    /// allocator overhead aside), for statistics and cache bounds.
    pub fn approx_bytes(&self) -> usize {
        const ENTRY: usize = 16;
        match self {
            LatticeValue::Lww(l) => l.value().len(),
            LatticeValue::Set(s) => s.reveal().iter().map(|e| e.len() + ENTRY).sum(),
            LatticeValue::OrderedSet(s) => s.reveal().iter().map(|e| e.len() + ENTRY).sum(),
            LatticeValue::Max(_) | LatticeValue::Min(_) => 8,
            LatticeValue::Counter(c) => (c.increments().len() + c.decrements().len()) * ENTRY,
            LatticeValue::Map(m) => m
                .reveal()
                .iter()
                .map(|(k, v)| k.len() + ENTRY + v.approx_bytes())
                .sum(),
            LatticeValue::VectorClock(vc) => vc.reveal().len() * ENTRY,
            LatticeValue::SingleKeyCausal(c) => c
                .versions()
                .map(|v| v.clock.reveal().len() * ENTRY + v.payload.len())
                .sum(),
            LatticeValue::MultiKeyCausal(c) => c
                .versions()
                .map(|v| {
                    let deps: usize = v
                        .payload
                        .dependencies
                        .iter()
                        .map(|(k, vc)| k.len() + vc.reveal().len() * ENTRY)
                        .sum();
                    v.clock.reveal().len() * ENTRY + deps + v.payload.value.len()
                })
                .sum(),
            LatticeValue::Priority(p) => p.reveal().map_or(0, |(_, v)| v.len() + 8),
            LatticeValue::ORSet(s) => (s.entries().iter())
                .map(|(e, p)| e.len() + ENTRY + p.tags() * ENTRY)
                .sum(),
            LatticeValue::ORMap(m) => (m.entries().iter())
                .map(|(k, f)| {
                    let value = f.value.as_ref().map_or(0, LatticeValue::approx_bytes);
                    k.len() + ENTRY + f.presence.tags() * ENTRY + value
                })
                .sum(),
        }
    }

    /// The latest wall-clock time (ms) of any timestamp in this value
    /// (last-writer-wins times, observed-remove tags), nested maps
    /// included; `None` if it holds none.
    pub fn latest_wall_ms(&self) -> Option<u64> {
        match self {
            LatticeValue::Lww(l) => Some(l.timestamp().wall_ms),
            LatticeValue::Map(m) => m
                .reveal()
                .values()
                .filter_map(LatticeValue::latest_wall_ms)
                .max(),
            LatticeValue::ORSet(s) => (s.entries().values())
                .flat_map(|p| p.times())
                .map(|t| t.wall_ms)
                .max(),
            LatticeValue::ORMap(m) => (m.entries().values())
                .flat_map(|f| {
                    let tags = f.presence.times().map(|t| t.wall_ms).max();
                    let value = f.value.as_ref().and_then(LatticeValue::latest_wall_ms);
                    tags.into_iter().chain(value)
                })
                .max(),
            _ => None,
        }
    }

    /// Merges `other` into `self` if both have the same type all the way
    /// down; otherwise returns the mismatch and leaves `self` unchanged.
    pub fn try_merge(&mut self, other: LatticeValue) -> Result<bool, TypeMismatch> {
        self.check_compatible(&other, &mut String::new())?;
        Ok(self.merge(other))
    }

    /// Whether `other` could be merged into `self` without a type mismatch.
    pub fn check_compatible(
        &self,
        other: &LatticeValue,
        path: &mut String,
    ) -> Result<(), TypeMismatch> {
        match (self, other) {
            (LatticeValue::Map(mine), LatticeValue::Map(theirs)) => {
                for (field, value) in theirs.reveal() {
                    if let Some(existing) = mine.get(field) {
                        check_field(existing, value, field, path)?;
                    }
                }
                Ok(())
            }
            (LatticeValue::ORMap(mine), LatticeValue::ORMap(theirs)) => {
                // Removed fields keep their values (and types); a removal
                // carries no value.
                for (field, theirs) in theirs.entries() {
                    let existing = mine.entries().get(field).and_then(|f| f.value.as_ref());
                    if let (Some(existing), Some(value)) = (existing, &theirs.value) {
                        check_field(existing, value, field, path)?;
                    }
                }
                Ok(())
            }
            _ if self.kind() == other.kind() => Ok(()),
            _ => Err(TypeMismatch {
                path: path.clone(),
                stored: self.kind(),
                incoming: other.kind(),
            }),
        }
    }
}

/// [`LatticeValue::check_compatible`] of one map field, its name appended
/// to `path` while it is checked.
fn check_field(
    existing: &LatticeValue,
    incoming: &LatticeValue,
    field: &str,
    path: &mut String,
) -> Result<(), TypeMismatch> {
    let len = path.len();
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(field);
    existing.check_compatible(incoming, path)?;
    path.truncate(len);
    Ok(())
}

impl Default for LatticeValue {
    fn default() -> Self {
        LatticeValue::Lww(Lww::default())
    }
}

/// The ordinal sum of the lattice types, in [`LatticeKind`] order: values of
/// one type merge as that type; between two types, the later kind wins.
///
/// This makes `LatticeValue` a lattice on its own (nested maps need one), but
/// the KVS never relies on the cross-type rule: it calls
/// [`LatticeValue::try_merge`], which refuses mixed types first.
impl Lattice for LatticeValue {
    fn merge(&mut self, other: Self) -> bool {
        use LatticeValue as V;
        match (self, other) {
            (V::Lww(a), V::Lww(b)) => a.merge(b),
            (V::Set(a), V::Set(b)) => a.merge(b),
            (V::OrderedSet(a), V::OrderedSet(b)) => a.merge(b),
            (V::Max(a), V::Max(b)) => a.merge(b),
            (V::Min(a), V::Min(b)) => a.merge(b),
            (V::Counter(a), V::Counter(b)) => a.merge(b),
            (V::Map(a), V::Map(b)) => a.merge(b),
            (V::VectorClock(a), V::VectorClock(b)) => a.merge(b),
            (V::SingleKeyCausal(a), V::SingleKeyCausal(b)) => a.merge(b),
            (V::MultiKeyCausal(a), V::MultiKeyCausal(b)) => a.merge(b),
            (V::Priority(a), V::Priority(b)) => a.merge(b),
            (V::ORSet(a), V::ORSet(b)) => a.merge(b),
            (V::ORMap(a), V::ORMap(b)) => a.merge(b),
            (mine, theirs) => {
                let grows = theirs.kind() > mine.kind();
                if grows {
                    *mine = theirs;
                }
                grows
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::{Timestamp, WriterId};

    fn lww(v: &[u8]) -> LatticeValue {
        let ts = Timestamp {
            wall_ms: 1,
            logical: 0,
            writer: WriterId(1),
        };
        LatticeValue::Lww(Lww::new(ts, v.to_vec()))
    }

    #[test]
    fn merging_a_different_type_is_refused_and_changes_nothing() {
        let mut stored = LatticeValue::Counter(Counter::default());
        let before = stored.clone();
        let err = stored.try_merge(lww(b"x")).unwrap_err();
        assert_eq!(err.stored, LatticeKind::Counter);
        assert_eq!(err.incoming, LatticeKind::Lww);
        assert_eq!(stored, before);
        assert_eq!(
            err.to_string(),
            "type mismatch: stored value is counter, incoming value is lww"
        );
    }

    #[test]
    fn a_mismatch_inside_a_nested_map_names_its_path_and_changes_nothing() {
        let inner = |v: LatticeValue| LatticeValue::Map(MapLattice::new([("b".to_string(), v)]));
        let outer = |v: LatticeValue, extra: bool| {
            let mut m = MapLattice::new([("a".to_string(), inner(v))]);
            if extra {
                m.insert("c".to_string(), LatticeValue::Max(Max::new(1)));
            }
            LatticeValue::Map(m)
        };
        let mut stored = outer(LatticeValue::Max(Max::new(3)), false);
        let before = stored.clone();
        let err = stored.try_merge(outer(lww(b"x"), true)).unwrap_err();
        assert_eq!(err.path, "a.b");
        assert_eq!(stored, before);
        assert!(err.to_string().contains("at `a.b`"));
        assert!(stored
            .try_merge(outer(LatticeValue::Max(Max::new(9)), true))
            .unwrap());
    }

    #[test]
    fn observed_remove_maps_count_towards_the_nesting_limit() {
        use crate::lattice::ORMapLattice;
        use crate::protocol::codec::{decode, encode};
        use crate::protocol::{Ack, Address, KeyOp, KvsRequest, Message, RequestId};
        let at = Timestamp::default();
        // Maps and observed-remove maps alternating, `depth` deep.
        let nested = |depth: usize| {
            (0..depth).fold(LatticeValue::Max(Max::new(1)), |inner, i| {
                if i % 2 == 0 {
                    let mut m = ORMapLattice::default();
                    m.update("k".to_string(), at, inner);
                    LatticeValue::ORMap(m)
                } else {
                    LatticeValue::Map(MapLattice::new([("k".to_string(), inner)]))
                }
            })
        };
        let put = |value| {
            Message::KvsRequest(KvsRequest {
                id: RequestId(1),
                reply_to: Address::from("a"),
                ops: vec![KeyOp::Put {
                    key: "k".to_string(),
                    value,
                }],
                ack: Ack::FirstReplica,
                shared_memory: None,
            })
        };
        let deepest = put(nested(MAX_NESTING));
        assert_eq!(decode(&encode(&deepest).unwrap()), Ok(deepest));
        let too_deep = encode(&put(nested(MAX_NESTING + 1))).unwrap();
        let err = decode(&too_deep).unwrap_err().to_string();
        assert!(err.contains("nested deeper"), "{err}");
    }

    #[test]
    fn the_observed_remove_kinds_are_appended_to_the_wire_enum() {
        use crate::lattice::{ORMapLattice, ORSetLattice};
        let tag = |v: &LatticeValue| {
            let bytes = bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap();
            bytes[0]
        };
        let at = Timestamp::default();
        // Earlier kinds keep their tags (bytes stored on disk stay valid).
        assert_eq!(tag(&lww(b"x")), 0);
        assert_eq!(tag(&LatticeValue::Priority(Default::default())), 10);
        let or_set = ORSetLattice::with_adds(at, [b"x".to_vec()]);
        assert_eq!(tag(&LatticeValue::ORSet(or_set)), 11);
        assert_eq!(tag(&LatticeValue::ORMap(ORMapLattice::default())), 12);
        assert_eq!(
            LatticeKind::ALL[11..],
            [LatticeKind::ORSet, LatticeKind::ORMap]
        );
    }

    #[test]
    fn kind_names_round_trip() {
        for kind in LatticeKind::ALL {
            assert_eq!(kind.name().parse::<LatticeKind>(), Ok(kind));
        }
        assert!("nope".parse::<LatticeKind>().unwrap_err().contains("lww"));
    }
}
