//! The seeded deterministic simulator: many roles, one process, virtual
//! time, a faulty network, and a failing run that replays from its seed.
//!
//! [`Sim`] is the second [`Driver`](crate::role::Driver) (the first,
//! [`ZmqDriver`](crate::transport::ZmqDriver), drives one role on real
//! sockets in real time). It hosts roles at [`Address`]es and plays the
//! network between them, so a test can run a cluster of KVS nodes, routers
//! and clients through loss, duplication, reordering, partitions and crashes
//! in milliseconds, and check what the protocol promises: that replicas
//! converge once the network is quiet again.
//!
//! # The model
//!
//! - **Time** is virtual. It starts at [`ORIGIN`] (November 2023, so hybrid
//!   logical clocks see realistic wall times) and jumps from one event to
//!   the next: the earliest message arrival or the earliest tick a role asks
//!   for with [`Role::next_tick`]. A tick asked for in the past comes at
//!   `now`; time never goes back.
//! - **Sending** draws the message's fate at once: lost with the drop rate,
//!   otherwise sent twice with the duplicate rate, each copy delayed by a
//!   latency drawn from the configured range ([`Network`]). Messages
//!   overtake each other when their latencies differ; that is all the
//!   reordering there is. A hop takes at least 1 µs, so every exchange
//!   moves time on.
//! - **Arrival** checks the faults of that moment: a partition or isolation
//!   between the ends blocks the message ([`Sim::partition`],
//!   [`Sim::partition_groups`],
//!   [`Sim::isolate`], [`Sim::heal`]); a crashed destination loses it
//!   ([`Sim::crash`]); an address that hosts no role and never crashed keeps
//!   it in an outside mailbox that the test reads ([`Sim::take_outside`]).
//!   Tests speak to roles from such outside addresses with [`Sim::send`],
//!   through the same faulty network.
//! - **Pausing** a role ([`Sim::pause`]) is a SIGSTOP: it neither ticks
//!   nor receives; messages arriving for it queue, and [`Sim::resume`]
//!   runs its overdue tick first, then hands them over in arrival order,
//!   as the ZeroMQ driver does after a SIGCONT.
//! - **Clocks** agree unless a test skews one ([`Sim::skew`]): the role
//!   at a skewed address is handed `now` plus its [`Skew`] in every step,
//!   and the times it asks to tick at are read on its own clock, so it
//!   ticks as often as any other, just reading another time. Its
//!   timestamps run ahead or behind everyone else's; the simulator's own
//!   time (latencies, partitions, the order of events) is unaffected.
//! - **Crashing** removes the role and its state; messages in flight to it
//!   are lost and its ticks stop. [`Sim::add`] at the same address is a
//!   restart with whatever fresh role the test hands in.
//! - **One instant** may hold several events. Messages go first, in the
//!   order they were sent; then ticks, in address order.
//! - **A spinning role**, one that keeps asking for a tick at or before its
//!   previous one (a deadline in the past that nothing clears), would hold
//!   virtual time still, and would spin a real driver's CPU. The simulator
//!   lets it have [`SimConfig::max_stale_ticks`] such ticks in a row, then
//!   backs it off: each further stale tick comes [`SPIN_BACKOFF_MIN`] after
//!   the previous one, doubling up to [`SPIN_BACKOFF_MAX`], until the role
//!   asks for a later time. Time keeps moving, the run stays fast, and the
//!   bug shows: [`SimStats::throttled_ticks`] counts the delayed ticks and a
//!   warning names the role.
//!
//! # Determinism
//!
//! Equal [`SimConfig`]s, equal roles and equal test actions give equal runs,
//! event for event, because:
//!
//! - one ChaCha generator, seeded from [`SimConfig::seed`], makes every
//!   random choice, in the order events happen (tests that need randomness
//!   draw from it too, through [`Sim::rng`]);
//! - every collection the simulator iterates is a `BTreeMap` or `BTreeSet`,
//!   and ties in time are broken by send sequence numbers or address order;
//! - nothing reads a clock or the environment.
//!
//! Roles must keep their side: no clock, no unseeded randomness, and no
//! iteration over a randomly keyed `HashMap` where the order changes what
//! they send (a `BTreeMap`, or a map with a fixed hasher, iterates the same
//! in every run). Give a role its own randomness as a seed drawn from
//! [`Sim::rng`] when it is built.
//!
//! [`Sim::trace_digest`] folds every event (time, ends, message kind, fate)
//! into one number: equal runs have equal digests, so a test asserts replay
//! by comparing two. [`Sim::trace_dump`] prints the latest events for a
//! failure message.
//!
//! # Replaying a failing seed
//!
//! A test that runs many seeds reads the environment variable
//! `SQUALL_SIM_SEED` and, when it is set, runs that one seed only; every
//! failure message names its seed and carries [`Sim::trace_dump`]. So
//!
//! ```text
//! SQUALL_SIM_SEED=1234 cargo test -p anna --test sim gossip
//! ```
//!
//! re-runs exactly the failing run, as often as debugging needs. (Reading
//! the variable is the test's business, never this module's.) A seed
//! replays on the same code and the same dependency versions.
//!
//! # Roles of several kinds
//!
//! A `Sim<R>` hosts one role type. To run nodes, routers and clients
//! together, wrap them in an enum that implements [`Role`] by delegating.
//!
//! ```
//! use anna::protocol::{Address, Message, RequestId};
//! use anna::role::PingResponder;
//! use anna::sim::{Sim, SimConfig};
//! use std::time::Duration;
//!
//! let mut sim: Sim<PingResponder> = SimConfig::new(7).build().unwrap();
//! let (server, tester) = (Address::from("server"), Address::from("tester"));
//! sim.add(server.clone(), PingResponder::default());
//! let ping = Message::Ping { id: RequestId(1), reply_to: tester.clone() };
//! sim.send(tester.clone(), server.clone(), ping);
//! sim.run_for(Duration::from_millis(100));
//! assert_eq!(sim.take_outside(&tester), vec![Message::Pong { id: RequestId(1), boot: 0 }]);
//! assert_eq!(sim.role(&server).unwrap().answered(), 1);
//! ```
//!
//! # One role by hand
//!
//! [`KvsDouble`] is the KVS for a test that steps one role itself: a real
//! storage thread (and its router) answering the requests the role sent.

mod config;
mod double;
mod faults;
mod run;
mod trace;

pub use config::{Network, SimConfig, SimError};
pub use double::KvsDouble;
pub use trace::{Fate, TraceEvent};

use crate::protocol::{Address, Message};
use crate::role::{Outbox, Role};
use crate::time::Time;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;
use trace::Trace;

/// Where virtual time starts: 1,700,000,000 s after the Unix epoch.
pub const ORIGIN: Time = Time::from_micros(1_700_000_000_000_000);

/// The first delay the spin guard puts between a spinning role's ticks.
pub const SPIN_BACKOFF_MIN: Duration = Duration::from_micros(1);

/// The longest delay the spin guard puts between a spinning role's ticks.
pub const SPIN_BACKOFF_MAX: Duration = Duration::from_millis(1);

/// What a simulation has counted since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Messages handed to the network, by roles or [`Sim::send`].
    pub sent: u64,
    /// Messages handed to a role.
    pub delivered: u64,
    /// Ticks run.
    pub ticks: u64,
    /// Messages lost to the drop rate.
    pub dropped: u64,
    /// Messages sent twice by the duplicate rate.
    pub duplicated: u64,
    /// Messages stopped by a partition or isolation.
    pub blocked: u64,
    /// Messages lost because their destination had crashed.
    pub undeliverable: u64,
    /// Messages put in an outside mailbox.
    pub outside: u64,
    /// Messages queued at a paused role.
    pub held: u64,
    /// Ticks the spin guard delayed past the time their role asked for.
    pub throttled_ticks: u64,
}

/// How far a role's clock is off the simulator's: see [`Sim::skew`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Skew {
    /// The role reads the simulator's time.
    #[default]
    None,
    /// The role's clock runs this far ahead.
    Ahead(Duration),
    /// The role's clock runs this far behind.
    Behind(Duration),
}

impl Skew {
    /// The offset in signed microseconds.
    fn micros(self) -> i64 {
        let of = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        match self {
            Skew::None => 0,
            Skew::Ahead(d) => of(d),
            Skew::Behind(d) => -of(d),
        }
    }
}

/// `t` moved by `offset` microseconds, saturating at both ends.
fn shift(t: Time, offset: i64) -> Time {
    Time(t.as_micros().saturating_add_signed(offset))
}

/// A message on the wire.
#[derive(Debug)]
struct Envelope {
    from: Address,
    to: Address,
    msg: Message,
}

/// A hosted role and what the spin guard knows of its ticks.
#[derive(Debug)]
struct Host<R> {
    role: R,
    /// When it last ticked.
    last_tick: Option<Time>,
    /// How many ticks in a row it asked for at or before its previous one.
    stale: u32,
    /// Its clock's offset, in microseconds (see [`Sim::skew`]).
    skew: i64,
}

impl<R: Role> Host<R> {
    /// Simulator time `t` on this role's clock.
    fn local(&self, t: Time) -> Time {
        shift(t, self.skew)
    }

    /// When, in simulator time, this role wants its next tick.
    fn wants_tick(&self) -> Option<Time> {
        self.role.next_tick().map(|t| shift(t, -self.skew))
    }
}

/// Many roles, a simulated network between them and virtual time: see the
/// [module docs](self).
#[derive(Debug)]
pub struct Sim<R> {
    config: SimConfig,
    rng: ChaCha8Rng,
    now: Time,
    seq: u64,
    hosts: BTreeMap<Address, Host<R>>,
    crashed: BTreeSet<Address>,
    /// Keyed by arrival time, then send sequence: the delivery order.
    in_flight: BTreeMap<(Time, u64), Envelope>,
    outside: BTreeMap<Address, Vec<Message>>,
    /// Partitioned pairs, the smaller address first.
    cuts: BTreeSet<(Address, Address)>,
    isolated: BTreeSet<Address>,
    /// Paused roles, with the messages that arrived while they were.
    paused: BTreeMap<Address, Vec<Envelope>>,
    /// Skewed clocks, by address (kept across crashes and restarts: the
    /// clock is the machine's).
    skews: BTreeMap<Address, Skew>,
    outbox: Outbox,
    stats: SimStats,
    trace: Trace,
}

impl<R: Role> Sim<R> {
    /// An empty simulation at [`ORIGIN`], after checking `config`.
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        config.validate()?;
        Ok(Sim {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            now: ORIGIN,
            seq: 0,
            hosts: BTreeMap::new(),
            crashed: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            outside: BTreeMap::new(),
            cuts: BTreeSet::new(),
            isolated: BTreeSet::new(),
            paused: BTreeMap::new(),
            skews: BTreeMap::new(),
            outbox: Outbox::default(),
            stats: SimStats::default(),
            trace: Trace::new(config.trace_capacity),
            config,
        })
    }

    /// The settings, with the network as it is now.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The seed this run replays from.
    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    /// Virtual time now.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Virtual time since [`ORIGIN`].
    pub fn elapsed(&self) -> Duration {
        self.now.saturating_since(ORIGIN)
    }

    /// What has been counted so far.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// How many messages are on the wire.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The simulation's random generator, for tests and role seeds that
    /// must replay with the run. Drawing from it changes what the network
    /// draws next, deterministically.
    pub fn rng(&mut self) -> &mut impl RngCore {
        &mut self.rng
    }

    /// Hosts `role` at `address`, replacing (and returning) any role there.
    /// An address that had crashed is up again: this is how a test restarts
    /// a node, with the fresh state it passes in.
    pub fn add(&mut self, address: Address, role: R) -> Option<R> {
        self.crashed.remove(&address);
        let host = Host {
            role,
            last_tick: None,
            stale: 0,
            skew: self.skews.get(&address).map_or(0, |s| s.micros()),
        };
        self.hosts.insert(address, host).map(|old| old.role)
    }

    /// The role at `address`, if one is hosted there.
    pub fn role(&self, address: &Address) -> Option<&R> {
        self.hosts.get(address).map(|h| &h.role)
    }

    /// The role at `address`, to change or inspect between steps.
    pub fn role_mut(&mut self, address: &Address) -> Option<&mut R> {
        self.hosts.get_mut(address).map(|h| &mut h.role)
    }

    /// Every hosted role, in address order.
    pub fn roles(&self) -> impl Iterator<Item = (&Address, &R)> {
        self.hosts.iter().map(|(a, h)| (a, &h.role))
    }

    /// Every address a role is hosted at, in order.
    pub fn addresses(&self) -> impl Iterator<Item = &Address> {
        self.hosts.keys()
    }

    /// Sends `msg` from `from` (usually an outside address standing for the
    /// test) to `to`, through the network's faults and latency.
    pub fn send(&mut self, from: Address, to: Address, msg: Message) {
        self.transmit(from, to, msg);
    }

    /// Takes every message that arrived for the outside address `address`,
    /// oldest first.
    pub fn take_outside(&mut self, address: &Address) -> Vec<Message> {
        self.outside.remove(address).unwrap_or_default()
    }

    /// The latest events, oldest first (at most
    /// [`SimConfig::trace_capacity`]).
    pub fn trace(&self) -> impl Iterator<Item = &TraceEvent> {
        self.trace.events()
    }

    /// A digest of every event so far: equal for runs that replay each
    /// other, different (with overwhelming likelihood) otherwise.
    pub fn trace_digest(&self) -> u64 {
        self.trace.digest()
    }

    /// The seed, the counters and the latest events, one per line: what a
    /// failing test prints.
    pub fn trace_dump(&self) -> String {
        let mut out = format!(
            "seed {seed} (replay: SQUALL_SIM_SEED={seed}), at +{:?}, {:?}\n\
             the last {} of {} events:\n",
            self.elapsed(),
            self.stats,
            self.trace.len(),
            self.trace.recorded(),
            seed = self.seed(),
        );
        for event in self.trace.events() {
            let _ = writeln!(out, "  {event}");
        }
        out
    }

    fn record(&mut self, from: Address, to: Address, kind: &'static str, fate: Fate) {
        self.trace.record(TraceEvent {
            at: self.now,
            from,
            to,
            kind,
            fate,
        });
    }
}
