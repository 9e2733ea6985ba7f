//! Stored values as a WebAssembly function's `squall.get` and `squall.put`
//! see them, in Rust: the same bytes the argument rules give (see
//! [`super`]), without the embedded Python.
//!
//! A Python client stores a plain object as its pickle (last-writer-wins).
//! The scalars a WebAssembly function can read (`bytes`, `bytearray`,
//! `str`, `int`, `float`, `bool`) are pickled with a handful of opcodes, and
//! [`readable`] decodes exactly those; any other pickle (a list, an
//! object) is refused by naming what it is not. [`pickled_bytes`] writes
//! the pickle of a Python `bytes` object, which is what
//! `squall.user.put(key, data)` stores, so Python readers get `bytes` back.

use anna::lattice::LatticeValue;
use squall_py::values::looks_pickled;
use squall_py::values::opcodes::*;

/// What a WebAssembly function reads of `value`: `None` for a value with
/// nothing visible (an empty max or min), the bytes otherwise, or why it
/// cannot be read.
pub fn readable(value: &LatticeValue) -> Result<Option<Vec<u8>>, String> {
    match value {
        LatticeValue::Lww(l) if looks_pickled(l.value()) => unpickle_scalar(l.value()).map(Some),
        LatticeValue::Lww(l) => Ok(Some(l.value().to_vec())),
        LatticeValue::Counter(c) => i64::try_from(c.value())
            .map(|n| Some(n.to_le_bytes().to_vec()))
            .map_err(|_| format!("counter {} does not fit in 64 bits", c.value())),
        LatticeValue::Max(m) => Ok(m.reveal().map(|n| n.to_le_bytes().to_vec())),
        LatticeValue::Min(m) => Ok(m.reveal().map(|n| n.to_le_bytes().to_vec())),
        other => Err(format!(
            "a WebAssembly function reads bytes, str, int, float or bool, not a {:?} lattice",
            other.kind()
        )),
    }
}

/// The pickle (protocol 5) of the Python `bytes` object `data`.
pub fn pickled_bytes(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&[PROTO, 5]);
    match u8::try_from(data.len()) {
        Ok(n) => out.extend_from_slice(&[SHORT_BINBYTES, n]),
        Err(_) => {
            out.push(BINBYTES8);
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        }
    }
    out.extend_from_slice(data);
    out.extend_from_slice(&[MEMOIZE, STOP]);
    out
}

/// A pickle being read.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or("the pickle ends early")?;
        let taken = &self.data[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn uint(&mut self, width: usize) -> Result<usize, String> {
        let mut le = [0u8; 8];
        le[..width].copy_from_slice(self.take(width)?);
        usize::try_from(u64::from_le_bytes(le)).map_err(|_| "a length too large".to_string())
    }

    /// The bytes of `len` bytes that follow.
    fn counted(&mut self, width: usize) -> Result<Vec<u8>, String> {
        let len = self.uint(width)?;
        Ok(self.take(len)?.to_vec())
    }
}

/// The bytes of the one scalar a pickle holds.
fn unpickle_scalar(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut r = Reader { data, at: 0 };
    let mut value = None;
    loop {
        let op = r.byte()?;
        let got = match op {
            PROTO => {
                r.byte()?;
                None
            }
            FRAME => {
                r.take(8)?;
                None
            }
            MEMOIZE => None,
            BINPUT => {
                r.byte()?;
                None
            }
            LONG_BINPUT => {
                r.take(4)?;
                None
            }
            STOP => break,
            BININT1 => Some(i64::from(r.byte()?).to_le_bytes().to_vec()),
            BININT2 => Some((r.uint(2)? as i64).to_le_bytes().to_vec()),
            BININT => {
                let n = i32::from_le_bytes(r.take(4)?.try_into().map_err(|_| "BININT")?);
                Some(i64::from(n).to_le_bytes().to_vec())
            }
            LONG1 => {
                let n = usize::from(r.byte()?);
                Some(long(r.take(n)?)?.to_le_bytes().to_vec())
            }
            BINFLOAT => {
                let be: [u8; 8] = r.take(8)?.try_into().map_err(|_| "BINFLOAT")?;
                Some(f64::from_be_bytes(be).to_le_bytes().to_vec())
            }
            NEWTRUE => Some(vec![1]),
            NEWFALSE => Some(vec![0]),
            SHORT_BINUNICODE | SHORT_BINBYTES => Some(r.counted(1)?),
            BINUNICODE | BINBYTES => Some(r.counted(4)?),
            BINUNICODE8 | BINBYTES8 | BYTEARRAY8 => Some(r.counted(8)?),
            _ => {
                return Err(format!(
                    "a WebAssembly function reads bytes, str, int, float or bool; this value \
                     is a pickled Python object of another type (opcode {op:#04x})"
                ))
            }
        };
        if let Some(bytes) = got {
            if value.replace(bytes).is_some() {
                return Err("a pickle of more than one scalar".into());
            }
        }
    }
    value.ok_or_else(|| "a pickle of no value".into())
}

/// A little-endian two's-complement integer of any width, as an i64.
fn long(bytes: &[u8]) -> Result<i64, String> {
    if bytes.is_empty() {
        return Ok(0);
    }
    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
    let fill = if negative { 0xff } else { 0 };
    if bytes.len() > 8 && bytes[8..].iter().any(|&b| b != fill) {
        return Err("an int that does not fit in 64 bits".into());
    }
    let mut le = [fill; 8];
    let n = bytes.len().min(8);
    le[..n].copy_from_slice(&bytes[..n]);
    let v = i64::from_le_bytes(le);
    if (v < 0) != negative {
        return Err("an int that does not fit in 64 bits".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pickles as CPython 3.11's `pickle.dumps(v, protocol=5)` (and
    // cloudpickle) writes them.
    #[test]
    fn scalars_read_as_the_argument_rules_give_them() {
        let int41 = b"\x80\x05K).";
        assert_eq!(unpickle_scalar(int41).unwrap(), 41i64.to_le_bytes());
        let neg = b"\x80\x05\x95\x06\x00\x00\x00\x00\x00\x00\x00J\xfe\xff\xff\xff.";
        assert_eq!(unpickle_scalar(neg).unwrap(), (-2i64).to_le_bytes());
        let big = b"\x80\x05\x95\x08\x00\x00\x00\x00\x00\x00\x00\x8a\x05\x00\xe4\x0bT\x02.";
        assert_eq!(
            unpickle_scalar(big).unwrap(),
            10_000_000_000i64.to_le_bytes()
        );
        let s = b"\x80\x05\x95\t\x00\x00\x00\x00\x00\x00\x00\x8c\x05hello\x94.";
        assert_eq!(unpickle_scalar(s).unwrap(), b"hello");
        let f = b"\x80\x05\x95\n\x00\x00\x00\x00\x00\x00\x00G?\xf8\x00\x00\x00\x00\x00\x00.";
        assert_eq!(unpickle_scalar(f).unwrap(), 1.5f64.to_le_bytes());
        assert_eq!(unpickle_scalar(b"\x80\x05\x88.").unwrap(), [1]);
        let b = b"\x80\x05\x95\x07\x00\x00\x00\x00\x00\x00\x00C\x03abc\x94.";
        assert_eq!(unpickle_scalar(b).unwrap(), b"abc");
    }

    #[test]
    fn other_pickles_and_broken_ones_are_refused() {
        let list = b"\x80\x05]\x94.";
        assert!(unpickle_scalar(list).unwrap_err().contains("another type"));
        assert!(unpickle_scalar(b"\x80\x05\x8c\x05hel").is_err());
        assert!(unpickle_scalar(b"\x80\x05.").is_err());
        let huge = b"\x80\x05\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.";
        assert!(unpickle_scalar(huge).unwrap_err().contains("64 bits"));
        assert_eq!(long(&[0xff]).unwrap(), -1);
        assert_eq!(long(&[0x00, 0x80]).unwrap(), -32768);
        assert_eq!(long(&[0xff, 0x00]).unwrap(), 255);
    }

    #[test]
    fn sets_and_maps_are_refused_naming_their_kind() {
        use anna::lattice::{ORMapLattice, ORSetLattice, Timestamp};
        let or_set = ORSetLattice::with_adds(Timestamp::default(), [b"x".to_vec()]);
        for (value, kind) in [
            (LatticeValue::ORSet(or_set), "ORSet"),
            (LatticeValue::ORMap(ORMapLattice::default()), "ORMap"),
        ] {
            let err = readable(&value).unwrap_err();
            assert!(err.contains(&format!("not a {kind} lattice")), "{err}");
        }
    }

    #[test]
    fn written_bytes_read_back_and_look_pickled() {
        for len in [0usize, 3, 255, 256, 70_000] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let pickle = pickled_bytes(&data);
            assert!(looks_pickled(&pickle));
            assert_eq!(unpickle_scalar(&pickle).unwrap(), data);
        }
    }
}
