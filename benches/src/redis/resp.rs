//! RESP2 frames: encoding commands and parsing replies. Pure: bytes in,
//! a [`Reply`] (and how many bytes it took) out, no I/O.
//!
//! [`parse`] never panics and never allocates more than the input
//! justifies: every length is bounded, arrays nest at most
//! [`MAX_DEPTH`] deep, and anything that is not RESP2 is
//! [`RespError::Invalid`]. A frame cut short is [`RespError::Incomplete`]:
//! the caller reads more bytes and parses again.

/// The largest bulk string accepted: Redis's own default
/// `proto-max-bulk-len`.
pub const MAX_BULK: usize = 512 * 1024 * 1024;
/// The most elements an array reply may announce.
pub const MAX_ARRAY: usize = 1 << 20;
/// How deep arrays may nest.
pub const MAX_DEPTH: usize = 8;
/// The longest header or simple-string line.
pub const MAX_LINE: usize = 64 * 1024;

/// One reply from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`, or `$-1` (nil) as `None`.
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...`, or `*-1` (nil) as `None`.
    Array(Option<Vec<Reply>>),
}

/// Why bytes are not (yet) a reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    /// The reply is not complete yet; read more and try again.
    #[error("incomplete reply")]
    Incomplete,
    /// The bytes are not a RESP2 reply; the connection is unusable.
    #[error("malformed reply: {0}")]
    Invalid(String),
}

/// Appends a command (an array of bulk strings) to `out`.
pub fn encode_command(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses the reply at the start of `buf`: the reply and how many bytes it
/// took.
pub fn parse(buf: &[u8]) -> Result<(Reply, usize), RespError> {
    let mut pos = 0;
    let reply = parse_at(buf, &mut pos, 0)?;
    Ok((reply, pos))
}

fn invalid(why: impl Into<String>) -> RespError {
    RespError::Invalid(why.into())
}

fn parse_at(buf: &[u8], pos: &mut usize, depth: usize) -> Result<Reply, RespError> {
    let Some(&kind) = buf.get(*pos) else {
        return Err(RespError::Incomplete);
    };
    *pos += 1;
    let line = line(buf, pos)?;
    match kind {
        b'+' => Ok(Reply::Simple(String::from_utf8_lossy(line).into_owned())),
        b'-' => Ok(Reply::Error(String::from_utf8_lossy(line).into_owned())),
        b':' => Ok(Reply::Integer(integer(line)?)),
        b'$' => {
            let Some(len) = length(line, MAX_BULK)? else {
                return Ok(Reply::Bulk(None));
            };
            let body_end = pos
                .checked_add(len)
                .ok_or_else(|| invalid("length overflow"))?;
            if buf.len() < body_end + 2 {
                return Err(RespError::Incomplete);
            }
            if &buf[body_end..body_end + 2] != b"\r\n" {
                return Err(invalid("bulk string not followed by CRLF"));
            }
            let body = buf[*pos..body_end].to_vec();
            *pos = body_end + 2;
            Ok(Reply::Bulk(Some(body)))
        }
        b'*' => {
            let Some(len) = length(line, MAX_ARRAY)? else {
                return Ok(Reply::Array(None));
            };
            if depth >= MAX_DEPTH {
                return Err(invalid(format!("arrays nested deeper than {MAX_DEPTH}")));
            }
            // Each element takes at least 3 bytes: a length the input
            // cannot back is not trusted with an allocation.
            let mut items = Vec::with_capacity(len.min((buf.len() - *pos) / 3));
            for _ in 0..len {
                items.push(parse_at(buf, pos, depth + 1)?);
            }
            Ok(Reply::Array(Some(items)))
        }
        other => Err(invalid(format!(
            "unknown reply type byte 0x{other:02x} (not RESP2)"
        ))),
    }
}

/// The line starting at `pos`, without its CRLF; moves `pos` past it.
fn line<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a [u8], RespError> {
    let rest = &buf[*pos..];
    match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(i) if rest[i] == b'\n' => Err(invalid("bare LF in a line")),
        Some(i) if i > MAX_LINE => Err(invalid("line too long")),
        Some(i) => match rest.get(i + 1) {
            None => Err(RespError::Incomplete),
            Some(b'\n') => {
                *pos += i + 2;
                Ok(&rest[..i])
            }
            Some(_) => Err(invalid("CR not followed by LF")),
        },
        None if rest.len() > MAX_LINE => Err(invalid("line too long")),
        None => Err(RespError::Incomplete),
    }
}

fn integer(line: &[u8]) -> Result<i64, RespError> {
    let text = std::str::from_utf8(line).map_err(|_| invalid("integer is not ASCII"))?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!("not an integer: {text:?}")));
    }
    text.parse()
        .map_err(|_| invalid(format!("integer out of range: {text:?}")))
}

/// A bulk or array length: `None` for -1 (nil), an error past `max` or
/// below -1.
fn length(line: &[u8], max: usize) -> Result<Option<usize>, RespError> {
    match integer(line)? {
        -1 => Ok(None),
        n if n < -1 => Err(invalid(format!("negative length {n}"))),
        n => match usize::try_from(n) {
            Ok(n) if n <= max => Ok(Some(n)),
            _ => Err(invalid(format!("length {n} exceeds the limit {max}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(bytes: &[u8]) -> Reply {
        let (reply, used) = parse(bytes).unwrap();
        assert_eq!(used, bytes.len(), "whole input consumed");
        reply
    }

    fn bad(bytes: &[u8]) -> String {
        match parse(bytes) {
            Err(RespError::Invalid(why)) => why,
            other => panic!("{bytes:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn well_formed_replies_parse() {
        assert_eq!(ok(b"+OK\r\n"), Reply::Simple("OK".into()));
        assert_eq!(ok(b"+\r\n"), Reply::Simple(String::new()));
        assert_eq!(
            ok(b"-ERR wrong type\r\n"),
            Reply::Error("ERR wrong type".into())
        );
        assert_eq!(ok(b":-42\r\n"), Reply::Integer(-42));
        assert_eq!(ok(b"$3\r\nfoo\r\n"), Reply::Bulk(Some(b"foo".to_vec())));
        assert_eq!(ok(b"$0\r\n\r\n"), Reply::Bulk(Some(Vec::new())));
        assert_eq!(ok(b"$-1\r\n"), Reply::Bulk(None));
        // Binary values may hold CR and LF.
        assert_eq!(
            ok(b"$4\r\n\r\n\r\n\r\n"),
            Reply::Bulk(Some(b"\r\n\r\n".to_vec()))
        );
        assert_eq!(ok(b"*-1\r\n"), Reply::Array(None));
        assert_eq!(
            ok(b"*3\r\n:1\r\n$-1\r\n*1\r\n+x\r\n"),
            Reply::Array(Some(vec![
                Reply::Integer(1),
                Reply::Bulk(None),
                Reply::Array(Some(vec![Reply::Simple("x".into())])),
            ]))
        );
    }

    #[test]
    fn pipelined_replies_parse_one_at_a_time() {
        let buf = b"+OK\r\n$2\r\nhi\r\n";
        let (first, used) = parse(buf).unwrap();
        assert_eq!((first, used), (Reply::Simple("OK".into()), 5));
        assert_eq!(ok(&buf[used..]), Reply::Bulk(Some(b"hi".to_vec())));
    }

    #[test]
    fn every_prefix_of_a_reply_is_incomplete() {
        let full = b"*2\r\n$5\r\nhello\r\n:7\r\n";
        for end in 0..full.len() {
            assert_eq!(
                parse(&full[..end]),
                Err(RespError::Incomplete),
                "prefix of {end} bytes"
            );
        }
        ok(full);
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        assert!(bad(b"!3\r\nfoo\r\n").contains("unknown reply type"));
        assert!(bad(b"_\r\n").contains("not RESP2"));
        assert!(bad(b":12a\r\n").contains("not an integer"));
        assert!(bad(b":\r\n").contains("not an integer"));
        assert!(bad(b":-\r\n").contains("not an integer"));
        assert!(bad(b":99999999999999999999\r\n").contains("out of range"));
        assert!(bad(b"$-2\r\n").contains("negative length"));
        assert!(bad(b"$9999999999999\r\n").contains("exceeds the limit"));
        assert!(bad(b"*2000000\r\n").contains("exceeds the limit"));
        assert!(bad(b"$3\r\nfooXY").contains("CRLF"));
        assert!(bad(b"+OK\rX").contains("CR not followed by LF"));
        assert!(bad(b"+OK\n").contains("bare LF"));
        assert!(bad(b"$+3\r\nfoo\r\n").contains("not an integer"));
        let mut long = b"+".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_LINE + 1));
        assert!(bad(&long).contains("too long"));
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
        assert!(bad(deep.as_bytes()).contains("nested deeper"));
    }

    #[test]
    fn a_huge_announced_array_does_not_allocate_up_front() {
        // A million elements announced, none sent: incomplete, and the
        // capacity reserved is bounded by the input.
        assert_eq!(parse(b"*1000000\r\n"), Err(RespError::Incomplete));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let len = (state % 24) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    b"+-:$*\r\n0123-9ab"[(state % 15) as usize]
                })
                .collect();
            let _ = parse(&bytes);
        }
    }

    #[test]
    fn commands_encode_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&[b"SET", b"k", b"v\r\n"], &mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n");
        let (reply, _) = parse(&out).unwrap();
        assert!(matches!(reply, Reply::Array(Some(items)) if items.len() == 3));
    }
}
