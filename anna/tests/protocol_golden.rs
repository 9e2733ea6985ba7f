//! Golden bytes: the exact encoding of a few representative messages.
//!
//! Peers of one `PROTOCOL_VERSION` must agree byte for byte, so a change to
//! any message's shape, a reordered variant or a different bincode
//! configuration must come with a version bump. These tests make such a
//! change fail loudly instead of shipping silently. The values are chosen to
//! exercise multi-byte varints (300, 1000, a millisecond timestamp) and
//! nested collections. Sets are avoided: a `SetLattice` is a hash set, whose
//! encoding order is not stable between processes.

use anna::cluster::ClusterState;
use anna::lattice::{Counter, KeyState, LatticeValue, Lww, Timestamp, WriterId};
use anna::protocol::{
    decode, encode, Ack, Address, Gossip, KeyOp, KvsRequest, Membership, Message, NodeId, NodeInfo,
    RequestId, PROTOCOL_VERSION,
};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("golden hex"))
        .collect()
}

/// Checks `msg` encodes to exactly `golden` and `golden` decodes to `msg`.
fn assert_golden(name: &str, msg: Message, golden: &str) {
    let actual = hex(&encode(&msg).expect("encodes"));
    assert_eq!(
        actual, golden,
        "the wire encoding of `{name}` changed (protocol version {PROTOCOL_VERSION}). \
         If the change is intended, bump PROTOCOL_VERSION in anna/src/protocol/codec.rs \
         and replace the golden bytes here with the new ones; if not, a message type, \
         a variant order or the bincode configuration changed by accident."
    );
    assert_eq!(
        decode(&unhex(golden)),
        Ok(msg),
        "the golden bytes of `{name}` no longer decode to the same message"
    );
}

#[test]
fn frames_start_with_the_little_endian_version() {
    let frame = encode(&Message::Pong {
        id: RequestId(0),
        boot: 0,
    })
    .unwrap();
    assert_eq!(frame[..2], PROTOCOL_VERSION.to_le_bytes());
}

#[test]
fn ping_encoding_is_pinned() {
    let msg = Message::Ping {
        id: RequestId(7),
        reply_to: Address::from("tcp://10.0.0.1:6000"),
    };
    assert_golden(
        "ping",
        msg,
        concat!(
            "0d00", // protocol version 13, u16 LE
            "00",   // mode 0: an open frame
            "00",   // Message::Ping
            "07",   // id
            "13",
            "7463703a2f2f31302e302e302e313a36303030", // reply_to, 19 bytes
        ),
    );
}

#[test]
fn kvs_request_with_an_lww_put_encoding_is_pinned() {
    let ts = Timestamp {
        wall_ms: 1_700_000_000_000,
        logical: 300,
        writer: WriterId(0xabcd),
    };
    let msg = Message::KvsRequest(KvsRequest {
        id: RequestId(42),
        reply_to: Address::from("ipc://c"),
        ops: vec![KeyOp::Put {
            key: "k".to_string(),
            value: LatticeValue::Lww(Lww::new(ts, b"v".to_vec())),
        }],
        ack: Ack::Replicas(2),
        shared_memory: None,
    });
    assert_golden(
        "kvs-request put lww",
        msg,
        concat!(
            "0d00", // protocol version 13
            "00",   // open
            "02",   // Message::KvsRequest
            "2a",   // id 42
            "07",
            "6970633a2f2f63", // reply_to "ipc://c"
            "01",             // one op
            "01",             // KeyOp::Put
            "01",
            "6b", // key "k"
            "00", // LatticeValue::Lww
            "fd",
            "0068e5cf8b010000", // wall_ms: u64 varint marker, 8 bytes LE
            "fb",
            "2c01", // logical 300: u16 varint marker, 2 bytes LE
            "fb",
            "cdab", // writer 0xabcd
            "01",
            "76", // value b"v"
            "01",
            "02", // Ack::Replicas(2)
            "00", // shared_memory: None
        ),
    );
}

#[test]
fn gossip_of_a_counter_encoding_is_pinned() {
    let mut counter = Counter::default();
    counter.increment(WriterId(1), 5);
    counter.increment(WriterId(300), 1000);
    counter.decrement(WriterId(2), 2);
    let msg = Message::Gossip(Gossip {
        from: Address::from("tcp://n1:6000"),
        entries: vec![(
            "hits".to_string(),
            KeyState::from_value(LatticeValue::Counter(counter)),
        )],
        ack: None,
    });
    assert_golden(
        "gossip counter",
        msg,
        concat!(
            "0d00", // protocol version 13
            "00",   // open
            "04",   // Message::Gossip
            "0d",
            "7463703a2f2f6e313a36303030", // from "tcp://n1:6000"
            "01",                         // one entry
            "04",
            "68697473", // key "hits"
            "00",       // KeyState: never deleted
            "01",       //   and holds a value:
            "05",       // LatticeValue::Counter
            "02",
            "01",
            "05", // increments: writer 1 -> 5,
            "fb2c01",
            "fbe803", //   writer 300 -> 1000
            "01",
            "02",
            "02", // decrements: writer 2 -> 2
            "00", // no baseline (never deleted)
            "00", // no acknowledgement asked
        ),
    );
}

#[test]
fn membership_state_encoding_is_pinned() {
    let mut state = ClusterState::default();
    state.record_join(NodeInfo {
        id: NodeId(1),
        threads: vec![
            Address::from("tcp://n1:6000"),
            Address::from("tcp://n1:6001"),
        ],
        boot: 7,
        direct: vec![Address::from("tcp://n1:7000")],
    });
    state.record_join(NodeInfo {
        id: NodeId(2),
        threads: vec![Address::from("tcp://n2:6000")],
        boot: 300,
        direct: Vec::new(),
    });
    state.record_departure(NodeId(2), 1);
    let msg = Message::Membership(Membership::State(state));
    assert_golden(
        "membership state",
        msg,
        concat!(
            "0d00", // protocol version 13
            "00",   // open
            "07",   // Message::Membership
            "03",   // Membership::State
            "02",   // two member records
            "01",   // node 1:
            "01",   //   Max holds a record
            "01",   //   incarnation 1
            "00",   //   MemberStatus::Up
            "01",
            "02", //     node 1, two threads:
            "0d",
            "7463703a2f2f6e313a36303030", //       "tcp://n1:6000"
            "0d",
            "7463703a2f2f6e313a36303031", //       "tcp://n1:6001"
            "07",                         //     boot 7
            "01",                         //     one direct endpoint:
            "0d",
            "7463703a2f2f6e313a37303030", //       "tcp://n1:7000"
            "02",                         // node 2:
            "01",                         //   Max holds a record
            "01",                         //   incarnation 1
            "01",                         //   MemberStatus::Departed
            "00",                         // no replication overrides
        ),
    );
}

#[test]
fn call_result_error_encoding_is_pinned() {
    use anna::protocol::compute::{CallError, CallErrorKind, CallId, CallOutcome, CallResult};
    let msg = Message::CallResult(CallResult {
        id: CallId {
            caller: 300,
            seq: 1,
        },
        outcome: CallOutcome::Error(CallError {
            kind: CallErrorKind::Timeout,
            type_name: "T".to_string(),
            message: "m".to_string(),
            traceback: String::new(),
            function: Some("f".to_string()),
        }),
        written: anna::protocol::Session::default(),
        output: Vec::new(),
        trace: None,
    });
    assert_golden(
        "call-result",
        msg,
        concat!(
            "0d00", // protocol version 13
            "00",   // open
            "11",   // Message::CallResult (variant 17)
            "fb2c01", "01",     // CallId { caller: 300 (varint), seq: 1 }
            "01",     // CallOutcome::Error
            "05",     // CallErrorKind::Timeout
            "0154",   // type_name "T"
            "016d",   // message "m"
            "00",     // traceback ""
            "010166", // function Some("f")
            "00",     // written: no versions
            "00",     // output: none
            "00",     // trace: none
        ),
    );
}

#[test]
fn storage_report_encoding_is_pinned() {
    use anna::protocol::monitor::StorageReport;
    let msg = Message::StorageReport {
        id: RequestId(5),
        report: StorageReport {
            from: Address::from("tcp://n1:6000"),
            node: NodeId(2),
            thread: 1,
            epoch_ms: 1000,
            keys: 2,
            bytes: 300,
            busy_permille: 250,
            accesses: 70_000,
            hot_keys: vec![("hot".to_string(), 1000)],
            memory_bytes: 1000,
            memory_budget: 2000,
            disk_keys: 5,
            disk_bytes: 6,
            memory_hits: 3,
            disk_hits: 1,
        },
    };
    assert_golden(
        "storage-report",
        msg,
        concat!(
            "0d00", // protocol version 13
            "00",   // open
            "1b",   // Message::StorageReport (variant 27)
            "05",   // id
            "0d",
            "7463703a2f2f6e313a36303030", // from "tcp://n1:6000"
            "02",                         // node 2
            "01",                         // thread 1
            "fbe803",                     // epoch_ms 1000
            "02",                         // keys 2
            "fb2c01",                     // bytes 300
            "fa",                         // busy_permille 250 (below 251: one byte)
            "fc70110100",                 // accesses 70 000: u32 varint marker, 4 bytes LE
            "01",                         // one hot key:
            "03",
            "686f74", //   "hot"
            "fbe803", //   1000 accesses
            "fbe803", // memory_bytes 1000
            "fbd007", // memory_budget 2000
            "05",     // disk_keys 5
            "06",     // disk_bytes 6
            "03",     // memory_hits 3
            "01",     // disk_hits 1
        ),
    );
}

#[test]
fn a_batch_encoding_is_pinned() {
    let ping = |id| Message::Ping {
        id: RequestId(id),
        reply_to: Address::from("tcp://a:1"),
    };
    assert_golden(
        "batch",
        Message::Batch(vec![ping(1), ping(2)]),
        concat!(
            "0d00", // protocol version 13
            "00",   // mode 0: an open frame
            "29",   // Message::Batch (variant 41)
            "02",   // two messages, each as it is encoded alone:
            "00",
            "01",
            "09",
            "7463703a2f2f613a31", // Ping 1
            "00",
            "02",
            "09",
            "7463703a2f2f613a31", // Ping 2
        ),
    );
}
