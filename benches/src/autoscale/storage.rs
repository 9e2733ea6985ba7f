//! The storage tier under a spike: closed-loop KVS clients (one, then
//! `spike_clients`, then one again) against a cluster that starts with one
//! storage node of one thread and may grow to two.
//!
//! Each request reads or writes `batch` keys at once (a multi-key get or
//! put): on two shared cores the clients and ZeroMQ take most of the CPU,
//! and single-key requests leave the storage thread's busy fraction, which
//! the monitor scales on, about the same at 1 and at 16 clients.
//!
//! Every 250 ms the probe asks the router which nodes are live and every
//! live storage thread for its `StorageReport` (busy fraction and accesses
//! of its last complete statistics epoch). The new node has *joined* once
//! the router lists it, and *serves* once one of its threads reports
//! accesses: both are first-seen times, late by up to one sampling period
//! (serving also by up to one statistics epoch, 500 ms here).

use super::probe::{unix_ms, BenchCluster, Probe};
use super::record::{Decisions, Done};
use super::{drive, finish, mean, Labels, Phases, Sample};
use crate::backend::{BackendError, Result};
use anna::client::{ClientConfig, ClientError};
use anna::lattice::{LatticeValue, Lww};
use anna::protocol::{Address, NodeId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use squall_transport::Client;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What a storage run does.
#[derive(Clone, Debug)]
pub struct StorageArgs {
    pub light_secs: f64,
    pub spike_secs: f64,
    /// At most this long in the last light phase.
    pub settle_secs: f64,
    pub spike_clients: usize,
    pub keys: usize,
    pub value_size: usize,
    pub reads: f64,
    /// Keys per request (a multi-key get or put when above 1).
    pub batch: usize,
    pub busy_high: u16,
    pub busy_low: u16,
    pub base_port: u16,
    pub out: PathBuf,
    pub keep: bool,
}

const SUSTAIN_MS: u64 = 2000;
const SUSTAIN_LOW_MS: u64 = 5000;
const GRACE_MS: u64 = 5000;
const STATS_EPOCH_MS: u64 = 500;
const PERIOD_MS: u64 = 250;

fn config(a: &StorageArgs) -> String {
    format!(
        "[storage]\nreplication = {{ global = 1, local = 1 }}\nstats_epoch = {STATS_EPOCH_MS}\n\
         leave_timeout = 15000\n\n[monitor]\nperiod = {PERIOD_MS}\n\n[monitor.storage]\n\
         min_nodes = 1\nmax_nodes = 2\nbusy_high = {}\nbusy_low = {}\nsustain = {SUSTAIN_MS}\n\
         sustain_low = {SUSTAIN_LOW_MS}\ngrace = {GRACE_MS}\n\n[monitor.compute]\nenabled = false\n",
        a.busy_high, a.busy_low
    )
}

fn key(i: usize) -> String {
    format!("key:{i:08}")
}

fn connect(ctx: &zmq::Context, routers: &[Address]) -> Result<Client> {
    let me = Address::from("tcp://127.0.0.1:*");
    Client::connect_in(ctx, &me, routers.to_vec(), ClientConfig::default())
        .map_err(|e| BackendError::Setup(format!("connecting to squall: {e}")))
}

fn preload(ctx: &zmq::Context, routers: &[Address], a: &StorageArgs) -> Result<()> {
    let server = |e: ClientError| BackendError::Server(e.to_string());
    let mut c = connect(ctx, routers)?;
    let value = vec![b'v'; a.value_size];
    let mut in_flight = 0;
    for i in 0..a.keys {
        if in_flight == 64 {
            c.wait_any().map_err(server)?.1.map_err(server)?;
            in_flight -= 1;
        }
        let v = LatticeValue::Lww(Lww::new(c.timestamp(), value.clone()));
        c.start_put(key(i), v);
        in_flight += 1;
    }
    for _ in 0..in_flight {
        c.wait_any().map_err(server)?.1.map_err(server)?;
    }
    Ok(())
}

/// Shared by the client threads and the sampler.
struct Control {
    start: Instant,
    /// Clients `0..active` send requests; the others wait.
    active: AtomicUsize,
    stop: AtomicBool,
}

/// One closed-loop client: one request in flight while it is active.
fn client(
    i: usize,
    ctx: &zmq::Context,
    routers: &[Address],
    a: &StorageArgs,
    control: &Control,
) -> Result<Vec<Done>> {
    let mut c = connect(ctx, routers)?;
    let mut rng = SmallRng::seed_from_u64(i as u64);
    let value = vec![b'w'; a.value_size];
    let mut done = Vec::new();
    while !control.stop.load(Ordering::Relaxed) {
        if i >= control.active.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let keys: Vec<String> = (0..a.batch.max(1))
            .map(|_| key(rng.random_range(0..a.keys)))
            .collect();
        let read = rng.random::<f64>() < a.reads;
        let started = Instant::now();
        let ok = match (read, keys.as_slice()) {
            (true, [k]) => c.get(k).is_ok(),
            (false, [k]) => c.put_lww(k, value.clone()).is_ok(),
            (true, many) => {
                let refs: Vec<&str> = many.iter().map(String::as_str).collect();
                c.get_many(&refs).is_ok()
            }
            (false, many) => {
                let at = c.timestamp();
                let entries = many
                    .iter()
                    .map(|k| (k.clone(), LatticeValue::Lww(Lww::new(at, value.clone()))))
                    .collect();
                c.put_many(entries).is_ok()
            }
        };
        let now = Instant::now();
        done.push(Done {
            at_us: now.duration_since(control.start).as_micros() as u64,
            latency_us: now.duration_since(started).as_micros() as u64,
            ok,
        });
    }
    Ok(done)
}

/// Runs the storage benchmark and prints its figures.
pub fn run(a: &StorageArgs) -> Result<()> {
    let up = ["--nodes", "1", "--threads", "1", "--compute-nodes", "0"].map(String::from);
    let cluster = BenchCluster::up(&config(a), &up, a.base_port, a.keep)?;
    let ctx = zmq::Context::new();
    preload(&ctx, &cluster.routers, a)?;
    let mut probe = Probe::new(&ctx)?;
    let router = cluster.routers[0].clone();
    let initial: BTreeSet<NodeId> = probe
        .cluster(&router)
        .ok_or_else(|| BackendError::Setup("the router did not answer".into()))?
        .live_nodes()
        .map(|(id, _)| id)
        .collect();
    let phases = Phases {
        names: ["light", "spike", "light-again"],
        spike_from: a.light_secs,
        spike_to: a.light_secs + a.spike_secs,
        settle_secs: a.settle_secs,
    };
    let control = Control {
        start: Instant::now(),
        active: AtomicUsize::new(1),
        stop: AtomicBool::new(false),
    };
    let start_ms = unix_ms();
    let mut decisions = Decisions::default();
    let (samples, done) = std::thread::scope(|scope| -> Result<(Vec<Sample>, Vec<Done>)> {
        let clients: Vec<_> = (0..a.spike_clients.max(1))
            .map(|i| {
                let (ctx, routers, control) = (&ctx, &cluster.routers, &control);
                scope.spawn(move || client(i, ctx, routers, a, control))
            })
            .collect();
        let samples = drive(
            &phases,
            control.start,
            |phase| {
                let active = if phase == 1 { a.spike_clients } else { 1 };
                control.active.store(active, Ordering::Relaxed);
            },
            |t, phase| {
                let sample = observe(&mut probe, &router, &initial, t, phase);
                if let Some(status) = probe.monitor(&cluster.monitor) {
                    decisions.absorb(&status, start_ms);
                }
                sample
            },
        );
        control.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for c in clients {
            let joined = c.join();
            all.extend(joined.map_err(|_| BackendError::Setup("a client panicked".into()))??);
        }
        Ok((samples, all))
    })?;
    println!(
        "squall-bench autoscale storage: 1 storage node x 1 thread, up to 2; {} keys of {} bytes, \
         uniform; requests of {} keys, {:.0}% reads; 1 closed-loop client, {} during the spike",
        a.keys,
        a.value_size,
        a.batch,
        a.reads * 100.0,
        a.spike_clients
    );
    println!(
        "  monitor: period {PERIOD_MS} ms, busy_high {}‰, busy_low {}‰, sustain {SUSTAIN_MS} ms, \
         sustain_low {SUSTAIN_LOW_MS} ms, grace {GRACE_MS} ms; stats_epoch {STATS_EPOCH_MS} ms",
        a.busy_high, a.busy_low
    );
    let labels = Labels {
        policy: "storage",
        title: format!(
            "Squall storage autoscaling: 1 → {} → 1 closed-loop clients ({}-key requests)",
            a.spike_clients, a.batch
        ),
        file: "autoscale-storage",
        unit: "requests/s",
        new: "new node",
        joined: ("new node joined (the router lists it)", "joined"),
        serving: ("new node serving (its thread counted accesses)", "serving"),
        gone: ("node gone (the router no longer lists it)", "gone"),
        columns: [
            "t_s",
            "phase",
            "requests_per_s",
            "p99_ms",
            "errors",
            "nodes",
            "new_node_serving",
            "busy_first_permille",
            "busy_new_permille",
            "accesses",
        ],
    };
    finish(
        &labels, &phases, &samples, &decisions, &done, start_ms, &a.out,
    )?;
    if a.keep {
        println!("  monitor log: {}", cluster.monitor_log().display());
    }
    Ok(())
}

/// The router's live nodes and every live thread's last epoch.
fn observe(
    probe: &mut Probe,
    router: &Address,
    initial: &BTreeSet<NodeId>,
    t: f64,
    phase: usize,
) -> Sample {
    let mut s = Sample {
        t,
        phase,
        ..Sample::default()
    };
    let Some(state) = probe.cluster(router) else {
        return s;
    };
    let live: Vec<(NodeId, Vec<Address>)> = state
        .live_nodes()
        .map(|(id, info)| (id, info.threads.clone()))
        .collect();
    let new = |id: &NodeId| !initial.contains(id);
    s.count = Some(live.len());
    s.new = Some(live.iter().filter(|(id, _)| new(id)).count());
    let threads: Vec<Address> = live.iter().flat_map(|(_, t)| t.clone()).collect();
    let reports = probe.storage(&threads);
    s.new_work = reports
        .iter()
        .filter(|r| new(&r.node))
        .map(|r| r.accesses)
        .sum();
    s.extra = reports.iter().map(|r| r.accesses).sum();
    let busy = |f: &dyn Fn(&NodeId) -> bool| {
        mean(
            reports
                .iter()
                .filter(|r| f(&r.node))
                .map(|r| r.busy_permille),
        )
    };
    s.busy_first = busy(&|id| !new(id));
    s.busy_new = busy(&new);
    s.busy_all = busy(&|_| true);
    s
}
