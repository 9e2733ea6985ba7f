//! The cluster's shape as a lattice, and the placement of keys it implies.
//!
//! [`ClusterState`] is what routers agree on without coordinating: the
//! membership (one record per node, ordered by incarnation, then status) and
//! the per-key replication overrides. Routers merge every join, departure and
//! override into it and broadcast it; nodes merge what they receive. Any two
//! components that have seen the same updates place keys identically.
//!
//! [`Placement`] is the derived, read-only view a storage thread or router
//! consults on every request: the global ring of live nodes, one local ring
//! per thread count, and the replication factor of each key.

use crate::ids::{Address, Key, NodeId, NodeInfo};
use crate::lattice::{Lattice, MapLattice, Max, Timestamp};
use crate::ring::{key_hash, HashRing};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// A node's membership, as far as the routers know.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Serving at these thread addresses.
    Up(NodeInfo),
    /// Left (gracefully or declared failed). A later incarnation may rejoin.
    Departed,
}

/// One node's record: which incarnation, in which status. Records order by
/// incarnation first, so a restart (a new incarnation) supersedes a
/// departure, and a departure supersedes the incarnation it ends.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberRecord {
    pub incarnation: u64,
    pub status: MemberStatus,
}

/// Replication factors of one key: how many nodes, and how many threads on
/// each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicationFactor {
    pub global: u8,
    pub local: u8,
}

/// Prefix of the metadata keys that hold per-key replication overrides:
/// the override of key `K` is stored in the KVS itself, under
/// [`replication_key`]`(K)`, as a last-writer-wins value of two bytes
/// (global, local). A storage worker that merges a write of such a key
/// announces it to the routers ([`crate::protocol::Membership::SetReplication`]),
/// which carry it in the [`ClusterState`] every worker and client places
/// keys with; workers announce the overrides they hold again with every
/// anti-entropy slice, so a lost announcement or a restarted router costs
/// time, never the override.
pub const REPLICATION_PREFIX: &str = "__squall/meta/replication/";

/// The metadata key holding `key`'s replication override.
pub fn replication_key(key: &str) -> Key {
    format!("{REPLICATION_PREFIX}{key}")
}

impl ReplicationFactor {
    /// The factor as stored in a metadata key's value.
    pub fn to_bytes(self) -> Vec<u8> {
        vec![self.global, self.local]
    }

    /// A factor stored by [`ReplicationFactor::to_bytes`]; `None` for any
    /// other bytes, or a zero factor.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        match *bytes {
            [global, local] if global > 0 && local > 0 => Some(ReplicationFactor { global, local }),
            _ => None,
        }
    }
}

/// A per-key replication override; the latest (by timestamp) wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicationOverride {
    pub at: Timestamp,
    pub factor: ReplicationFactor,
}

/// Membership and replication overrides: a lattice.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    members: MapLattice<NodeId, Max<MemberRecord>>,
    replication: MapLattice<Key, Max<ReplicationOverride>>,
}

impl ClusterState {
    /// The record of `node`, if it was ever seen.
    pub fn member(&self, node: NodeId) -> Option<&MemberRecord> {
        self.members.get(&node).and_then(Max::reveal)
    }

    /// Every node ever seen, with its record.
    pub fn members(&self) -> impl Iterator<Item = (NodeId, &MemberRecord)> {
        self.members
            .reveal()
            .iter()
            .filter_map(|(id, r)| r.reveal().map(|r| (*id, r)))
    }

    /// The nodes currently up.
    pub fn live_nodes(&self) -> impl Iterator<Item = (NodeId, &NodeInfo)> {
        self.members().filter_map(|(id, r)| match &r.status {
            MemberStatus::Up(info) => Some((id, info)),
            MemberStatus::Departed => None,
        })
    }

    /// Records `node` as up in a new incarnation (one past any seen);
    /// returns the incarnation.
    pub fn record_join(&mut self, node: NodeInfo) -> u64 {
        let incarnation = self.member(node.id).map_or(1, |r| r.incarnation + 1);
        self.record_alive(node, incarnation);
        incarnation
    }

    /// Records the end of `node`'s `incarnation`; a later incarnation is
    /// not affected. Returns whether anything changed.
    pub fn record_departure(&mut self, node: NodeId, incarnation: u64) -> bool {
        self.set_member(
            node,
            MemberRecord {
                incarnation,
                status: MemberStatus::Departed,
            },
        )
    }

    /// Records that `node` says it is up in `incarnation` (a heartbeat).
    /// A departure of that incarnation, or a later incarnation, already
    /// known wins: a node declared departed is not brought back by its own
    /// word. Returns whether anything changed.
    pub fn record_alive(&mut self, node: NodeInfo, incarnation: u64) -> bool {
        let id = node.id;
        self.set_member(
            id,
            MemberRecord {
                incarnation,
                status: MemberStatus::Up(node),
            },
        )
    }

    fn set_member(&mut self, node: NodeId, record: MemberRecord) -> bool {
        self.members.insert(node, Max::new(record))
    }

    /// Sets the replication factor of `key` as of `at`.
    pub fn set_replication(&mut self, key: Key, at: Timestamp, factor: ReplicationFactor) -> bool {
        self.replication
            .insert(key, Max::new(ReplicationOverride { at, factor }))
    }

    /// The latest factor recorded for `key`, if any. A state only grows, so
    /// a deleted override is recorded as the default factor at the
    /// deletion's time: after a delete this answers `Some(default)`, not
    /// `None`.
    pub fn replication_override(&self, key: &str) -> Option<ReplicationFactor> {
        self.replication
            .reveal()
            .get(key)
            .and_then(Max::reveal)
            .map(|o| o.factor)
    }

    /// A number that grows with every membership change, so "not mine"
    /// answers and cached routes can be compared. Equal states give equal
    /// versions.
    pub fn ring_version(&self) -> u64 {
        self.members()
            .map(|(_, r)| {
                let departed = u64::from(r.status == MemberStatus::Departed);
                r.incarnation.saturating_mul(2).saturating_add(departed)
            })
            .fold(0u64, u64::saturating_add)
    }
}

impl Lattice for ClusterState {
    fn merge(&mut self, other: Self) -> bool {
        let a = self.members.merge(other.members);
        let b = self.replication.merge(other.replication);
        a | b
    }
}

/// Where keys live: the rings and replication factors derived from a
/// [`ClusterState`].
#[derive(Clone, Debug)]
pub struct Placement {
    version: u64,
    global: HashRing<NodeId>,
    nodes: BTreeMap<NodeId, NodeInfo>,
    holders: HashMap<Address, (NodeId, u64)>,
    /// Each live thread's direct endpoint, where its node serves one.
    direct: HashMap<Address, Address>,
    local: BTreeMap<usize, HashRing<u32>>,
    defaults: ReplicationFactor,
    overrides: BTreeMap<Key, ReplicationFactor>,
}

impl Placement {
    /// The placement of `state`, with `defaults` for keys without an
    /// override.
    pub fn new(state: &ClusterState, defaults: ReplicationFactor) -> Self {
        let nodes: BTreeMap<NodeId, NodeInfo> = state
            .live_nodes()
            .map(|(id, info)| (id, info.clone()))
            .collect();
        let mut local = BTreeMap::new();
        for info in nodes.values() {
            let t = info.threads.len();
            local
                .entry(t)
                .or_insert_with(|| HashRing::new(0..u32::try_from(t).unwrap_or(u32::MAX)));
        }
        let holders = state
            .members()
            .filter_map(|(id, r)| match &r.status {
                MemberStatus::Up(info) => Some((id, r.incarnation, info)),
                MemberStatus::Departed => None,
            })
            .flat_map(|(id, inc, info)| info.threads.iter().map(move |t| (t.clone(), (id, inc))))
            .collect();
        let direct = (nodes.values())
            .flat_map(|info| {
                info.threads
                    .iter()
                    .cloned()
                    .zip(info.direct.iter().cloned())
            })
            .collect();
        let overrides = state
            .replication
            .reveal()
            .iter()
            .filter_map(|(k, o)| o.reveal().map(|o| (k.clone(), o.factor)))
            .collect();
        Placement {
            version: state.ring_version(),
            global: HashRing::new(nodes.keys().copied()),
            nodes,
            holders,
            direct,
            local,
            defaults,
            overrides,
        }
    }

    /// The ring version this placement was derived at.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The live nodes.
    pub fn nodes(&self) -> &BTreeMap<NodeId, NodeInfo> {
        &self.nodes
    }

    /// The live node and incarnation a thread address belongs to.
    pub fn holder(&self, thread: &Address) -> Option<(NodeId, u64)> {
        self.holders.get(thread).copied()
    }

    /// Where a live `thread` takes clients' requests straight over TCP,
    /// if its node serves that ([`NodeInfo::direct`]).
    pub fn direct(&self, thread: &Address) -> Option<&Address> {
        self.direct.get(thread)
    }

    /// Whether `thread` held `key` here as the same incarnation it is in
    /// `now`: a thread that was not an owner, or whose node restarted since
    /// (and so lost its memory), needs the key handed to it.
    pub fn held_by_same(&self, now: &Placement, key: &str, thread: &Address) -> bool {
        self.holder(thread).is_some()
            && self.holder(thread) == now.holder(thread)
            && self.owners(key).contains(thread)
    }

    /// The replication factor of `key`, before capping by live members.
    pub fn factor(&self, key: &str) -> ReplicationFactor {
        self.overrides.get(key).copied().unwrap_or(self.defaults)
    }

    /// Every thread address holding `key`: its global owners' local owners,
    /// in ring order (the first is the primary). Into `out`, cleared first.
    pub fn owners_into(&self, key: &str, out: &mut Vec<Address>) {
        out.clear();
        let factor = self.factor(key);
        let hash = key_hash(key);
        let (global, local) = (factor.global.max(1), factor.local.max(1));
        self.global
            .for_each_owner(hash, usize::from(global), |node| {
                let Some(info) = self.nodes.get(&node) else {
                    return;
                };
                let Some(ring) = self.local.get(&info.threads.len()) else {
                    return;
                };
                ring.for_each_owner(hash, usize::from(local), |t| {
                    if let Some(addr) = info.threads.get(t as usize) {
                        out.push(addr.clone());
                    }
                });
            });
    }

    /// Every thread address holding `key`.
    pub fn owners(&self, key: &str) -> Vec<Address> {
        let mut out = Vec::new();
        self.owners_into(key, &mut out);
        out
    }

    /// Whether thread `thread` of `node` holds `key`; allocates nothing.
    pub fn is_owner(&self, key: &str, node: NodeId, thread: u32) -> bool {
        let factor = self.factor(key);
        let hash = key_hash(key);
        let Some(info) = self.nodes.get(&node) else {
            return false;
        };
        if !self
            .global
            .is_owner(hash, usize::from(factor.global.max(1)), node)
        {
            return false;
        }
        self.local
            .get(&info.threads.len())
            .is_some_and(|ring| ring.is_owner(hash, usize::from(factor.local.max(1)), thread))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::{check_laws, WriterId};

    fn node(id: u64, threads: usize) -> NodeInfo {
        NodeInfo {
            id: NodeId(id),
            threads: (0..threads)
                .map(|t| Address(format!("tcp://127.0.0.1:{}", 7000 + id * 10 + t as u64)))
                .collect(),
            boot: id,
            direct: Vec::new(),
        }
    }

    const RF: ReplicationFactor = ReplicationFactor {
        global: 2,
        local: 1,
    };

    #[test]
    fn a_restart_supersedes_a_departure_which_supersedes_its_incarnation() {
        let mut s = ClusterState::default();
        assert_eq!(s.record_join(node(1, 2)), 1);
        assert!(s.record_departure(NodeId(1), 1));
        assert_eq!(s.live_nodes().count(), 0);
        assert_eq!(s.record_join(node(1, 2)), 2);
        assert_eq!(s.live_nodes().count(), 1);
        // A late copy of the old departure changes nothing.
        assert!(!s.record_departure(NodeId(1), 1));
        assert_eq!(s.live_nodes().count(), 1);
    }

    #[test]
    fn ring_version_grows_with_every_membership_change() {
        let mut s = ClusterState::default();
        let mut last = s.ring_version();
        s.record_join(node(1, 1));
        for step in 0..3 {
            assert!(s.ring_version() > last, "step {step}");
            last = s.ring_version();
            if step % 2 == 0 {
                s.record_departure(NodeId(1), s.member(NodeId(1)).unwrap().incarnation);
            } else {
                s.record_join(node(1, 1));
            }
        }
    }

    #[test]
    fn cluster_states_obey_the_laws() {
        let mut a = ClusterState::default();
        a.record_join(node(1, 2));
        let mut b = a.clone();
        b.record_departure(NodeId(1), 1);
        let mut c = ClusterState::default();
        c.record_join(node(2, 1));
        let at = Timestamp {
            wall_ms: 5,
            logical: 0,
            writer: WriterId(1),
        };
        c.set_replication("hot".into(), at, RF);
        check_laws(&[ClusterState::default(), a, b, c]);
    }

    #[test]
    fn owners_are_global_times_local_and_capped_by_live_nodes() {
        let mut s = ClusterState::default();
        s.record_join(node(1, 4));
        let p = Placement::new(&s, RF);
        assert_eq!(p.owners("k").len(), 1, "capped at one live node");
        s.record_join(node(2, 4));
        s.record_join(node(3, 4));
        let p = Placement::new(&s, RF);
        for i in 0..200 {
            let key = format!("key-{i}");
            let owners = p.owners(&key);
            assert_eq!(owners.len(), 2);
            for (id, info) in p.nodes() {
                for (t, addr) in info.threads.iter().enumerate() {
                    assert_eq!(
                        p.is_owner(&key, *id, t as u32),
                        owners.contains(addr),
                        "{key} {addr}"
                    );
                }
            }
        }
    }

    #[test]
    fn an_override_changes_one_keys_factor() {
        let mut s = ClusterState::default();
        for id in 1..=3 {
            s.record_join(node(id, 2));
        }
        let at = Timestamp {
            wall_ms: 1,
            logical: 0,
            writer: WriterId(9),
        };
        s.set_replication(
            "hot".into(),
            at,
            ReplicationFactor {
                global: 3,
                local: 2,
            },
        );
        let p = Placement::new(&s, RF);
        assert_eq!(p.owners("hot").len(), 6);
        assert_eq!(p.owners("cold").len(), 2);
    }
}
