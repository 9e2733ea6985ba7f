//! The simulator's settings: the seed, the network's fault model and the
//! guards, each validated before a run starts or a knob turns.

use super::Sim;
use crate::role::Role;
use std::time::Duration;

/// A setting the simulator refuses.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SimError {
    /// A probability outside `0..=1` (or NaN).
    #[error("{name} must be within 0..=1, got {value}")]
    Rate { name: &'static str, value: f64 },
    /// A latency range that is empty or allows a zero-time hop.
    #[error("latency must be at least 1 µs with min <= max, got {min:?}..={max:?}")]
    Latency { min: Duration, max: Duration },
    /// A spin guard that would allow no stale tick at all.
    #[error("max_stale_ticks must be at least 1")]
    TickLimit,
}

/// How the simulated network treats each message sent. Every message draws
/// its own fate: lost with `drop_rate`, otherwise doubled with
/// `duplicate_rate`, and every copy delayed by a latency drawn uniformly
/// from `min_latency..=max_latency`. Reordering is not a knob of its own: it
/// emerges from differing latencies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Network {
    /// Probability that a message is lost.
    pub drop_rate: f64,
    /// Probability that a message that is not lost arrives twice.
    pub duplicate_rate: f64,
    /// The shortest a hop takes; at least 1 µs, so that virtual time moves
    /// on with every exchange and two roles cannot bounce messages forever
    /// at one instant.
    pub min_latency: Duration,
    /// The longest a hop takes.
    pub max_latency: Duration,
}

impl Default for Network {
    /// Lossless, 1–5 ms per hop.
    fn default() -> Self {
        Network {
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(5),
        }
    }
}

impl Network {
    /// The same latencies with no loss and no duplication: the quiet phase
    /// at the end of a test, in which replicas must converge.
    pub fn lossless(self) -> Self {
        Network {
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            ..self
        }
    }

    /// Checks the rates and the latency range.
    pub fn validate(&self) -> Result<(), SimError> {
        check_rate("drop_rate", self.drop_rate)?;
        check_rate("duplicate_rate", self.duplicate_rate)?;
        if self.min_latency < Duration::from_micros(1) || self.min_latency > self.max_latency {
            return Err(SimError::Latency {
                min: self.min_latency,
                max: self.max_latency,
            });
        }
        Ok(())
    }
}

fn check_rate(name: &'static str, value: f64) -> Result<(), SimError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(SimError::Rate { name, value })
    }
}

/// Everything a simulation starts from. Two runs with equal configs, equal
/// roles and equal test actions are identical, event for event.
///
/// Built turmoil-style: `SimConfig::new(seed).drop_rate(0.1).build()`.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Seeds the one random generator behind every choice the simulator
    /// makes.
    pub seed: u64,
    /// The network's fault model at the start; [`Sim::set_network`] changes
    /// it during a run.
    pub network: Network,
    /// How many stale ticks in a row a role gets at once before the spin
    /// guard backs it off. A tick is stale when the role asks for it at or
    /// before the instant of its previous tick ("again, now"): fine a few
    /// times to work through a backlog, a bug when it never stops (a
    /// deadline in the past that nothing clears), which would otherwise
    /// hold virtual time still. Past the limit, each further stale tick
    /// comes [`SPIN_BACKOFF_MIN`](super::SPIN_BACKOFF_MIN) after the
    /// previous one, doubling up to
    /// [`SPIN_BACKOFF_MAX`](super::SPIN_BACKOFF_MAX), until the role asks
    /// for a later time.
    pub max_stale_ticks: u32,
    /// How many of the latest events the trace keeps for failure dumps (the
    /// digest covers all of them).
    pub trace_capacity: usize,
}

impl Default for SimConfig {
    /// Seed 0, the default [`Network`], 100 stale ticks, 1,000 trace
    /// events.
    fn default() -> Self {
        SimConfig {
            seed: 0,
            network: Network::default(),
            max_stale_ticks: 100,
            trace_capacity: 1_000,
        }
    }
}

impl SimConfig {
    /// The defaults with this seed.
    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            ..SimConfig::default()
        }
    }

    /// Sets the probability that a message is lost.
    pub fn drop_rate(mut self, p: f64) -> Self {
        self.network.drop_rate = p;
        self
    }

    /// Sets the probability that a message arrives twice.
    pub fn duplicate_rate(mut self, p: f64) -> Self {
        self.network.duplicate_rate = p;
        self
    }

    /// Sets the range each hop's latency is drawn from.
    pub fn latency(mut self, min: Duration, max: Duration) -> Self {
        self.network.min_latency = min;
        self.network.max_latency = max;
        self
    }

    /// Sets the spin guard's limit.
    pub fn max_stale_ticks(mut self, n: u32) -> Self {
        self.max_stale_ticks = n;
        self
    }

    /// Sets how many events the trace keeps.
    pub fn trace_capacity(mut self, n: usize) -> Self {
        self.trace_capacity = n;
        self
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), SimError> {
        self.network.validate()?;
        if self.max_stale_ticks == 0 {
            return Err(SimError::TickLimit);
        }
        Ok(())
    }

    /// An empty simulation with these settings: see [`Sim::new`].
    pub fn build<R: Role>(self) -> Result<Sim<R>, SimError> {
        Sim::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_refuses_bad_rates_latencies_and_tick_limits() {
        assert!(SimConfig::new(1).validate().is_ok());
        assert!(matches!(
            SimConfig::new(1).drop_rate(1.5).validate(),
            Err(SimError::Rate {
                name: "drop_rate",
                ..
            })
        ));
        assert!(SimConfig::new(1)
            .duplicate_rate(f64::NAN)
            .validate()
            .is_err());
        let zero = SimConfig::new(1).latency(Duration::ZERO, Duration::from_millis(1));
        assert!(matches!(zero.validate(), Err(SimError::Latency { .. })));
        let inverted =
            SimConfig::new(1).latency(Duration::from_millis(2), Duration::from_millis(1));
        assert!(inverted.validate().is_err());
        assert_eq!(
            SimConfig::new(1).max_stale_ticks(0).validate(),
            Err(SimError::TickLimit)
        );
    }

    #[test]
    fn lossless_keeps_latencies_and_clears_faults() {
        let lossy = SimConfig::new(1)
            .drop_rate(0.5)
            .duplicate_rate(0.5)
            .latency(Duration::from_millis(3), Duration::from_millis(9))
            .network;
        let quiet = lossy.lossless();
        assert_eq!((quiet.drop_rate, quiet.duplicate_rate), (0.0, 0.0));
        assert_eq!(quiet.min_latency, Duration::from_millis(3));
        assert_eq!(quiet.max_latency, Duration::from_millis(9));
    }
}
