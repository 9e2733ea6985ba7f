//! Roles are state machines; drivers are plumbing.
//!
//! A node role (a KVS worker, a router, a scheduler, an executor's
//! bookkeeping) is a struct implementing [`Role`]: its one entry point takes
//! the time and an [`Input`] (a message, or a tick it asked for) and pushes
//! the messages it wants sent into an [`Outbox`]. It owns no socket, reads no
//! clock and draws no random number: those are the driver's.
//!
//! A [`Driver`] delivers inputs to roles. [`crate::transport::ZmqDriver`]
//! drives one role from a ZeroMQ socket in real time; a seeded simulator
//! drives many roles in one process in virtual time, deciding which messages
//! are dropped, duplicated, delayed or reordered, so a failing run replays
//! exactly from its seed.
//!
//! ```
//! use anna::protocol::{Address, Message, RequestId};
//! use anna::role::{Input, Outbox, PingResponder, Role};
//! use anna::time::Time;
//!
//! let mut role = PingResponder::default();
//! let mut out = Outbox::default();
//! let ping = Message::Ping { id: RequestId(1), reply_to: Address::from("inproc://me") };
//! role.step(Time(0), Input::Message(ping), &mut out);
//! let sent: Vec<_> = out.drain().collect();
//! assert_eq!(sent, vec![(Address::from("inproc://me"), Message::Pong { id: RequestId(1), boot: 0 })]);
//! ```

use crate::protocol::{Address, Message};
use crate::time::Time;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::time::Duration;

/// A hash map whose iteration order depends only on its contents and
/// history, not on a per-process random seed: roles use it wherever they
/// iterate, so a simulated run replays exactly. (SipHash with fixed keys:
/// as fast as `std`'s default, but not keyed against hash flooding; the
/// cluster trusts its clients.)
pub type StableHashMap<K, V> = HashMap<K, V, BuildHasherDefault<DefaultHasher>>;

/// The set counterpart of [`StableHashMap`].
pub type StableHashSet<K> = HashSet<K, BuildHasherDefault<DefaultHasher>>;

/// What a role is handed.
// A message is moved into the role once per step and a tick carries
// nothing: boxing the message would cost an allocation per message to save
// the size of a value that lives on the stack for one call.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A message arrived.
    Message(Message),
    /// The time the role asked for in [`Role::next_tick`] has come.
    Tick,
}

/// Messages a role wants sent, in order. Drivers drain it after every step
/// and keep its allocation for the next.
#[derive(Debug, Default)]
pub struct Outbox {
    pending: Vec<(Address, Message)>,
}

impl Outbox {
    /// Queues `msg` for `to`.
    pub fn send(&mut self, to: Address, msg: Message) {
        self.pending.push((to, msg));
    }

    /// Takes every queued message, oldest first.
    pub fn drain(&mut self) -> std::vec::Drain<'_, (Address, Message)> {
        self.pending.drain(..)
    }

    /// How many messages are queued.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// What a driver's sockets have counted for a role. Plain integers: each
/// counter belongs to one thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Frames received that decoded.
    pub received: u64,
    /// Frames received that did not decode, dropped.
    pub malformed: u64,
    /// Frames received that failed authentication (no seal, another key,
    /// a changed byte, a replay, a stale time), dropped.
    pub unauthenticated: u64,
    /// Messages from clients whose key lacks the right they need (or that
    /// only members send), refused (answered with the right missing).
    pub refused: u64,
    /// Messages handed to a peer's queue.
    pub sent: u64,
    /// Messages dropped because a peer's queue was full or they did not
    /// encode.
    pub dropped: u64,
    /// Microseconds spent handling inputs, cumulative: from a poll
    /// returning ready (or a tick falling due) through the role's steps and
    /// the sending of what they queued. Time blocked waiting is not counted,
    /// so the growth of this over an interval, divided by the interval, is
    /// the fraction of it the role's thread was busy. Drivers that do not
    /// measure it (the simulator) leave it at zero.
    pub busy_us: u64,
    /// Requests taken on direct connections (counted in `received` too).
    pub direct: u64,
}

impl TransportStats {
    /// The counters by name, for status replies: a role's own counters
    /// followed by these.
    pub fn named(&self) -> [(&'static str, u64); 8] {
        [
            ("received", self.received),
            ("malformed", self.malformed),
            ("unauthenticated", self.unauthenticated),
            ("refused", self.refused),
            ("sent", self.sent),
            ("dropped", self.dropped),
            ("busy_us", self.busy_us),
            ("direct", self.direct),
        ]
    }
}

/// Names counters for a status reply: `own`, then the transport's.
pub fn named_counters(
    own: &[(&'static str, u64)],
    transport: &TransportStats,
) -> Vec<(String, u64)> {
    own.iter()
        .chain(transport.named().iter())
        .map(|(k, v)| (k.to_string(), *v))
        .collect()
}

/// A node role as a state machine.
pub trait Role {
    /// Handles one input at time `now`, queueing what to send in `out`.
    fn step(&mut self, now: Time, input: Input, out: &mut Outbox);

    /// When the role next wants an [`Input::Tick`]; `None` if it only reacts
    /// to messages. Drivers sleep until then, never poll.
    fn next_tick(&self) -> Option<Time>;

    /// The driver's transport counters, handed in before a step whenever
    /// they changed, so the role can report them (and turn
    /// [`TransportStats::busy_us`] into a busy fraction). Ignored by
    /// default.
    fn observe_transport(&mut self, _stats: TransportStats) {}

    /// Where storage thread `thread`, which this role sends KVS requests
    /// to, takes them straight over TCP, if this role's client is to use
    /// that (see [`crate::client::ClientConfig::direct`]): a driver then
    /// sends them there and hands back the answers from that connection.
    /// `None` by default (a role with no KVS client).
    fn direct_endpoint(&self, _thread: &Address) -> Option<&Address> {
        None
    }
}

/// What one [`Driver::step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// At least one message was handed to a role.
    Delivered,
    /// A role's tick was due and ran.
    Ticked,
    /// Nothing arrived and nothing was due within the wait.
    Idle,
    /// The driver was told to stop (or, simulated, has nothing left to do).
    Stopped,
}

/// Tells a role that it was not running: stalled (SIGSTOP, a paused VM),
/// or starved, for longer than `tolerance` past the time it asked to run
/// again. A failure detector must not count such a pause against the
/// peers it did not hear meanwhile: their messages are waiting unread.
///
/// Call [`PauseDetector::woke`] first in every step and
/// [`PauseDetector::asked`] with the role's next tick at its end.
#[derive(Clone, Copy, Debug, Default)]
pub struct PauseDetector {
    last_ran: Option<Time>,
    expected: Option<Time>,
}

impl PauseDetector {
    /// If the role runs at `now` more than `tolerance` past the time it
    /// asked for, how long it did not run (since its previous step): the
    /// time its failure detector heard nothing through no fault of others.
    pub fn woke(&mut self, now: Time, tolerance: Duration) -> Option<Duration> {
        let late = now.saturating_since(self.expected.take()?);
        let idle = now.saturating_since(self.last_ran?);
        (late > tolerance).then_some(idle)
    }

    /// The role ran at `now` and asks to run again at `next` (its
    /// [`Role::next_tick`]).
    pub fn asked(&mut self, now: Time, next: Option<Time>) {
        self.last_ran = Some(now);
        self.expected = next;
    }
}

/// Delivers inputs to roles and sends what they return.
pub trait Driver {
    /// The error a step can end in (a broken socket, say). Malformed input
    /// is not one: drivers count and drop it.
    type Error: std::error::Error;

    /// The driver's clock: real or virtual.
    fn now(&self) -> Time;

    /// Waits at most `max_wait` (really or virtually) for the next message or
    /// due tick, hands it to its role and sends what the role queued.
    fn step(&mut self, max_wait: Duration) -> Result<Step, Self::Error>;

    /// Steps until the driver stops.
    fn run(&mut self) -> Result<(), Self::Error> {
        while self.step(Duration::from_secs(3600))? != Step::Stopped {}
        Ok(())
    }
}

/// The smallest real role: answers every [`Message::Ping`] with a
/// [`Message::Pong`] at its reply-to address and ignores everything else.
/// Health checks and the transport's tests and benchmarks use it.
#[derive(Debug, Default)]
pub struct PingResponder {
    answered: u64,
}

impl PingResponder {
    /// How many pings it has answered.
    pub fn answered(&self) -> u64 {
        self.answered
    }
}

impl Role for PingResponder {
    fn step(&mut self, _now: Time, input: Input, out: &mut Outbox) {
        if let Input::Message(Message::Ping { id, reply_to }) = input {
            self.answered += 1;
            out.send(reply_to, Message::Pong { id, boot: 0 });
        }
    }

    fn next_tick(&self) -> Option<Time> {
        None
    }
}
