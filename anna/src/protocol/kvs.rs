//! Messages of the storage tier: reads and writes, their answers, gossip.

use super::{Address, Key, RequestId};
use crate::lattice::{KeyState, LatticeKind, LatticeValue, Timestamp, TypeMismatch};
use serde::{Deserialize, Serialize};

/// One operation on one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum KeyOp {
    /// Read the key's merged value.
    Get { key: Key },
    /// Merge `value` into the key.
    Put { key: Key, value: LatticeValue },
    /// Delete the key as of `at` (a tombstone that merges like any lattice:
    /// see [`KeyState`]).
    Delete { key: Key, at: Timestamp },
    /// Read the key's whole [`KeyState`] (delete time and counters'
    /// baseline included), answered [`Outcome::State`]. `at_least` is the
    /// version the reader needs (a session's witness, see
    /// [`crate::lattice::version`]): a storage thread answers what it holds
    /// and the reader checks; a cache answers only a state that covers it,
    /// fetching from the KVS until one does.
    ReadState {
        key: Key,
        at_least: Option<KeyState>,
    },
}

impl KeyOp {
    /// The key this operation is on.
    pub fn key(&self) -> &Key {
        match self {
            KeyOp::Get { key }
            | KeyOp::Put { key, .. }
            | KeyOp::Delete { key, .. }
            | KeyOp::ReadState { key, .. } => key,
        }
    }
}

/// When a write is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ack {
    /// After the first replica has merged it (fast; survives no crash of
    /// that replica before its next gossip).
    #[default]
    FirstReplica,
    /// After this many replicas hold it (survives `n - 1` crashes); capped
    /// by the key's replication factor.
    Replicas(u8),
    /// After every live replica holds it. The default for deletes, so that
    /// no later put lands on a replica that has not seen the delete.
    All,
    /// After the first replica has it on disk (synced): survives a crash
    /// of every process and machine. Refused (`NotDurable`) by a node that
    /// keeps no data directory.
    Durable,
}

impl std::str::FromStr for Ack {
    type Err = String;

    /// `"one"`, `"all"`, `"durable"`, or a number of replicas from 1 to
    /// 255, as users write it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "one" | "1" => Ok(Ack::FirstReplica),
            "all" => Ok(Ack::All),
            "durable" => Ok(Ack::Durable),
            n => match n.parse::<u16>() {
                Ok(k @ 2..=255) => Ok(Ack::Replicas(k as u8)),
                _ => Err(format!(
                    "unknown acknowledgement level {n:?}: use \"one\", \"all\", \"durable\" \
                     or a number of replicas from 1 to 255"
                )),
            },
        }
    }
}

/// Operations for one storage thread, answered at `reply_to`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KvsRequest {
    pub id: RequestId,
    pub reply_to: Address,
    pub ops: Vec<KeyOp>,
    pub ack: Ack,
    /// The shared memory the reader can map files of (a digest naming the
    /// machine's boot and the `tmpfs` directory, see `squall_transport::
    /// shared::identity`), if it can: a storage thread whose own files are
    /// there may answer a large value's read in a file
    /// ([`Outcome::Shared`], [`crate::shared`]). `None`: every value in
    /// the frame.
    pub shared_memory: Option<u64>,
}

/// The answer to a [`KvsRequest`]: one result per operation, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KvsResponse {
    pub id: RequestId,
    pub results: Vec<KeyResult>,
    /// Of its reads, how many a compute node's cache answered from what it
    /// held (storage nodes say 0): for traced calls.
    pub hits: u32,
}

/// The result of one [`KeyOp`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyResult {
    pub key: Key,
    pub outcome: Outcome,
}

/// What happened to one operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// A read found this value.
    Value(LatticeValue),
    /// A read found no value (never written, or deleted).
    NotFound,
    /// A write was merged (at the acknowledgement level asked) into the
    /// key's state of delete epoch `epoch` (the latest delete the replica
    /// knew; `None`: never deleted there), so a session records exactly
    /// the version the write made.
    Stored { epoch: Option<Timestamp> },
    /// This thread does not own the key under ring `ring_version`; ask a
    /// router again.
    NotMine { ring_version: u64 },
    /// The operation failed.
    Error(KvsError),
    /// A [`KeyOp::ReadState`] found this state (the default state: the key
    /// was never written here).
    State(KeyState),
    /// A read's answer (a [`Outcome::Value`] or [`Outcome::State`]) whose
    /// large last-writer-wins value is in a file of shared memory on the
    /// reader's machine instead of in this frame. Only a node's cache
    /// answers so, and only to its executors (a reader whose reply address
    /// is `ipc://`, so on the same machine); [`SharedValue::fill`] turns it
    /// back into the answer it stands for.
    Shared(SharedValue),
}

/// A read's answer with its one last-writer-wins value's bytes in a file
/// of shared memory (see [`Outcome::Shared`]).
///
/// The file is written once and never changed; its name, unguessable, is
/// told only in sealed frames, and the writer keeps it for a while after
/// it stops answering with it, so a reader that opens it at once finds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SharedValue {
    /// The answer's state, its value's bytes left out.
    pub state: KeyState,
    /// Whether the read asked for the whole state ([`Outcome::State`]) or
    /// the value alone ([`Outcome::Value`]).
    pub whole_state: bool,
    /// The file holding the value's bytes.
    pub path: String,
    /// How many bytes the value has (the file's length).
    pub len: u64,
}

impl SharedValue {
    /// The bytes of the last-writer-wins value a read's answer carries,
    /// if it is one (a [`Outcome::Value`] or [`Outcome::State`]) of at
    /// least `min_len` bytes: what could travel in shared memory instead.
    pub fn candidate(
        outcome: &Outcome,
        min_len: usize,
    ) -> Option<(crate::lattice::Timestamp, &bytes::Bytes)> {
        let value = match outcome {
            Outcome::Value(v) => v,
            Outcome::State(s) => s.value()?,
            _ => return None,
        };
        match value {
            LatticeValue::Lww(l) if l.value().len() >= min_len => Some((l.timestamp(), l.bytes())),
            _ => None,
        }
    }

    /// `outcome` (a [`SharedValue::candidate`]) with its value's bytes in
    /// the file at `path` instead; any other outcome unchanged.
    pub fn share(outcome: Outcome, path: String) -> Outcome {
        let (mut state, whole_state) = match outcome {
            Outcome::Value(v @ LatticeValue::Lww(_)) => (KeyState::from_value(v), false),
            Outcome::State(s) => (s, true),
            other => return other,
        };
        let Some(held) = state.swap_lww_bytes(bytes::Bytes::new()) else {
            return Outcome::State(state);
        };
        Outcome::Shared(SharedValue {
            state,
            whole_state,
            path,
            len: held.len() as u64,
        })
    }

    /// The answer this stands for, with `bytes` (the file's) as its
    /// value's. Fails if they are not as long as the value was.
    pub fn fill(self, bytes: bytes::Bytes) -> Result<Outcome, String> {
        if bytes.len() as u64 != self.len {
            return Err(format!(
                "shared value {}: {} bytes, expected {}",
                self.path,
                bytes.len(),
                self.len
            ));
        }
        let mut state = self.state;
        if state.swap_lww_bytes(bytes).is_none() {
            return Err(format!(
                "shared value {}: not a last-writer-wins value",
                self.path
            ));
        }
        Ok(if self.whole_state {
            Outcome::State(state)
        } else {
            match state.value() {
                Some(v) => Outcome::Value(v.clone()),
                None => Outcome::NotFound,
            }
        })
    }
}

/// Why an operation failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum KvsError {
    /// The write's lattice type differs from the stored one.
    #[error(transparent)]
    TypeMismatch(#[from] TypeMismatch),
    /// The requested acknowledgement level was not reached in time.
    #[error("only {acked} of {wanted} replicas acknowledged in time")]
    AckTimeout { acked: u8, wanted: u8 },
    /// A read asked for a type the key does not hold.
    #[error("key holds {stored}, not {wanted}")]
    WrongKind {
        stored: LatticeKind,
        wanted: LatticeKind,
    },
    /// A read could not reach the version it asked for (`at_least`) in
    /// time: no replica reached held the caller's own write yet.
    #[error("no replica reached holds the version this read must see")]
    Stale,
    /// A put's value (or a relayed argument or result) is larger than the
    /// receiver's `[limits] max_value_bytes`.
    #[error("value of {size} bytes is over the limit of {limit} bytes ([limits] max_value_bytes)")]
    TooLarge { size: u64, limit: u64 },
    /// A write's last-writer-wins timestamp is further ahead of the
    /// receiving node's clock than `[limits] max_clock_skew`.
    #[error(
        "timestamp {ahead_ms} ms ahead of this node's clock, past the allowed skew of {max_ms} ms ([limits] max_clock_skew): is the writer's clock wrong?"
    )]
    ClockAhead { ahead_ms: u64, max_ms: u64 },
    /// A write acknowledged at `durable` did not reach the disk.
    #[error("not durable: {reason}")]
    NotDurable { reason: String },
    /// The replica holds the key on disk only and could not read it.
    #[error("the replica could not read the key from its disk: {reason}")]
    DiskRead { reason: String },
    /// The client's key lacks the right this operation needs.
    #[error("permission denied: {reason}")]
    PermissionDenied { reason: String },
}

/// Merged key states pushed to other replicas (and subscribed caches).
/// Applying a gossip message twice, late, or never changes only how soon
/// replicas agree, not what they agree on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gossip {
    /// The sending thread.
    pub from: Address,
    pub entries: Vec<(Key, KeyState)>,
    /// If set, the receiver answers [`crate::protocol::Message::GossipAck`]
    /// with this id once it has merged every entry: used where the sender
    /// must know a replica holds the data (acknowledged puts, key handoff).
    pub ack: Option<RequestId>,
}
