//! The compute tier under a burst: an open-loop stream of calls of a
//! Python function that sleeps (`benches/functions/autoscale.py` registers
//! it), at a light rate, then at a rate one compute node cannot keep up
//! with, then light again, against a cluster that starts with one compute
//! node (a cache and `executors` executors) and may grow to two.
//!
//! The calls are sent from here, not from Python: one thread sends each
//! `CallRequest` to the scheduler at its scheduled instant, whatever is
//! still outstanding, and times each `CallResult` from that instant (so a
//! backlog counts in the latency). Every 250 ms the probe asks the
//! scheduler for its executors' reports: the new executors *report* once
//! the scheduler lists them, and *serve* once one of them has completed a
//! call of the function.

use super::probe::{unix_ms, BenchCluster, Probe};
use super::record::{Decisions, Done};
use super::{drive, finish, mean, Labels, Phases, Sample};
use crate::backend::{BackendError, Result};
use anna::protocol::compute::{
    CallArgs, CallId, CallOutcome, CallRequest, ExecutorReport, ReplyTo,
};
use anna::protocol::{Address, Message};
use squall_transport::{Receiver, Sender};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What a compute run does.
#[derive(Clone, Debug)]
pub struct ComputeArgs {
    pub light_secs: f64,
    pub burst_secs: f64,
    pub settle_secs: f64,
    /// Calls a second in the light phases and in the burst.
    pub light_rate: f64,
    pub burst_rate: f64,
    pub sleep_ms: u32,
    /// Executors per compute node.
    pub executors: u16,
    pub busy_high: u16,
    pub busy_low: u16,
    pub python: PathBuf,
    pub base_port: u16,
    pub out: PathBuf,
    pub keep: bool,
}

const SUSTAIN_MS: u64 = 2000;
const SUSTAIN_LOW_MS: u64 = 5000;
const GRACE_MS: u64 = 5000;
const PERIOD_MS: u64 = 250;
/// Calls still unanswered this long after the last one was sent are
/// given up.
const DRAIN: Duration = Duration::from_secs(20);

fn config(a: &ComputeArgs) -> String {
    format!(
        "[storage]\nreplication = {{ global = 1, local = 1 }}\n\n[monitor]\nperiod = {PERIOD_MS}\n\n\
         [monitor.storage]\nenabled = false\n\n[monitor.compute]\nmin_nodes = 1\nmax_nodes = 2\n\
         busy_high = {}\nbusy_low = {}\nsustain = {SUSTAIN_MS}\nsustain_low = {SUSTAIN_LOW_MS}\n\
         grace = {GRACE_MS}\n",
        a.busy_high, a.busy_low
    )
}

/// The function's name and the call payload, from the Python helper.
fn register(a: &ComputeArgs, cluster: &BenchCluster) -> Result<(String, Vec<u8>)> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("functions/autoscale.py");
    let out = Command::new(&a.python)
        .arg(&script)
        .arg("--state-dir")
        .arg(&cluster.dir)
        .args(["--sleep-ms", &a.sleep_ms.to_string()])
        .output()
        .map_err(|e| BackendError::Setup(format!("running {}: {e}", a.python.display())))?;
    if !out.status.success() {
        return Err(BackendError::Setup(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| BackendError::Protocol(format!("{e}: {line}")))?;
    let hex = v["payload_hex"].as_str().unwrap_or_default();
    let payload = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
        .collect::<std::result::Result<Vec<u8>, _>>()
        .map_err(|e| BackendError::Protocol(format!("payload: {e}")))?;
    let name = v["function"].as_str().unwrap_or_default().to_string();
    eprintln!(
        "registered {name}; first call {:.1} ms",
        v["first_call_ms"].as_f64().unwrap_or(f64::NAN)
    );
    Ok((name, payload))
}

/// Shared by the caller thread and the sampler.
struct Control {
    start: Instant,
    /// Calls a second, in thousandths.
    millihertz: AtomicU64,
    stop: AtomicBool,
}

/// Sends calls at the current rate and times their results; returns the
/// completions and how many calls never got a result.
fn caller(
    ctx: &zmq::Context,
    scheduler: &Address,
    function: &str,
    payload: &[u8],
    control: &Control,
) -> Result<(Vec<Done>, usize)> {
    let io = |e: squall_transport::TransportError| BackendError::Protocol(e.to_string());
    let mut rx = Receiver::bind(ctx, &Address::from("tcp://127.0.0.1:*")).map_err(io)?;
    let mut tx = Sender::new(ctx);
    let caller = squall_transport::clock::fresh_id("autoscale-bench");
    let mut pending: HashMap<u64, Instant> = HashMap::new();
    let mut done = Vec::new();
    let (mut next, mut seq) = (control.start, 0u64);
    let mut stopped_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if stopped_at.is_none() && control.stop.load(Ordering::Relaxed) {
            stopped_at = Some(now);
        }
        if let Some(at) = stopped_at {
            if pending.is_empty() || now > at + DRAIN {
                return Ok((done, pending.len()));
            }
        } else if now >= next {
            seq += 1;
            let call = Message::Call(CallRequest {
                id: CallId { caller, seq },
                function: function.to_string(),
                args: CallArgs {
                    payload: payload.to_vec(),
                    refs: Vec::new(),
                },
                reply: ReplyTo {
                    address: rx.address().clone(),
                    response_key: None,
                },
                timeout_ms: 120_000,
                session: Default::default(),
                consistency: Default::default(),
                instance: None,
                trace: false,
            });
            tx.send(scheduler, &call).map_err(io)?;
            pending.insert(seq, next);
            let hz = control.millihertz.load(Ordering::Relaxed).max(1) as f64 / 1000.0;
            next += Duration::from_secs_f64(1.0 / hz);
            continue;
        }
        let wait = match stopped_at {
            Some(_) => Duration::from_millis(50),
            None => next.saturating_duration_since(now),
        };
        if let Some(Message::CallResult(r)) = rx.recv(Some(wait)).map_err(io)? {
            let Some(sent) = pending.remove(&r.id.seq).filter(|_| r.id.caller == caller) else {
                continue;
            };
            let at = Instant::now();
            done.push(Done {
                at_us: at.duration_since(control.start).as_micros() as u64,
                latency_us: at.duration_since(sent).as_micros() as u64,
                ok: matches!(r.outcome, CallOutcome::Value(_)),
            });
        }
    }
}

/// Runs the compute benchmark and prints its figures.
pub fn run(a: &ComputeArgs) -> Result<()> {
    let executors = a.executors.to_string();
    let up = [
        "--nodes",
        "1",
        "--threads",
        "1",
        "--compute-nodes",
        "1",
        "--executors",
        &executors,
    ]
    .map(String::from);
    let cluster = BenchCluster::up(&config(a), &up, a.base_port, a.keep)?;
    let scheduler = cluster
        .schedulers
        .first()
        .cloned()
        .ok_or_else(|| BackendError::Setup("`squall up` started no scheduler".into()))?;
    let (function, payload) = register(a, &cluster)?;
    let ctx = zmq::Context::new();
    let mut probe = Probe::new(&ctx)?;
    let initial: BTreeSet<Address> = probe
        .compute(&scheduler)
        .ok_or_else(|| BackendError::Setup("the scheduler did not answer".into()))?
        .executors
        .into_iter()
        .map(|e| e.executor)
        .collect();
    let phases = Phases {
        names: ["light", "burst", "light-again"],
        spike_from: a.light_secs,
        spike_to: a.light_secs + a.burst_secs,
        settle_secs: a.settle_secs,
    };
    let hz = |r: f64| (r * 1000.0) as u64;
    let control = Control {
        start: Instant::now(),
        millihertz: AtomicU64::new(hz(a.light_rate)),
        stop: AtomicBool::new(false),
    };
    let start_ms = unix_ms();
    let mut decisions = Decisions::default();
    let (samples, (done, unanswered)) = std::thread::scope(|scope| -> Result<_> {
        let load = scope.spawn(|| caller(&ctx, &scheduler, &function, &payload, &control));
        let samples = drive(
            &phases,
            control.start,
            |phase| {
                let rate = if phase == 1 {
                    a.burst_rate
                } else {
                    a.light_rate
                };
                control.millihertz.store(hz(rate), Ordering::Relaxed);
            },
            |t, phase| {
                let sample = observe(&mut probe, &scheduler, &initial, &function, t, phase);
                if let Some(status) = probe.monitor(&cluster.monitor) {
                    decisions.absorb(&status, start_ms);
                }
                sample
            },
        );
        control.stop.store(true, Ordering::Relaxed);
        let calls = load.join();
        Ok((
            samples,
            calls.map_err(|_| BackendError::Setup("the caller panicked".into()))??,
        ))
    })?;
    println!(
        "squall-bench autoscale compute: 1 compute node x {} executor(s), up to 2; a Python \
         function sleeping {} ms, called open loop: {} calls/s, {} calls/s in the burst",
        a.executors, a.sleep_ms, a.light_rate, a.burst_rate
    );
    println!(
        "  monitor: period {PERIOD_MS} ms, busy_high {}‰, busy_low {}‰, sustain {SUSTAIN_MS} ms, \
         sustain_low {SUSTAIN_LOW_MS} ms, grace {GRACE_MS} ms; latency from each call's \
         scheduled send; most calls queued (scheduler and executors) {}",
        a.busy_high,
        a.busy_low,
        samples.iter().map(|s| s.extra).max().unwrap_or(0)
    );
    if unanswered > 0 {
        println!("  {unanswered} calls never answered");
    }
    let labels = Labels {
        policy: "compute",
        title: format!(
            "Squall compute autoscaling: {} → {} → {} calls/s of a {} ms function",
            a.light_rate, a.burst_rate, a.light_rate, a.sleep_ms
        ),
        file: "autoscale-compute",
        unit: "calls/s",
        new: "new executors",
        joined: (
            "new executors reporting (the scheduler lists them)",
            "executors report",
        ),
        serving: ("new executors serving (they completed calls)", "serving"),
        gone: (
            "executors gone (the scheduler no longer lists them)",
            "gone",
        ),
        columns: [
            "t_s",
            "phase",
            "calls_per_s",
            "p99_ms",
            "errors",
            "executors",
            "new_executors_serving",
            "busy_first_permille",
            "busy_new_permille",
            "queued",
        ],
    };
    finish(
        &labels, &phases, &samples, &decisions, &done, start_ms, &a.out,
    )?;
    Ok(())
}

/// The executors the scheduler lists, with their reports.
fn observe(
    probe: &mut Probe,
    scheduler: &Address,
    initial: &BTreeSet<Address>,
    function: &str,
    t: f64,
    phase: usize,
) -> Sample {
    let mut s = Sample {
        t,
        phase,
        ..Sample::default()
    };
    let Some(status) = probe.compute(scheduler) else {
        return s;
    };
    let new = |e: &&ExecutorReport| !initial.contains(&e.executor);
    let all = &status.executors;
    s.count = Some(all.len());
    s.new = Some(all.iter().filter(new).count());
    s.new_work = all
        .iter()
        .filter(new)
        .flat_map(|e| e.calls.iter().filter(|(f, _)| f == function))
        .map(|(_, n)| *n)
        .sum();
    s.busy_first = mean(all.iter().filter(|e| !new(e)).map(|e| e.busy_permille));
    s.busy_new = mean(all.iter().filter(new).map(|e| e.busy_permille));
    s.busy_all = mean(all.iter().map(|e| e.busy_permille));
    s.extra = u64::from(status.queued) + all.iter().map(|e| u64::from(e.queue)).sum::<u64>();
    s
}
