//! The Redis backend against a real `redis-server` the harness starts
//! (installed by `make setup`; Debian package `redis-server`), and against
//! a fake server that answers garbage.

use squall_benches::redis::{RedisConnection, RedisFactory};
use squall_benches::{run, BackendError, BackendFactory, KvBackend, Stop, Workload};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

fn start_redis() -> RedisFactory {
    match RedisFactory::start("redis-server") {
        Ok(factory) => factory,
        Err(e) => panic!("these tests need redis-server (run `make setup`): {e}"),
    }
}

#[test]
fn a_short_workload_runs_against_a_real_redis_and_a_put_is_readable() {
    let factory = start_redis();
    let mut conn = factory.connect().unwrap();
    conn.put("greeting", b"hello\r\nworld").unwrap();
    assert_eq!(
        conn.get("greeting").unwrap(),
        Some(b"hello\r\nworld".to_vec())
    );
    assert_eq!(conn.get("never-written").unwrap(), None);

    let workload = Workload {
        clients: 2,
        keys: 1_000,
        zipf: 0.99,
        read_ratio: 0.5,
        stop: Stop::After(Duration::from_secs(1)),
        warmup: Duration::from_millis(100),
        ..Workload::default()
    };
    let report = run(&workload, &factory).unwrap();
    assert!(report.ops_per_sec() > 0.0, "{report:?}");
    assert!(report.counts.reads > 0 && report.counts.writes > 0);
    assert_eq!(report.counts.errors, 0, "{:?}", report.first_error);
    assert_eq!(report.counts.misses, 0, "every key was preloaded");
    assert!(report.p50() > 0 && report.p50() <= report.p99());
    // The preload wrote every key with the workload's value size.
    let last = Workload::key_name(999);
    assert_eq!(conn.get(&last).unwrap().map(|v| v.len()), Some(100));

    // Pipelined 16 deep: every key read or written, every read hitting.
    let report = run(
        &Workload {
            batch: 16,
            ..workload
        },
        &factory,
    )
    .unwrap();
    assert_eq!(report.counts.errors, 0, "{:?}", report.first_error);
    assert_eq!(report.counts.misses, 0);
    assert_eq!((report.counts.reads + report.counts.writes) % 16, 0);
    assert_eq!(conn.get_many(&["greeting", "never-written"]).unwrap(), 1);
}

#[test]
fn the_server_is_killed_and_reaped_when_the_factory_drops() {
    let factory = start_redis();
    let pid = factory.server().unwrap().pid();
    let addr = factory.addr();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(factory);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "redis-server {pid} outlived its guard"
    );
    assert!(RedisConnection::connect(addr, Duration::from_millis(200)).is_err());
}

#[test]
fn a_missing_redis_server_is_a_clear_error() {
    let Err(e) = RedisFactory::start("no-such-redis-server-binary") else {
        panic!("started a binary that does not exist");
    };
    let text = e.to_string();
    assert!(
        text.contains("make setup") && text.contains("redis-server"),
        "{text}"
    );
}

#[test]
fn garbage_from_the_server_is_an_error_not_a_panic() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let replies: [&[u8]; 3] = [b"$5\r\nab", b"%3\r\n", b"+OK\r\n"];
        for reply in replies {
            let (mut socket, _) = listener.accept().unwrap();
            let mut request = [0u8; 256];
            let _ = socket.read(&mut request);
            socket.write_all(reply).unwrap();
            // Closing cuts the truncated bulk string short.
        }
    });
    let timeout = Duration::from_secs(2);
    let connect = || RedisConnection::connect(addr, timeout).unwrap();
    use squall_benches::KvBackend;
    let truncated = connect().get("k").unwrap_err();
    assert!(matches!(truncated, BackendError::Io(_)), "{truncated}");
    let resp3 = connect().get("k").unwrap_err();
    assert!(matches!(resp3, BackendError::Protocol(_)), "{resp3}");
    let wrong_kind = connect().get("k").unwrap_err();
    assert!(wrong_kind.to_string().contains("unexpected reply to GET"));
    server.join().unwrap();
}

#[test]
fn a_redis_with_an_append_only_file_keeps_its_keys_across_a_restart() {
    use squall_benches::redis::{Persistence, RedisServer};
    let dir = std::env::temp_dir().join(format!("squall-bench-test-aof-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let first = RedisServer::start_with("redis-server", Persistence::AofAlways, Some(&dir))
        .expect("these tests need redis-server (run `make setup`)");
    let mut conn = RedisConnection::connect(first.addr(), Duration::from_secs(5)).unwrap();
    conn.put("kept", b"on disk").unwrap();
    first.shut_down().unwrap();
    let again =
        RedisServer::start_with("redis-server", Persistence::AofAlways, Some(&dir)).unwrap();
    let mut conn = RedisConnection::connect(again.addr(), Duration::from_secs(5)).unwrap();
    assert_eq!(conn.get("kept").unwrap(), Some(b"on disk".to_vec()));
    drop(again);
    assert!(dir.exists(), "a given directory outlives the server");
    std::fs::remove_dir_all(&dir).unwrap();

    // Without a directory the factory's server owns a fresh one and
    // removes it when it stops.
    let factory = RedisFactory::start_with("redis-server", Persistence::AofEverysec).unwrap();
    assert_eq!(factory.name(), "redis (aof everysec)");
    factory.connect().unwrap().put("k", b"v").unwrap();
}
