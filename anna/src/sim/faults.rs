//! The network's knobs and the fault verbs: partitions, isolation,
//! pauses, clock skew, crashes. Partitions are checked when a message arrives, so a cut also
//! stops what was already on the wire.

use super::{Fate, Network, Sim, SimError, Skew};
use crate::protocol::Address;
use crate::role::Role;
use crate::time::Time;
use std::time::Duration;

impl<R: Role> Sim<R> {
    /// The network's fault model now.
    pub fn network(&self) -> Network {
        self.config.network
    }

    /// Replaces the network's fault model for messages sent from now on
    /// (messages on the wire keep the fate they drew).
    pub fn set_network(&mut self, network: Network) -> Result<(), SimError> {
        network.validate()?;
        self.config.network = network;
        Ok(())
    }

    /// Sets the probability that a message is lost.
    pub fn set_drop_rate(&mut self, p: f64) -> Result<(), SimError> {
        self.set_network(Network {
            drop_rate: p,
            ..self.network()
        })
    }

    /// Sets the probability that a message arrives twice.
    pub fn set_duplicate_rate(&mut self, p: f64) -> Result<(), SimError> {
        self.set_network(Network {
            duplicate_rate: p,
            ..self.network()
        })
    }

    /// Sets the range each hop's latency is drawn from.
    pub fn set_latency(&mut self, min: Duration, max: Duration) -> Result<(), SimError> {
        self.set_network(Network {
            min_latency: min,
            max_latency: max,
            ..self.network()
        })
    }

    /// Cuts the link between `a` and `b`, both ways, until
    /// [`Sim::repair`] or [`Sim::heal`]. Messages arriving while it is cut
    /// are lost, including those sent before.
    pub fn partition(&mut self, a: &Address, b: &Address) {
        self.cuts.insert(link(a, b));
    }

    /// Restores the link between `a` and `b` (not an isolation of either).
    pub fn repair(&mut self, a: &Address, b: &Address) {
        self.cuts.remove(&link(a, b));
    }

    /// Cuts `a` off from every other address until [`Sim::rejoin`] or
    /// [`Sim::heal`].
    pub fn isolate(&mut self, a: &Address) {
        self.isolated.insert(a.clone());
    }

    /// Ends the isolation of `a` (not its partitions).
    pub fn rejoin(&mut self, a: &Address) {
        self.isolated.remove(a);
    }

    /// Repairs every partition and ends every isolation.
    pub fn heal(&mut self) {
        self.cuts.clear();
        self.isolated.clear();
    }

    /// Pauses the role at `address` (a SIGSTOP): no tick runs and no
    /// message reaches it until [`Sim::resume`]; messages that arrive
    /// meanwhile are queued for it.
    pub fn pause(&mut self, address: &Address) {
        self.paused.entry(address.clone()).or_default();
    }

    /// Resumes a paused role (a SIGCONT): its overdue tick runs now, and
    /// the messages queued for it arrive a microsecond later, in the order
    /// they came, as the ZeroMQ driver runs an overdue tick before it reads
    /// its socket. (A failure detector that judged its peers on that tick
    /// before reading their queued heartbeats would show.)
    pub fn resume(&mut self, address: &Address) {
        let Some(held) = self.paused.remove(address) else {
            return;
        };
        let at = self.now + std::time::Duration::from_micros(1);
        for envelope in held {
            self.seq += 1;
            self.in_flight.insert((at, self.seq), envelope);
        }
    }

    /// Whether the role at `address` is paused.
    pub fn is_paused(&self, address: &Address) -> bool {
        self.paused.contains_key(address)
    }

    /// Cuts every link between a member of `a` and a member of `b` (two
    /// groups that cannot reach each other, each whole inside), until
    /// [`Sim::heal`] (or [`Sim::repair`] of each pair).
    pub fn partition_groups(&mut self, a: &[Address], b: &[Address]) {
        for x in a {
            for y in b {
                self.partition(x, y);
            }
        }
    }

    /// Sets the clock of the role at `address` (hosted now or later, and
    /// after restarts) off the simulator's by `skew`: every step hands it
    /// the simulator's time moved by `skew`, and the ticks it asks for are
    /// read on that clock. [`Skew::None`] sets it right again (the role's
    /// clock then jumps, as a real clock stepped by NTP does).
    pub fn skew(&mut self, address: &Address, skew: Skew) {
        if skew == Skew::None {
            self.skews.remove(address);
        } else {
            self.skews.insert(address.clone(), skew);
        }
        if let Some(host) = self.hosts.get_mut(address) {
            host.skew = skew.micros();
            // Its stale-tick history was read on the old clock.
            host.stale = 0;
        }
    }

    /// How far the clock at `address` is off (see [`Sim::skew`]).
    pub fn skew_of(&self, address: &Address) -> Skew {
        self.skews.get(address).copied().unwrap_or_default()
    }

    /// The time the role at `address` reads now: the simulator's, moved by
    /// its [`Skew`].
    pub fn clock_of(&self, address: &Address) -> Time {
        super::shift(self.now, self.skew_of(address).micros())
    }

    /// Crashes `address`: its role and all its state are gone (returned,
    /// for inspection), messages on the wire to it are lost, and so is
    /// everything sent to it until [`Sim::add`] hosts a role there again.
    /// Messages it sent before crashing are already on the wire and arrive.
    pub fn crash(&mut self, address: &Address) -> Option<R> {
        self.crashed.insert(address.clone());
        self.paused.remove(address);
        let doomed: Vec<(Time, u64)> = self
            .in_flight
            .iter()
            .filter(|(_, env)| env.to == *address)
            .map(|(key, _)| *key)
            .collect();
        for key in doomed {
            if let Some(env) = self.in_flight.remove(&key) {
                self.stats.undeliverable += 1;
                self.record(env.from, env.to, env.msg.kind(), Fate::Undeliverable);
            }
        }
        self.hosts.remove(address).map(|h| h.role)
    }

    /// Whether `address` has crashed and not been restarted.
    pub fn is_crashed(&self, address: &Address) -> bool {
        self.crashed.contains(address)
    }

    /// Whether a partition or isolation stands between `from` and `to`.
    pub(super) fn separated(&self, from: &Address, to: &Address) -> bool {
        from != to
            && (self.isolated.contains(from)
                || self.isolated.contains(to)
                || (!self.cuts.is_empty() && self.cuts.contains(&link(from, to))))
    }
}

/// The key of the undirected link between `a` and `b`.
fn link(a: &Address, b: &Address) -> (Address, Address) {
    if a <= b {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}
