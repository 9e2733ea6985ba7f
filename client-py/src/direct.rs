//! [`Direct`]: plain request/response against one KVS endpoint (a node's
//! cache, which answers `KvsRequest`s for any key), for the executor's
//! user library; and [`send_user_message`], a message to another executor.

use crate::errors::KvsFailure;
use crate::store::{lock, Kvs};
use anna::client::{ClientConfig, ClientError};
use anna::lattice::{KeyState, Lattice, LatticeValue, Timestamp};
use anna::protocol::{
    compute::UserMessage, Ack, Address, KeyOp, KvsRequest, Message, Outcome, RequestId, Session,
};
use squall_transport::{Receiver, Sender, TransportError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One endpoint, one request at a time, each bounded by `timeout`.
pub struct Direct {
    target: Address,
    timeout: Duration,
    next: u64,
    rx: Receiver,
    tx: Sender,
    /// Acknowledged writes since the last [`Kvs::take_written`].
    written: Session,
    /// States read by pinned reads since the last [`Kvs::take_pinned`].
    pinned: Session,
    // Dropped last: sockets close before their context.
    _ctx: zmq::Context,
}

impl Direct {
    /// Talks to `target`, receiving answers at `bind` (a `tcp://host:*`
    /// address the endpoint can reach).
    pub fn connect(target: Address, bind: &Address, timeout: Duration) -> Result<Self, KvsFailure> {
        let ctx = zmq::Context::new();
        let rx = Receiver::bind(&ctx, bind)?;
        Ok(Direct {
            target,
            timeout,
            next: 0,
            tx: Sender::new(&ctx),
            written: Session::default(),
            pinned: Session::default(),
            rx,
            _ctx: ctx,
        })
    }

    /// The address answers come to.
    pub fn address(&self) -> &Address {
        self.rx.address()
    }

    fn request(&mut self, op: KeyOp, ack: Ack) -> Result<Outcome, KvsFailure> {
        self.next += 1;
        let id = RequestId(self.next);
        let key = op.key().clone();
        let msg = Message::KvsRequest(KvsRequest {
            id,
            reply_to: self.rx.address().clone(),
            ops: vec![op],
            ack,
        });
        self.tx.send(&self.target, &msg)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(ClientError::Timeout {
                    key,
                    after: self.timeout,
                    tried: self.target.to_string(),
                }
                .into());
            };
            // Answers to earlier, timed-out requests are skipped.
            if let Some(Message::KvsResponse(r)) = self.rx.recv(Some(left))? {
                if r.id == id {
                    let outcome = r.results.into_iter().next().map(|r| r.outcome);
                    return outcome.ok_or_else(|| {
                        ClientError::Transport(format!("{}: empty answer", self.target)).into()
                    });
                }
            }
        }
    }

    fn check(&self, key: &str, outcome: Outcome) -> Result<Option<LatticeValue>, KvsFailure> {
        let key = key.to_string();
        match outcome {
            Outcome::Value(v) => Ok(Some(v)),
            Outcome::State(s) => Ok(s.visible().map(|v| v.into_owned())),
            Outcome::NotFound | Outcome::Stored { .. } => Ok(None),
            Outcome::NotMine { .. } => Err(ClientError::Transport(format!(
                "`{key}`: {} does not serve this key",
                self.target
            ))
            .into()),
            Outcome::Error(error) => {
                Err(ClientError::from_kvs(key, error, || self.target.to_string()).into())
            }
        }
    }
}

impl Direct {
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
}

impl Kvs for Direct {
    fn get(
        &mut self,
        key: &str,
        at_least: Option<&KeyState>,
    ) -> Result<Option<LatticeValue>, KvsFailure> {
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
        self.check(key, outcome)
    }

    fn put(&mut self, key: &str, value: LatticeValue, ack: Option<Ack>) -> Result<(), KvsFailure> {
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

    fn delete(&mut self, key: &str, at: Timestamp, ack: Option<Ack>) -> Result<(), KvsFailure> {
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

    fn take_written(&mut self) -> Session {
        std::mem::take(&mut self.written)
    }

    fn get_pinned(
        &mut self,
        key: &str,
        at_least: Option<&KeyState>,
    ) -> Result<Option<LatticeValue>, KvsFailure> {
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

    fn take_pinned(&mut self) -> Session {
        std::mem::take(&mut self.pinned)
    }
}

/// The process's sender of user messages, with its context.
struct UserSender {
    tx: Sender,
    _ctx: zmq::Context,
}

static USER_SENDER: OnceLock<Mutex<UserSender>> = OnceLock::new();

/// Sends `payload` to the executor at `to` as a `UserMessage` from `from`,
/// without blocking (a full queue drops it, with an error).
pub fn send_user_message(
    to: &Address,
    from: &Address,
    payload: Vec<u8>,
) -> Result<(), TransportError> {
    let sender = USER_SENDER.get_or_init(|| {
        let ctx = zmq::Context::new();
        Mutex::new(UserSender {
            tx: Sender::new(&ctx),
            _ctx: ctx,
        })
    });
    let msg = Message::UserMessage(UserMessage {
        from: from.clone(),
        payload,
    });
    lock(sender).tx.send(to, &msg)
}
