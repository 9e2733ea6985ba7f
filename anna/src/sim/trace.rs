//! The simulator's trace: what happened to every message and tick, the
//! latest few kept for failure dumps, all of them folded into a digest.

use super::ORIGIN;
use crate::protocol::Address;
use crate::time::Time;
use std::collections::VecDeque;
use std::fmt;

/// What happened to one message (or tick).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fate {
    /// Handed to the role hosted at its destination.
    Delivered,
    /// A role's tick ran (`from` and `to` are both the role's address).
    Ticked,
    /// Lost in the network when sent (the drop rate).
    Dropped,
    /// Sent twice (the duplicate rate); both copies get their own event
    /// when they arrive.
    Duplicated,
    /// Arrived while a partition or isolation separated its ends.
    Blocked,
    /// Its destination had crashed: lost in flight or on arrival.
    Undeliverable,
    /// Its destination hosts no role and never crashed: put in the outside
    /// mailbox for the test to read.
    Outside,
    /// Arrived at a paused role: queued there until it resumes.
    Held,
}

impl Fate {
    /// A short name for dumps.
    pub fn as_str(self) -> &'static str {
        match self {
            Fate::Delivered => "delivered",
            Fate::Ticked => "ticked",
            Fate::Dropped => "dropped",
            Fate::Duplicated => "duplicated",
            Fate::Blocked => "blocked",
            Fate::Undeliverable => "undeliverable",
            Fate::Outside => "outside",
            Fate::Held => "held",
        }
    }

    fn code(self) -> u8 {
        match self {
            Fate::Delivered => 1,
            Fate::Ticked => 2,
            Fate::Dropped => 3,
            Fate::Duplicated => 4,
            Fate::Blocked => 5,
            Fate::Undeliverable => 6,
            Fate::Outside => 7,
            Fate::Held => 8,
        }
    }
}

/// One line of the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// When it happened, in virtual time.
    pub at: Time,
    /// The sender (for a tick, the role ticked).
    pub from: Address,
    /// The destination (for a tick, the role ticked).
    pub to: Address,
    /// [`Message::kind`](crate::protocol::Message::kind), or `"tick"`.
    pub kind: &'static str,
    /// What happened.
    pub fate: Fate,
}

impl fmt::Display for TraceEvent {
    /// `+1.002345s a -> b ping delivered`, time counted from [`ORIGIN`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.at.as_micros().saturating_sub(ORIGIN.as_micros());
        write!(
            f,
            "+{}.{:06}s {} -> {} {} {}",
            micros / 1_000_000,
            micros % 1_000_000,
            self.from,
            self.to,
            self.kind,
            self.fate.as_str()
        )
    }
}

/// The latest `capacity` events and an FNV-1a digest of every event ever
/// recorded. FNV rather than std's hasher because its output is fixed by
/// its definition, not by the Rust release.
#[derive(Debug)]
pub(crate) struct Trace {
    events: VecDeque<TraceEvent>,
    capacity: usize,
    recorded: u64,
    digest: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Trace {
    pub(crate) fn new(capacity: usize) -> Self {
        Trace {
            events: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
            recorded: 0,
            digest: FNV_OFFSET,
        }
    }

    pub(crate) fn record(&mut self, event: TraceEvent) {
        self.hash(&event.at.as_micros().to_le_bytes());
        self.hash_field(event.from.as_str().as_bytes());
        self.hash_field(event.to.as_str().as_bytes());
        self.hash_field(event.kind.as_bytes());
        self.hash(&[event.fate.code()]);
        self.recorded += 1;
        if self.capacity == 0 {
            return;
        }
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Hashes variable-length bytes with their length, so that field
    /// boundaries cannot shift between two different traces.
    fn hash_field(&mut self, bytes: &[u8]) {
        self.hash(&(bytes.len() as u64).to_le_bytes());
        self.hash(bytes);
    }

    fn hash(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.digest ^= u64::from(b);
            self.digest = self.digest.wrapping_mul(FNV_PRIME);
        }
    }

    pub(crate) fn digest(&self) -> u64 {
        self.digest
    }

    pub(crate) fn recorded(&self) -> u64 {
        self.recorded
    }

    pub(crate) fn events(&self) -> impl Iterator<Item = &TraceEvent> {
        self.events.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at: u64, from: &str, to: &str) -> TraceEvent {
        TraceEvent {
            at: Time(ORIGIN.as_micros() + at),
            from: Address::from(from),
            to: Address::from(to),
            kind: "ping",
            fate: Fate::Delivered,
        }
    }

    #[test]
    fn the_trace_keeps_the_latest_events_and_digests_all_of_them() {
        let mut small = Trace::new(2);
        let mut none = Trace::new(0);
        for at in 0..5 {
            small.record(event(at, "a", "b"));
            none.record(event(at, "a", "b"));
        }
        let kept: Vec<_> = small.events().map(|e| e.at).collect();
        assert_eq!(kept, vec![event(3, "", "").at, event(4, "", "").at]);
        assert_eq!(small.recorded(), 5);
        assert_eq!(none.len(), 0);
        assert_eq!(small.digest(), none.digest());
    }

    #[test]
    fn field_boundaries_matter_to_the_digest() {
        let mut one = Trace::new(0);
        let mut other = Trace::new(0);
        one.record(event(0, "ab", "c"));
        other.record(event(0, "a", "bc"));
        assert_ne!(one.digest(), other.digest());
    }

    #[test]
    fn events_display_relative_to_the_origin() {
        let e = event(1_002_345, "a", "b");
        assert_eq!(e.to_string(), "+1.002345s a -> b ping delivered");
    }
}
