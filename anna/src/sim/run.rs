//! The event loop: find the earliest event, move time to it, hand it to its
//! role, put what the role sent on the wire.

use super::{Envelope, Fate, Host, Sim, SPIN_BACKOFF_MAX, SPIN_BACKOFF_MIN};
use crate::protocol::{Address, Message};
use crate::role::{Driver, Input, Role, Step};
use crate::time::Time;
use rand::Rng;
use std::convert::Infallible;
use std::time::Duration;

/// The earliest thing that happens next.
enum Next {
    /// The first message in flight arrives.
    Arrival,
    /// The role at this address ticks; `throttled` if the spin guard
    /// delayed the tick past the time the role asked for.
    Tick { address: Address, throttled: bool },
}

impl<R: Role> Sim<R> {
    /// Handles the earliest pending event, wherever in virtual time it is,
    /// and says what became of it; `None` if nothing is pending (no message
    /// on the wire, no role asking for a tick).
    pub fn step_event(&mut self) -> Option<Fate> {
        let (at, next) = self.next_event()?;
        Some(self.handle(at, next))
    }

    /// Runs every event due within `duration`, then sets the clock to its
    /// end.
    pub fn run_for(&mut self, duration: Duration) {
        let deadline = self.now + duration;
        while let Some((at, next)) = self.next_event() {
            if at > deadline {
                break;
            }
            self.handle(at, next);
        }
        self.now = self.now.max(deadline);
    }

    /// Runs events until `done` holds (checked before the first and after
    /// every event) or `limit` of virtual time has passed; says whether
    /// `done` held. On success the clock stays at the event that made it
    /// hold.
    pub fn run_until(&mut self, mut done: impl FnMut(&Self) -> bool, limit: Duration) -> bool {
        let deadline = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            match self.next_event() {
                Some((at, next)) if at <= deadline => {
                    self.handle(at, next);
                }
                _ => {
                    self.now = self.now.max(deadline);
                    return done(self);
                }
            }
        }
    }

    /// Puts `msg` on the wire, drawing its fate: lost, or one or two copies
    /// each arriving after its own latency.
    pub(super) fn transmit(&mut self, from: Address, to: Address, msg: Message) {
        self.stats.sent += 1;
        let network = self.config.network;
        if self.rng.random_bool(network.drop_rate) {
            self.stats.dropped += 1;
            self.record(from, to, msg.kind(), Fate::Dropped);
            return;
        }
        if self.rng.random_bool(network.duplicate_rate) {
            self.stats.duplicated += 1;
            self.record(from.clone(), to.clone(), msg.kind(), Fate::Duplicated);
            let copy = Envelope {
                from: from.clone(),
                to: to.clone(),
                msg: msg.clone(),
            };
            self.put_on_wire(copy);
        }
        self.put_on_wire(Envelope { from, to, msg });
    }

    fn put_on_wire(&mut self, envelope: Envelope) {
        let network = self.config.network;
        let latency = self
            .rng
            .random_range(micros(network.min_latency)..=micros(network.max_latency));
        self.seq += 1;
        let key = (self.now + Duration::from_micros(latency), self.seq);
        self.in_flight.insert(key, envelope);
    }

    /// The earliest event and its time. At one instant messages come before
    /// ticks, and ticks go in address order.
    fn next_event(&self) -> Option<(Time, Next)> {
        let arrival = self.in_flight.first_key_value().map(|(&(at, _), _)| at);
        let mut tick: Option<(Time, &Address, bool)> = None;
        for (address, host) in &self.hosts {
            if self.paused.contains_key(address) {
                continue;
            }
            let Some((at, throttled)) = self.tick_due(host) else {
                continue;
            };
            if tick.is_none_or(|(earliest, _, _)| at < earliest) {
                tick = Some((at, address, throttled));
            }
        }
        match (arrival, tick) {
            (Some(a), Some((t, _, _))) if a <= t => Some((a, Next::Arrival)),
            (Some(a), None) => Some((a, Next::Arrival)),
            (_, Some((t, address, throttled))) => Some((
                t,
                Next::Tick {
                    address: address.clone(),
                    throttled,
                },
            )),
            (None, None) => None,
        }
    }

    /// When `host` ticks next, never before `now`, and whether the spin
    /// guard delayed it past the time the role asked for.
    fn tick_due(&self, host: &Host<R>) -> Option<(Time, bool)> {
        let wanted = host.wants_tick()?;
        let asked = wanted.max(self.now);
        let limit = self.config.max_stale_ticks;
        match host.last_tick {
            Some(last) if wanted <= last && host.stale >= limit => {
                let at = asked.max(last + spin_backoff(host.stale - limit));
                Some((at, at > asked))
            }
            _ => Some((asked, false)),
        }
    }

    /// Moves the clock to `at` and runs `next`.
    fn handle(&mut self, at: Time, next: Next) -> Fate {
        self.now = self.now.max(at);
        match next {
            Next::Arrival => self.arrive(),
            Next::Tick { address, throttled } => {
                if throttled {
                    self.stats.throttled_ticks += 1;
                }
                self.tick(address)
            }
        }
    }

    /// Delivers the first message in flight, or says why not.
    fn arrive(&mut self) -> Fate {
        let Some((_, Envelope { from, to, msg })) = self.in_flight.pop_first() else {
            unreachable!("an arrival is only scheduled while a message is in flight");
        };
        let kind = msg.kind();
        let fate = if self.separated(&from, &to) {
            self.stats.blocked += 1;
            Fate::Blocked
        } else if let Some(held) = self.paused.get_mut(&to) {
            held.push(Envelope {
                from: from.clone(),
                to: to.clone(),
                msg,
            });
            self.stats.held += 1;
            Fate::Held
        } else if let Some(host) = self.hosts.get_mut(&to) {
            let now = host.local(self.now);
            host.role.step(now, Input::Message(msg), &mut self.outbox);
            self.stats.delivered += 1;
            Fate::Delivered
        } else if self.crashed.contains(&to) {
            self.stats.undeliverable += 1;
            Fate::Undeliverable
        } else {
            self.outside.entry(to.clone()).or_default().push(msg);
            self.stats.outside += 1;
            Fate::Outside
        };
        self.record(from, to.clone(), kind, fate);
        if fate == Fate::Delivered {
            self.flush(&to);
        }
        fate
    }

    /// Runs the tick of the role at `address`.
    fn tick(&mut self, address: Address) -> Fate {
        let now = self.now;
        let limit = self.config.max_stale_ticks;
        let Some(host) = self.hosts.get_mut(&address) else {
            unreachable!("a tick is only scheduled for a hosted role");
        };
        let wanted = host.wants_tick();
        let stale = matches!((host.last_tick, wanted), (Some(last), Some(w)) if w <= last);
        host.stale = if stale {
            host.stale.saturating_add(1)
        } else {
            0
        };
        if host.stale == limit {
            tracing::warn!(
                %address,
                stale = limit,
                "role keeps asking for a tick at or before its last one; backing it off"
            );
        }
        host.last_tick = Some(now);
        let local = host.local(now);
        host.role.step(local, Input::Tick, &mut self.outbox);
        self.stats.ticks += 1;
        self.record(address.clone(), address.clone(), "tick", Fate::Ticked);
        self.flush(&address);
        Fate::Ticked
    }

    /// Puts everything the role at `from` queued on the wire.
    fn flush(&mut self, from: &Address) {
        let mut outbox = std::mem::take(&mut self.outbox);
        for (to, msg) in outbox.drain() {
            self.transmit(from.clone(), to, msg);
        }
        self.outbox = outbox;
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The spin guard's delay after `over` stale ticks beyond the limit.
fn spin_backoff(over: u32) -> Duration {
    let (min, max) = (micros(SPIN_BACKOFF_MIN), micros(SPIN_BACKOFF_MAX));
    let delay = 2u64
        .checked_pow(over)
        .map_or(max, |factor| min.saturating_mul(factor));
    Duration::from_micros(delay.min(max))
}

/// Virtual time: [`Driver::step`] never waits really. It runs events until
/// one reaches a role ([`Step::Delivered`], [`Step::Ticked`]); events that
/// reach none (blocked, lost, outside) are handled on the way. If none is
/// due within `max_wait` the clock moves `max_wait` on ([`Step::Idle`]); if
/// nothing is pending at all the run is over ([`Step::Stopped`]). So
/// [`Driver::run`] returns once the roles fall silent, and never while a
/// role keeps asking for ticks: bound such runs with [`Sim::run_for`].
impl<R: Role> Driver for Sim<R> {
    type Error = Infallible;

    fn now(&self) -> Time {
        self.now
    }

    fn step(&mut self, max_wait: Duration) -> Result<Step, Infallible> {
        let deadline = self.now + max_wait;
        loop {
            let Some((at, next)) = self.next_event() else {
                return Ok(Step::Stopped);
            };
            if at > deadline {
                self.now = deadline;
                return Ok(Step::Idle);
            }
            match self.handle(at, next) {
                Fate::Delivered => return Ok(Step::Delivered),
                Fate::Ticked => return Ok(Step::Ticked),
                _ => {}
            }
        }
    }
}
