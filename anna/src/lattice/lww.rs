//! Hybrid-logical-clock timestamps and the last-writer-wins lattice.
//!
//! A [`Timestamp`] orders writes by `(wall_ms, logical, writer)`. The writer
//! id makes the order total, so two writes at the same instant from two
//! clients resolve the same way on every replica. [`Lww`] additionally breaks
//! a tie between equal timestamps by the value bytes, so merge stays
//! commutative even if a writer id is (wrongly) reused.

use super::{Lattice, WriterId};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A hybrid-logical-clock time stamped by one writer.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp {
    /// Physical component: milliseconds since the Unix epoch, as the writer's
    /// clock (or a larger time it has observed) said.
    pub wall_ms: u64,
    /// Logical component: orders events within one millisecond.
    pub logical: u32,
    /// Tie-break between writers.
    pub writer: WriterId,
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}@{}", self.wall_ms, self.logical, self.writer)
    }
}

/// A hybrid logical clock for one writer.
///
/// The wall-clock reading is an argument, never read here: the caller's
/// driver owns the clock. Timestamps issued by one `Hlc` strictly increase,
/// even if the wall clock goes backwards, and exceed every timestamp passed to
/// [`Hlc::observe`].
#[derive(Clone, Debug)]
pub struct Hlc {
    writer: WriterId,
    wall_ms: u64,
    logical: u32,
}

impl Hlc {
    /// A clock for `writer` that has issued nothing yet.
    pub fn new(writer: WriterId) -> Self {
        Hlc {
            writer,
            wall_ms: 0,
            logical: 0,
        }
    }

    /// The writer this clock stamps for.
    pub fn writer(&self) -> WriterId {
        self.writer
    }

    /// A new timestamp, later than any this clock issued or observed.
    pub fn now(&mut self, wall_ms: u64) -> Timestamp {
        if wall_ms > self.wall_ms {
            self.wall_ms = wall_ms;
            self.logical = 0;
        } else {
            self.bump();
        }
        self.stamp()
    }

    /// Moves the clock past a timestamp received from another writer.
    pub fn observe(&mut self, seen: Timestamp) {
        if (seen.wall_ms, seen.logical) >= (self.wall_ms, self.logical) {
            self.wall_ms = seen.wall_ms;
            self.logical = seen.logical;
        }
    }

    fn bump(&mut self) {
        match self.logical.checked_add(1) {
            Some(l) => self.logical = l,
            None => {
                self.wall_ms = self.wall_ms.saturating_add(1);
                self.logical = 0;
            }
        }
    }

    fn stamp(&self) -> Timestamp {
        Timestamp {
            wall_ms: self.wall_ms,
            logical: self.logical,
            writer: self.writer,
        }
    }
}

/// Last-writer-wins: the value with the greatest timestamp.
///
/// Bottom is the empty value at timestamp zero.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lww {
    timestamp: Timestamp,
    // Bytes as one block, not a sequence of `u8`s: the same encoding,
    // tens of times faster for large values. Shared, not copied: a read
    // answered from a stored value, a session holding what it read and a
    // value mapped from shared memory all hold the one block; decoded from
    // a frame it is a slice of the frame where that pays (see `in_frame`).
    #[serde(deserialize_with = "in_frame::deserialize")]
    value: Bytes,
}

impl Lww {
    /// A value written at `timestamp`.
    pub fn new(timestamp: Timestamp, value: Vec<u8>) -> Self {
        Lww {
            timestamp,
            value: Bytes::from(value),
        }
    }

    /// A value written at `timestamp`, held where `value` already is.
    pub fn shared(timestamp: Timestamp, value: Bytes) -> Self {
        Lww { timestamp, value }
    }

    /// The winning value, shared (a clone is a reference, not a copy).
    pub fn bytes(&self) -> &Bytes {
        &self.value
    }

    /// When the winning value was written, and by whom.
    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }

    /// The winning value.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// The winning value, by value (a copy only if it is shared).
    pub fn into_value(self) -> Vec<u8> {
        Vec::from(self.value)
    }
}

impl Lattice for Lww {
    fn merge(&mut self, other: Self) -> bool {
        let newer = (other.timestamp, &other.value) > (self.timestamp, &self.value);
        if newer {
            *self = other;
        }
        newer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(wall_ms: u64, logical: u32, writer: u64) -> Timestamp {
        Timestamp {
            wall_ms,
            logical,
            writer: WriterId(writer),
        }
    }

    #[test]
    fn later_write_wins_in_either_order() {
        let old = Lww::new(ts(1, 0, 9), b"old".to_vec());
        let new = Lww::new(ts(2, 0, 1), b"new".to_vec());
        assert_eq!(old.clone().join(new.clone()).value(), b"new");
        assert_eq!(new.clone().join(old).value(), b"new");
    }

    #[test]
    fn equal_times_are_broken_by_writer_then_value() {
        let a = Lww::new(ts(5, 0, 1), b"a".to_vec());
        let b = Lww::new(ts(5, 0, 2), b"b".to_vec());
        assert_eq!(a.clone().join(b.clone()), b.clone().join(a));
        let c = Lww::new(ts(5, 0, 1), b"c".to_vec());
        let d = Lww::new(ts(5, 0, 1), b"d".to_vec());
        assert_eq!(c.clone().join(d.clone()), d.clone().join(c));
    }

    #[test]
    fn merge_reports_change_only_when_value_grows() {
        let mut a = Lww::new(ts(2, 0, 1), b"x".to_vec());
        assert!(!a.merge(Lww::new(ts(1, 0, 1), b"y".to_vec())));
        assert!(!a.merge(a.clone()));
        assert!(a.merge(Lww::new(ts(3, 0, 1), b"z".to_vec())));
    }

    #[test]
    fn hlc_is_monotonic_when_the_wall_clock_goes_back() {
        let mut hlc = Hlc::new(WriterId(7));
        let t1 = hlc.now(1000);
        let t2 = hlc.now(900);
        let t3 = hlc.now(1000);
        assert!(t1 < t2 && t2 < t3);
        assert_eq!(t2.wall_ms, 1000);
    }

    #[test]
    fn hlc_moves_past_observed_times() {
        let mut hlc = Hlc::new(WriterId(1));
        let seen = ts(5000, 3, 2);
        hlc.observe(seen);
        let next = hlc.now(10);
        assert!(next > seen);
        assert_eq!((next.wall_ms, next.logical), (5000, 4));
    }

    #[test]
    fn hlc_logical_overflow_carries_into_wall_time() {
        let mut hlc = Hlc::new(WriterId(1));
        hlc.observe(ts(10, u32::MAX, 2));
        let next = hlc.now(0);
        assert_eq!((next.wall_ms, next.logical), (11, 0));
    }
}

/// Decoding a last-writer-wins value out of a received frame without
/// copying it: while [`in_frame::decode`] runs, a value that is most of
/// the frame it is decoded from becomes a slice of that frame (the frame
/// then lives as long as the value). Smaller values are copied, so that a
/// small value kept for long does not keep a large frame alive.
pub mod in_frame {
    use bytes::Bytes;
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    use std::cell::RefCell;

    /// Values at least this large, and at least half their frame, are
    /// sliced out of the frame rather than copied.
    pub const MIN_SLICED: usize = 64 << 10;

    thread_local! {
        static FRAME: RefCell<Option<Bytes>> = const { RefCell::new(None) };
    }

    /// Runs `decode` (which decodes from a part of `frame`) with `frame`
    /// as the frame large values may be sliced from.
    pub fn decode<R>(frame: &Bytes, decode: impl FnOnce() -> R) -> R {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                FRAME.with(|f| f.borrow_mut().take());
            }
        }
        FRAME.with(|f| *f.borrow_mut() = Some(frame.clone()));
        let _reset = Reset;
        decode()
    }

    fn slice_or_copy(bytes: &[u8]) -> Bytes {
        if bytes.len() >= MIN_SLICED {
            let sliced = FRAME.with(|f| {
                let frame = f.borrow();
                let frame = frame.as_ref()?;
                let range = frame.as_ptr_range();
                let inside = range.start <= bytes.as_ptr()
                    && bytes.as_ptr_range().end <= range.end
                    && bytes.len() >= frame.len() / 2;
                inside.then(|| frame.slice_ref(bytes))
            });
            if let Some(sliced) = sliced {
                return sliced;
            }
        }
        Bytes::copy_from_slice(bytes)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Bytes;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Bytes, E> {
            Ok(slice_or_copy(v))
        }

        fn visit_borrowed_bytes<E: Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
            Ok(slice_or_copy(v))
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
            Ok(Bytes::from(v))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element::<u8>()? {
                v.push(b);
            }
            Ok(Bytes::from(v))
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        d.deserialize_bytes(BytesVisitor)
    }
}
