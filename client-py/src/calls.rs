//! [`Calls`]: function and DAG calls to schedulers, and their results.
//!
//! A call is one `Message::Call` (or `CallDag`) to a scheduler, chosen
//! round-robin, naming this client's reply socket. A background thread owns
//! that socket: it files each `CallResult` under its call's sequence number
//! if the call is still awaited (duplicates and results of forgotten calls
//! are dropped) and wakes the waiters. Waiting releases the GIL (the
//! caller's job) and is bounded by the waiter's timeout.

use crate::store::lock;
use anna::protocol::compute::{
    CallArgs, CallId, CallOutcome, CallRequest, Consistency, DagCallRequest, DagChanged, ReplyTo,
};
use anna::protocol::{Address, Message, Session};
use anna::transport::{Receiver, Sender};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often the reply thread checks whether its client is gone.
const STOP_CHECK: Duration = Duration::from_millis(500);

#[derive(Default)]
struct Filed {
    /// Calls sent and not yet collected.
    awaited: HashSet<u64>,
    /// Their results, once arrived, with what the calls wrote.
    done: HashMap<u64, (CallOutcome, Session)>,
}

struct Shared {
    filed: Mutex<Filed>,
    arrived: Condvar,
    stop: AtomicBool,
}

struct Out {
    tx: Sender,
    next_seq: u64,
    next_scheduler: usize,
}

/// Calls of one client.
pub struct Calls {
    caller: u64,
    schedulers: Vec<Address>,
    reply: Address,
    out: Mutex<Out>,
    shared: Arc<Shared>,
    _ctx: zmq::Context,
}

impl Calls {
    /// Binds a reply socket at `bind` and starts its thread. `caller` is
    /// unique per client (its writer id).
    pub fn start(caller: u64, schedulers: Vec<Address>, bind: &Address) -> Result<Self, String> {
        let ctx = zmq::Context::new();
        let mut rx = Receiver::bind(&ctx, bind).map_err(|e| e.to_string())?;
        let reply = rx.address().clone();
        let shared = Arc::new(Shared {
            filed: Mutex::new(Filed::default()),
            arrived: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let theirs = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("squall-call-results".into())
            .spawn(move || receive(&mut rx, caller, &theirs))
            .map_err(|e| format!("cannot start the call-results thread: {e}"))?;
        Ok(Calls {
            caller,
            schedulers,
            reply,
            out: Mutex::new(Out {
                tx: Sender::new(&ctx),
                next_seq: 0,
                next_scheduler: (caller % 1024) as usize,
            }),
            shared,
            _ctx: ctx,
        })
    }

    /// The schedulers calls go to.
    pub fn schedulers(&self) -> &[Address] {
        &self.schedulers
    }

    /// Where results come.
    pub fn reply_address(&self) -> &Address {
        &self.reply
    }

    fn reply_to(&self) -> ReplyTo {
        ReplyTo {
            address: self.reply.clone(),
            response_key: None,
        }
    }

    fn send(&self, build: impl FnOnce(CallId) -> Message) -> Result<u64, String> {
        if self.schedulers.is_empty() {
            return Err("no scheduler to send the call to".to_string());
        }
        let mut out = lock(&self.out);
        out.next_seq += 1;
        let seq = out.next_seq;
        out.next_scheduler = out.next_scheduler.wrapping_add(1);
        let to = &self.schedulers[out.next_scheduler % self.schedulers.len()];
        let msg = build(CallId {
            caller: self.caller,
            seq,
        });
        lock(&self.shared.filed).awaited.insert(seq);
        if let Err(e) = out.tx.send(to, &msg) {
            lock(&self.shared.filed).awaited.remove(&seq);
            return Err(e.to_string());
        }
        Ok(seq)
    }

    /// Sends a call of `function`; returns its sequence number.
    pub fn call(
        &self,
        function: String,
        args: CallArgs,
        timeout_ms: u32,
        session: Session,
        consistency: Consistency,
    ) -> Result<u64, String> {
        let reply = self.reply_to();
        self.send(|id| {
            Message::Call(CallRequest {
                id,
                function,
                args,
                reply,
                timeout_ms,
                session,
                consistency,
            })
        })
    }

    /// Sends a call of DAG `dag`; returns its sequence number.
    pub fn call_dag(
        &self,
        dag: String,
        args: Vec<(String, CallArgs)>,
        timeout_ms: u32,
        session: Session,
        consistency: Consistency,
    ) -> Result<u64, String> {
        let reply = self.reply_to();
        self.send(|id| {
            Message::CallDag(DagCallRequest {
                id,
                dag,
                args,
                reply,
                timeout_ms,
                session,
                consistency,
            })
        })
    }

    /// Tells every scheduler that DAG `name` changed.
    pub fn dag_changed(&self, name: &str) -> Result<(), String> {
        let mut out = lock(&self.out);
        let msg = Message::DagChanged(DagChanged {
            name: name.to_string(),
        });
        for s in &self.schedulers {
            out.tx.send(s, &msg).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Waits up to `timeout` (forever if `None`) for call `seq`'s result
    /// and collects it, with what the call wrote; `None` if it has not
    /// arrived.
    pub fn wait(&self, seq: u64, timeout: Option<Duration>) -> Option<(CallOutcome, Session)> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut filed = lock(&self.shared.filed);
        loop {
            if let Some(outcome) = filed.done.remove(&seq) {
                filed.awaited.remove(&seq);
                return Some(outcome);
            }
            if !filed.awaited.contains(&seq) {
                return None;
            }
            filed = match deadline {
                None => self
                    .shared
                    .arrived
                    .wait(filed)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.checked_duration_since(Instant::now())?;
                    self.shared
                        .arrived
                        .wait_timeout(filed, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Whether call `seq`'s result has arrived.
    pub fn done(&self, seq: u64) -> bool {
        lock(&self.shared.filed).done.contains_key(&seq)
    }

    /// Stops waiting for call `seq`: a late result is dropped.
    pub fn forget(&self, seq: u64) {
        let mut filed = lock(&self.shared.filed);
        filed.awaited.remove(&seq);
        filed.done.remove(&seq);
    }
}

impl Drop for Calls {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// The reply thread: files results until its client is dropped.
fn receive(rx: &mut Receiver, caller: u64, shared: &Shared) {
    while !shared.stop.load(Ordering::Relaxed) {
        match rx.recv(Some(STOP_CHECK)) {
            Ok(Some(Message::CallResult(result))) if result.id.caller == caller => {
                let mut filed = lock(&shared.filed);
                let seq = result.id.seq;
                if filed.awaited.contains(&seq) && !filed.done.contains_key(&seq) {
                    filed.done.insert(seq, (result.outcome, result.written));
                    shared.arrived.notify_all();
                }
            }
            Ok(_) => {}
            // A socket error is not expected to clear; do not spin on it.
            Err(_) => std::thread::sleep(STOP_CHECK),
        }
    }
}
