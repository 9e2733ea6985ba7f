//! [`Calls`]: function and DAG calls to schedulers, and their results.
//!
//! A call is one `Message::Call` (or `CallDag`) to a scheduler, chosen
//! round-robin among those answering, naming this client's reply socket. A
//! background thread owns that socket: it files each `CallResult` under its
//! call's sequence number if the call is still awaited (duplicates and
//! results of forgotten calls are dropped) and wakes the waiters. Waiting
//! releases the GIL (the caller's job) and is bounded by the waiter's
//! timeout.
//!
//! Failover: the thread pings every scheduler every [`PROBE`]. A scheduler
//! silent for [`SILENT`], or answering with another boot number (it
//! restarted and forgot its calls), loses its calls in flight: they are
//! sent again, same call id, to a scheduler that answers (a result that
//! comes twice is filed once; the function may run twice). When none has
//! answered for [`GIVE_UP`], calls in flight fail, and new ones are refused
//! at once, with `Unavailable` naming the schedulers.

use crate::{Receiver, Sender};
use anna::protocol::compute::{
    CallArgs, CallError, CallErrorKind, CallId, CallOutcome, CallOutput, CallRequest, CallTrace,
    Consistency, DagCallRequest, DagChanged, ReplyTo,
};
use anna::protocol::{Address, Message, RequestId, Session};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often the reply thread pings the schedulers (and checks whether
/// its client is gone).
const PROBE: Duration = Duration::from_millis(200);

/// A scheduler that has not answered a ping for this long is taken for
/// dead: its calls in flight go to another.
const SILENT: Duration = Duration::from_millis(1000);

/// With no scheduler answering for this long, calls fail `Unavailable`.
const GIVE_UP: Duration = Duration::from_secs(3);

/// Locks `m`, recovering from a panic of an earlier holder (every change
/// under these locks is whole).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the reply thread knows of the schedulers.
struct Health {
    started: Instant,
    /// Per scheduler: when it last answered, and its boot number then.
    answered: Vec<Option<(Instant, u64)>>,
    /// When any scheduler last answered (the start until one has).
    any: Instant,
    /// Calls sent and not yet answered: to which scheduler, and the message
    /// (kept to send it again if that scheduler dies).
    in_flight: HashMap<u64, (usize, Message)>,
}

impl Health {
    fn live(&self, i: usize, now: Instant) -> bool {
        match self.answered[i] {
            Some((at, _)) => now.saturating_duration_since(at) < SILENT,
            None => now.saturating_duration_since(self.started) < SILENT,
        }
    }

    /// The first scheduler from `from` (round-robin) that answers.
    fn pick(&self, from: usize, now: Instant) -> Option<usize> {
        let n = self.answered.len();
        (0..n).map(|k| (from + k) % n).find(|&i| self.live(i, now))
    }

    fn given_up(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.any) >= GIVE_UP
    }
}

/// Why a call could not be sent.
#[derive(Debug)]
pub enum SendError {
    /// No scheduler has answered for [`GIVE_UP`].
    Unavailable(String),
    /// The socket refused it.
    Failed(String),
}

/// The error of a call no scheduler would take.
fn unavailable(schedulers: &[Address]) -> String {
    let list: Vec<&str> = schedulers.iter().map(Address::as_str).collect();
    format!(
        "no scheduler answered for {} s (tried {}): is the cluster up?",
        GIVE_UP.as_secs(),
        list.join(", ")
    )
}

/// A call's result as it arrived: its outcome, what the call wrote, what
/// its functions printed, and where it spent its time (if asked).
pub type Arrived = (
    CallOutcome,
    Session,
    Vec<CallOutput>,
    Option<Box<CallTrace>>,
);

#[derive(Default)]
struct Filed {
    /// Calls sent and not yet collected.
    awaited: HashSet<u64>,
    /// Their results, once arrived, with what the calls wrote.
    done: HashMap<u64, Arrived>,
    /// Awaited calls whose results are collected by [`Calls::next_done`]
    /// (a Python future's completion thread) rather than by `wait`.
    watched: HashSet<u64>,
    /// Watched calls whose results arrived, in order of arrival.
    ready: Vec<u64>,
    /// Answers to cancellations: whether the call was dropped.
    cancels: HashMap<u64, bool>,
}

struct Shared {
    filed: Mutex<Filed>,
    arrived: Condvar,
    stop: AtomicBool,
    health: Mutex<Health>,
}

impl Shared {
    /// Files `outcome` for call `seq` if it is awaited and not yet done.
    fn file(&self, seq: u64, arrived: Arrived) {
        lock(&self.health).in_flight.remove(&seq);
        let mut filed = lock(&self.filed);
        if filed.awaited.contains(&seq) && !filed.done.contains_key(&seq) {
            filed.done.insert(seq, arrived);
            if filed.watched.contains(&seq) {
                filed.ready.push(seq);
            }
            self.arrived.notify_all();
        }
    }

    /// Waits (once) for something to be filed, until `deadline`; `None`
    /// once it has passed.
    fn wait_until<'a>(
        &self,
        filed: MutexGuard<'a, Filed>,
        deadline: Instant,
    ) -> Option<MutexGuard<'a, Filed>> {
        let left = deadline.checked_duration_since(Instant::now())?;
        let (filed, _) = self
            .arrived
            .wait_timeout(filed, left)
            .unwrap_or_else(|e| e.into_inner());
        Some(filed)
    }

    /// Files a scheduler's answer to the cancellation of call `seq`; a
    /// cancelled call is no longer awaited (no result follows).
    fn cancel_answered(&self, seq: u64, cancelled: bool) {
        if cancelled {
            lock(&self.health).in_flight.remove(&seq);
        }
        let mut filed = lock(&self.filed);
        if !filed.awaited.contains(&seq) {
            return;
        }
        if cancelled {
            filed.awaited.remove(&seq);
            filed.watched.remove(&seq);
        }
        filed.cancels.insert(seq, cancelled);
        self.arrived.notify_all();
    }
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
        let now = Instant::now();
        let shared = Arc::new(Shared {
            filed: Mutex::new(Filed::default()),
            arrived: Condvar::new(),
            stop: AtomicBool::new(false),
            health: Mutex::new(Health {
                started: now,
                answered: vec![None; schedulers.len()],
                any: now,
                in_flight: HashMap::new(),
            }),
        });
        let theirs = Arc::clone(&shared);
        let mut thread = ReplyThread {
            caller,
            schedulers: schedulers.clone(),
            reply: reply.clone(),
            tx: Sender::new(&ctx),
            next_probe: now,
        };
        std::thread::Builder::new()
            .name("squall-call-results".into())
            .spawn(move || thread.run(&mut rx, &theirs))
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

    fn send(&self, watched: bool, build: impl FnOnce(CallId) -> Message) -> Result<u64, SendError> {
        if self.schedulers.is_empty() {
            return Err(SendError::Failed(
                "no scheduler to send the call to".to_string(),
            ));
        }
        let mut out = lock(&self.out);
        out.next_scheduler = out.next_scheduler.wrapping_add(1);
        let from = out.next_scheduler % self.schedulers.len();
        let now = Instant::now();
        let index = {
            let health = lock(&self.shared.health);
            match health.pick(from, now) {
                Some(i) => i,
                None if health.given_up(now) => {
                    return Err(SendError::Unavailable(unavailable(&self.schedulers)))
                }
                // None answers yet: send anyway; the call moves to the
                // first that does, or fails when the client gives up.
                None => from,
            }
        };
        out.next_seq += 1;
        let seq = out.next_seq;
        let msg = build(CallId {
            caller: self.caller,
            seq,
        });
        {
            let mut filed = lock(&self.shared.filed);
            filed.awaited.insert(seq);
            if watched {
                filed.watched.insert(seq);
            }
        }
        if let Err(e) = out.tx.send(&self.schedulers[index], &msg) {
            let mut filed = lock(&self.shared.filed);
            filed.awaited.remove(&seq);
            filed.watched.remove(&seq);
            return Err(SendError::Failed(e.to_string()));
        }
        lock(&self.shared.health)
            .in_flight
            .insert(seq, (index, msg));
        Ok(seq)
    }

    /// Sends a call of `function` (of a method of an instance of it, with
    /// `instance` its state's key); returns its sequence number. A
    /// `watched` call's result is collected by [`Calls::next_done`].
    #[allow(clippy::too_many_arguments)]
    pub fn call(
        &self,
        function: String,
        args: CallArgs,
        timeout_ms: u32,
        session: Session,
        consistency: Consistency,
        watched: bool,
        instance: Option<String>,
        trace: bool,
    ) -> Result<u64, SendError> {
        let reply = self.reply_to();
        self.send(watched, |id| {
            Message::Call(CallRequest {
                id,
                function,
                args,
                reply,
                timeout_ms,
                session,
                consistency,
                instance,
                trace,
            })
        })
    }

    /// Sends a call of DAG `dag`; returns its sequence number (`watched`
    /// as for [`Calls::call`]).
    #[allow(clippy::too_many_arguments)]
    pub fn call_dag(
        &self,
        dag: String,
        args: Vec<(String, CallArgs)>,
        timeout_ms: u32,
        session: Session,
        consistency: Consistency,
        watched: bool,
        trace: bool,
    ) -> Result<u64, SendError> {
        let reply = self.reply_to();
        self.send(watched, |id| {
            Message::CallDag(DagCallRequest {
                id,
                dag,
                args,
                reply,
                timeout_ms,
                session,
                consistency,
                trace,
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
    pub fn wait(&self, seq: u64, timeout: Option<Duration>) -> Option<Arrived> {
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
                Some(d) => self.shared.wait_until(filed, d)?,
            };
        }
    }

    /// Waits up to `timeout` for results of watched calls and collects
    /// every one that has arrived, in order of arrival (none: empty).
    pub fn next_done(&self, timeout: Duration) -> Vec<(u64, Arrived)> {
        let deadline = Instant::now() + timeout;
        let mut filed = lock(&self.shared.filed);
        while filed.ready.is_empty() {
            let Some(more) = self.shared.wait_until(filed, deadline) else {
                return Vec::new();
            };
            filed = more;
        }
        let ready = std::mem::take(&mut filed.ready);
        let mut collected = Vec::with_capacity(ready.len());
        for seq in ready {
            filed.awaited.remove(&seq);
            filed.watched.remove(&seq);
            if let Some(arrived) = filed.done.remove(&seq) {
                collected.push((seq, arrived));
            }
        }
        collected
    }

    /// Asks the scheduler that has call `seq` to drop it if it has not
    /// started, and waits up to `timeout` for the answer: `Some(true)` if it
    /// was dropped (no result will come), `Some(false)` if it runs on,
    /// `None` if no answer came (or the call is not in flight).
    pub fn cancel(&self, seq: u64, timeout: Duration) -> Option<bool> {
        let scheduler = {
            let health = lock(&self.shared.health);
            let (index, _) = health.in_flight.get(&seq)?;
            self.schedulers[*index].clone()
        };
        let msg = Message::CancelCall {
            id: CallId {
                caller: self.caller,
                seq,
            },
            reply_to: self.reply.clone(),
        };
        lock(&self.out).tx.send(&scheduler, &msg).ok()?;
        let deadline = Instant::now() + timeout;
        let mut filed = lock(&self.shared.filed);
        loop {
            if let Some(cancelled) = filed.cancels.remove(&seq) {
                return Some(cancelled);
            }
            if filed.done.contains_key(&seq) {
                return Some(false);
            }
            filed = self.shared.wait_until(filed, deadline)?;
        }
    }

    /// Whether call `seq`'s result has arrived.
    pub fn done(&self, seq: u64) -> bool {
        lock(&self.shared.filed).done.contains_key(&seq)
    }

    /// Stops waiting for call `seq`: a late result is dropped.
    pub fn forget(&self, seq: u64) {
        lock(&self.shared.health).in_flight.remove(&seq);
        let mut filed = lock(&self.shared.filed);
        filed.awaited.remove(&seq);
        filed.watched.remove(&seq);
        filed.done.remove(&seq);
        filed.cancels.remove(&seq);
    }
}

impl Drop for Calls {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// The reply thread's own state: it pings the schedulers and moves calls.
struct ReplyThread {
    caller: u64,
    schedulers: Vec<Address>,
    reply: Address,
    tx: Sender,
    next_probe: Instant,
}

impl ReplyThread {
    /// Files results and watches the schedulers until the client is dropped.
    fn run(&mut self, rx: &mut Receiver, shared: &Shared) {
        while !shared.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= self.next_probe {
                self.next_probe = now + PROBE;
                self.probe(shared, now);
            }
            let wait = self.next_probe.saturating_duration_since(Instant::now());
            match rx.recv(Some(wait)) {
                Ok(Some(Message::CallResult(result))) if result.id.caller == self.caller => {
                    shared.file(
                        result.id.seq,
                        (result.outcome, result.written, result.output, result.trace),
                    );
                }
                Ok(Some(Message::CancelAnswer { id, cancelled })) if id.caller == self.caller => {
                    shared.cancel_answered(id.seq, cancelled)
                }
                Ok(Some(Message::Pong { id, boot })) => self.answered(shared, id, boot),
                Ok(_) => {}
                // A socket error is not expected to clear; do not spin on it.
                Err(_) => std::thread::sleep(PROBE),
            }
        }
    }

    /// Scheduler `id` answered, as boot `boot`: a new boot means it
    /// restarted and forgot the calls it was sent, which go out again.
    fn answered(&mut self, shared: &Shared, id: RequestId, boot: u64) {
        let now = Instant::now();
        let i = id.0 as usize;
        let mut health = lock(&shared.health);
        if i >= health.answered.len() {
            return;
        }
        let before = health.answered[i].replace((now, boot));
        health.any = now;
        if before.is_some_and(|(_, b)| b != boot) {
            self.resend(&mut health, |s| s == i, now);
        }
    }

    /// Pings every scheduler; calls at schedulers gone silent go to one that
    /// answers, or fail once none has answered for [`GIVE_UP`].
    fn probe(&mut self, shared: &Shared, now: Instant) {
        for (i, s) in self.schedulers.iter().enumerate() {
            let ping = Message::Ping {
                id: RequestId(i as u64),
                reply_to: self.reply.clone(),
            };
            let _ = self.tx.send(s, &ping);
        }
        let mut health = lock(&shared.health);
        if health.in_flight.is_empty() {
            return;
        }
        if health.given_up(now) {
            let failed: Vec<u64> = health.in_flight.drain().map(|(seq, _)| seq).collect();
            drop(health);
            let message = unavailable(&self.schedulers);
            for seq in failed {
                let error = CallError {
                    kind: CallErrorKind::Unavailable,
                    type_name: "Unavailable".to_string(),
                    message: message.clone(),
                    traceback: String::new(),
                    function: None,
                };
                shared.file(
                    seq,
                    (
                        CallOutcome::Error(error),
                        Session::default(),
                        Vec::new(),
                        None,
                    ),
                );
            }
            return;
        }
        let dead: Vec<usize> = (0..self.schedulers.len())
            .filter(|&i| !health.live(i, now))
            .collect();
        if !dead.is_empty() {
            self.resend(&mut health, |s| dead.contains(&s), now);
        }
    }

    /// Sends the calls in flight at the schedulers `gone` picks again, each
    /// to the next scheduler that answers (none answering: they stay, and
    /// move when one does).
    fn resend(&mut self, health: &mut Health, gone: impl Fn(usize) -> bool, now: Instant) {
        let moving: Vec<u64> = health
            .in_flight
            .iter()
            .filter(|(_, (s, _))| gone(*s))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in moving {
            let Some(to) = health.pick((seq as usize) % self.schedulers.len(), now) else {
                return;
            };
            if let Some((s, msg)) = health.in_flight.get_mut(&seq) {
                *s = to;
                let _ = self.tx.send(&self.schedulers[to], msg);
            }
        }
    }
}
