//! A cache on real sockets: a router and a storage node on loopback TCP in
//! this process, the cache under a `ZmqDriver` (TCP for the KVS, `ipc://`
//! for executors), a KVS client writing, and an executor-like socket
//! reading through the cache. A write to the KVS reaches the cache by
//! subscription, so the next read is a fresh hit.

use anna::client::ClientConfig;
use anna::kvs::{StorageWorker, WorkerConfig};
use anna::lattice::{LatticeValue, WriterId};
use anna::protocol::{
    Ack, Address, KeyOp, KvsRequest, Message, NodeId, NodeInfo, Outcome, RequestId,
};
use anna::role::{Driver, Role};
use anna::router::{Router, RouterConfig};
use squall_cache::{Cache, CacheConfig};
use squall_transport::Client;
use squall_transport::{Receiver, Sender, Shutdown, ZmqDriver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const WAIT: Option<Duration> = Some(Duration::from_secs(5));

/// A loopback TCP address on a port free a moment ago.
fn free_tcp() -> Address {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    Address(format!("tcp://127.0.0.1:{port}"))
}

struct Running {
    stop: Shutdown,
    thread: JoinHandle<()>,
}

fn spawn<R: Role + Send + 'static>(mut driver: ZmqDriver<R>) -> Running {
    let stop = driver.shutdown_handle();
    let thread = std::thread::spawn(move || driver.run().unwrap());
    Running { stop, thread }
}

/// An executor: one socket it receives at, one it sends from.
struct Executor {
    rx: Receiver,
    tx: Sender,
    cache: Address,
    next: u64,
}

impl Executor {
    fn ask(&mut self, msg: Message) -> Message {
        self.tx.send(&self.cache, &msg).unwrap();
        self.rx.recv(WAIT).unwrap().expect("the cache answers")
    }

    fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.next += 1;
        let msg = Message::KvsRequest(KvsRequest {
            id: RequestId(self.next),
            reply_to: self.rx.address().clone(),
            ops: vec![KeyOp::Get { key: key.into() }],
            ack: Ack::FirstReplica,
            shared_memory: None,
        });
        let Message::KvsResponse(r) = self.ask(msg) else {
            panic!("not a KVS response");
        };
        assert_eq!(r.id, RequestId(self.next));
        match &r.results[0].outcome {
            Outcome::Value(LatticeValue::Lww(l)) => Some(l.value().to_vec()),
            Outcome::NotFound => None,
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    fn counter(&mut self, name: &str) -> u64 {
        self.next += 1;
        let msg = Message::StatusRequest {
            id: RequestId(self.next),
            reply_to: self.rx.address().clone(),
        };
        let Message::StatusReply { counters, .. } = self.ask(msg) else {
            panic!("not a status reply");
        };
        counters.into_iter().find(|(k, _)| k == name).unwrap().1
    }
}

#[test]
fn a_write_to_the_kvs_reaches_the_cache_by_subscription_and_the_next_read_is_a_fresh_hit() {
    let ctx = zmq::Context::new();
    let router_at = free_tcp();
    let router = Router::new(RouterConfig::default(), router_at.clone(), vec![]);
    let router = spawn(ZmqDriver::bind(&ctx, &router_at, router).unwrap());

    let node = NodeInfo {
        id: NodeId(1),
        threads: vec![free_tcp()],
        boot: 1,
        direct: Vec::new(),
    };
    let worker = StorageWorker::new(
        WorkerConfig::default(),
        node.clone(),
        0,
        vec![router_at.clone()],
    );
    let worker = spawn(ZmqDriver::bind(&ctx, &node.threads[0], worker).unwrap());

    let cache_at = free_tcp();
    let cache = Cache::new(
        CacheConfig::default(),
        "node-a".into(),
        cache_at.clone(),
        vec![router_at.clone()],
        vec![],
        WriterId(99),
    );
    let mut driver = ZmqDriver::bind(&ctx, &cache_at, cache).unwrap();
    let ipc_path = std::env::temp_dir().join(format!("squall-cache-{}.ipc", std::process::id()));
    let ipc = driver
        .bind_also(&Address(format!("ipc://{}", ipc_path.display())))
        .unwrap();
    let cache = spawn(driver);

    let mut client = Client::connect(vec![router_at.clone()], ClientConfig::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.put_lww("k", b"one".to_vec()).is_err() {
        assert!(Instant::now() < deadline, "the storage node never joined");
    }

    let mut exec = Executor {
        rx: Receiver::bind(&ctx, &Address::from("inproc://executor")).unwrap(),
        tx: Sender::new(&ctx),
        cache: ipc,
        next: 0,
    };
    assert_eq!(exec.get("k"), Some(b"one".to_vec()));
    assert_eq!((exec.counter("hits"), exec.counter("misses")), (0, 1));
    assert_eq!(exec.get("k"), Some(b"one".to_vec()));
    assert_eq!(exec.counter("hits"), 1);

    client.put_lww("k", b"two".to_vec()).unwrap();
    let written = Instant::now();
    loop {
        if exec.get("k") == Some(b"two".to_vec()) {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(1),
            "the cache still serves the old value a second after the write"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        exec.counter("misses"),
        1,
        "no KVS round trip after the first"
    );
    assert!(exec.counter("hits") >= 2);
    assert!(exec.counter("updates") >= 1, "the KVS pushed the write");

    for r in [cache, worker, router] {
        r.stop.stop().unwrap();
        r.thread.join().unwrap();
    }
}
