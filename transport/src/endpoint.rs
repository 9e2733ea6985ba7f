//! [`Endpoint`]: plain request/response against one KVS endpoint (a node's
//! cache, which answers `KvsRequest`s for any key; or one storage thread,
//! which answers for the keys it owns), one request at a time.
//!
//! It keeps what a function's reads through the endpoint must see: the
//! versions it wrote (and causal dependencies it was told to require) and
//! the states its pinned reads read, for the executor to report to the
//! caller and downstream functions.

use crate::socket::{Receiver, Sender, TransportError};
use anna::client::{ClientConfig, ClientError};
use anna::lattice::{KeyState, Lattice, LatticeValue, Timestamp};
use anna::protocol::{Ack, Address, KeyOp, KvsRequest, Message, Outcome, RequestId, Session};
use std::time::{Duration, Instant};

/// One endpoint, one request at a time, each bounded by `timeout`.
pub struct Endpoint {
    target: Address,
    timeout: Duration,
    next: u64,
    rx: Receiver,
    tx: Sender,
    /// Acknowledged writes since the last [`Endpoint::take_written`].
    written: Session,
    /// States read by pinned reads since the last [`Endpoint::take_pinned`].
    pinned: Session,
    /// Reads since the last [`Endpoint::take_reads`].
    reads: Reads,
    // Dropped last: sockets close before their context.
    _ctx: zmq::Context,
}

impl Endpoint {
    /// Talks to `target`, receiving answers at `bind` (a `tcp://host:*`
    /// address the endpoint can reach).
    pub fn connect(
        target: Address,
        bind: &Address,
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        let ctx = zmq::Context::new();
        let rx = Receiver::bind(&ctx, bind)?;
        Ok(Endpoint {
            target,
            timeout,
            next: 0,
            tx: Sender::new(&ctx),
            written: Session::default(),
            pinned: Session::default(),
            reads: Reads::default(),
            rx,
            _ctx: ctx,
        })
    }

    /// The address answers come to.
    pub fn address(&self) -> &Address {
        self.rx.address()
    }

    /// The endpoint asked.
    pub fn target(&self) -> &Address {
        &self.target
    }

    /// Asks `op`, and reads an answer in shared memory (a node's cache
    /// answering this endpoint's `ipc://` address) from its file: once
    /// more, if the file is gone (the cache replaced it meanwhile).
    fn request(&mut self, op: KeyOp, ack: Ack) -> Result<Outcome, ClientError> {
        // Only a read is answered in shared memory: only a read is kept to
        // be asked again (a write's value is not copied for nothing).
        let read = matches!(op, KeyOp::Get { .. } | KeyOp::ReadState { .. }).then(|| op.clone());
        let mut next = Some(op);
        let mut tries = 0;
        loop {
            tries += 1;
            let op = next.take().or_else(|| read.clone()).ok_or_else(|| {
                ClientError::Transport(format!(
                    "{}: a write answered in shared memory",
                    self.target
                ))
            })?;
            let shared = match self.request_once(op, ack)? {
                Outcome::Shared(shared) => shared,
                outcome => return Ok(outcome),
            };
            let path = shared.path.clone();
            let filled = crate::shared::map_file(&path, shared.len)
                .map_err(|e| e.to_string())
                .and_then(|bytes| shared.fill(bytes));
            match filled {
                Ok(outcome) => return Ok(outcome),
                Err(why) if tries < 2 => {
                    tracing::debug!(%why, "a value in shared memory could not be read: asking again");
                }
                Err(why) => {
                    return Err(ClientError::Transport(format!(
                        "{}: a value in shared memory could not be read: {why}",
                        self.target
                    )))
                }
            }
        }
    }

    fn request_once(&mut self, op: KeyOp, ack: Ack) -> Result<Outcome, ClientError> {
        self.next += 1;
        let id = RequestId(self.next);
        let key = op.key().clone();
        let msg = Message::KvsRequest(KvsRequest {
            id,
            reply_to: self.rx.address().clone(),
            ops: vec![op],
            ack,
            shared_memory: None,
        });
        self.tx.send(&self.target, &msg).map_err(transport)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(ClientError::Timeout {
                    key,
                    after: self.timeout,
                    tried: self.target.to_string(),
                });
            };
            // Answers to earlier, timed-out requests are skipped.
            if let Some(Message::KvsResponse(r)) = self.rx.recv(Some(left)).map_err(transport)? {
                if r.id == id {
                    self.reads.cache_hits += r.hits;
                    let outcome = r.results.into_iter().next().map(|r| r.outcome);
                    return outcome.ok_or_else(|| {
                        ClientError::Transport(format!("{}: empty answer", self.target))
                    });
                }
            }
        }
    }

    fn check(&self, key: &str, outcome: Outcome) -> Result<Option<LatticeValue>, ClientError> {
        let key = key.to_string();
        match outcome {
            Outcome::Value(v) => Ok(Some(v)),
            Outcome::State(s) => Ok(s.visible().map(|v| v.into_owned())),
            Outcome::NotFound | Outcome::Stored { .. } => Ok(None),
            Outcome::NotMine { .. } => Err(ClientError::Transport(format!(
                "`{key}`: {} does not serve this key",
                self.target
            ))),
            Outcome::Error(error) => Err(ClientError::from_kvs(key, error, || {
                self.target.to_string()
            })),
            // `request` reads these from their files.
            Outcome::Shared(shared) => Err(ClientError::Transport(format!(
                "`{key}`: an unread answer in shared memory ({})",
                shared.path
            ))),
        }
    }

    /// What a read of `key` must see: `at_least` joined with what this
    /// endpoint wrote or must read of it (its writes, causal dependencies).
    pub fn required(&self, key: &str, at_least: Option<&KeyState>) -> Option<KeyState> {
        match (at_least, self.written.get(key)) {
            (None, None) => None,
            (Some(w), None) | (None, Some(w)) => Some(w.clone()),
            (Some(a), Some(b)) => Some(a.clone().join(b.clone())),
        }
    }

    /// Later reads of `key` (here, downstream, and by the caller) must see
    /// at least `state` (a causal dependency).
    pub fn require(&mut self, key: &str, state: KeyState) {
        self.written.record(key, state);
    }

    /// The states this endpoint's pinned reads read.
    pub fn pinned(&self) -> &Session {
        &self.pinned
    }

    /// Reads `key`, at least at `at_least` joined with what this endpoint
    /// wrote or must read of it.
    pub fn get(
        &mut self,
        key: &str,
        at_least: Option<&KeyState>,
    ) -> Result<Option<LatticeValue>, ClientError> {
        let at_least = self.required(key, at_least);
        let op = match at_least.as_ref() {
            None => KeyOp::Get {
                key: key.to_string(),
            },
            Some(w) => KeyOp::ReadState {
                key: key.to_string(),
                at_least: Some(w.clone()),
            },
        };
        let outcome = self.request(op, Ack::FirstReplica)?;
        let value = self.check(key, outcome)?;
        self.reads.count(value.as_ref());
        Ok(value)
    }

    /// Merges `value` into `key`, acknowledged at `ack` (the client's
    /// default if `None`), and records the version written.
    pub fn put(
        &mut self,
        key: &str,
        value: LatticeValue,
        ack: Option<Ack>,
    ) -> Result<(), ClientError> {
        let witness = value.witness();
        let op = KeyOp::Put {
            key: key.to_string(),
            value,
        };
        let ack = ack.unwrap_or(ClientConfig::default().put_ack);
        match self.request(op, ack)? {
            Outcome::Stored { epoch } => {
                self.written.record(key, KeyState::written(epoch, witness));
                Ok(())
            }
            other => self.check(key, other).map(|_| ()),
        }
    }

    /// Deletes `key` as of `at`, and records the tombstone.
    pub fn delete(
        &mut self,
        key: &str,
        at: Timestamp,
        ack: Option<Ack>,
    ) -> Result<(), ClientError> {
        let op = KeyOp::Delete {
            key: key.to_string(),
            at,
        };
        let ack = ack.unwrap_or(ClientConfig::default().delete_ack);
        let outcome = self.request(op, ack)?;
        self.check(key, outcome)?;
        self.written.record(key, KeyState::tombstone(at));
        Ok(())
    }

    /// The versions written (and required) since the last take.
    pub fn take_written(&mut self) -> Session {
        std::mem::take(&mut self.written)
    }

    /// Reads `key` as [`Endpoint::get`], and pins the state read: later
    /// pinned reads of the key answer the same version (repeatable read).
    pub fn get_pinned(
        &mut self,
        key: &str,
        at_least: Option<&KeyState>,
    ) -> Result<Option<LatticeValue>, ClientError> {
        let at_least = self.required(key, at_least);
        if let Some(state) = self.pinned.get(key) {
            // A pin older than what this function must now read (a causal
            // dependency learnt since) is read again.
            if at_least.as_ref().is_none_or(|w| state.covers(w)) {
                return Ok(state.visible().map(|v| v.into_owned()));
            }
        }
        let op = KeyOp::ReadState {
            key: key.to_string(),
            at_least,
        };
        match self.request(op, Ack::FirstReplica)? {
            Outcome::State(state) => {
                let value = state.visible().map(|v| v.into_owned());
                self.reads.count(value.as_ref());
                // A key absent at its first read is not pinned: a
                // reference to it waits for it to appear, as in any call.
                if value.is_some() {
                    self.pinned.repin(key, state);
                }
                Ok(value)
            }
            other => self.check(key, other),
        }
    }

    /// The reads made since the last take (for a traced call).
    pub fn take_reads(&mut self) -> Reads {
        std::mem::take(&mut self.reads)
    }

    /// The states pinned since the last take.
    pub fn take_pinned(&mut self) -> Session {
        std::mem::take(&mut self.pinned)
    }
}

/// What an endpoint's reads came to: how many, how many the endpoint (a
/// compute node's cache) answered from what it held, and the bytes of
/// the values returned (approximately: their in-memory size).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    pub reads: u32,
    pub cache_hits: u32,
    pub bytes: u64,
}

impl Reads {
    fn count(&mut self, value: Option<&LatticeValue>) {
        self.reads += 1;
        self.bytes += value.map_or(0, |v| v.approx_bytes() as u64);
    }
}

fn transport(e: TransportError) -> ClientError {
    ClientError::Transport(e.to_string())
}
