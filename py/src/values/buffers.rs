//! Large buffers of a pickled value, laid where a reader can use them in
//! place.
//!
//! Pickle protocol 5 lets an object hand its raw memory to the pickler as
//! a `PickleBuffer` (NumPy arrays do). CPython writes such a buffer
//! in-band at whatever offset the stream has reached, and `pickle.loads`
//! copies it into a new `bytearray` before the array is made over it.
//!
//! The writer ([`super::pickle`]) takes those of [`MIN_BYTES`] or more out
//! of band and lays each back in-band itself ([`in_band`]): behind a
//! marker (`MARK POP_MARK`, which CPython's pickler never writes side by
//! side, and padding that pushes and pops a short `bytes`) so that its
//! data starts at a multiple of [`ALIGN`] bytes from the value's start,
//! as `BYTEARRAY8` (a writable buffer) or `BINBYTES8` (a read-only one).
//! The stored value is a plain pickle still: `pickle.loads`, the executor,
//! older clients and `squall kv get` read it as before, and a copy of it
//! is as writable as it always was.
//!
//! A reader that asks for read-only values finds the marked buffers
//! ([`marked`]), takes them out of the stream again ([`out_of_band`]:
//! `NEXT_BUFFER READONLY_BUFFER` in each one's place) and hands
//! `pickle.loads(..., buffers=...)` read-only views of the stored bytes:
//! the arrays lie over the frame or the mapping the value was read into,
//! no copy, and a write to one raises.

use super::opcodes::{
    BINBYTES8, BYTEARRAY8, FRAME, MARK, NEXT_BUFFER, POP, POP_MARK, READONLY_BUFFER,
    SHORT_BINBYTES, STOP,
};
use std::ops::Range;

/// Buffers smaller than this stay in-band where CPython puts them (a copy
/// of them costs less than the views and the padding).
pub const MIN_BYTES: usize = 64 << 10;

/// A marked buffer's data starts at a multiple of this many bytes from
/// the value's start (a cache line; every NumPy dtype's alignment).
pub const ALIGN: usize = 64;

/// A marked buffer in a stored pickle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marked {
    /// From the marker to the end of the data: what [`out_of_band`]
    /// replaces.
    pub region: Range<usize>,
    /// The buffer's bytes.
    pub data: Range<usize>,
}

/// The length of the opcode at `data[pos]` with its argument; `None` for
/// an opcode of no protocol (0 to 5) or one cut short.
fn op_len(data: &[u8], pos: usize) -> Option<usize> {
    let op = *data.get(pos)?;
    let rest = &data[pos + 1..];
    let fixed = |n: usize| (rest.len() >= n).then_some(1 + n);
    let counted = |width: usize| {
        let len = usize::try_from(le(rest.get(..width)?)).ok()?;
        let total = (1 + width).checked_add(len)?;
        (total <= rest.len() + 1).then_some(total)
    };
    let lines = |n: usize| {
        let mut end = 0;
        for _ in 0..n {
            end += rest[end..].iter().position(|&b| b == b'\n')? + 1;
        }
        Some(1 + end)
    };
    match op {
        b'(' | b'.' | b'0' | b'1' | b'2' | b'N' | b'R' | b'a' | b'b' | b'd' | b'}' | b'e'
        | b'l' | b']' | b'o' | b's' | b't' | b')' | b'u' | b'Q' => Some(1),
        0x81 | 0x85..=0x89 | 0x8f..=0x94 | NEXT_BUFFER | READONLY_BUFFER => Some(1),
        b'K' | b'h' | b'q' | 0x80 | 0x82 => fixed(1),
        b'M' | 0x83 => fixed(2),
        b'J' | b'j' | b'r' | 0x84 => fixed(4),
        b'G' | FRAME => fixed(8),
        b'U' | SHORT_BINBYTES | 0x8c | 0x8a => counted(1),
        b'T' | b'B' | b'X' | 0x8b => counted(4),
        0x8d | BINBYTES8 | BYTEARRAY8 => counted(8),
        b'I' | b'L' | b'S' | b'V' | b'F' | b'g' | b'p' | b'P' => lines(1),
        b'c' | b'i' => lines(2),
        _ => None,
    }
}

fn le(bytes: &[u8]) -> u64 {
    bytes.iter().rev().fold(0, |v, b| (v << 8) | u64::from(*b))
}

/// The marked buffer starting at `pos`, if one does.
fn marked_at(data: &[u8], pos: usize) -> Option<Marked> {
    if data.get(pos..pos + 2)? != [MARK, POP_MARK] {
        return None;
    }
    let mut at = pos + 2;
    if *data.get(at)? == SHORT_BINBYTES {
        let n = usize::from(*data.get(at + 1)?);
        let pad = data.get(at + 2..at + 2 + n)?;
        if pad.iter().any(|&b| b != 0) || *data.get(at + 2 + n)? != POP {
            return None;
        }
        at += 3 + n;
    }
    if !matches!(*data.get(at)?, BINBYTES8 | BYTEARRAY8) {
        return None;
    }
    let start = at + 9;
    let len = usize::try_from(le(data.get(at + 1..start)?)).ok()?;
    let end = start.checked_add(len).filter(|&e| e <= data.len())?;
    (start.is_multiple_of(ALIGN) && len >= MIN_BYTES).then_some(Marked {
        region: pos..end,
        data: start..end,
    })
}

/// The marked buffers of `data`, in order: empty if it has none, or if it
/// is not a pickle that ends at its first `STOP` without frames (what
/// [`in_band`] writes).
pub fn marked(data: &[u8]) -> Vec<Marked> {
    let mut found = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        if data[pos] == MARK {
            if let Some(m) = marked_at(data, pos) {
                pos = m.region.end;
                found.push(m);
                continue;
            }
        }
        match (data[pos], op_len(data, pos)) {
            (STOP, _) if pos + 1 == data.len() => return found,
            (STOP | FRAME, _) | (_, None) => return Vec::new(),
            (_, Some(n)) => pos += n,
        }
    }
    Vec::new()
}

/// `data` with each of `marked` (found by [`marked`]) out of band:
/// `NEXT_BUFFER READONLY_BUFFER` in its place, for `pickle.loads` to take
/// the next of its `buffers`, read-only.
pub fn out_of_band(data: &[u8], marked: &[Marked]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        data.len() - marked.iter().map(|m| m.region.len()).sum::<usize>() + 2 * marked.len(),
    );
    let mut from = 0;
    for m in marked {
        out.extend_from_slice(&data[from..m.region.start]);
        out.extend_from_slice(&[NEXT_BUFFER, READONLY_BUFFER]);
        from = m.region.end;
    }
    out.extend_from_slice(&data[from..]);
    out
}

/// A buffer the pickler took out of band, as [`in_band`] lays it back.
pub struct Taken<'a> {
    pub bytes: &'a [u8],
    pub readonly: bool,
}

/// `main` (a pickle whose `NEXT_BUFFER`s stand for `taken`, in order) with
/// each buffer laid back in-band, marked, its data aligned to [`ALIGN`]
/// from the start; frames dropped (their lengths no longer hold, and a
/// pickle needs none). `None` if `main` is not such a pickle.
pub fn in_band(main: &[u8], taken: &[Taken<'_>]) -> Option<Vec<u8>> {
    let total: usize = taken.iter().map(|t| t.bytes.len() + 2 * ALIGN + 9).sum();
    let mut out = Vec::with_capacity(main.len() + total);
    let mut next = taken.iter();
    let mut pos = 0;
    while pos < main.len() {
        let op = main[pos];
        let n = op_len(main, pos)?;
        match op {
            FRAME => {}
            NEXT_BUFFER => {
                let buffer = next.next()?;
                if main.get(pos + 1) == Some(&READONLY_BUFFER) {
                    pos += 1;
                }
                lay(&mut out, buffer);
            }
            STOP => {
                out.push(STOP);
                let done = pos + 1 == main.len() && next.next().is_none();
                return done.then_some(out);
            }
            _ => out.extend_from_slice(&main[pos..pos + n]),
        }
        pos += n;
    }
    None
}

/// Appends `buffer` marked, its data at the next multiple of [`ALIGN`].
fn lay(out: &mut Vec<u8>, buffer: &Taken<'_>) {
    // The marker (2 bytes), optional padding `C n <n zeros> 0` (n + 3
    // bytes), the opcode and its length (9): the data must start aligned.
    let bare = out.len() + 2 + 9;
    let mut pad = (ALIGN - bare % ALIGN) % ALIGN;
    if pad != 0 && pad < 3 {
        pad += ALIGN;
    }
    out.extend_from_slice(&[MARK, POP_MARK]);
    if pad != 0 {
        out.extend_from_slice(&[SHORT_BINBYTES, (pad - 3) as u8]);
        out.resize(out.len() + pad - 3, 0);
        out.push(POP);
    }
    out.push(if buffer.readonly {
        BINBYTES8
    } else {
        BYTEARRAY8
    });
    out.extend_from_slice(&(buffer.bytes.len() as u64).to_le_bytes());
    debug_assert_eq!(out.len() % ALIGN, 0);
    out.extend_from_slice(buffer.bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A pickle as protocol 5 writes one with two buffers out of band:
    /// `(b1, b2)`, the second read-only, in a frame.
    fn main_with_two() -> Vec<u8> {
        let body = [MARK, NEXT_BUFFER, NEXT_BUFFER, READONLY_BUFFER, b't', 0x94];
        let mut main = vec![0x80, 5, FRAME];
        main.extend_from_slice(&(body.len() as u64 + 1).to_le_bytes());
        main.extend_from_slice(&body);
        main.push(STOP);
        main
    }

    #[test]
    fn laid_in_band_aligned_and_taken_out_again() {
        let a = vec![7u8; MIN_BYTES + 3];
        let b = vec![9u8; MIN_BYTES];
        let taken = [
            Taken {
                bytes: &a,
                readonly: false,
            },
            Taken {
                bytes: &b,
                readonly: true,
            },
        ];
        let stored = in_band(&main_with_two(), &taken).expect("laid");
        let found = marked(&stored);
        assert_eq!(found.len(), 2);
        assert_eq!(&stored[found[0].data.clone()], &a[..]);
        assert_eq!(&stored[found[1].data.clone()], &b[..]);
        assert!(found.iter().all(|m| m.data.start % ALIGN == 0));
        assert_eq!(stored[found[0].data.start - 9], BYTEARRAY8);
        assert_eq!(stored[found[1].data.start - 9], BINBYTES8);
        // Taken out again: the main stream without its frame, each buffer
        // read-only.
        let main = out_of_band(&stored, &found);
        assert_eq!(
            main,
            [
                0x80,
                5,
                MARK,
                NEXT_BUFFER,
                READONLY_BUFFER,
                NEXT_BUFFER,
                READONLY_BUFFER,
                b't',
                0x94,
                STOP
            ]
        );
    }

    #[test]
    fn a_pickle_without_marks_or_cut_short_has_none() {
        let a = vec![1u8; MIN_BYTES];
        let taken = [Taken {
            bytes: &a,
            readonly: false,
        }];
        let main = [0x80, 5, NEXT_BUFFER, STOP];
        let stored = in_band(&main, &taken).unwrap();
        assert_eq!(marked(&stored).len(), 1);
        // Cut short, or with bytes after its STOP: no marked buffer.
        assert!(marked(&stored[..stored.len() - 1]).is_empty());
        let mut longer = stored.clone();
        longer.push(0);
        assert!(marked(&longer).is_empty());
        // A buffer short of `MIN_BYTES` is no marked buffer.
        let small = [Taken {
            bytes: &a[..100],
            readonly: false,
        }];
        assert!(marked(&in_band(&main, &small).unwrap()).is_empty());
        // As many buffers as the stream's NEXT_BUFFERs, or none laid.
        assert!(in_band(&main, &[]).is_none());
        assert!(in_band(&[0x80, 5, STOP], &taken).is_none());
        // An unknown opcode: nothing read.
        assert!(marked(&[0x80, 5, 0xff, STOP]).is_empty());
    }

    proptest! {
        /// Whatever the offset a buffer comes at, its data is aligned and
        /// found again whole.
        #[test]
        fn aligned_at_any_offset(prefix in 0usize..300, len in MIN_BYTES..MIN_BYTES + 200, readonly: bool) {
            // A prefix of `SHORT_BINUNICODE` strings pushed and popped.
            let mut main = vec![0x80, 5];
            let mut left = prefix;
            while left > 0 {
                let n = left.min(200);
                main.extend_from_slice(&[0x8c, n as u8]);
                main.resize(main.len() + n, b'x');
                main.push(POP);
                left -= n;
            }
            main.extend_from_slice(&[NEXT_BUFFER, STOP]);
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let stored = in_band(&main, &[Taken { bytes: &data, readonly }]).unwrap();
            let found = marked(&stored);
            prop_assert_eq!(found.len(), 1);
            prop_assert_eq!(found[0].data.start % ALIGN, 0);
            prop_assert_eq!(&stored[found[0].data.clone()], &data[..]);
            let mut back = main.clone();
            back.insert(back.len() - 1, READONLY_BUFFER);
            prop_assert_eq!(out_of_band(&stored, &found), back);
        }
    }
}
