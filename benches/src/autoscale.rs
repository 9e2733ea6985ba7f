//! Autoscaling: how long a local Squall cluster takes to react to a load
//! spike, and what the clients see meanwhile.
//!
//! Each run starts a cluster with `squall up` and a bench config (its
//! monitor evaluating every 250 ms, short sustain and grace periods, at
//! most two nodes of the tier under test), then drives three phases: light
//! load, a spike the first node cannot absorb, light load again until the
//! node the monitor added is gone (or a bound passes). Every 250 ms a
//! probe asks the cluster directly what it runs and serves, and the
//! monitor what it decided; every request's completion time and latency
//! is kept. At the end the completions are binned into the same 250 ms
//! windows, one CSV row per window, and the CSV is drawn as an SVG
//! ([`crate::plot`]).
//!
//! # Layout
//!
//! - this file: what both tiers share: [`Phases`], one [`Sample`] per
//!   window and the loop that takes them ([`drive`]), the [`Timeline`] of
//!   the change, the printed summary and the files ([`finish`]).
//! - [`probe`]: [`probe::BenchCluster`] (`squall up` with a given config,
//!   `squall down` on drop) and [`probe::Probe`] (status questions over
//!   ZeroMQ).
//! - [`record`]: completions ([`record::Done`]) and their windows, the
//!   monitor's decisions, the CSV and SVG files.
//! - [`storage`]: storage nodes under closed-loop KVS clients (1, then 16).
//! - [`compute`]: compute nodes under an open-loop stream of calls of a
//!   Python function that sleeps.

pub mod compute;
pub mod probe;
pub mod record;
pub mod storage;

use crate::backend::Result;
use record::{p99_between, rate_between, windows, write_results, Decisions, Done, Results};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The sampling period, and the width of one CSV row's window.
pub const WINDOW: Duration = Duration::from_millis(250);

/// The run ends this long after the added node is gone.
const TAIL_SECS: f64 = 5.0;

/// The three phases of a run, by time since its start.
#[derive(Clone, Copy, Debug)]
pub struct Phases {
    pub names: [&'static str; 3],
    /// When the spike starts and ends, in seconds.
    pub spike_from: f64,
    pub spike_to: f64,
    /// At most this long in the last phase.
    pub settle_secs: f64,
}

impl Phases {
    /// The phase at `t` seconds: 0 light, 1 spike, 2 light again.
    pub fn at(&self, t: f64) -> usize {
        if t < self.spike_from {
            0
        } else if t < self.spike_to {
            1
        } else {
            2
        }
    }
}

/// What one sample saw of the tier under test.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// When it was taken, in seconds since the run started.
    pub t: f64,
    pub phase: usize,
    /// Storage nodes the router lists, or executors the scheduler lists;
    /// and how many of them were not there at the start. `None`: no
    /// answer in time.
    pub count: Option<usize>,
    pub new: Option<usize>,
    /// Work the new ones report: accesses in their last statistics epoch
    /// (storage), calls completed since they started (compute).
    pub new_work: u64,
    /// Busy fraction (‰) of the first node's processes, of the new ones'
    /// and of all.
    pub busy_first: Option<u16>,
    pub busy_new: Option<u16>,
    pub busy_all: Option<u16>,
    /// One more figure of the tier (its last CSV column).
    pub extra: u64,
}

/// Mean busy (‰) of `values`, if any.
pub fn mean(values: impl Iterator<Item = u16>) -> Option<u16> {
    let v: Vec<u32> = values.map(u32::from).collect();
    (!v.is_empty()).then(|| (v.iter().sum::<u32>() / v.len() as u32) as u16)
}

/// Takes a sample every [`WINDOW`] from `start`: sets the load of the
/// phase (`set_phase`), then `observe(seconds_since_start, phase)`. Stops
/// [`TAIL_SECS`] after the new nodes are gone, or `settle_secs` into the
/// last phase.
pub fn drive(
    phases: &Phases,
    start: Instant,
    mut set_phase: impl FnMut(usize),
    mut observe: impl FnMut(f64, usize) -> Sample,
) -> Vec<Sample> {
    let mut samples: Vec<Sample> = Vec::new();
    let mut gone: Option<f64> = None;
    for k in 1u32.. {
        let at = start + WINDOW * k;
        if let Some(left) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
        let t = f64::from(k) * WINDOW.as_secs_f64();
        let phase = phases.at(t);
        set_phase(phase);
        let sample = observe(start.elapsed().as_secs_f64(), phase);
        let joined = samples.iter().any(|s| s.new > Some(0));
        if phase == 2 && joined && sample.new == Some(0) && gone.is_none() {
            gone = Some(t);
        }
        samples.push(sample);
        let settled = gone.is_some_and(|g| t >= g + TAIL_SECS);
        if phase == 2 && (settled || t >= phases.spike_to + phases.settle_secs) {
            break;
        }
    }
    samples
}

/// When each step of the change was first seen, in seconds since the
/// run started.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timeline {
    pub add: Option<f64>,
    pub joined: Option<f64>,
    pub serving: Option<f64>,
    pub remove: Option<f64>,
    pub gone: Option<f64>,
}

impl Timeline {
    /// The change as `samples` and the `policy`'s decisions show it.
    pub fn new(samples: &[Sample], decisions: &Decisions, policy: &str, p: &Phases) -> Self {
        let first = |f: &dyn Fn(&Sample) -> bool, from: f64| {
            samples.iter().find(|s| s.t >= from && f(s)).map(|s| s.t)
        };
        let joined = first(&|s| s.new > Some(0), p.spike_from);
        Timeline {
            add: decisions.first(policy, "add-node", 0.0),
            joined,
            serving: first(&|s| s.new_work > 0, p.spike_from),
            remove: decisions.first(policy, "remove-node", p.spike_to),
            gone: joined.and_then(|j| first(&|s| s.new == Some(0), j.max(p.spike_to))),
        }
    }
}

/// How a tier's figures are named in the summary, the CSV and the plot.
pub struct Labels {
    /// The monitor policy (`storage`, `compute`).
    pub policy: &'static str,
    pub title: String,
    /// The file names, without extension.
    pub file: &'static str,
    pub unit: &'static str,
    /// What the new node is, then each step's label: printed, and the
    /// plot's marker.
    pub new: &'static str,
    pub joined: (&'static str, &'static str),
    pub serving: (&'static str, &'static str),
    pub gone: (&'static str, &'static str),
    /// The CSV's columns: time, phase, throughput, p99, errors, count,
    /// serving, busy of the first, of the new, and [`Sample::extra`].
    pub columns: [&'static str; 10],
}

/// `b - a` in seconds, or "not seen".
fn after(a: f64, b: Option<f64>) -> String {
    b.map_or_else(|| "not seen".to_string(), |b| format!("+{:.2} s", b - a))
}

/// A figure with one decimal and a unit, or "n/a".
pub fn figure(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1}{unit}"))
}

/// Prints the run's figures and writes its CSV and SVG into `out`; the
/// run started at `start_ms` (Unix milliseconds).
pub fn finish(
    l: &Labels,
    p: &Phases,
    samples: &[Sample],
    decisions: &Decisions,
    done: &[Done],
    start_ms: u64,
    out: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let tl = Timeline::new(samples, decisions, l.policy, p);
    let clock = start_ms / 1000;
    println!(
        "  t = 0 at {:02}:{:02}:{:02}.{:03} UTC (the monitor's log is in UTC)",
        clock / 3600 % 24,
        clock / 60 % 60,
        clock % 60,
        start_ms % 1000
    );
    let (s0, s1) = (p.spike_from, p.spike_to);
    let change_end = tl.serving.unwrap_or(s1).min(s1);
    let busy = |from: f64, to: f64, f: fn(&Sample) -> Option<u16>| {
        let v: Vec<f64> = samples
            .iter()
            .filter(|s| s.t > from && s.t <= to)
            .filter_map(f)
            .map(f64::from)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    println!(
        "  busy seen (‰, mean of the samples): {} {}; {} until the {} served {}, then: first {}, \
         new {}; {} {}",
        p.names[0],
        figure(busy(1.0, s0, |s| s.busy_all), ""),
        p.names[1],
        l.new,
        figure(busy(s0 + 1.0, change_end, |s| s.busy_first), ""),
        figure(busy(change_end, s1, |s| s.busy_first), ""),
        figure(busy(change_end, s1, |s| s.busy_new), ""),
        p.names[2],
        figure(
            busy(s1 + 1.0, tl.remove.unwrap_or(s1 + 10.0), |s| s.busy_all),
            ""
        ),
    );
    println!("  {} at {s0:.2} s; from there:", p.names[1]);
    println!("    {:>9}  add-node decision", after(s0, tl.add));
    println!("    {:>9}  {}", after(s0, tl.joined), l.joined.0);
    println!("    {:>9}  {}", after(s0, tl.serving), l.serving.0);
    let rate = |from: f64, to: f64| figure(rate_between(done, from, to), &format!(" {}", l.unit));
    println!(
        "  throughput: {} {}; {} until the {} served {}; then {}",
        p.names[0],
        rate(1.0, s0),
        p.names[1],
        l.new,
        rate(s0, change_end),
        rate(change_end, s1),
    );
    let p99 =
        |from: Option<f64>, to: f64| figure(from.and_then(|f| p99_between(done, f, to)), " ms");
    println!(
        "  p99: {} {}; {} before the decision {}; during the change (decision → serving) {}; \
         after serving {}",
        p.names[0],
        p99(Some(1.0), s0),
        p.names[1],
        p99(Some(s0), tl.add.unwrap_or(s1)),
        p99(tl.add, tl.serving.unwrap_or(s1)),
        p99(tl.serving, s1),
    );
    println!("  {} at {s1:.2} s; from there:", p.names[2]);
    println!("    {:>9}  remove-node decision", after(s1, tl.remove));
    println!("    {:>9}  {}", after(s1, tl.gone), l.gone.0);
    let errors = done.iter().filter(|d| !d.ok).count();
    println!("  {} completed, {errors} failed", done.len());
    println!("  decisions of the monitor:");
    for (t, e) in &decisions.list {
        println!("    {t:>7.2} s  {} {}: {}", e.policy, e.action, e.reason);
    }
    let named = [
        (Some(s0), p.names[1]),
        (Some(s1), p.names[2]),
        (tl.add, "add-node decision"),
        (tl.joined, l.joined.1),
        (tl.serving, l.serving.1),
        (tl.remove, "remove-node decision"),
        (tl.gone, l.gone.1),
    ];
    let mut events: Vec<(f64, String)> = named
        .iter()
        .filter_map(|(t, n)| t.map(|t| (t, n.to_string())))
        .collect();
    events.sort_by(|x, y| x.0.total_cmp(&y.0));
    let opt = |v: Option<u16>| v.map_or(String::new(), |v| v.to_string());
    let rows = samples
        .iter()
        .zip(windows(done, samples.len()))
        .enumerate()
        .map(|(i, (s, w))| {
            vec![
                // The window's end (the sample was taken then, or a little
                // later when the probe fell behind).
                format!("{:.2}", (i + 1) as f64 * WINDOW.as_secs_f64()),
                p.names[s.phase].to_string(),
                format!("{:.0}", w.rate),
                w.p99_ms.map_or(String::new(), |p| format!("{p:.3}")),
                w.errors.to_string(),
                s.count.map_or(String::new(), |n| n.to_string()),
                u8::from(s.new_work > 0).to_string(),
                opt(s.busy_first),
                opt(s.busy_new),
                s.extra.to_string(),
            ]
        })
        .collect();
    let results = Results {
        title: &l.title,
        columns: &l.columns,
        rows,
        events,
        plot: [l.columns[2], l.columns[5], l.columns[3]],
    };
    let (csv, svg) = write_results(out, l.file, &results)?;
    println!("  wrote {} and {}", csv.display(), svg.display());
    Ok((csv, svg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phases() -> Phases {
        Phases {
            names: ["light", "spike", "light-again"],
            spike_from: 10.0,
            spike_to: 40.0,
            settle_secs: 30.0,
        }
    }

    #[test]
    fn phases_split_the_run() {
        let p = phases();
        assert_eq!((p.at(9.9), p.at(10.0), p.at(40.0)), (0, 1, 2));
    }

    #[test]
    fn the_timeline_takes_the_first_sample_of_each_step() {
        let s = |t: f64, new: Option<usize>, work: u64| Sample {
            t,
            new,
            new_work: work,
            ..Sample::default()
        };
        let samples = [
            s(9.0, Some(0), 0),
            s(12.0, None, 0),
            s(12.5, Some(1), 0),
            s(13.0, Some(1), 7),
            s(41.0, Some(1), 0),
            s(45.0, None, 0),
            s(46.0, Some(0), 0),
        ];
        let tl = Timeline::new(&samples, &Decisions::default(), "storage", &phases());
        assert_eq!(tl.joined, Some(12.5));
        assert_eq!(tl.serving, Some(13.0));
        // An unanswered question is not "gone".
        assert_eq!(tl.gone, Some(46.0));
        assert_eq!(tl.add, None);
    }
}
