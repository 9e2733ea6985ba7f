//! An endpoint reads an answer in shared memory from its file, on real
//! `ipc://` sockets: the value comes back whole, a file gone by the time
//! it is read is asked for once more, and twice gone is an error naming
//! shared memory.

use anna::lattice::{LatticeValue, Lww, Timestamp, WriterId};
use anna::protocol::{Address, KeyResult, KvsResponse, Message, Outcome, SharedValue};
use squall_transport::{Endpoint, Receiver, Sender};
use std::time::Duration;

const WAIT: Option<Duration> = Some(Duration::from_secs(5));

fn value() -> LatticeValue {
    let stamp = Timestamp {
        wall_ms: 42,
        logical: 0,
        writer: WriterId(3),
    };
    LatticeValue::Lww(Lww::new(stamp, (0..500_000u32).map(|i| i as u8).collect()))
}

#[test]
fn an_answer_in_shared_memory_is_read_from_its_file_and_a_vanished_file_asked_again() {
    let dir = std::env::temp_dir().join(format!("squall-shared-endpoint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("value");
    let LatticeValue::Lww(l) = value() else {
        unreachable!()
    };
    std::fs::write(&file, l.value()).unwrap();
    let file = file.to_str().unwrap().to_string();
    let missing = dir.join("gone").to_str().unwrap().to_string();

    let ctx = zmq::Context::new();
    let cache_at = Address(format!("ipc://{}/cache.sock", dir.display()));
    let mut cache = Receiver::bind(&ctx, &cache_at).unwrap();
    let answers_at = Address(format!("ipc://{}/answers.sock", dir.display()));
    let mut endpoint =
        Endpoint::connect(cache_at.clone(), &answers_at, Duration::from_secs(5)).unwrap();

    // The "cache": each request answered with the value in the file named
    // next (none left: the same missing file again).
    let mut paths = vec![
        missing.clone(),
        file.clone(),
        missing.clone(),
        missing.clone(),
    ];
    paths.reverse();
    let cache_thread = std::thread::spawn(move || {
        let mut tx = Sender::new(&zmq::Context::new());
        let mut asked = 0;
        while let Some(path) = paths.pop() {
            let Some(Message::KvsRequest(req)) = cache.recv(WAIT).unwrap() else {
                panic!("a request");
            };
            asked += 1;
            let outcome = SharedValue::share(Outcome::Value(value()), path);
            assert!(matches!(outcome, Outcome::Shared(_)));
            let key = req.ops[0].key().clone();
            let answer = Message::KvsResponse(KvsResponse {
                id: req.id,
                results: vec![KeyResult { key, outcome }],
                hits: 1,
            });
            tx.send(&req.reply_to, &answer).unwrap();
        }
        asked
    });

    // Missing, then the file: read once more, and whole.
    assert_eq!(endpoint.get("k", None).unwrap(), Some(value()));
    // Missing twice: an error that says why.
    let error = endpoint.get("k", None).unwrap_err().to_string();
    assert!(error.contains("shared memory"), "{error}");
    assert_eq!(cache_thread.join().unwrap(), 4);
    drop(endpoint);
    std::fs::remove_dir_all(&dir).unwrap();
}
