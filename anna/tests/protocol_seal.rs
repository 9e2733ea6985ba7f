//! Sealed frames: what opens, as whom, and everything that must not.

use anna::lattice::WriterId;
use anna::lattice::{LatticeValue, Lww, Timestamp};
use anna::protocol::seal::{
    Identity, OpenError, Opener, Principal, Refusal, Right, Rights, Sealer, Secret, Security,
    FRESHNESS_SECS,
};
use anna::protocol::{
    encode, Ack, Address, KeyOp, KeyResult, KvsRequest, KvsResponse, Membership, Message, NodeId,
    Outcome, RequestId,
};
use proptest::prelude::*;
use std::collections::HashMap;

const NOW: u64 = 1_790_000_000;

fn secret(n: u8) -> Secret {
    Secret::from_bytes([n; 32])
}

fn member(secret: &Secret, encrypt: bool) -> Security {
    let clients = HashMap::from([
        ("admin".to_string(), Rights::all()),
        ("reader".to_string(), Rights::of(&[Right::Read])),
        ("caller".to_string(), Rights::of(&[Right::Call])),
    ]);
    Security {
        identity: Some(Identity::member(secret.clone())),
        clients,
        encrypt,
    }
}

fn client(secret: &Secret, name: &str, encrypt: bool) -> Security {
    Security {
        identity: Some(Identity::parse(&secret.client_key_file(name)).expect("a key file")),
        clients: HashMap::new(),
        encrypt,
    }
}

fn sealed(security: &Security, sender: u8, msg: &Message) -> Vec<u8> {
    let mut sealer = Sealer::new(security, [sender; 16]);
    let mut buf = Vec::new();
    sealer.seal_into(msg, NOW, &mut buf).expect("seals");
    buf
}

fn put(key: &str) -> Message {
    Message::KvsRequest(KvsRequest {
        id: RequestId(1),
        reply_to: Address::from("tcp://127.0.0.1:5000"),
        ops: vec![KeyOp::Put {
            key: key.to_string(),
            value: LatticeValue::Lww(Lww::new(
                Timestamp {
                    wall_ms: 5,
                    logical: 0,
                    writer: WriterId(1),
                },
                b"secret value".to_vec(),
            )),
        }],
        ack: Ack::FirstReplica,
        shared_memory: None,
    })
}

fn get(key: &str) -> Message {
    Message::KvsRequest(KvsRequest {
        id: RequestId(2),
        reply_to: Address::from("tcp://127.0.0.1:5000"),
        ops: vec![KeyOp::Get {
            key: key.to_string(),
        }],
        ack: Ack::FirstReplica,
        shared_memory: None,
    })
}

fn answer() -> Message {
    Message::KvsResponse(KvsResponse {
        id: RequestId(1),
        results: vec![KeyResult {
            key: "k".into(),
            outcome: Outcome::Stored { epoch: None },
        }],
        hits: 0,
    })
}

fn depart() -> Message {
    Message::Membership(Membership::Depart {
        node: NodeId(1),
        incarnation: u64::MAX,
    })
}

#[test]
fn members_open_each_others_frames_authenticated_or_encrypted() {
    let s = secret(1);
    for encrypt in [false, true] {
        let frame = sealed(&member(&s, encrypt), 1, &depart());
        let mut opener = Opener::new(&member(&s, false));
        let mut bytes = frame.clone();
        assert_eq!(
            opener.open(&mut bytes, NOW),
            Ok((depart(), Principal::Member))
        );
    }
}

#[test]
fn an_encrypted_frame_does_not_carry_its_value_in_clear() {
    let s = secret(1);
    let clear = sealed(&client(&s, "admin", false), 1, &put("k"));
    let hidden = sealed(&client(&s, "admin", true), 1, &put("k"));
    let needle = b"secret value";
    assert!(clear.windows(needle.len()).any(|w| w == needle));
    assert!(!hidden.windows(needle.len()).any(|w| w == needle));
    let mut opener = Opener::new(&member(&s, true));
    let mut bytes = hidden;
    let (msg, _) = opener.open(&mut bytes, NOW).expect("opens");
    assert_eq!(msg, put("k"));
}

#[test]
fn a_client_frame_opens_with_the_clients_rights_and_each_right_is_checked() {
    let s = secret(1);
    let mut opener = Opener::new(&member(&s, false));
    let mut frame = sealed(&client(&s, "reader", false), 1, &get("k"));
    let (msg, who) = opener.open(&mut frame, NOW).expect("opens");
    assert_eq!(who, Principal::Client(Rights::of(&[Right::Read])));
    assert_eq!(who.missing_right(&msg), Ok(()));
    assert_eq!(
        who.missing_right(&put("k")),
        Err(Refusal::Missing(Right::Write))
    );
    assert_eq!(
        who.missing_right(&put("__squall/functions/f")),
        Err(Refusal::Missing(Right::Register))
    );
    let dag_changed = Message::DagChanged(anna::protocol::compute::DagChanged { name: "d".into() });
    assert_eq!(
        who.missing_right(&dag_changed),
        Err(Refusal::Missing(Right::Register))
    );
    let admin = Principal::Client(Rights::all());
    assert_eq!(admin.missing_right(&dag_changed), Ok(()));
    assert_eq!(admin.missing_right(&put("__squall/functions/f")), Ok(()));
    assert_eq!(admin.missing_right(&depart()), Err(Refusal::NotTheNode(1)));
    // A node's departure only from that node.
    assert_eq!(
        Principal::Member.missing_right(&depart()),
        Err(Refusal::NotTheNode(1))
    );
    assert_eq!(Principal::Node(1).missing_right(&depart()), Ok(()));
    assert_eq!(
        Principal::Node(2).missing_right(&depart()),
        Err(Refusal::NotTheNode(1))
    );
}

#[test]
fn a_clients_membership_frame_is_refused_by_kind_and_a_forged_member_frame_by_its_tag() {
    let s = secret(1);
    let mut opener = Opener::new(&member(&s, false));
    // Sealed with the client's key: it opens as the client, who may not
    // send membership.
    let mut frame = sealed(&client(&s, "admin", false), 1, &depart());
    let (msg, who) = opener.open(&mut frame, NOW).expect("opens");
    assert!(who.missing_right(&msg).is_err());
    // Relabelled as a member's frame: the cluster key's tag does not match.
    let mut frame = sealed(&client(&s, "admin", false), 2, &depart());
    frame[2] = 1;
    assert!(opener.open(&mut frame, NOW).is_err());
}

#[test]
fn answers_open_at_clients_and_members_and_a_client_cannot_forge_one_to_a_member() {
    let s = secret(1);
    let frame = sealed(&member(&s, false), 1, &answer());
    let mut at_client = Opener::new(&client(&s, "reader", false));
    let mut at_member = Opener::new(&member(&s, false));
    assert_eq!(
        at_client.open(&mut frame.clone(), NOW),
        Ok((answer(), Principal::Member))
    );
    assert_eq!(
        at_member.open(&mut frame.clone(), NOW),
        Ok((answer(), Principal::Member))
    );
    // A client frame is never an answer to another client.
    let mut from_client = sealed(&client(&s, "admin", false), 2, &get("k"));
    assert_eq!(
        at_client.open(&mut from_client, NOW),
        Err(OpenError::WrongMode(2))
    );
    // A client holds the reply key but not the cluster key: replacing the
    // cluster tag of an answer breaks it at a member.
    let mut forged = sealed(&member(&s, false), 3, &answer());
    let n = forged.len();
    forged[n - 1] ^= 1;
    assert_eq!(at_member.open(&mut forged, NOW), Err(OpenError::BadTag));
    // A member does not seal frames between members for clients.
    let mut between = sealed(&member(&s, false), 4, &depart());
    assert_eq!(
        at_client.open(&mut between, NOW),
        Err(OpenError::WrongMode(1))
    );
}

#[test]
fn another_clusters_frames_and_unknown_clients_are_refused() {
    let mut opener = Opener::new(&member(&secret(1), false));
    let mut theirs = sealed(&member(&secret(2), false), 1, &depart());
    assert_eq!(opener.open(&mut theirs, NOW), Err(OpenError::BadTag));
    let mut stranger = sealed(&client(&secret(1), "stranger", false), 1, &get("k"));
    assert_eq!(
        opener.open(&mut stranger, NOW),
        Err(OpenError::UnknownClient("stranger".into()))
    );
    let mut theirs = sealed(&client(&secret(2), "admin", false), 1, &get("k"));
    assert_eq!(opener.open(&mut theirs, NOW), Err(OpenError::BadTag));
}

#[test]
fn a_frame_opens_once_and_late_frames_within_the_window_open_once_too() {
    let s = secret(1);
    let security = member(&s, false);
    let mut sealer = Sealer::new(&security, [9; 16]);
    let frames: Vec<Vec<u8>> = (0..70)
        .map(|_| {
            let mut buf = Vec::new();
            sealer.seal_into(&depart(), NOW, &mut buf).unwrap();
            buf
        })
        .collect();
    let mut opener = Opener::new(&security);
    assert!(opener.open(&mut frames[5].clone(), NOW).is_ok());
    assert_eq!(
        opener.open(&mut frames[5].clone(), NOW),
        Err(OpenError::Replayed(6))
    );
    // Reordered: an earlier counter, within the window, opens once.
    assert!(opener.open(&mut frames[2].clone(), NOW).is_ok());
    assert!(opener.open(&mut frames[2].clone(), NOW).is_err());
    assert!(opener.open(&mut frames[69].clone(), NOW).is_ok());
    // More than 64 behind the highest: refused, seen or not.
    assert_eq!(
        opener.open(&mut frames[3].clone(), NOW),
        Err(OpenError::Replayed(4))
    );
}

#[test]
fn a_frame_from_too_far_in_the_past_or_future_is_refused() {
    let s = secret(1);
    let mut opener = Opener::new(&member(&s, false));
    let frame = sealed(&member(&s, false), 1, &depart());
    assert!(matches!(
        opener.open(&mut frame.clone(), NOW + FRESHNESS_SECS + 1),
        Err(OpenError::Stale { .. })
    ));
    assert!(matches!(
        opener.open(&mut frame.clone(), NOW - FRESHNESS_SECS - 1),
        Err(OpenError::Stale { .. })
    ));
    assert!(opener.open(&mut frame.clone(), NOW + 3).is_ok());
}

#[test]
fn open_and_sealed_frames_do_not_mix() {
    let s = secret(1);
    let mut secure = Opener::new(&member(&s, false));
    let mut open = encode(&depart()).unwrap();
    assert_eq!(secure.open(&mut open, NOW), Err(OpenError::NotSealed));
    let mut insecure = Opener::new(&Security::insecure());
    let mut frame = encode(&depart()).unwrap();
    assert_eq!(
        insecure.open(&mut frame, NOW),
        Ok((depart(), Principal::Anyone))
    );
    let mut frame = sealed(&member(&s, false), 1, &depart());
    assert_eq!(
        insecure.open(&mut frame, NOW),
        Err(OpenError::UnexpectedSeal)
    );
    // With security off a sealer writes open frames.
    let mut buf = Vec::new();
    Sealer::new(&Security::insecure(), [0; 16])
        .seal_into(&depart(), NOW, &mut buf)
        .unwrap();
    assert_eq!(buf, encode(&depart()).unwrap());
}

#[test]
fn key_files_round_trip_and_bad_ones_say_why() {
    let s = secret(7);
    assert_eq!(
        Identity::parse(&s.key_file()),
        Ok(Identity::member(s.clone()))
    );
    let client = Identity::parse(&s.client_key_file("app-1")).unwrap();
    assert_eq!(client.client_name(), Some("app-1"));
    assert!(!client.is_member());
    for bad in [
        "",
        "squall-cluster-secret-v1 abc",
        "squall-client-key-v1 a/b 00 00",
        "hello world",
    ] {
        assert!(Identity::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn every_changed_byte_is_refused() {
    let s = secret(1);
    for (security, msg) in [
        (member(&s, false), depart()),
        (member(&s, true), answer()),
        (client(&s, "admin", true), put("k")),
    ] {
        let frame = sealed(&security, 1, &msg);
        for i in 2..frame.len() {
            let mut opener = Opener::new(&member(&s, false));
            let mut bytes = frame.clone();
            bytes[i] ^= 0x10;
            assert!(
                opener.open(&mut bytes, NOW).is_err(),
                "byte {i} of {} changed and the frame opened",
                msg.kind()
            );
        }
    }
}

/// A large body is covered by its digest: a byte changed anywhere in it,
/// in the header or in any tag is refused, by members and by clients, in
/// every mode, encrypted or not.
#[test]
fn every_changed_byte_of_a_large_frame_is_refused_wherever_it_is_opened() {
    let s = secret(1);
    let large = |key: &str| {
        let mut msg = put(key);
        if let Message::KvsRequest(r) = &mut msg {
            if let KeyOp::Put { value, .. } = &mut r.ops[0] {
                let at = Timestamp {
                    wall_ms: 5,
                    logical: 0,
                    writer: WriterId(1),
                };
                *value = LatticeValue::Lww(Lww::new(at, vec![7u8; 200_000]));
            }
        }
        msg
    };
    let answer_of = |msg: Message| match msg {
        Message::KvsRequest(r) => Message::KvsResponse(KvsResponse {
            id: r.id,
            results: vec![KeyResult {
                key: "k".into(),
                outcome: match &r.ops[0] {
                    KeyOp::Put { value, .. } => Outcome::Value(value.clone()),
                    _ => unreachable!(),
                },
            }],
            hits: 0,
        }),
        other => other,
    };
    for encrypt in [false, true] {
        for (sender, msg, openers) in [
            (member(&s, encrypt), large("k"), vec![member(&s, false)]),
            (
                member(&s, encrypt),
                answer_of(large("k")),
                vec![member(&s, false), client(&s, "reader", false)],
            ),
            (
                client(&s, "admin", encrypt),
                large("k"),
                vec![member(&s, false)],
            ),
        ] {
            let frame = sealed(&sender, 1, &msg);
            for security in &openers {
                assert_eq!(
                    Opener::new(security)
                        .open(&mut frame.clone(), NOW)
                        .map(|(m, _)| m),
                    Ok(msg.clone()),
                    "the frame as sealed opens"
                );
                // (A client cannot check an answer's outer tag, the
                // executors' key's: it holds only the reply key.)
                let unchecked = if security.identity.as_ref().is_some_and(|i| !i.is_member()) {
                    16
                } else {
                    0
                };
                let n = frame.len();
                let places = (2..120)
                    .chain((120..n - 64).step_by(4999))
                    .chain(n - 64..n - unchecked);
                for i in places {
                    let mut bytes = frame.clone();
                    bytes[i] ^= 0x01;
                    assert!(
                        Opener::new(security).open(&mut bytes, NOW).is_err(),
                        "byte {i} of {n} changed and the frame opened (encrypted: {encrypt})"
                    );
                }
            }
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_open_and_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), mode in 0u8..5) {
        let s = secret(1);
        let mut opener = Opener::new(&member(&s, false));
        let mut frame = bytes;
        if frame.len() >= 3 {
            frame[0..2].copy_from_slice(&anna::protocol::PROTOCOL_VERSION.to_le_bytes());
            frame[2] = mode;
        }
        prop_assert!(opener.open(&mut frame, NOW).is_err());
    }
}

fn executor(secret: &Secret) -> Security {
    Security {
        identity: Some(Identity::parse(&secret.executor_key_file()).expect("a key file")),
        clients: HashMap::from([("caller".to_string(), Rights::of(&[Right::Call]))]),
        encrypt: false,
    }
}

fn user_message() -> Message {
    Message::UserMessage(anna::protocol::compute::UserMessage {
        from: Address::from("tcp://127.0.0.1:5001"),
        payload: b"hi".to_vec(),
    })
}

#[test]
fn an_executor_opens_what_reaches_it_but_cannot_speak_as_a_member() {
    let s = secret(1);
    let mut at_executor = Opener::new(&executor(&s));
    for (sender, (security, msg)) in [
        (member(&s, false), depart()),
        (member(&s, true), put("k")),
        (member(&s, false), answer()),
        (executor(&s), get("k")),
        (client(&s, "caller", false), user_message()),
    ]
    .into_iter()
    .enumerate()
    {
        let mut frame = sealed(&security, 10 + sender as u8, &msg);
        let (opened, _) = at_executor
            .open(&mut frame, NOW)
            .unwrap_or_else(|e| panic!("{}: {e}", msg.kind()));
        assert_eq!(opened, msg);
    }
    // At a member, an executor is an executor: no membership, but requests.
    let mut at_member = Opener::new(&member(&s, false));
    let mut frame = sealed(&executor(&s), 2, &depart());
    let (msg, who) = at_member.open(&mut frame, NOW).unwrap();
    assert_eq!(who, Principal::Executor);
    assert_eq!(who.missing_right(&msg), Err(Refusal::NotTheNode(1)));
    let gossip = Message::GossipAck {
        id: RequestId(1),
        from: Address::from("tcp://127.0.0.1:1"),
    };
    assert_eq!(
        who.missing_right(&gossip),
        Err(Refusal::MembersOnly("gossip-ack"))
    );
    assert_eq!(who.missing_right(&put("k")), Ok(()));
    // Relabelled as a member's frame, it lacks the cluster key's tag.
    let mut frame = sealed(&executor(&s), 3, &depart());
    frame[2] = 1;
    frame.extend_from_slice(&[0; 16]);
    assert_eq!(at_member.open(&mut frame, NOW), Err(OpenError::BadTag));
    // An executor's answers open at its callers and at members.
    let frame = sealed(&executor(&s), 4, &answer());
    let mut at_client = Opener::new(&client(&s, "caller", false));
    assert!(at_client.open(&mut frame.clone(), NOW).is_ok());
    assert!(at_member.open(&mut frame.clone(), NOW).is_ok());
    // A client, holding the reply key, cannot forge an answer to an
    // executor: the outer tag is the executors' key's.
    let mut forged = sealed(&member(&s, false), 5, &answer());
    let n = forged.len();
    forged[n - 1] ^= 1;
    assert_eq!(at_executor.open(&mut forged, NOW), Err(OpenError::BadTag));
    assert!(!Identity::parse(&s.executor_key_file()).unwrap().is_member());
}

#[test]
fn only_a_node_speaks_for_itself_and_only_holders_of_the_secret_can_tell() {
    let s = secret(1);
    let node = |id| Security {
        identity: Some(Identity::parse(&s.node_key_file(id)).expect("a key file")),
        ..Security::default()
    };
    let without_secret = Security {
        identity: Some(Identity::parse(&s.member_key_file()).expect("a key file")),
        ..Security::default()
    };
    // A router holds the secret: node 1's departure opens as node 1's.
    let mut router = Opener::new(&member(&s, false));
    let mut frame = sealed(&node(1), 1, &depart());
    let (msg, who) = router.open(&mut frame, NOW).unwrap();
    assert_eq!((msg.clone(), who), (depart(), Principal::Node(1)));
    assert_eq!(who.missing_right(&msg), Ok(()));
    // Node 2 speaking for node 1, and a member without the secret.
    let mut frame = sealed(&node(2), 2, &depart());
    let (msg, who) = router.open(&mut frame, NOW).unwrap();
    assert_eq!(who.missing_right(&msg), Err(Refusal::NotTheNode(1)));
    let mut frame = sealed(&without_secret, 3, &depart());
    let (msg, who) = router.open(&mut frame, NOW).unwrap();
    assert_eq!(who, Principal::Member);
    assert_eq!(who.missing_right(&msg), Err(Refusal::NotTheNode(1)));
    // Relabelled as node 1's frame by node 2: the node tag fails.
    let mut frame = sealed(&node(2), 4, &depart());
    frame[FIXED_NAME] = b'1';
    assert_eq!(router.open(&mut frame, NOW), Err(OpenError::BadTag));
    // Without the secret, a node's frame opens as a member's; its other
    // messages are a member's everywhere.
    let mut other = Opener::new(&without_secret);
    let mut frame = sealed(&node(1), 5, &depart());
    assert_eq!(other.open(&mut frame, NOW).unwrap().1, Principal::Member);
    let mut frame = sealed(&node(1), 6, &put("k"));
    assert_eq!(router.open(&mut frame, NOW).unwrap().1, Principal::Member);
    // The secret's holder as node 7 (a storage node given the secret).
    let as_seven = Security {
        identity: Some(Identity::member(s.clone()).as_node(7)),
        ..Security::default()
    };
    let seven = Message::Membership(Membership::Depart {
        node: NodeId(7),
        incarnation: 1,
    });
    let mut frame = sealed(&as_seven, 8, &seven);
    assert_eq!(router.open(&mut frame, NOW).unwrap().1, Principal::Node(7));
    assert!(Identity::parse(&s.node_key_file(7))
        .unwrap()
        .secret()
        .is_none());
    assert_eq!(
        Identity::parse(&s.node_key_file(7)).unwrap().node(),
        Some(7)
    );
}

/// Where a sealed frame's name (a client's, or a node's id) starts.
const FIXED_NAME: usize = 32;

#[test]
fn a_batch_is_sealed_like_its_messages_and_checked_message_by_message() {
    let s = secret(1);
    let gossip = Message::GossipAck {
        id: RequestId(1),
        from: Address::from("tcp://127.0.0.1:1"),
    };
    // Answers in a batch reach a caller as answers do alone.
    let answers = Message::Batch(vec![answer(), answer()]);
    assert!(answers.may_reach_clients());
    assert!(!Message::Batch(vec![answer(), get("k")]).may_reach_clients());
    assert!(!Message::Batch(vec![]).may_reach_clients());
    let frame = sealed(&executor(&s), 1, &answers);
    let mut at_client = Opener::new(&client(&s, "caller", false));
    let (opened, _) = at_client.open(&mut frame.clone(), NOW).unwrap();
    assert_eq!(opened, answers);

    // An executor's batch is refused for its worst message.
    let mut at_member = Opener::new(&member(&s, false));
    let smuggled = Message::Batch(vec![put("k"), gossip.clone()]);
    assert!(smuggled.members_only());
    let mut frame = sealed(&executor(&s), 2, &smuggled);
    let (msg, who) = at_member.open(&mut frame, NOW).unwrap();
    assert_eq!(who, Principal::Executor);
    assert_eq!(
        who.missing_right(&msg),
        Err(Refusal::MembersOnly("gossip-ack"))
    );
    assert_eq!(
        who.missing_right(&Message::Batch(vec![put("k"), get("k")])),
        Ok(())
    );
    // A member's batch may hold anything a member sends.
    assert_eq!(Principal::Member.missing_right(&smuggled), Ok(()));
    // Clients never send batches, whatever their rights.
    let mut frame = sealed(
        &client(&s, "admin", false),
        3,
        &Message::Batch(vec![get("k")]),
    );
    let (msg, who) = at_member.open(&mut frame, NOW).unwrap();
    assert_eq!(who, Principal::Client(Rights::all()));
    assert_eq!(who.missing_right(&msg), Err(Refusal::MembersOnly("batch")));
    // A node's own messages and batches do not go in a batch.
    assert!(!depart().batchable());
    assert!(!answers.batchable());
    assert!(answer().batchable());
}
