//! Lattices: the values the KVS stores.
//!
//! Every value in Squall is a join-semilattice. A write is a merge, a replica
//! catching up is a merge, a cache refreshed by gossip is a merge. Because
//! merge is associative, commutative and idempotent, replicas that have seen
//! the same set of updates hold the same value whatever order, duplication or
//! batching the network imposed. [`check_laws`] is the public contract: every
//! type's tests call it, with random values from proptest.
//!
//! This module is pure data and merge logic: no socket, no clock, no
//! randomness. Time and writer identities are passed in by the caller.
//!
//! # Layout
//!
//! - [`lww`]: hybrid-logical-clock timestamps and last-writer-wins.
//! - [`set`]: grow-only set and ordered set.
//! - [`or_set`]: the observed-remove set, a set that shrinks (add wins
//!   over a concurrent remove), and [`Presence`], its per-element tags.
//! - [`or_map`]: the observed-remove map, a map of lattices whose fields
//!   can be removed.
//! - [`element`]: how a set element says whether it is text or bytes.
//! - [`order`]: max and min of an ordered type.
//! - [`counter`]: a counter of per-writer increments and decrements.
//! - [`map`]: a map whose values are lattices, merged key by key.
//! - [`vector_clock`]: vector clocks and their causal order.
//! - [`causal`]: single-key and multi-key causal values.
//! - [`priority`]: the entry with the lowest priority wins.
//! - [`value`]: [`LatticeValue`], the one tagged enum that carries any of the
//!   above on the wire, and [`TypeMismatch`].
//! - [`key_state`]: [`KeyState`], a key's value with delete tombstones.
//! - [`version`]: witnesses of writes and the order that checks them
//!   (`covers`), counters' baselines after a delete.
//! - [`laws`]: the law checker.

pub mod causal;
pub mod counter;
pub mod element;
pub mod key_state;
pub mod laws;
pub mod lww;
pub mod map;
pub mod or_map;
pub mod or_set;
pub mod order;
pub mod priority;
pub mod set;
pub mod value;
pub mod vector_clock;
pub mod version;

pub use causal::{Causal, CausalVersion, Dependent, MultiKeyCausal, SingleKeyCausal};
pub use counter::Counter;
pub use key_state::KeyState;
pub use laws::check_laws;
pub use lww::{Hlc, Lww, Timestamp};
pub use map::MapLattice;
pub use or_map::ORMapLattice;
pub use or_set::{ORSetLattice, Presence};
pub use order::{Max, Min};
pub use priority::{Priority, PriorityKey};
pub use set::{OrderedSetLattice, SetLattice};
pub use value::{LatticeKind, LatticeValue, TypeMismatch};
pub use vector_clock::{CausalOrder, VectorClock};

use serde::{Deserialize, Serialize};

/// A join-semilattice.
///
/// `merge` replaces `self` with the least upper bound of `self` and `other`
/// and reports whether `self` grew. It must obey, for all `a`, `b`, `c`:
///
/// - associativity: `(a ⊔ b) ⊔ c == a ⊔ (b ⊔ c)`,
/// - commutativity: `a ⊔ b == b ⊔ a`,
/// - idempotence: `a ⊔ a == a`,
///
/// and report `true` exactly when the value changed. `Default` is bottom:
/// merging bottom into anything changes nothing.
pub trait Lattice: Clone + PartialEq + Default + std::fmt::Debug {
    /// Merges `other` into `self`; returns whether `self` changed.
    fn merge(&mut self, other: Self) -> bool;

    /// `self ⊔ other`, by value.
    fn join(mut self, other: Self) -> Self {
        self.merge(other);
        self
    }
}

/// The identity of a writer: a client, an executor, a KVS thread.
///
/// Writer ids break ties between equal hybrid-logical-clock times and name the
/// entries of counters and vector clocks. They must be unique per writer; a
/// random 64-bit id per process is the usual choice, made by the caller.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct WriterId(pub u64);

impl std::fmt::Display for WriterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
