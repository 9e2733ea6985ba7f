//! Sealed frames: every frame authenticated (and, as a setting, encrypted)
//! in our own codec, with replay protection.
//!
//! A cluster has one secret ([`Secret`], 32 random bytes that `squall up`
//! writes to `STATE_DIR/keys/cluster.key`). Every key of the cluster is
//! derived from it with BLAKE3's key derivation:
//!
//! - the **cluster key** seals frames between members (storage nodes,
//!   routers, schedulers, caches, the monitor); only holders of the secret
//!   have it;
//! - the **executors' key** seals executors' frames. Executors run user
//!   code, so they hold this key (`keys/executor.key`) and not the secret:
//!   a frame under it opens as [`Principal::Executor`], which may not send
//!   what only members send ([`Message::members_only`]: membership,
//!   gossip, handoff, scaling);
//! - a **client key** per client name seals that client's requests; a
//!   member (or executor) derives it, so it needs no key list, only the
//!   names it accepts and their [`Rights`];
//! - the **reply key** seals what may reach a client (answers, user
//!   messages): every client holds it beside its own key;
//! - a **node key** per storage node adds a third tag to that node's join,
//!   heartbeats and departure; routers hold the secret and check it, so
//!   only node N speaks for node N ([`Message::speaks_for`]). A storage node
//!   is given its own node key and the members' keys, not the secret
//!   ([`Secret::node_key_file`]); caches and schedulers the members' keys
//!   ([`Secret::member_key_file`]).
//!
//! A member's own frame carries two tags: the executors' key's, then the
//! cluster key's over all of it (executors check the first, members the
//! second). A sender cannot tell a client's address from a member's, so a
//! message that may reach a client ([`Message::may_reach_clients`]) is
//! tagged with the reply key, then with the executors' key over all of it:
//! a client checks the first tag, members and executors the second, so a
//! client, which holds the reply key, cannot forge an answer to anyone but
//! another client.
//!
//! # Frame layout
//!
//! ```text
//! [version u16 LE][mode u8]                      mode 0: open (insecure)
//! [sender 16][counter u64 LE][time u32 LE][name len u8][name]   sealed
//! [body: bincode(Message), encrypted when the mode's ENCRYPTED bit is set]
//! [tag 16]                                       the mode's first key
//! [outer tag 16]                                 member, reply, node modes
//! [node tag 16]                                  node mode (name: node id)
//! ```
//!
//! Each tag is XChaCha20-Poly1305's over the header, the BLAKE3 digest of
//! the body as it travels (encrypted or not) and the tags before it, as
//! associated data; an encrypted body is sealed by the first key itself.
//! Hashing the body once instead of running each key's MAC over it keeps a
//! large value's frame at one pass over its bytes (a reply frame has two
//! tags, a node's three). The nonce is the sender's random 16-byte id and
//! its counter, so no nonce repeats under one key. A receiver refuses a
//! frame whose time is further than [`FRESHNESS`] from its own clock and a
//! counter of a sender it has already seen ([`ReplayGuard`]): a captured
//! frame cannot be delivered twice to one receiver. (Replayed to another
//! receiver it is accepted there once; KVS writes are lattice merges, so a
//! replayed write changes nothing.)
//!
//! This module is pure: the caller passes the time and the sender's random
//! id.

use super::codec::{self, DecodeError, EncodeError, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use super::compute::SYSTEM_PREFIX;
use super::compute::{CallError, CallErrorKind, CallId, CallOutcome, CallResult};
use super::{Address, KeyOp, KeyResult, KvsError, KvsResponse, Membership, Message, Outcome};
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::collections::HashMap;
use std::fmt;

/// How far a frame's time may be from the receiver's clock, either way.
pub const FRESHNESS_SECS: u64 = 120;
/// The same, as a duration, for docs and logs.
pub const FRESHNESS: std::time::Duration = std::time::Duration::from_secs(FRESHNESS_SECS);
/// How many senders a receiver remembers; past it, the longest silent is
/// forgotten (and frames of it older than its last one are refused by
/// time).
pub const MAX_SENDERS: usize = 100_000;
/// The longest client name.
pub const MAX_NAME: usize = 64;

const TAG: usize = 16;
/// The body's digest (BLAKE3) that the tags cover instead of the body.
const DIGEST: usize = 32;
const SENDER: usize = 16;
/// Version, mode, sender, counter, time, name length.
const FIXED_HEADER: usize = 2 + 1 + SENDER + 8 + 4 + 1;
const MODE_OPEN: u8 = 0;
const MODE_MEMBER: u8 = 1;
const MODE_CLIENT: u8 = 2;
const MODE_REPLY: u8 = 3;
const MODE_EXECUTOR: u8 = 4;
const MODE_NODE: u8 = 5;
const ENCRYPTED: u8 = 0x80;

/// A 32-byte key.
#[derive(Clone, PartialEq, Eq)]
pub struct FrameKey([u8; 32]);

impl fmt::Debug for FrameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FrameKey(..)")
    }
}

impl FrameKey {
    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }
}

/// The cluster's secret, from which every key is derived.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret of these (random) bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Secret {
        Secret(bytes)
    }

    fn derive(&self, context: &str) -> FrameKey {
        FrameKey(blake3::derive_key(context, &self.0))
    }

    fn cluster_key(&self) -> FrameKey {
        self.derive("squall 2026 cluster frames")
    }

    fn reply_key(&self) -> FrameKey {
        self.derive("squall 2026 reply frames")
    }

    fn compute_key(&self) -> FrameKey {
        self.derive("squall 2026 executor frames")
    }

    fn client_root(&self) -> FrameKey {
        self.derive("squall 2026 client keys")
    }

    fn node_root(&self) -> FrameKey {
        self.derive("squall 2026 node keys")
    }

    /// The key of storage node `id`: what it seals its joins, heartbeats
    /// and departures with, so that only it can speak for itself.
    pub fn node_key(&self, id: u64) -> FrameKey {
        node_key(&self.node_root(), id)
    }

    /// The key file of a member that is not given the secret (caches,
    /// schedulers): every key frames between members need, and no node's.
    pub fn member_key_file(&self) -> String {
        format!(
            "{MEMBER_FILE_TAG} {} {} {} {}\n",
            hex(&self.cluster_key().0),
            hex(&self.compute_key().0),
            hex(&self.reply_key().0),
            hex(&self.client_root().0)
        )
    }

    /// The key file of storage node `id`: a member's keys and its own node
    /// key, not the secret (it cannot speak for another node).
    pub fn node_key_file(&self, id: u64) -> String {
        format!(
            "{NODE_FILE_TAG} {id} {} {} {} {} {}\n",
            hex(&self.cluster_key().0),
            hex(&self.compute_key().0),
            hex(&self.reply_key().0),
            hex(&self.client_root().0),
            hex(&self.node_key(id).0)
        )
    }

    /// The key of client `name`.
    pub fn client_key(&self, name: &str) -> FrameKey {
        client_key(&self.client_root(), name)
    }

    /// The executors' key file: what [`Identity::parse`] reads. It holds
    /// the keys executors need and not the secret, so code running in an
    /// executor cannot speak as a storage node, router or cache.
    pub fn executor_key_file(&self) -> String {
        format!(
            "{EXECUTOR_FILE_TAG} {} {} {}\n",
            hex(&self.compute_key().0),
            hex(&self.reply_key().0),
            hex(&self.client_root().0)
        )
    }

    /// The key file of client `name`: what [`Identity::parse`] reads.
    pub fn client_key_file(&self, name: &str) -> String {
        format!(
            "{CLIENT_FILE_TAG} {name} {} {}\n",
            hex(&self.client_key(name).0),
            hex(&self.reply_key().0)
        )
    }

    /// The cluster's key file: what [`Identity::parse`] reads.
    pub fn key_file(&self) -> String {
        format!("{CLUSTER_FILE_TAG} {}\n", hex(&self.0))
    }
}

const CLUSTER_FILE_TAG: &str = "squall-cluster-secret-v1";
const CLIENT_FILE_TAG: &str = "squall-client-key-v1";
const EXECUTOR_FILE_TAG: &str = "squall-executor-key-v1";
const MEMBER_FILE_TAG: &str = "squall-member-key-v1";
const NODE_FILE_TAG: &str = "squall-node-key-v1";

fn client_key(root: &FrameKey, name: &str) -> FrameKey {
    FrameKey(*blake3::keyed_hash(&root.0, name.as_bytes()).as_bytes())
}

fn node_key(root: &FrameKey, id: u64) -> FrameKey {
    FrameKey(*blake3::keyed_hash(&root.0, id.to_string().as_bytes()).as_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Whether `name` can name a client: 1 to [`MAX_NAME`] characters of
/// `A-Z a-z 0-9 _ . -`.
pub fn valid_client_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Who a process is to the cluster: what it seals with and what it can
/// open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A member holds the secret: it seals with the cluster key and opens
    /// every frame.
    Member {
        /// The secret, for those given it (routers, the monitor, the local
        /// tools): they can tell every node's key.
        secret: Option<Secret>,
        cluster: FrameKey,
        compute: FrameKey,
        reply: FrameKey,
        /// The root of the client keys.
        clients: FrameKey,
        /// The storage node this process is, and its key.
        node: Option<(u64, FrameKey)>,
    },
    /// A client seals with its own key and opens only answers (the reply
    /// key).
    Client {
        name: String,
        key: FrameKey,
        reply: FrameKey,
    },
    /// An executor seals with the executors' key and opens what members,
    /// clients and other executors send it, but cannot seal as a member:
    /// the user code it runs cannot change the cluster's membership.
    Executor {
        compute: FrameKey,
        reply: FrameKey,
        clients: FrameKey,
    },
}

/// The keys written as `hex`, each 64 hex digits.
fn keys<const N: usize>(hex: &[&str]) -> Result<[FrameKey; N], KeyFileError> {
    if hex.len() != N {
        return Err(KeyFileError(format!(
            "{} keys on a line that holds {N}",
            hex.len()
        )));
    }
    let mut out = [const { FrameKey([0; 32]) }; N];
    for (slot, text) in out.iter_mut().zip(hex) {
        *slot =
            FrameKey(unhex(text).ok_or_else(|| KeyFileError("a key is not 64 hex digits".into()))?);
    }
    Ok(out)
}

/// Why a key file was not read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a Squall key file: {0}")]
pub struct KeyFileError(String);

impl Identity {
    /// The member identity of the cluster with `secret`.
    pub fn member(secret: Secret) -> Identity {
        Identity::Member {
            compute: secret.compute_key(),
            cluster: secret.cluster_key(),
            reply: secret.reply_key(),
            clients: secret.client_root(),
            node: None,
            secret: Some(secret),
        }
    }

    /// This identity as storage node `id`'s, where it can tell that node's
    /// key (it holds the secret or is that node's); unchanged otherwise.
    pub fn as_node(self, id: u64) -> Identity {
        match self {
            Identity::Member {
                secret: Some(secret),
                ..
            } => {
                let node = Some((id, secret.node_key(id)));
                match Identity::member(secret) {
                    Identity::Member {
                        secret,
                        cluster,
                        compute,
                        reply,
                        clients,
                        ..
                    } => Identity::Member {
                        secret,
                        cluster,
                        compute,
                        reply,
                        clients,
                        node,
                    },
                    other => other,
                }
            }
            other => other,
        }
    }

    /// The cluster's secret, if this identity holds it.
    pub fn secret(&self) -> Option<&Secret> {
        match self {
            Identity::Member { secret, .. } => secret.as_ref(),
            _ => None,
        }
    }

    /// The storage node this identity speaks for, if any.
    pub fn node(&self) -> Option<u64> {
        match self {
            Identity::Member {
                node: Some((id, _)),
                ..
            } => Some(*id),
            _ => None,
        }
    }

    /// Reads a key file: the cluster's (a member) or a client's.
    pub fn parse(text: &str) -> Result<Identity, KeyFileError> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let member = |keys: [FrameKey; 4], node| {
            let [cluster, compute, reply, clients] = keys;
            Identity::Member {
                secret: None,
                cluster,
                compute,
                reply,
                clients,
                node,
            }
        };
        match words.as_slice() {
            [CLUSTER_FILE_TAG, secret] => {
                let [secret] = keys(&[*secret])?;
                Ok(Identity::member(Secret(secret.0)))
            }
            [CLIENT_FILE_TAG, name, rest @ ..] => {
                if !valid_client_name(name) {
                    return Err(KeyFileError(format!("bad client name {name:?}")));
                }
                let [key, reply] = keys(rest)?;
                Ok(Identity::Client {
                    name: name.to_string(),
                    key,
                    reply,
                })
            }
            [MEMBER_FILE_TAG, rest @ ..] => Ok(member(keys(rest)?, None)),
            [NODE_FILE_TAG, id, rest @ ..] => {
                let id = id
                    .parse::<u64>()
                    .map_err(|_| KeyFileError(format!("bad node id {id:?}")))?;
                let [cluster, compute, reply, clients, node] = keys(rest)?;
                Ok(member([cluster, compute, reply, clients], Some((id, node))))
            }
            [EXECUTOR_FILE_TAG, rest @ ..] => {
                let [compute, reply, clients] = keys(rest)?;
                Ok(Identity::Executor {
                    compute,
                    reply,
                    clients,
                })
            }
            _ => Err(KeyFileError(format!(
                "expected a line starting {CLUSTER_FILE_TAG}, {MEMBER_FILE_TAG}, {NODE_FILE_TAG}, \
                 {CLIENT_FILE_TAG} or {EXECUTOR_FILE_TAG}"
            ))),
        }
    }

    /// Whether this identity is a member's.
    pub fn is_member(&self) -> bool {
        matches!(self, Identity::Member { .. })
    }

    /// Whether this identity is the executors'.
    pub fn is_executor(&self) -> bool {
        matches!(self, Identity::Executor { .. })
    }

    /// The client name, for a client.
    pub fn client_name(&self) -> Option<&str> {
        match self {
            Identity::Client { name, .. } => Some(name),
            Identity::Member { .. } | Identity::Executor { .. } => None,
        }
    }
}

/// What a client may do. A member may do everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rights(u8);

/// One right, named in config files and errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    /// Read keys (get, read state), including functions' and DAGs'.
    Read,
    /// Write and delete keys outside `__squall/`.
    Write,
    /// Register and delete functions and DAGs (write `__squall/` keys).
    Register,
    /// Call functions and DAGs, and message running functions.
    Call,
}

impl Right {
    /// Every right.
    pub const ALL: [Right; 4] = [Right::Read, Right::Write, Right::Register, Right::Call];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// The right's name in config files.
    pub fn name(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Write => "write",
            Right::Register => "register",
            Right::Call => "call",
        }
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Rights {
    /// Every right.
    pub fn all() -> Rights {
        Rights::of(&Right::ALL)
    }

    /// The rights listed.
    pub fn of(rights: &[Right]) -> Rights {
        Rights(rights.iter().fold(0, |bits, r| bits | r.bit()))
    }

    /// These rights and `right`.
    pub fn with(self, right: Right) -> Rights {
        Rights(self.0 | right.bit())
    }

    /// Whether `right` is granted.
    pub fn has(self, right: Right) -> bool {
        self.0 & right.bit() != 0
    }
}

/// Who sent a frame that opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A member of the cluster (or, at a client, the cluster answering).
    Member,
    /// A client with these rights.
    Client(Rights),
    /// An executor: anything but what only storage nodes, routers and the
    /// monitor send ([`Message::members_only`]).
    Executor,
    /// Storage node `0`, by its own key: the only one whose joins,
    /// heartbeats and departures a router takes ([`Message::speaks_for`]).
    Node(u64),
    /// Nobody in particular: security is off (`--insecure`).
    Anyone,
}

impl Principal {
    /// The right `msg` needs that this principal lacks, if any. Members
    /// (and anyone, with security off) may send anything; a client may
    /// send only requests, each needing its right
    /// ([`Message::needed_rights`]).
    pub fn missing_right(&self, msg: &Message) -> Result<(), Refusal> {
        if let Message::Batch(messages) = msg {
            // (Receivers check the messages of a batch one by one.)
            if let Principal::Client(_) = self {
                return Err(Refusal::MembersOnly(msg.kind()));
            }
            return messages.iter().try_for_each(|m| self.missing_right(m));
        }
        if let Some(node) = msg.speaks_for() {
            return match self {
                Principal::Anyone => Ok(()),
                Principal::Node(id) if *id == node => Ok(()),
                _ => Err(Refusal::NotTheNode(node)),
            };
        }
        let rights = match self {
            Principal::Member | Principal::Node(_) | Principal::Anyone => return Ok(()),
            Principal::Executor if msg.members_only() => {
                return Err(Refusal::MembersOnly(msg.kind()))
            }
            Principal::Executor => return Ok(()),
            Principal::Client(rights) => rights,
        };
        match msg.needed_rights() {
            None => Err(Refusal::MembersOnly(msg.kind())),
            Some(needed) => match Right::ALL
                .into_iter()
                .find(|r| needed.has(*r) && !rights.has(*r))
            {
                Some(right) => Err(Refusal::Missing(right)),
                None => Ok(()),
            },
        }
    }
}

/// Why a client's message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Only members send this kind of message.
    #[error("only cluster members send {0} messages")]
    MembersOnly(&'static str),
    /// The client lacks this right.
    #[error("the client lacks the `{0}` right")]
    Missing(Right),
    /// A join, heartbeat or departure of a node, not sealed with that
    /// node's key.
    #[error("only node {0} itself may join, heartbeat or depart as node {0}")]
    NotTheNode(u64),
}

impl Message {
    /// Whether this message may be sent to a client: answers and messages
    /// to running functions' peers. Such messages are sealed for members
    /// and clients alike.
    pub fn may_reach_clients(&self) -> bool {
        if let Message::Batch(messages) = self {
            return !messages.is_empty() && messages.iter().all(Message::may_reach_clients);
        }
        matches!(
            self,
            Message::Pong { .. }
                | Message::KvsResponse(_)
                | Message::RouteResponse(_)
                | Message::StatusReply { .. }
                | Message::CallResult(_)
                | Message::CancelAnswer { .. }
                | Message::ComputeStatusReply { .. }
                | Message::StorageReport { .. }
                | Message::MonitorStatusReply { .. }
                | Message::UserMessage(_)
        )
    }

    /// Whether only storage nodes, routers and the monitor send this:
    /// membership, replication between storage threads, scaling. An
    /// executor's key cannot send it.
    pub fn members_only(&self) -> bool {
        if let Message::Batch(messages) = self {
            return messages.iter().any(Message::members_only);
        }
        matches!(
            self,
            Message::Membership(_)
                | Message::Gossip(_)
                | Message::GossipAck { .. }
                | Message::Fetch { .. }
                | Message::FetchReply { .. }
                | Message::Scale { .. }
                | Message::Metrics { .. }
                | Message::Changes(_)
                | Message::WatchState(_)
        )
    }

    /// The storage node this message speaks for, where only that node may
    /// send it: its join, heartbeats and departure.
    pub fn speaks_for(&self) -> Option<u64> {
        match self {
            Message::Membership(Membership::Join { node })
            | Message::Membership(Membership::Heartbeat { node, .. }) => Some(node.id.0),
            Message::Membership(Membership::Depart { node, .. }) => Some(node.0),
            _ => None,
        }
    }

    /// The rights a client needs to send this message; `None` for a
    /// message only members send (membership, gossip, reports, plans).
    /// (A set, not a list: this runs on every client request, and
    /// allocates nothing.)
    pub fn needed_rights(&self) -> Option<Rights> {
        match self {
            Message::Ping { .. }
            | Message::RouteRequest(_)
            | Message::StatusRequest { .. }
            | Message::ComputeStatusRequest { .. }
            | Message::StatsRequest { .. }
            | Message::MonitorStatusRequest { .. } => Some(Rights::default()),
            Message::Call(_)
            | Message::CallDag(_)
            | Message::CancelCall { .. }
            | Message::UserMessage(_) => Some(Rights::of(&[Right::Call])),
            // A client that registered or deleted a DAG tells the
            // schedulers, which drop the plans they keep of it.
            Message::DagChanged(_) => Some(Rights::of(&[Right::Register])),
            Message::KvsRequest(request) => {
                Some(request.ops.iter().fold(Rights::default(), |needed, op| {
                    let right = match op {
                        KeyOp::Get { .. } | KeyOp::ReadState { .. } => Right::Read,
                        KeyOp::Put { key, .. } | KeyOp::Delete { key, .. }
                            if key.starts_with(SYSTEM_PREFIX) =>
                        {
                            Right::Register
                        }
                        KeyOp::Put { .. } | KeyOp::Delete { .. } => Right::Write,
                    };
                    needed.with(right)
                }))
            }
            _ => None,
        }
    }
}

impl Message {
    /// The answer to this message refused for `why`, and where it goes:
    /// a request's caller learns which right its key lacks. `None` for
    /// messages nobody waits an answer to.
    pub fn refusal(&self, why: &Refusal) -> Option<(Address, Message)> {
        let reason = format!("{why} (the rights of client keys are set in [security.clients])");
        let call_error = |id: &CallId, function: Option<&String>, to: &Address| {
            let outcome = CallOutcome::Error(CallError {
                kind: CallErrorKind::PermissionDenied,
                type_name: "PermissionError".into(),
                message: reason.clone(),
                traceback: String::new(),
                function: function.cloned(),
            });
            let result = CallResult {
                id: *id,
                outcome,
                written: Default::default(),
                output: Vec::new(),
                trace: None,
            };
            Some((to.clone(), Message::CallResult(result)))
        };
        match self {
            Message::KvsRequest(request) => {
                let results = request
                    .ops
                    .iter()
                    .map(|op| KeyResult {
                        key: op.key().clone(),
                        outcome: Outcome::Error(KvsError::PermissionDenied {
                            reason: reason.clone(),
                        }),
                    })
                    .collect();
                let response = KvsResponse {
                    id: request.id,
                    results,
                    hits: 0,
                };
                Some((request.reply_to.clone(), Message::KvsResponse(response)))
            }
            Message::Call(call) => call_error(&call.id, Some(&call.function), &call.reply.address),
            Message::CallDag(call) => call_error(&call.id, None, &call.reply.address),
            _ => None,
        }
    }
}

/// Why a frame did not open.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The frame is not well formed (version, size, body).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// An open frame reached a receiver that requires sealed ones.
    #[error("frame not sealed (is the sender running with --insecure?)")]
    NotSealed,
    /// A sealed frame reached a receiver with security off.
    #[error("sealed frame at a receiver running with --insecure")]
    UnexpectedSeal,
    /// A mode this receiver cannot open (a client's frame at a client).
    #[error("frame sealed for another kind of receiver (mode {0})")]
    WrongMode(u8),
    /// A client name this receiver does not accept.
    #[error("unknown client {0:?}")]
    UnknownClient(String),
    /// The tag does not match: another key, or a changed byte.
    #[error("authentication failed (another cluster's key, or a changed frame)")]
    BadTag,
    /// The frame's time is too far from the receiver's clock.
    #[error("frame time {skew_secs} s from this receiver's clock (more than {FRESHNESS_SECS} s)")]
    Stale { skew_secs: u64 },
    /// The sender's counter was seen before: a replay.
    #[error("replayed frame (counter {0} seen before)")]
    Replayed(u64),
    /// Too many senders at once to remember another.
    #[error("too many senders to track another")]
    TooManySenders,
}

impl OpenError {
    /// Whether the frame was refused for its authentication (rather than
    /// its shape): counted apart as `unauthenticated`.
    pub fn is_authentication(&self) -> bool {
        !matches!(self, OpenError::Decode(_))
    }
}

/// How a process seals and opens frames: its identity (none with security
/// off), the clients it accepts, and whether bodies are encrypted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Security {
    /// `None`: security off, frames go open and only open frames are
    /// accepted.
    pub identity: Option<Identity>,
    /// The clients a member accepts, by name.
    pub clients: HashMap<String, Rights>,
    /// Whether frame bodies are encrypted (else only authenticated).
    pub encrypt: bool,
}

impl Security {
    /// The rights of client `name` presenting `key_hex` (its key, as its
    /// key file holds it) to a member that does not see its frames (the
    /// HTTP gateway): every right when security is off; an error saying
    /// why when the key is not that client's, or the client is unknown.
    pub fn client_rights(&self, name: &str, key_hex: &str) -> Result<Rights, String> {
        let Some(identity) = &self.identity else {
            return Ok(Rights::of(&Right::ALL));
        };
        let Identity::Member { clients: root, .. } = identity else {
            return Err("this process cannot tell clients' keys (it holds no member key)".into());
        };
        let rights = self
            .clients
            .get(name)
            .copied()
            .ok_or_else(|| format!("no client `{name}` in [security.clients]"))?;
        let given = unhex(key_hex).ok_or("a key is 64 hex digits")?;
        let expected = client_key(root, name);
        // Compared in constant time.
        let differ = given
            .iter()
            .zip(expected.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differ != 0 {
            return Err(format!("that is not client `{name}`'s key"));
        }
        Ok(rights)
    }

    /// Security off: open frames only.
    pub fn insecure() -> Security {
        Security::default()
    }
}

/// Seals the frames of one sender.
pub struct Sealer {
    encrypt: bool,
    keys: Option<SealKeys>,
    sender: [u8; SENDER],
    counter: u64,
    /// What the tags cover, rebuilt per frame (kept for its memory).
    text: Vec<u8>,
}

struct SealKeys {
    own_mode: u8,
    /// The client's name (client frames only).
    name: Vec<u8>,
    /// The own frames' first tag (and their encryption): the executors'
    /// key for members and executors, the client's key for a client.
    inner: XChaCha20Poly1305,
    /// Members: the cluster key's tag over the rest.
    outer: Option<XChaCha20Poly1305>,
    /// Members and executors, for frames that may reach clients: the reply
    /// key's tag, then the executors' key's over it (which members and
    /// executors check, and clients cannot forge).
    reply: Option<(XChaCha20Poly1305, XChaCha20Poly1305)>,
    /// A storage node: its id (as the frame's name) and key, for its
    /// joins, heartbeats and departures.
    node: Option<(Vec<u8>, XChaCha20Poly1305)>,
}

impl Sealer {
    /// A sealer with sender id `sender` (random, fresh per sealer: with the
    /// counter it makes every nonce unique).
    pub fn new(security: &Security, sender: [u8; SENDER]) -> Sealer {
        let keys = security.identity.as_ref().map(|identity| match identity {
            Identity::Member {
                cluster,
                compute,
                reply,
                node,
                ..
            } => SealKeys {
                own_mode: MODE_MEMBER,
                name: Vec::new(),
                inner: compute.cipher(),
                outer: Some(cluster.cipher()),
                reply: Some((reply.cipher(), compute.cipher())),
                node: node
                    .as_ref()
                    .map(|(id, key)| (id.to_string().into_bytes(), key.cipher())),
            },
            Identity::Executor { compute, reply, .. } => SealKeys {
                own_mode: MODE_EXECUTOR,
                name: Vec::new(),
                inner: compute.cipher(),
                outer: None,
                reply: Some((reply.cipher(), compute.cipher())),
                node: None,
            },
            Identity::Client { name, key, .. } => SealKeys {
                own_mode: MODE_CLIENT,
                name: name.as_bytes().to_vec(),
                inner: key.cipher(),
                outer: None,
                reply: None,
                node: None,
            },
        });
        Sealer {
            encrypt: security.encrypt,
            keys,
            sender,
            counter: 0,
            text: Vec::new(),
        }
    }

    /// Encodes and seals `msg` into `buf` (replacing its contents) at time
    /// `now_secs` (seconds since the Unix epoch).
    pub fn seal_into(
        &mut self,
        msg: &Message,
        now_secs: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let Some(keys) = &self.keys else {
            return codec::encode_into(msg, buf);
        };
        self.counter += 1;
        let node = keys.node.as_ref().filter(|_| msg.speaks_for().is_some());
        let (mode, inner, outer) = match (&keys.reply, msg.may_reach_clients()) {
            (Some((reply, outer)), true) => (MODE_REPLY, reply, Some(outer)),
            _ if node.is_some() => (MODE_NODE, &keys.inner, keys.outer.as_ref()),
            _ => (keys.own_mode, &keys.inner, keys.outer.as_ref()),
        };
        let mode = if self.encrypt { mode | ENCRYPTED } else { mode };
        buf.clear();
        buf.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        buf.push(mode);
        buf.extend_from_slice(&self.sender);
        buf.extend_from_slice(&self.counter.to_le_bytes());
        buf.extend_from_slice(&(now_secs as u32).to_le_bytes());
        let name: &[u8] = match (mode & !ENCRYPTED, node) {
            (MODE_CLIENT, _) => &keys.name,
            (MODE_NODE, Some((id, _))) => id,
            _ => &[],
        };
        buf.push(name.len() as u8);
        buf.extend_from_slice(name);
        let header = buf.len();
        codec::encode_body_into(msg, buf)?;
        if buf.len() + 3 * TAG > MAX_FRAME_BYTES {
            let len = buf.len();
            buf.clear();
            return Err(EncodeError::Oversized {
                len,
                max: MAX_FRAME_BYTES,
            });
        }
        let failed = |_| EncodeError::Serialize("sealing failed".into());
        let nonce = nonce(&self.sender, self.counter);
        let encrypted = if self.encrypt {
            let (aad, body) = buf.split_at_mut(header);
            Some(inner.encrypt_inout_detached(&nonce, aad, body.into()))
        } else {
            None
        };
        // What the tags cover: the header, the body's digest, the tags
        // before them (see the module's docs).
        let text = &mut self.text;
        text.clear();
        text.extend_from_slice(&buf[..header]);
        text.extend_from_slice(blake3::hash(&buf[header..]).as_bytes());
        let tag = match encrypted {
            Some(tag) => tag,
            None => inner.encrypt_inout_detached(&nonce, text, (&mut [][..]).into()),
        }
        .map_err(failed)?;
        buf.extend_from_slice(&tag);
        text.extend_from_slice(&tag);
        for key in outer.into_iter().chain(node.map(|(_, key)| key)) {
            let tag = key
                .encrypt_inout_detached(&nonce, text, (&mut [][..]).into())
                .map_err(failed)?;
            buf.extend_from_slice(&tag);
            text.extend_from_slice(&tag);
        }
        Ok(())
    }
}

fn nonce(sender: &[u8; SENDER], counter: u64) -> XNonce {
    let mut n = [0u8; 24];
    n[..SENDER].copy_from_slice(sender);
    n[SENDER..].copy_from_slice(&counter.to_le_bytes());
    n.into()
}

/// What a receiver remembers of one sender.
#[derive(Clone, Copy, Debug)]
struct Seen {
    /// The highest counter accepted.
    top: u64,
    /// Bit `i`: counter `top - i` was accepted.
    window: u64,
    /// When its last frame was accepted (receiver's seconds).
    at: u64,
}

/// The counters seen per sender, so a frame is accepted once.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: HashMap<[u8; SENDER], Seen>,
    next_sweep: u64,
}

impl ReplayGuard {
    /// Accepts counter `counter` of `sender` once; refuses it again, and
    /// refuses counters more than 64 behind the sender's highest.
    fn accept(&mut self, sender: [u8; SENDER], counter: u64, now: u64) -> Result<(), OpenError> {
        if now >= self.next_sweep {
            // A sender silent for twice the freshness window is forgotten:
            // any frame of it from before is refused by its time.
            self.seen
                .retain(|_, s| now.saturating_sub(s.at) <= 2 * FRESHNESS_SECS);
            self.next_sweep = now + FRESHNESS_SECS;
        }
        if let Some(seen) = self.seen.get_mut(&sender) {
            if counter > seen.top {
                let shift = counter - seen.top;
                seen.window = if shift >= 64 {
                    1
                } else {
                    (seen.window << shift) | 1
                };
                seen.top = counter;
            } else {
                let back = seen.top - counter;
                if back >= 64 || seen.window & (1 << back) != 0 {
                    return Err(OpenError::Replayed(counter));
                }
                seen.window |= 1 << back;
            }
            seen.at = now;
            return Ok(());
        }
        if self.seen.len() >= MAX_SENDERS {
            return Err(OpenError::TooManySenders);
        }
        self.seen.insert(
            sender,
            Seen {
                top: counter,
                window: 1,
                at: now,
            },
        );
        Ok(())
    }
}

/// Opens the frames of one receiver.
pub struct Opener {
    secure: bool,
    /// Members: the cluster key.
    cluster: Option<XChaCha20Poly1305>,
    /// Members and executors: the executors' key.
    compute: Option<XChaCha20Poly1305>,
    /// The reply key (clients open answers with it; members and executors
    /// decrypt encrypted answers with it).
    reply: Option<XChaCha20Poly1305>,
    /// Members and executors: each accepted client's cipher and rights.
    clients: HashMap<Vec<u8>, (XChaCha20Poly1305, Rights)>,
    /// Holders of the secret: the root of every node's key, to tell a
    /// node's own frames.
    nodes: Option<FrameKey>,
    replay: ReplayGuard,
    /// What the tags cover, rebuilt per frame (kept for its memory).
    text: Vec<u8>,
}

impl Opener {
    /// An opener for `security`.
    pub fn new(security: &Security) -> Opener {
        let mut opener = Opener {
            secure: security.identity.is_some(),
            cluster: None,
            compute: None,
            reply: None,
            clients: HashMap::new(),
            nodes: None,
            replay: ReplayGuard::default(),
            text: Vec::new(),
        };
        let accept = |root: &FrameKey| {
            security
                .clients
                .iter()
                .map(|(name, rights)| {
                    let cipher = client_key(root, name).cipher();
                    (name.as_bytes().to_vec(), (cipher, *rights))
                })
                .collect()
        };
        match &security.identity {
            None => {}
            Some(Identity::Member {
                secret,
                cluster,
                compute,
                reply,
                clients,
                ..
            }) => {
                opener.cluster = Some(cluster.cipher());
                opener.compute = Some(compute.cipher());
                opener.reply = Some(reply.cipher());
                opener.clients = accept(clients);
                opener.nodes = secret.as_ref().map(Secret::node_root);
            }
            Some(Identity::Executor {
                compute,
                reply,
                clients,
            }) => {
                opener.compute = Some(compute.cipher());
                opener.reply = Some(reply.cipher());
                opener.clients = accept(clients);
            }
            Some(Identity::Client { reply, .. }) => opener.reply = Some(reply.cipher()),
        }
        opener
    }

    /// Authenticates (and decrypts, in place) `frame` at time `now_secs`
    /// and decodes its message. Never panics.
    pub fn open(
        &mut self,
        frame: &mut [u8],
        now_secs: u64,
    ) -> Result<(Message, Principal), OpenError> {
        let (body, principal) = self.authenticate(frame, now_secs)?;
        Ok((codec::decode_body(&frame[body])?, principal))
    }

    /// [`Opener::open`] without the decoding: authenticates (and decrypts,
    /// in place) `frame`, and returns where in it the message's body lies,
    /// for the caller to decode with [`decode_body`] (from a frame it can
    /// share, say). Never panics.
    pub fn authenticate(
        &mut self,
        frame: &mut [u8],
        now_secs: u64,
    ) -> Result<(std::ops::Range<usize>, Principal), OpenError> {
        if frame.len() < 3 {
            return Err(DecodeError::Truncated { len: frame.len() }.into());
        }
        let version = u16::from_le_bytes([frame[0], frame[1]]);
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::WrongVersion {
                found: version,
                expected: PROTOCOL_VERSION,
            }
            .into());
        }
        let mode = frame[2];
        if mode == MODE_OPEN {
            if self.secure {
                return Err(OpenError::NotSealed);
            }
            return Ok((codec::open_body(frame)?, Principal::Anyone));
        }
        if !self.secure {
            return Err(OpenError::UnexpectedSeal);
        }
        if frame.len() > MAX_FRAME_BYTES {
            return Err(DecodeError::Oversized {
                len: frame.len(),
                max: MAX_FRAME_BYTES,
            }
            .into());
        }
        let encrypted = mode & ENCRYPTED != 0;
        let kind = mode & !ENCRYPTED;
        let tags = TAG
            * match kind {
                MODE_MEMBER | MODE_REPLY => 2,
                MODE_NODE => 3,
                _ => 1,
            };
        let name_len = frame.get(FIXED_HEADER - 1).copied().unwrap_or(0) as usize;
        let header = FIXED_HEADER + name_len;
        if frame.len() < header + tags {
            return Err(DecodeError::Truncated { len: frame.len() }.into());
        }
        let mut sender = [0u8; SENDER];
        sender.copy_from_slice(&frame[3..3 + SENDER]);
        let counter = u64::from_le_bytes(frame[19..27].try_into().expect("8 bytes"));
        let time = u64::from(u32::from_le_bytes(
            frame[27..31].try_into().expect("4 bytes"),
        ));
        let nonce = nonce(&sender, counter);
        let end = frame.len() - tags;
        // What the tags cover: the header, the body's digest, then each
        // tag covers the tags before it.
        let text = &mut self.text;
        text.clear();
        text.extend_from_slice(&frame[..header]);
        text.extend_from_slice(blake3::hash(&frame[header..end]).as_bytes());
        text.extend_from_slice(&frame[end..]);
        let text = &*text;
        let covered = header + DIGEST;
        // Tag `n` (from 0), where this receiver holds its key.
        let check = |key: &XChaCha20Poly1305, n: usize| -> bool {
            let at = covered + n * TAG;
            let tag: [u8; TAG] = text[at..at + TAG].try_into().expect("16 bytes");
            key.decrypt_inout_detached(&nonce, &text[..at], (&mut [][..]).into(), &tag.into())
                .is_ok()
        };
        // The outer tag: it covers the whole frame, so an unencrypted
        // frame needs no further check.
        let outer =
            |key: Option<&XChaCha20Poly1305>, n: usize| -> Option<bool> { Some(check(key?, n)) };
        let (principal, inner, checked) = match kind {
            MODE_MEMBER => {
                let inner = self.compute.as_ref().ok_or(OpenError::WrongMode(kind))?;
                match outer(self.cluster.as_ref(), 1) {
                    Some(false) => return Err(OpenError::BadTag),
                    checked => (Principal::Member, inner, checked.is_some()),
                }
            }
            MODE_EXECUTOR => {
                let inner = self.compute.as_ref().ok_or(OpenError::WrongMode(kind))?;
                (Principal::Executor, inner, false)
            }
            MODE_NODE => {
                // A holder of the secret checks the node's own tag, over
                // everything; another member the cluster key's, under it.
                let inner = self.compute.as_ref().ok_or(OpenError::WrongMode(kind))?;
                let id = std::str::from_utf8(&frame[FIXED_HEADER..header])
                    .ok()
                    .and_then(|id| id.parse::<u64>().ok())
                    .ok_or(OpenError::BadTag)?;
                if let Some(nodes) = &self.nodes {
                    let key = node_key(nodes, id).cipher();
                    match outer(Some(&key), 2) {
                        Some(true) => (Principal::Node(id), inner, true),
                        _ => return Err(OpenError::BadTag),
                    }
                } else {
                    match outer(self.cluster.as_ref(), 1) {
                        Some(false) => return Err(OpenError::BadTag),
                        checked => (Principal::Member, inner, checked.is_some()),
                    }
                }
            }
            MODE_CLIENT => {
                let name = &frame[FIXED_HEADER..header];
                match self.clients.get(name) {
                    Some((cipher, rights)) => (Principal::Client(*rights), cipher, false),
                    None if self.compute.is_none() => return Err(OpenError::WrongMode(kind)),
                    None => {
                        let name = String::from_utf8_lossy(name).into_owned();
                        return Err(OpenError::UnknownClient(name));
                    }
                }
            }
            MODE_REPLY => {
                // Members and executors check the executors' outer tag (a
                // client holds the reply key and could forge the inner
                // one); clients can check only the reply key's. Nothing
                // that may reach a client is members-only, so who of the
                // two sent it does not matter.
                let inner = self.reply.as_ref().ok_or(OpenError::WrongMode(kind))?;
                match outer(self.compute.as_ref(), 1) {
                    Some(false) => return Err(OpenError::BadTag),
                    checked => (Principal::Member, inner, checked.is_some()),
                }
            }
            _ => return Err(OpenError::WrongMode(kind)),
        };
        if encrypted || !checked {
            let opened = if encrypted {
                let tag: [u8; TAG] = frame[end..end + TAG].try_into().expect("16 bytes");
                let (aad, body) = frame[..end].split_at_mut(header);
                inner
                    .decrypt_inout_detached(&nonce, aad, body.into(), &tag.into())
                    .is_ok()
            } else {
                check(inner, 0)
            };
            if !opened {
                return Err(OpenError::BadTag);
            }
        }
        let skew = time.abs_diff(now_secs);
        if skew > FRESHNESS_SECS {
            return Err(OpenError::Stale { skew_secs: skew });
        }
        self.replay.accept(sender, counter, now_secs)?;
        Ok((header..end, principal))
    }
}
