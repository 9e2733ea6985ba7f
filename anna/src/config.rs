//! Configuration helpers shared by every role's settings.
//!
//! Durations are written in config files as whole milliseconds
//! (`gossip_period = 10`), which [`millis`] reads and writes.

/// Serde for a [`std::time::Duration`] as whole milliseconds.
pub mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

use crate::protocol::{KeyOp, KvsError, MAX_FRAME_BYTES};
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The bounds every process enforces where bytes and timestamps arrive:
/// the `[limits]` section of the config file. One section, so a cluster
/// cannot disagree with itself; each role is handed it at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// The largest frame a socket accepts (`ZMQ_MAXMSGSIZE` on every
    /// receiving socket): a larger one is refused by ZeroMQ before it is
    /// buffered, and its sender's connection is dropped. At most the
    /// codec's own ceiling, 64 MiB.
    pub max_message_bytes: usize,
    /// The largest value a put may carry, and the largest call argument or
    /// function result: refused at once, by the client before sending and
    /// by storage workers, caches and executors on arrival, with an error
    /// naming the size and this limit. Below `max_message_bytes`, which
    /// must also fit the message around the value.
    pub max_value_bytes: usize,
    /// How far ahead of the receiving node's clock a last-writer-wins
    /// timestamp (a put's, a delete's) may be: a write further ahead is
    /// refused, so one writer with a wrong clock (or a forged timestamp)
    /// cannot make a key ignore every later write.
    #[serde(with = "millis")]
    pub max_clock_skew: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: MAX_FRAME_BYTES,
            max_value_bytes: 32 << 20,
            max_clock_skew: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// Why these limits cannot run, if they cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_message_bytes > MAX_FRAME_BYTES || self.max_message_bytes < 4096 {
            return Err(format!(
                "limits.max_message_bytes ({}) must be between 4096 and {MAX_FRAME_BYTES}",
                self.max_message_bytes
            ));
        }
        if self.max_value_bytes == 0 || self.max_value_bytes + 4096 > self.max_message_bytes {
            return Err(format!(
                "limits.max_value_bytes ({}) must be above 0 and at least 4096 below \
                 limits.max_message_bytes ({})",
                self.max_value_bytes, self.max_message_bytes
            ));
        }
        Ok(())
    }

    /// Refuses a value of `size` bytes over `max_value_bytes`.
    pub fn check_size(&self, size: usize) -> Result<(), KvsError> {
        if size > self.max_value_bytes {
            return Err(KvsError::TooLarge {
                size: size as u64,
                limit: self.max_value_bytes as u64,
            });
        }
        Ok(())
    }

    /// Refuses a write arriving at `now` whose value is too large or whose
    /// timestamp is more than `max_clock_skew` ahead. Reads pass.
    pub fn check_write(&self, now: Time, op: &KeyOp) -> Result<(), KvsError> {
        let latest = match op {
            KeyOp::Put { value, .. } => {
                self.check_size(value.approx_bytes())?;
                value.latest_wall_ms()
            }
            KeyOp::Delete { at, .. } => Some(at.wall_ms),
            KeyOp::Get { .. } | KeyOp::ReadState { .. } => None,
        };
        let horizon = now
            .as_millis()
            .saturating_add(self.max_clock_skew.as_millis() as u64);
        match latest {
            Some(wall_ms) if wall_ms > horizon => Err(KvsError::ClockAhead {
                ahead_ms: wall_ms - now.as_millis(),
                max_ms: self.max_clock_skew.as_millis() as u64,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::{LatticeValue, Lww, MapLattice, Timestamp, WriterId};

    fn lww_at(wall_ms: u64, bytes: usize) -> LatticeValue {
        let at = Timestamp {
            wall_ms,
            logical: 0,
            writer: WriterId(1),
        };
        LatticeValue::Lww(Lww::new(at, vec![0; bytes]))
    }

    fn put(value: LatticeValue) -> KeyOp {
        KeyOp::Put {
            key: "k".into(),
            value,
        }
    }

    #[test]
    fn a_timestamp_past_the_skew_is_refused_and_one_within_it_passes() {
        let limits = Limits::default();
        let now = Time::from_micros(1_000_000_000);
        assert_eq!(
            limits.check_write(now, &put(lww_at(1_000_000 + 9_999, 1))),
            Ok(())
        );
        assert_eq!(
            limits.check_write(now, &put(lww_at(u64::MAX, 1))),
            Err(KvsError::ClockAhead {
                ahead_ms: u64::MAX - 1_000_000,
                max_ms: 10_000
            })
        );
        // Nested in a map, and on a delete, the same.
        let mut map = MapLattice::default();
        map.insert("f".to_string(), lww_at(1_000_000 + 60_000, 1));
        assert!(matches!(
            limits.check_write(now, &put(LatticeValue::Map(map))),
            Err(KvsError::ClockAhead {
                ahead_ms: 60_000,
                ..
            })
        ));
        let delete = KeyOp::Delete {
            key: "k".into(),
            at: Timestamp {
                wall_ms: 1_000_000 + 11_000,
                logical: 0,
                writer: WriterId(2),
            },
        };
        assert!(limits.check_write(now, &delete).is_err());
        // Timestamps in the past are always fine: clocks lag.
        assert_eq!(limits.check_write(now, &put(lww_at(0, 1))), Ok(()));
    }

    #[test]
    fn a_value_over_the_limit_is_refused_naming_both_sizes() {
        let limits = Limits {
            max_value_bytes: 1000,
            ..Limits::default()
        };
        let now = Time::from_micros(0);
        assert_eq!(limits.check_write(now, &put(lww_at(0, 1000))), Ok(()));
        let err = limits.check_write(now, &put(lww_at(0, 1001))).unwrap_err();
        assert_eq!(
            err,
            KvsError::TooLarge {
                size: 1001,
                limit: 1000
            }
        );
        assert!(err.to_string().contains("1001") && err.to_string().contains("1000"));
    }

    #[test]
    fn limits_that_cannot_run_are_refused() {
        assert_eq!(Limits::default().validate(), Ok(()));
        let too_big = Limits {
            max_message_bytes: MAX_FRAME_BYTES + 1,
            ..Limits::default()
        };
        assert!(too_big.validate().is_err());
        let value_over_message = Limits {
            max_value_bytes: MAX_FRAME_BYTES,
            ..Limits::default()
        };
        assert!(value_over_message.validate().is_err());
    }
}
