//! Framing: `[version: u16 little-endian][mode: u8][bincode(Message)]`.
//!
//! Mode 0 is an open frame (security off); the other modes are sealed
//! frames, opened by [`super::seal`], whose body is the same bincode.
//!
//! The version is checked before anything else is read, the frame size is
//! bounded before anything is allocated, bincode's own limit bounds every
//! length prefix inside, and nested lattice maps are bounded in depth
//! ([`crate::lattice::value::MAX_NESTING`]), so no input can make the decoder
//! allocate without bound, overflow the stack or panic.

use super::Message;
use bincode::config::{Configuration, Limit, LittleEndian, Varint};

/// The version every frame starts with. Bump it when a message's shape
/// changes; peers of another version are refused with
/// [`DecodeError::WrongVersion`].
pub const PROTOCOL_VERSION: u16 = 13;

/// The largest frame accepted or produced.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

const VERSION_BYTES: usize = 2;
/// The version and the open mode byte.
const OPEN_HEADER: usize = VERSION_BYTES + 1;

type Config = Configuration<LittleEndian, Varint, Limit<MAX_FRAME_BYTES>>;

const CONFIG: Config = bincode::config::standard().with_limit::<MAX_FRAME_BYTES>();

/// Why bytes are not a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than its header.
    #[error("frame of {len} bytes is shorter than its header")]
    Truncated { len: usize },
    /// From a peer speaking another protocol version.
    #[error("protocol version {found}, expected {expected}")]
    WrongVersion { found: u16, expected: u16 },
    /// Larger than [`MAX_FRAME_BYTES`].
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    Oversized { len: usize, max: usize },
    /// The body is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A sealed frame given to [`decode`], which reads open frames only.
    #[error("sealed frame: open it with the cluster's keys")]
    Sealed,
    /// A valid message followed by bytes that belong to nothing.
    #[error("{extra} trailing bytes after the message")]
    TrailingBytes { extra: usize },
}

/// Why a message could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded message would exceed [`MAX_FRAME_BYTES`].
    #[error("message of {len} bytes exceeds the {max}-byte frame limit")]
    Oversized { len: usize, max: usize },
    /// The serializer refused the message.
    #[error("cannot encode message: {0}")]
    Serialize(String),
}

/// Encodes `msg` as a new frame.
pub fn encode(msg: &Message) -> Result<Vec<u8>, EncodeError> {
    let mut buf = Vec::new();
    encode_into(msg, &mut buf)?;
    Ok(buf)
}

/// Encodes `msg` as an open frame into `buf`, replacing its contents;
/// reusing one buffer keeps a sender's hot path free of allocation.
pub fn encode_into(msg: &Message, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    buf.clear();
    buf.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    buf.push(0);
    encode_body_into(msg, buf)
}

/// Appends `msg`'s body (bincode) to `buf`, failing when `buf` would then
/// exceed [`MAX_FRAME_BYTES`].
pub(crate) fn encode_body_into(msg: &Message, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    bincode::serde::encode_into_std_write(msg, buf, CONFIG)
        .map_err(|e| EncodeError::Serialize(e.to_string()))?;
    if buf.len() > MAX_FRAME_BYTES {
        let len = buf.len();
        buf.clear();
        return Err(EncodeError::Oversized {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    Ok(())
}

/// Decodes one open frame. Never panics; every failure is a
/// [`DecodeError`]. A sealed frame is opened by [`super::seal::Opener`].
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let body = open_body(bytes)?;
    decode_body(&bytes[body])
}

/// Where an open frame's body lies, once its header is checked.
pub(crate) fn open_body(bytes: &[u8]) -> Result<std::ops::Range<usize>, DecodeError> {
    let Some((version, _)) = bytes.split_first_chunk::<VERSION_BYTES>() else {
        return Err(DecodeError::Truncated { len: bytes.len() });
    };
    let found = u16::from_le_bytes(*version);
    if found != PROTOCOL_VERSION {
        return Err(DecodeError::WrongVersion {
            found,
            expected: PROTOCOL_VERSION,
        });
    }
    let Some((header, body)) = bytes.split_first_chunk::<OPEN_HEADER>() else {
        return Err(DecodeError::Truncated { len: bytes.len() });
    };
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(DecodeError::Oversized {
            len: bytes.len(),
            max: MAX_FRAME_BYTES,
        });
    }
    if header[2] != 0 {
        return Err(DecodeError::Sealed);
    }
    Ok(bytes.len() - body.len()..bytes.len())
}

/// Decodes a frame's body: exactly one message.
pub fn decode_body(body: &[u8]) -> Result<Message, DecodeError> {
    let (msg, used) = bincode::serde::decode_from_slice::<Message, Config>(body, CONFIG)
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(DecodeError::TrailingBytes {
            extra: body.len() - used,
        });
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Address, RequestId};

    fn ping() -> Message {
        Message::Ping {
            id: RequestId(7),
            reply_to: Address::from("inproc://x"),
        }
    }

    #[test]
    fn round_trips_a_message() {
        assert_eq!(decode(&encode(&ping()).unwrap()), Ok(ping()));
    }

    #[test]
    fn checks_the_version_before_the_body() {
        let mut frame = encode(&ping()).unwrap();
        frame[0] = frame[0].wrapping_add(1);
        assert!(matches!(
            decode(&frame),
            Err(DecodeError::WrongVersion {
                expected: PROTOCOL_VERSION,
                ..
            })
        ));
        assert_eq!(decode(&[1]), Err(DecodeError::Truncated { len: 1 }));
    }

    #[test]
    fn refuses_trailing_bytes_and_truncation() {
        let mut frame = encode(&ping()).unwrap();
        frame.push(0);
        assert_eq!(decode(&frame), Err(DecodeError::TrailingBytes { extra: 1 }));
        frame.truncate(frame.len() - 2);
        assert!(matches!(decode(&frame), Err(DecodeError::Malformed(_))));
    }
}
