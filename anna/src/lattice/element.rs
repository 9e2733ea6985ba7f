//! How a set element says whether it is text or bytes.
//!
//! Set lattices hold byte strings (`Vec<u8>`): the store compares elements
//! by their bytes and knows nothing of Python. A Python client puts both
//! `str` and `bytes` elements, and wants each back as it was put. So a text
//! element written through [`encode_text`] is its UTF-8 bytes behind one
//! marker byte, `0xFF`, which no UTF-8 text contains:
//!
//! | element | stored as |
//! |---|---|
//! | text `s` | `FF` ++ UTF-8 of `s` |
//! | bytes `b` starting with `FF` | `FF` ++ `b` (so `FF FF ...`) |
//! | any other bytes `b` | `b`, unchanged |
//!
//! [`decode`] reverses it: `FF FF rest` is the bytes `FF rest`; `FF` then
//! valid UTF-8 is text; anything else is bytes as stored. Bytes written
//! before this encoding existed (every element of a set written by an
//! older client, `squall kv put -t set`, and the cluster's own
//! `__squall/functions` index of older versions) read back unchanged, as
//! bytes; the only ones read differently are those that began with `FF`,
//! which no text ever does.
//!
//! Text and bytes of the same characters are different elements (`"x"`
//! is stored `FF 78`, `b"x"` is stored `78`), as `"x" != b"x"` in Python.

use std::borrow::Cow;

/// The byte that marks a text element (and escapes bytes that start
/// with it). It never occurs in UTF-8.
pub const TEXT_MARKER: u8 = 0xFF;

/// A set element, as its writer meant it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Element<'a> {
    /// A `str`.
    Text(&'a str),
    /// A `bytes`.
    Bytes(Cow<'a, [u8]>),
}

/// The stored form of a text element.
pub fn encode_text(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 1);
    out.push(TEXT_MARKER);
    out.extend_from_slice(text.as_bytes());
    out
}

/// The stored form of a bytes element.
pub fn encode_bytes(bytes: &[u8]) -> Vec<u8> {
    if bytes.first() == Some(&TEXT_MARKER) {
        let mut out = Vec::with_capacity(bytes.len() + 1);
        out.push(TEXT_MARKER);
        out.extend_from_slice(bytes);
        out
    } else {
        bytes.to_vec()
    }
}

/// The element a stored byte string stands for.
pub fn decode(stored: &[u8]) -> Element<'_> {
    match stored {
        [TEXT_MARKER, TEXT_MARKER, ..] => Element::Bytes(Cow::Borrowed(&stored[1..])),
        [TEXT_MARKER, rest @ ..] => match std::str::from_utf8(rest) {
            Ok(text) => Element::Text(text),
            Err(_) => Element::Bytes(Cow::Borrowed(stored)),
        },
        _ => Element::Bytes(Cow::Borrowed(stored)),
    }
}

/// The element as a person reads it: text as it is, bytes as lossy UTF-8.
pub fn display(stored: &[u8]) -> Cow<'_, str> {
    match decode(stored) {
        Element::Text(text) => Cow::Borrowed(text),
        Element::Bytes(bytes) => match bytes {
            Cow::Borrowed(b) => String::from_utf8_lossy(b),
            Cow::Owned(b) => Cow::Owned(String::from_utf8_lossy(&b).into_owned()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_bytes_round_trip_and_stay_distinct() {
        for text in ["", "x", "é", "\u{0}"] {
            assert_eq!(decode(&encode_text(text)), Element::Text(text));
        }
        for bytes in [&b""[..], b"x", b"\xff", b"\xff\xff", b"\xffx", b"\x80\x05"] {
            let stored = encode_bytes(bytes);
            assert_eq!(decode(&stored), Element::Bytes(Cow::Borrowed(bytes)));
        }
        assert_ne!(encode_text("x"), encode_bytes(b"x"));
    }

    #[test]
    fn bytes_stored_before_the_encoding_read_back_unchanged() {
        // What older clients and `squall kv put -t set` store: raw bytes.
        for raw in [&b"f"[..], b"name with spaces", b"\x00\x01", b"\xc3("] {
            assert_eq!(decode(raw), Element::Bytes(Cow::Borrowed(raw)));
        }
        // A legacy element that began with the marker but is not text
        // after it stays as it was stored.
        assert_eq!(
            decode(b"\xff\xc3("),
            Element::Bytes(Cow::Borrowed(&b"\xff\xc3("[..]))
        );
    }

    #[test]
    fn display_shows_text_without_its_marker() {
        assert_eq!(display(&encode_text("fn")), "fn");
        assert_eq!(display(b"fn"), "fn");
        assert_eq!(display(&encode_bytes(b"\xffa")), "\u{fffd}a");
    }
}
