//! [`Time`]: the instant every handler is given.
//!
//! Handlers never read a clock; their driver passes `now` in. Real drivers
//! read the wall clock (`squall_transport::clock::now`: microseconds since
//! the Unix epoch, which is also what hybrid logical clocks need); a
//! simulator passes virtual time. Nothing in this crate reads a clock.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// An instant, in microseconds since the Unix epoch (or since the start of a
/// simulation).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Time(pub u64);

impl Time {
    /// The instant `micros` microseconds after the origin.
    pub const fn from_micros(micros: u64) -> Self {
        Time(micros)
    }

    /// Microseconds since the origin.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Milliseconds since the origin (what hybrid logical clocks take).
    pub const fn as_millis(self) -> u64 {
        self.0 / 1000
    }

    /// How long after `earlier` this is; zero if it is not after.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Time {
    type Output = Time;

    fn add(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let t = Time::from_micros(5);
        assert_eq!(t + Duration::from_micros(10), Time(15));
        assert_eq!(Time(u64::MAX) + Duration::from_secs(1), Time(u64::MAX));
        assert_eq!(t.saturating_since(Time(10)), Duration::ZERO);
        assert_eq!(Time(2_500).as_millis(), 2);
    }
}
