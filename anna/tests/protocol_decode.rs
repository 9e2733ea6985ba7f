//! The decoder is total: any bytes give a message or a [`DecodeError`],
//! never a panic, a stack overflow or an allocation the input did not pay
//! for; and every message it accepts survives encode → decode unchanged.
//!
//! Random inputs come from proptest with [`CASES`] cases per property; the
//! cheap exhaustive checks (every truncation of every sample) are plain
//! loops. `anna/fuzz/` runs the same "decode, and if it decodes, round-trip"
//! property under libFuzzer for longer.

mod samples;

use anna::lattice::value::MAX_NESTING;
use anna::lattice::{KeyState, LatticeKind, LatticeValue, MapLattice, Max};
use anna::protocol::compute::{CallErrorKind, CallOutcome};
use anna::protocol::{
    decode, encode, encode_into, Ack, Address, DecodeError, EncodeError, Gossip, KeyOp, KvsError,
    Membership, Message, Outcome, RequestId, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use proptest::prelude::*;
use proptest::sample::Index;
use std::collections::BTreeSet;
use std::sync::LazyLock;

/// Cases per proptest property. Each case decodes at most a few KiB, so
/// the whole file runs in seconds in a debug build.
const CASES: u32 = 512;

/// An open frame's header: the version, then mode 0.
const HEADER: [u8; 3] = {
    let v = PROTOCOL_VERSION.to_le_bytes();
    [v[0], v[1], 0]
};

// Wire tags (variant indices) used to craft frames by hand.
const TAG_PING: u8 = 0;
const TAG_KVS_REQUEST: u8 = 2;
const TAG_GOSSIP: u8 = 4;
const TAG_ROUTE_RESPONSE: u8 = 6;
const TAG_LWW: u8 = 0;
const TAG_SET: u8 = 1;
const TAG_MAX: u8 = 3;
const TAG_MAP: u8 = 6;
const MESSAGE_VARIANTS: u8 = 42;

/// A gossip entry's `KeyState` prefix: never deleted (`None`), then
/// `Some(value)`; the value's bytes follow.
const KEY_STATE_WITH_VALUE: [u8; 2] = [0, 1];

/// Decodes `bytes`; when they decode, checks the message re-encodes and
/// decodes back to itself. A panic anywhere fails the calling property.
fn decode_checked(bytes: &[u8]) -> Result<Message, DecodeError> {
    let decoded = decode(bytes);
    if let Ok(msg) = &decoded {
        let again = encode(msg).expect("a decoded message re-encodes");
        assert_eq!(decode(&again).as_ref(), Ok(msg), "re-encoded: {again:02x?}");
    }
    decoded
}

/// Every sample with its frame, built once.
static FRAMES: LazyLock<Vec<(Message, Vec<u8>)>> = LazyLock::new(|| {
    samples::sample_messages()
        .into_iter()
        .map(|m| {
            let frame = encode(&m).expect("samples encode");
            (m, frame)
        })
        .collect()
});

fn frames() -> Vec<(Message, Vec<u8>)> {
    FRAMES.clone()
}

fn pick_frame(sample: &Index) -> &'static [u8] {
    &FRAMES[sample.index(FRAMES.len())].1
}

/// bincode's varint: one byte below 251, else a marker and the value in
/// 2, 4 or 8 little-endian bytes.
fn varint(v: u64) -> Vec<u8> {
    if v < 251 {
        vec![v as u8]
    } else if let Ok(v) = u16::try_from(v) {
        [&[251][..], &v.to_le_bytes()].concat()
    } else if let Ok(v) = u32::try_from(v) {
        [&[252][..], &v.to_le_bytes()].concat()
    } else {
        [&[253][..], &v.to_le_bytes()].concat()
    }
}

fn frame_of(parts: &[&[u8]]) -> Vec<u8> {
    let mut frame = HEADER.to_vec();
    for part in parts {
        frame.extend_from_slice(part);
    }
    frame
}

/// `depth` lattice maps, one inside the other, around a `Max`.
fn nested_maps(depth: usize) -> LatticeValue {
    let mut value = LatticeValue::Max(Max::new(1));
    for _ in 0..depth {
        value = LatticeValue::Map(MapLattice::new([("k".to_string(), value)]));
    }
    value
}

/// Every place a lattice value travels, wrapping `value`.
fn carriers(value: LatticeValue) -> Vec<Message> {
    vec![
        Message::Gossip(Gossip {
            from: Address::from("a"),
            entries: vec![("k".to_string(), KeyState::from_value(value.clone()))],
            ack: None,
        }),
        Message::KvsRequest(anna::protocol::KvsRequest {
            id: RequestId(1),
            reply_to: Address::from("a"),
            ops: vec![KeyOp::Put {
                key: "k".to_string(),
                value: value.clone(),
            }],
            ack: Ack::FirstReplica,
            shared_memory: None,
        }),
        Message::KvsResponse(anna::protocol::KvsResponse {
            id: RequestId(1),
            results: vec![anna::protocol::KeyResult {
                key: "k".to_string(),
                outcome: Outcome::Value(value),
            }],
            hits: 0,
        }),
    ]
}

fn is_nesting_error(result: &Result<Message, DecodeError>) -> bool {
    matches!(result, Err(DecodeError::Malformed(why)) if why.contains("nested deeper"))
}

// ---- (a) samples round-trip, and cover every variant -------------------

#[test]
fn every_sample_round_trips() {
    let mut buf = vec![0xaa; 3];
    for (msg, frame) in frames() {
        assert_eq!(&frame[..3], HEADER, "{msg:?}");
        assert_eq!(decode(&frame), Ok(msg.clone()));
        encode_into(&msg, &mut buf).unwrap();
        assert_eq!(buf, frame, "encode_into replaces the buffer's contents");
    }
}

#[test]
fn samples_cover_every_variant_and_lattice_kind() {
    let msgs = samples::sample_messages();
    let kinds: BTreeSet<_> = msgs.iter().map(Message::kind).collect();
    assert_eq!(kinds.len(), usize::from(MESSAGE_VARIANTS), "{kinds:?}");

    let lattice_kinds: BTreeSet<_> = samples::sample_values().iter().map(|v| v.kind()).collect();
    assert_eq!(lattice_kinds, LatticeKind::ALL.into_iter().collect());

    // The matches are exhaustive, so a new variant fails to compile here
    // until a sample of it is added.
    let mut seen = BTreeSet::new();
    for msg in &msgs {
        match msg {
            Message::KvsRequest(req) => {
                seen.insert(match req.ack {
                    Ack::FirstReplica => "ack-first",
                    Ack::Replicas(_) => "ack-replicas",
                    Ack::All => "ack-all",
                    Ack::Durable => "ack-durable",
                });
                for op in &req.ops {
                    seen.insert(match op {
                        KeyOp::Get { .. } => "get",
                        KeyOp::Put { .. } => "put",
                        KeyOp::Delete { .. } => "delete",
                        KeyOp::ReadState { .. } => "read-state",
                    });
                }
            }
            Message::KvsResponse(resp) => {
                for r in &resp.results {
                    seen.insert(match &r.outcome {
                        Outcome::Value(_) => "value",
                        Outcome::NotFound => "not-found",
                        Outcome::Stored { .. } => "stored",
                        Outcome::NotMine { .. } => "not-mine",
                        Outcome::Error(KvsError::TypeMismatch(_)) => "type-mismatch",
                        Outcome::Error(KvsError::AckTimeout { .. }) => "ack-timeout",
                        Outcome::Error(KvsError::WrongKind { .. }) => "wrong-kind",
                        Outcome::Error(KvsError::Stale) => "stale",
                        Outcome::Error(KvsError::TooLarge { .. }) => "too-large",
                        Outcome::Error(KvsError::ClockAhead { .. }) => "clock-ahead",
                        Outcome::Error(KvsError::NotDurable { .. }) => "not-durable",
                        Outcome::Error(KvsError::DiskRead { .. }) => "disk-read",
                        Outcome::Error(KvsError::PermissionDenied { .. }) => "permission-denied",
                        Outcome::State(_) => "key-state",
                        Outcome::Shared(_) => "shared",
                    });
                }
            }
            Message::Membership(m) => {
                seen.insert(match m {
                    Membership::Join { .. } => "join",
                    Membership::Depart { .. } => "depart",
                    Membership::Heartbeat { .. } => "heartbeat",
                    Membership::State(_) => "state",
                    Membership::SetReplication { .. } => "set-replication",
                    Membership::Leave { .. } => "leave",
                    Membership::Left { .. } => "left",
                });
            }
            Message::CallResult(result) => {
                seen.insert(match &result.outcome {
                    CallOutcome::Value(_) => "call-value",
                    CallOutcome::Error(e) => match e.kind {
                        CallErrorKind::Remote => "remote",
                        CallErrorKind::UnknownFunction => "unknown-function",
                        CallErrorKind::UnknownDag => "unknown-dag",
                        CallErrorKind::BadArguments => "bad-arguments",
                        CallErrorKind::BadFunction => "bad-function",
                        CallErrorKind::Timeout => "timeout",
                        CallErrorKind::ExecutorDied => "executor-died",
                        CallErrorKind::Overloaded => "overloaded",
                        CallErrorKind::TooLarge => "call-too-large",
                        CallErrorKind::Unavailable => "unavailable",
                        CallErrorKind::PermissionDenied => "call-permission-denied",
                    },
                });
            }
            Message::Ping { .. }
            | Message::Pong { .. }
            | Message::Invoke { .. }
            | Message::Trigger { .. }
            | Message::Call(_)
            | Message::CallDag(_)
            | Message::CallDone { .. }
            | Message::ExecutorReport(_)
            | Message::CacheReport(_)
            | Message::DagChanged(_)
            | Message::Subscribe(_)
            | Message::UserMessage(_)
            | Message::ComputeStatusRequest { .. }
            | Message::ComputeStatusReply { .. }
            | Message::StatsRequest { .. }
            | Message::StorageReport { .. }
            | Message::Prewarm { .. }
            | Message::MonitorStatusRequest { .. }
            | Message::MonitorStatusReply { .. }
            | Message::ExecutorLeaving { .. }
            | Message::Scale { .. }
            | Message::Metrics { .. }
            | Message::CancelCall { .. }
            | Message::CancelAnswer { .. }
            | Message::CallTraced(_)
            | Message::Watch(_)
            | Message::WatchState(_)
            | Message::Changes(_)
            | Message::ChangesDone { .. }
            | Message::Gossip(_)
            | Message::GossipAck { .. }
            | Message::Fetch { .. }
            | Message::FetchReply { .. }
            | Message::StatusRequest { .. }
            | Message::StatusReply { .. }
            | Message::RouteRequest(_)
            | Message::RouteResponse(_)
            | Message::Batch(_) => {}
        }
    }
    assert_eq!(seen.len(), 4 + 4 + 15 + 7 + 1 + 11, "{seen:?}");
}

// ---- (c) truncation, trailing bytes ------------------------------------

#[test]
fn every_truncation_of_every_sample_is_an_error() {
    for (msg, frame) in frames() {
        for len in 0..frame.len() {
            match decode(&frame[..len]) {
                Err(DecodeError::Truncated { len: l }) => assert!(len < 3 && l == len),
                Err(DecodeError::Malformed(_)) => assert!(len >= 3),
                other => panic!("{} cut to {len} bytes gave {other:?}", msg.kind()),
            }
        }
    }
}

#[test]
fn bytes_after_a_message_are_refused() {
    for (_, mut frame) in frames() {
        frame.extend_from_slice(&[0, 1, 2]);
        assert_eq!(decode(&frame), Err(DecodeError::TrailingBytes { extra: 3 }));
    }
}

// ---- (d) version, (e) size ---------------------------------------------

#[test]
fn the_version_is_checked_before_the_size_and_the_body() {
    assert_eq!(decode(&[]), Err(DecodeError::Truncated { len: 0 }));
    let other = PROTOCOL_VERSION.wrapping_add(1).to_le_bytes();
    assert_eq!(
        decode(&other),
        Err(DecodeError::WrongVersion {
            found: PROTOCOL_VERSION.wrapping_add(1),
            expected: PROTOCOL_VERSION,
        })
    );
}

#[test]
fn a_frame_over_the_limit_is_oversized_and_one_at_the_limit_is_not() {
    // Zeroed pages are mapped lazily: building these costs almost nothing.
    let mut frame = vec![0u8; MAX_FRAME_BYTES + 1];
    frame[..3].copy_from_slice(&HEADER);
    assert_eq!(
        decode(&frame),
        Err(DecodeError::Oversized {
            len: MAX_FRAME_BYTES + 1,
            max: MAX_FRAME_BYTES,
        })
    );
    // At the limit the body is read: zeros are a Ping with id 0 and an
    // empty reply-to (3 bytes), then trailing zeros.
    frame.pop();
    assert_eq!(
        decode(&frame),
        Err(DecodeError::TrailingBytes {
            extra: MAX_FRAME_BYTES - 3 - 3,
        })
    );
    // A wrong version is reported even on an oversized frame.
    frame.extend_from_slice(&[0, 0]);
    frame[0] ^= 0xff;
    assert!(matches!(
        decode(&frame),
        Err(DecodeError::WrongVersion { .. })
    ));
}

#[test]
fn encoding_a_message_over_the_limit_is_refused() {
    let msg = Message::Ping {
        id: RequestId(1),
        reply_to: Address("x".repeat(MAX_FRAME_BYTES)),
    };
    let mut buf = b"stale".to_vec();
    assert!(matches!(
        encode_into(&msg, &mut buf),
        Err(EncodeError::Oversized {
            max: MAX_FRAME_BYTES,
            ..
        })
    ));
    assert!(buf.is_empty(), "a refused frame leaves nothing to send");
}

// ---- (f) huge length prefixes ------------------------------------------

#[test]
fn huge_length_prefixes_are_errors_without_allocating_them() {
    let huge = varint(u64::MAX);
    let just_under_limit = varint(MAX_FRAME_BYTES as u64 - 16);
    let empty_string = varint(0);
    let one = varint(1);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "string of u64::MAX bytes",
            frame_of(&[&[TAG_PING, 0], &huge]),
        ),
        (
            "string just under the frame limit",
            frame_of(&[&[TAG_PING, 0], &just_under_limit, b"abc"]),
        ),
        (
            "u64::MAX key ops",
            frame_of(&[&[TAG_KVS_REQUEST, 0], &empty_string, &huge, &[0, 0]]),
        ),
        (
            "u64::MAX gossip entries",
            frame_of(&[&[TAG_GOSSIP], &empty_string, &huge]),
        ),
        (
            "lww value of u64::MAX bytes",
            frame_of(&[
                &[TAG_GOSSIP],
                &empty_string,
                &one,
                &empty_string,
                &KEY_STATE_WITH_VALUE,
                &[TAG_LWW, 0, 0, 0],
                &huge,
                &[7],
            ]),
        ),
        (
            "set of u64::MAX members",
            frame_of(&[
                &[TAG_GOSSIP],
                &empty_string,
                &one,
                &empty_string,
                &KEY_STATE_WITH_VALUE,
                &[TAG_SET],
                &huge,
            ]),
        ),
        (
            "lattice map of u64::MAX fields",
            frame_of(&[
                &[TAG_GOSSIP],
                &empty_string,
                &one,
                &empty_string,
                &KEY_STATE_WITH_VALUE,
                &[TAG_MAP],
                &huge,
            ]),
        ),
        (
            "u64::MAX addresses in a placement",
            frame_of(&[
                &[TAG_ROUTE_RESPONSE, 0, 0],
                &one,
                &empty_string,
                &huge,
                &empty_string,
            ]),
        ),
        (
            "a 128-bit length",
            frame_of(&[&[TAG_GOSSIP], &empty_string, &[254], &[0xff; 16]]),
        ),
    ];
    for (what, frame) in &cases {
        assert!(
            matches!(decode(frame), Err(DecodeError::Malformed(_))),
            "{what}: {:?}",
            decode(frame)
        );
    }
    // Trying to allocate any of these would abort the test process; the
    // decoder refuses each claimed length before allocating it.
}

// ---- (g) nesting -------------------------------------------------------

#[test]
fn maps_nested_max_nesting_deep_are_accepted_and_one_deeper_refused() {
    for msg in carriers(nested_maps(MAX_NESTING)) {
        assert_eq!(decode(&encode(&msg).unwrap()), Ok(msg));
    }
    for msg in carriers(nested_maps(MAX_NESTING + 1)) {
        let frame = encode(&msg).expect("deep values encode; only decoding refuses them");
        assert!(is_nesting_error(&decode(&frame)), "{}", msg.kind());
    }
}

#[test]
fn nesting_is_depth_not_count_and_a_refusal_leaves_no_residue() {
    // Two sibling branches each as deep as allowed: the guard counts depth.
    let branch = || nested_maps(MAX_NESTING - 1);
    let wide = LatticeValue::Map(MapLattice::new([
        ("a".to_string(), branch()),
        ("b".to_string(), branch()),
    ]));
    let wide = carriers(wide).remove(0);
    let wide_frame = encode(&wide).unwrap();
    let too_deep = encode(&carriers(nested_maps(MAX_NESTING + 1)).remove(0)).unwrap();
    // Alternating refusals and acceptances on one thread: a refusal part
    // way down must not leave the depth count raised.
    for _ in 0..3 {
        assert!(is_nesting_error(&decode(&too_deep)));
        assert_eq!(decode(&wide_frame).as_ref(), Ok(&wide));
    }
}

#[test]
fn a_million_maps_deep_is_refused_without_overflowing_the_stack() {
    // Crafted, not encoded: building a value this deep would overflow the
    // stack in its own drop. Each level is `Map { "k": ... }`.
    const DEPTH: usize = 1_000_000;
    let level = [TAG_MAP, 1, 1, b'k'];
    let mut frame = frame_of(&[
        &[TAG_GOSSIP],
        &varint(0),
        &varint(1),
        &varint(0),
        &KEY_STATE_WITH_VALUE,
    ]);
    frame.reserve(DEPTH * level.len() + 3);
    for _ in 0..DEPTH {
        frame.extend_from_slice(&level);
    }
    frame.extend_from_slice(&[TAG_MAX, 1, 2]);
    assert!(is_nesting_error(&decode(&frame)));
}

#[test]
fn the_deepest_accepted_value_decodes_on_a_small_stack() {
    // Measured: a debug build needs under 128 KiB for MAX_NESTING levels;
    // a quarter of a default thread stack leaves room for callers.
    let deepest = encode(&carriers(nested_maps(MAX_NESTING)).remove(0)).unwrap();
    let too_deep = encode(&carriers(nested_maps(MAX_NESTING + 1)).remove(0)).unwrap();
    std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || {
            assert!(decode(&deepest).is_ok());
            assert!(is_nesting_error(&decode(&too_deep)));
        })
        .unwrap()
        .join()
        .unwrap();
}

// ---- (b), (c), (d) random and mutated input ----------------------------

/// One edit to a frame's body; positions are taken modulo its length.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(Index, u8),
    Overwrite(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Overwrite(i, b)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, bytes)| Mutation::Insert(i, bytes)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
    ]
}

fn apply(body: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::FlipBit(i, bit) if !body.is_empty() => {
            let at = i.index(body.len());
            body[at] ^= 1 << bit;
        }
        Mutation::Overwrite(i, byte) if !body.is_empty() => {
            let at = i.index(body.len());
            body[at] = *byte;
        }
        Mutation::Insert(i, bytes) => {
            let at = i.index(body.len() + 1);
            body.splice(at..at, bytes.iter().copied());
        }
        Mutation::Delete(i, n) if !body.is_empty() => {
            let at = i.index(body.len());
            let end = (at + n).min(body.len());
            body.drain(at..end);
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn random_bytes_decode_or_fail_without_panicking(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
    ) {
        let _ = decode_checked(&bytes);
    }

    #[test]
    fn random_bodies_after_the_right_version_decode_or_fail_without_panicking(
        tag in 0..MESSAGE_VARIANTS + 1,
        body in prop::collection::vec(any::<u8>(), 0..4096),
    ) {
        // A valid message tag first, so the random bytes reach past it.
        let _ = decode_checked(&frame_of(&[&[tag], &body]));
        let _ = decode_checked(&frame_of(&[&body]));
    }

    #[test]
    fn mutated_samples_decode_or_fail_without_panicking(
        sample in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        let mut body = pick_frame(&sample)[2..].to_vec();
        for m in &mutations {
            apply(&mut body, m);
        }
        let _ = decode_checked(&frame_of(&[&body]));
    }

    #[test]
    fn any_other_version_is_refused_as_wrong_version(
        version in any::<u16>().prop_filter("not ours", |v| *v != PROTOCOL_VERSION),
        sample in any::<Index>(),
    ) {
        let mut frame = pick_frame(&sample).to_vec();
        frame[..2].copy_from_slice(&version.to_le_bytes());
        prop_assert_eq!(
            decode(&frame),
            Err(DecodeError::WrongVersion { found: version, expected: PROTOCOL_VERSION })
        );
    }
}

/// A large last-writer-wins value decoded within its frame is a slice of
/// the frame, not a copy; a small one, or one decoded outside, is copied.
#[test]
fn a_large_value_decoded_in_its_frame_is_a_slice_of_it() {
    use anna::lattice::lww::in_frame;
    use anna::lattice::{Lww, Timestamp, WriterId};
    use anna::protocol::{decode, decode_body, KvsRequest};
    let stamp = Timestamp {
        wall_ms: 1,
        logical: 0,
        writer: WriterId(2),
    };
    let put = |len: usize| {
        let value = LatticeValue::Lww(Lww::new(stamp, vec![7; len]));
        let msg = Message::KvsRequest(KvsRequest {
            id: RequestId(1),
            reply_to: Address::from("tcp://127.0.0.1:1"),
            ops: vec![KeyOp::Put {
                key: "k".into(),
                value,
            }],
            ack: Ack::FirstReplica,
            shared_memory: None,
        });
        (msg.clone(), bytes::Bytes::from(encode(&msg).unwrap()))
    };
    let lww_of = |msg: &Message| match msg {
        Message::KvsRequest(r) => match &r.ops[0] {
            KeyOp::Put {
                value: LatticeValue::Lww(l),
                ..
            } => l.bytes().clone(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    let inside =
        |frame: &bytes::Bytes, value: &bytes::Bytes| frame.as_ptr_range().contains(&value.as_ptr());

    let (sent, frame) = put(200_000);
    let got = in_frame::decode(&frame, || decode_body(&frame[3..]).unwrap());
    assert_eq!(got, sent);
    assert!(inside(&frame, &lww_of(&got)), "sliced out of the frame");
    let copied = decode(&frame).unwrap();
    assert_eq!(copied, sent);
    assert!(
        !inside(&frame, &lww_of(&copied)),
        "outside `in_frame::decode`: a copy"
    );

    let (sent, frame) = put(1000);
    let got = in_frame::decode(&frame, || decode_body(&frame[3..]).unwrap());
    assert_eq!(got, sent);
    assert!(!inside(&frame, &lww_of(&got)), "a small value is copied");
}

#[test]
fn a_batch_inside_a_batch_is_refused_before_it_can_nest_deeper() {
    // Batch tag 41, one message, which is again a batch: a million levels
    // would otherwise recurse a million times.
    let mut body = Vec::new();
    for _ in 0..1_000_000 {
        body.extend_from_slice(&[41, 1]);
    }
    assert!(matches!(
        decode(&frame_of(&[&body])),
        Err(DecodeError::Malformed(e)) if e.contains("a batch inside a batch")
    ));
    let nested = Message::Batch(vec![Message::Batch(vec![])]);
    let frame = encode(&nested).expect("encodes: only decoding refuses it");
    assert!(matches!(decode(&frame), Err(DecodeError::Malformed(_))));
    // After a refused one, the next batch decodes.
    let one = Message::Batch(vec![Message::Pong {
        id: RequestId(1),
        boot: 2,
    }]);
    assert_eq!(decode(&encode(&one).unwrap()), Ok(one));
}
