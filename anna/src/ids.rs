//! Names of things, shared by every layer: keys, addresses, request ids,
//! node identities. A leaf: it imports nothing of this crate, so the
//! protocol (which carries cluster states) and the cluster state and rings
//! (which name nodes and addresses) both depend on it and not on each
//! other.

use serde::{Deserialize, Serialize};

/// A key of the KVS.
pub type Key = String;

/// Where a message can be delivered: a ZeroMQ endpoint (`tcp://host:port`,
/// `ipc://path`, `inproc://name`) for real drivers, any unique name for the
/// simulator.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Address(pub String);

impl Address {
    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Address {
    fn from(s: &str) -> Self {
        Address(s.to_string())
    }
}

/// Matches a response to its request; unique per requester.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct RequestId(pub u64);

/// A node's identity, stable across restarts.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct NodeId(pub u64);

/// A storage node as the rings see it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// One address per worker thread, in thread order.
    pub threads: Vec<Address>,
    /// A number fresh at every start of the node's process: a restarted
    /// node (same id, same addresses, empty memory) is told apart from the
    /// incarnation it replaces by it.
    pub boot: u64,
    /// Where each worker thread also takes clients' requests straight
    /// over TCP (`tcp://host:port`, in thread order), answered on the
    /// connection they came on; empty where the node serves none
    /// (clients then use `threads`).
    pub direct: Vec<Address>,
}
