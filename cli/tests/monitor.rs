//! The monitor end to end, as `squall up` starts it: a write spike makes it
//! add a storage node and the quiet afterwards remove it again (the node
//! hands every key over, no acknowledged write is lost); a key read far
//! more than the others gets its replication raised, its reads spread over
//! both threads, and the override goes once the key cools.
//!
//! Each test runs a [`LocalCluster`] of a config of short monitor timings
//! on its own block of ports from [`PORTS`] (below the blocks of
//! `local_provider.rs`, 12000.., and of `local_cluster.rs` and the `cluster`
//! harness, 20000..). A [`Probe`] asks the monitor what it decided
//! (`MonitorStatusRequest`), the routers and storage threads what they see
//! (`StatusRequest`, `StatsRequest`).

mod cluster;

use anna::cluster::ReplicationFactor;
use anna::lattice::LatticeValue;
use anna::protocol::monitor::{MonitorEvent, MonitorStatus};
use anna::protocol::{Address, Key};
use cluster::{
    assert_all_readable, client_config, running, wait_until, LocalCluster, PortRange, Probe,
};
use squall_transport::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// This file's ports: 6 blocks from 9000, up to `local_provider.rs`'s.
const PORTS: PortRange = PortRange {
    floor: 9_000,
    blocks: 6,
};

/// How long a probe waits for an answer.
const ASK: Duration = Duration::from_secs(1);

/// Storage and router settings short enough that joins, failure detection
/// and handoffs take a second or two; one replica per key by default, so
/// keys really move when a node comes or goes.
const KVS_SETTINGS: &str = "\
[storage]
replication = { global = 1, local = 1 }
stats_epoch = 500
heartbeat_period = 200
ack_timeout = 1000
handoff_retry = 200
anti_entropy_period = 300
transition_window = 1500
leave_timeout = 15000

[router]
failure_timeout = 1500
broadcast_period = 300

[client]
attempt_timeout = 300
op_timeout = 5000
";

/// A cluster of `config` on this file's ports, not yet started.
fn cluster(config: &str) -> LocalCluster {
    LocalCluster::new(config, "squall-monitor-", PORTS)
}

/// Panics with the monitor's own words if it failed to carry out a
/// decision, so a broken actuator fails fast instead of by timeout.
fn assert_monitor_carried_out(c: &LocalCluster) {
    let log = std::fs::read_to_string(c.state_dir().join("logs/monitor.log")).unwrap_or_default();
    let failed = log
        .lines()
        .find(|l| l.contains("scaling failed") || l.contains("changing replication failed"));
    if let Some(line) = failed {
        panic!("the monitor could not carry out its decision:\n{line}");
    }
}

/// Waits until the monitor has decided `action` under `policy` (for a key,
/// if given); panics at `limit`, or at once if the monitor logged that it
/// could not carry out a decision. `watch` sees every status on the way.
fn wait_event(
    ask: &mut Probe,
    c: &LocalCluster,
    policy: &str,
    action: &str,
    key: Option<&str>,
    limit: Duration,
    mut watch: impl FnMut(&MonitorStatus),
) -> MonitorEvent {
    let monitor = c.address("monitors");
    wait_until(&format!("a {policy} {action} event"), limit, || {
        assert_monitor_carried_out(c);
        let status = ask.monitor(&monitor, ASK)?;
        watch(&status);
        status.events.into_iter().find(|e| {
            e.policy == policy && e.action == action && key.is_none_or(|k| figures(e)["key"] == k)
        })
    })
}

/// An event's figures, parsed.
fn figures(e: &MonitorEvent) -> serde_json::Value {
    serde_json::from_str(&e.figures).expect("an event's figures are JSON")
}

/// Acknowledged writes: key and value.
type Writes = Vec<(Key, Vec<u8>)>;

/// Writers putting distinct last-writer-wins keys as fast as they can
/// (`WINDOW` puts in flight each), keeping every acknowledged write.
struct Spike {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<(Writes, usize)>>,
}

impl Spike {
    const WINDOW: usize = 16;

    fn start(router: &Address, writers: usize) -> Spike {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..writers)
            .map(|w| {
                let (stop, router) = (stop.clone(), router.clone());
                std::thread::spawn(move || {
                    let mut client =
                        Client::connect(vec![router], client_config()).expect("client");
                    let mut in_flight = std::collections::HashMap::new();
                    let (mut acked, mut failed, mut n) = (Vec::new(), 0, 0u64);
                    loop {
                        while !stop.load(Ordering::Relaxed) && in_flight.len() < Self::WINDOW {
                            let key = format!("spike-{w}-{n}");
                            let value = format!("value-{w}-{n}").into_bytes();
                            n += 1;
                            let at = client.timestamp();
                            let lww = LatticeValue::Lww(anna::lattice::Lww::new(at, value.clone()));
                            in_flight.insert(client.start_put(key.clone(), lww), (key, value));
                        }
                        if in_flight.is_empty() {
                            break;
                        }
                        let (id, result) = client.wait_any().expect("client transport");
                        if let Some(write) = in_flight.remove(&id) {
                            match result {
                                Ok(_) => acked.push(write),
                                Err(_) => failed += 1,
                            }
                        }
                    }
                    (acked, failed)
                })
            })
            .collect();
        Spike { stop, threads }
    }

    /// Stops the writers; every acknowledged write, and how many failed.
    fn stop(mut self) -> (Writes, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut acked, mut failed) = (Vec::new(), 0);
        for t in self.threads.drain(..) {
            let (a, f) = t.join().expect("a writer panicked");
            acked.extend(a);
            failed += f;
        }
        (acked, failed)
    }
}

impl Drop for Spike {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Busy marks calibrated on a 2-core machine with a debug build: the one
/// storage thread under the spike reported 680-860‰ busy (the lower end
/// with the other test of this file running beside it), idle 0-10‰.
const BUSY_HIGH: u16 = 400;
const BUSY_LOW: u16 = 100;

fn storage_config() -> String {
    format!(
        "{KVS_SETTINGS}
[monitor]
period = 250

[monitor.storage]
max_nodes = 2
busy_high = {BUSY_HIGH}
busy_low = {BUSY_LOW}
sustain = 1000
sustain_low = 3000
grace = 3000

[monitor.compute]
enabled = false

[monitor.hot_keys]
enabled = false

[monitor.hot_functions]
enabled = false
"
    )
}

/// The busy fractions of the storage threads the monitor reports.
fn busy(status: &MonitorStatus) -> Vec<u16> {
    status.storage.iter().map(|r| r.busy_permille).collect()
}

#[test]
fn a_load_spike_adds_a_storage_node_and_its_end_removes_it_gracefully() {
    let started = Instant::now();
    let mut c = cluster(&storage_config());
    c.up(&["--nodes", "1", "--threads", "1", "--compute-nodes", "0"]);
    let router = c.address("routers");
    let monitor = c.address("monitors");
    let mut ask = Probe::new();

    // Idle: the one thread stays under the low mark.
    let mut idle = Vec::new();
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(250));
        idle.extend(
            ask.monitor(&monitor, ASK)
                .map(|s| busy(&s))
                .unwrap_or_default(),
        );
    }
    eprintln!("busy while idle (‰): {idle:?}");
    assert!(!idle.is_empty(), "the monitor reported no storage thread");
    assert!(idle.iter().all(|&b| b < BUSY_LOW), "idle busy {idle:?}");

    let spike = Spike::start(&router, 3);
    let mut loaded = Vec::new();
    let added = wait_event(
        &mut ask,
        &c,
        "storage",
        "add-node",
        None,
        Duration::from_secs(20),
        |s| loaded.extend(busy(s)),
    );
    eprintln!("busy under the spike (‰): {loaded:?}");
    eprintln!("add-node: {}: {}", added.reason, added.figures);
    assert!(added.reason.contains("average busy"), "{}", added.reason);
    assert!(
        figures(&added)["busy_avg_permille"].as_u64() >= Some(u64::from(BUSY_HIGH)),
        "{}",
        added.figures
    );
    assert_eq!(figures(&added)["nodes"], 1);

    // Node 2 runs, the router lists it, and keys moved to it.
    let node2 = wait_until("node 2 in the record", Duration::from_secs(10), || {
        let record = c.record();
        let nodes = record["nodes"].as_array()?.clone();
        (nodes.len() == 2).then(|| nodes[1].clone())
    });
    assert_eq!(node2["id"], 2);
    wait_until(
        "the router to list 2 live nodes",
        Duration::from_secs(15),
        || (ask.status(&router, ASK)?.live_nodes().count() == 2).then_some(()),
    );
    let thread = Address(
        node2["addresses"][0]
            .as_str()
            .expect("an address")
            .to_string(),
    );
    let held = wait_until("node 2 to hold keys", Duration::from_secs(15), || {
        ask.stats(&thread, ASK).map(|r| r.keys).filter(|&k| k > 0)
    });
    eprintln!("node 2 holds {held} keys");

    let (acked, failed) = spike.stop();
    eprintln!(
        "spike: {} puts acknowledged, {failed} failed, after {:?}",
        acked.len(),
        started.elapsed()
    );

    // Quiet: the monitor removes node 2, which hands its keys over and exits.
    let removed = wait_event(
        &mut ask,
        &c,
        "storage",
        "remove-node",
        None,
        Duration::from_secs(25),
        |_| {},
    );
    eprintln!("remove-node: {}: {}", removed.reason, removed.figures);
    assert_eq!(figures(&removed)["nodes"], 2);
    let pid = u32::try_from(node2["pid"].as_u64().expect("a pid")).expect("pid");
    wait_until("node 2 to exit", Duration::from_secs(30), || {
        (!running(pid)).then_some(())
    });
    let log =
        std::fs::read_to_string(node2["log"].as_str().expect("a log path")).expect("node 2's log");
    assert!(log.contains("every key handed over"), "{log}");
    assert!(!log.contains("leave timeout"), "{log}");
    wait_until(
        "node 2 to leave the record",
        Duration::from_secs(10),
        || (c.record()["nodes"].as_array()?.len() == 1).then_some(()),
    );
    wait_until(
        "the router to list 1 live node",
        Duration::from_secs(10),
        || (ask.status(&router, ASK)?.live_nodes().count() == 1).then_some(()),
    );
    let events = ask
        .monitor(&monitor, ASK)
        .expect("the monitor's status")
        .events;
    let storage: Vec<&str> = events
        .iter()
        .filter(|e| e.policy == "storage")
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(storage, ["add-node", "remove-node"]);

    let mut client = Client::connect(vec![router], client_config()).expect("a client");
    assert_all_readable(&mut client, &acked, Duration::from_secs(30));
    eprintln!("test took {:?}", started.elapsed());
}

const HOT: &str = "hot-key";

fn hot_key_config() -> String {
    format!(
        "{KVS_SETTINGS}
[monitor]
period = 250

[monitor.storage]
enabled = false

[monitor.compute]
enabled = false

[monitor.hot_keys]
multiple = 10
min_per_second = 50
replication = {{ global = 1, local = 2 }}
cool_after = 1500

[monitor.hot_functions]
enabled = false
"
    )
}

/// A thread reading the hot key (and now and then a background key) as
/// fast as one request at a time goes, through one client for its whole
/// life, until stopped.
struct Reader {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Reader {
    fn start(router: &Address, background: usize) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, router) = (stop.clone(), router.clone());
            std::thread::spawn(move || {
                let mut client = Client::connect(vec![router], client_config()).expect("client");
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = if reads % 10 == 9 {
                        format!("background-{}", reads as usize % background)
                    } else {
                        HOT.to_string()
                    };
                    if client.get(&key).is_ok() {
                        reads += 1;
                    }
                }
                reads
            })
        };
        Reader {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("stopped once");
        thread.join().expect("the reader panicked")
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How often `thread`'s last complete epoch counted the hot key.
fn hot_count(ask: &mut Probe, thread: &Address) -> Option<u32> {
    let report = ask.stats(thread, ASK)?;
    Some(
        report
            .hot_keys
            .iter()
            .find(|(k, _)| k == HOT)
            .map_or(0, |(_, n)| *n),
    )
}

/// Waits until each of `threads` served at least a tenth of the reads of
/// the hot key in its last epoch: those counts, or the counts seen if
/// `limit` passes first.
fn spread_over(ask: &mut Probe, threads: &[Address], limit: Duration) -> Result<Vec<u32>, String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let counts: Vec<u32> = threads
            .iter()
            .map(|t| hot_count(ask, t).unwrap_or(0))
            .collect();
        let total: u32 = counts.iter().sum();
        if counts.iter().all(|&n| n > 0 && n * 10 >= total) {
            return Ok(counts);
        }
        seen.push(counts);
        if Instant::now() > deadline {
            return Err(format!(
                "reads of the hot key did not spread over both threads: reads per \
                 thread in the last epochs {:?}",
                &seen[seen.len().saturating_sub(6)..]
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_zipf_hot_key_gets_its_replication_raised_and_its_reads_spread() {
    let started = Instant::now();
    let mut c = cluster(&hot_key_config());
    c.up(&["--nodes", "1", "--threads", "2", "--compute-nodes", "0"]);
    let router = c.address("routers");
    let monitor = c.address("monitors");
    let threads: Vec<Address> = c.record()["nodes"][0]["addresses"]
        .as_array()
        .expect("thread addresses")
        .iter()
        .map(|a| Address(a.as_str().expect("an address").to_string()))
        .collect();
    assert_eq!(threads.len(), 2);
    let mut ask = Probe::new();

    const BACKGROUND: usize = 200;
    let mut client = Client::connect(vec![router.clone()], client_config()).expect("a client");
    let mut expected = vec![(HOT.to_string(), b"hot".to_vec())];
    expected.extend((0..BACKGROUND).map(|i| (format!("background-{i}"), vec![b'b'; 16])));
    for (k, v) in &expected {
        client.put_lww(k, v.clone()).expect("a put");
    }

    let reader = Reader::start(&router, BACKGROUND);
    let raised = wait_event(
        &mut ask,
        &c,
        "hot-key",
        "raise-replication",
        Some(HOT),
        Duration::from_secs(15),
        |_| {},
    );
    eprintln!("raise-replication: {}: {}", raised.reason, raised.figures);
    let want = ReplicationFactor {
        global: 1,
        local: 2,
    };
    wait_until(
        "the router to show the override",
        Duration::from_secs(10),
        || (ask.status(&router, ASK)?.replication_override(HOT) == Some(want)).then_some(()),
    );

    // The reader, whose client was made before the raise, now spreads its
    // reads of the hot key over both threads. Checked at the end, so that
    // the rest runs (and is checked) whatever this finds.
    let spread = spread_over(&mut ask, &threads, Duration::from_secs(5));

    let reads = reader.stop();
    eprintln!("{reads} reads");
    let lowered = wait_event(
        &mut ask,
        &c,
        "hot-key",
        "lower-replication",
        Some(HOT),
        Duration::from_secs(15),
        |_| {},
    );
    eprintln!("lower-replication: {}", lowered.reason);
    // Deleting the metadata key leaves the default factor in the routers'
    // state (the state is a lattice: a deletion is recorded as the default
    // factor as of the deletion), so "no override" reads as either.
    let default = ReplicationFactor {
        global: 1,
        local: 1,
    };
    wait_until(
        "the router to drop the override",
        Duration::from_secs(10),
        || {
            ask.status(&router, ASK)?
                .replication_override(HOT)
                .is_none_or(|f| f == default)
                .then_some(())
        },
    );
    let status = ask.monitor(&monitor, ASK).expect("the monitor's status");
    assert!(status.raised.is_empty(), "{:?}", status.raised);
    assert_all_readable(&mut client, &expected, Duration::from_secs(10));
    eprintln!("test took {:?}", started.elapsed());
    let counts = spread.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("hot-key reads per thread in the last epoch: {counts:?}");
}
