//! Messages of the cluster: routing questions and membership.

use super::{Address, Key, NodeId, NodeInfo, RequestId};
use crate::cluster::{ClusterState, ReplicationFactor};
use crate::lattice::Timestamp;
use serde::{Deserialize, Serialize};

/// "Which threads hold these keys?", answered at `reply_to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRequest {
    pub id: RequestId,
    pub reply_to: Address,
    pub keys: Vec<Key>,
}

/// The threads holding each asked key, under ring `ring_version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteResponse {
    pub id: RequestId,
    pub ring_version: u64,
    pub placements: Vec<(Key, Vec<Address>)>,
}

/// Changes to the set of storage nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Membership {
    /// A node asks to join (sent to a seed router). The router records a new
    /// incarnation of it and broadcasts the new [`ClusterState`].
    Join { node: NodeInfo },
    /// A node ends its incarnation gracefully, after handing its keys over.
    Depart { node: NodeId, incarnation: u64 },
    /// A node says it is alive in `incarnation`; a router that hears
    /// nothing for its failure timeout declares the incarnation departed.
    /// The node's own record travels with it: a router that restarted
    /// learns the member again, and a node declared departed while alive
    /// (a stall, a partition) is shown the state at its threads, so it
    /// learns it is out of the ring and rejoins.
    Heartbeat { node: NodeInfo, incarnation: u64 },
    /// The membership and replication overrides, from routers to everyone
    /// (and between routers). Merged, never replaced.
    State(ClusterState),
    /// Sets a key's replication factors as of `at` (the latest wins).
    SetReplication {
        key: Key,
        at: Timestamp,
        factor: ReplicationFactor,
    },
    /// Asks a storage thread of `node` to hand all its keys to the owners
    /// they will have once the node is gone, then report [`Membership::Left`]
    /// at `reply_to`. Sent by the node's own process on SIGTERM.
    Leave { node: NodeId, reply_to: Address },
    /// A thread of `node` has handed every key over; the node may depart.
    Left {
        node: NodeId,
        thread: u32,
        incarnation: u64,
    },
}
