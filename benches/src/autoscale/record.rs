//! What a run records and writes: each request's completion ([`Done`]),
//! binned into [`WINDOW`]s ([`windows`]) or summed over a stretch
//! ([`rate_between`], [`p99_between`]); the monitor's decisions
//! ([`Decisions`]); and the CSV and SVG files ([`write_results`]).

use super::WINDOW;
use crate::backend::{BackendError, Result};
use anna::protocol::monitor::{MonitorEvent, MonitorStatus};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One completed request: when it completed (µs since the run started),
/// its latency, and whether it succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Done {
    pub at_us: u64,
    pub latency_us: u64,
    pub ok: bool,
}

/// The completions of one [`WINDOW`].
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// Successful completions a second.
    pub rate: f64,
    pub errors: u64,
    /// p99 latency of the successful completions, in ms.
    pub p99_ms: Option<f64>,
}

/// The `q` quantile (nearest rank) of `values`, sorted in place.
pub fn quantile(values: &mut [u64], q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (q * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

/// `done` binned into `count` windows of [`WINDOW`] from time 0.
pub fn windows(done: &[Done], count: usize) -> Vec<Window> {
    let width = WINDOW.as_micros() as u64;
    let mut latencies = vec![Vec::new(); count];
    let mut errors = vec![0u64; count];
    for d in done {
        let Some(i) = usize::try_from(d.at_us / width).ok().filter(|i| *i < count) else {
            continue;
        };
        if d.ok {
            latencies[i].push(d.latency_us);
        } else {
            errors[i] += 1;
        }
    }
    latencies
        .into_iter()
        .zip(errors)
        .map(|(mut l, errors)| Window {
            rate: l.len() as f64 / WINDOW.as_secs_f64(),
            errors,
            p99_ms: quantile(&mut l, 0.99).map(|us| us as f64 / 1000.0),
        })
        .collect()
}

/// Successful completions a second between `from` and `to` (seconds).
pub fn rate_between(done: &[Done], from: f64, to: f64) -> Option<f64> {
    (to > from).then(|| {
        let n = done.iter().filter(|d| d.ok && in_span(d, from, to)).count();
        n as f64 / (to - from)
    })
}

/// p99 latency (ms) of the successful completions between `from` and `to`.
pub fn p99_between(done: &[Done], from: f64, to: f64) -> Option<f64> {
    let mut l: Vec<u64> = done
        .iter()
        .filter(|d| d.ok && in_span(d, from, to))
        .map(|d| d.latency_us)
        .collect();
    quantile(&mut l, 0.99).map(|us| us as f64 / 1000.0)
}

fn in_span(d: &Done, from: f64, to: f64) -> bool {
    let t = d.at_us as f64 / 1e6;
    t >= from && t < to
}

/// The monitor's decisions seen during a run, once each, timed from the
/// run's start.
#[derive(Debug, Default)]
pub struct Decisions {
    seen: BTreeSet<(u64, String, String)>,
    pub list: Vec<(f64, MonitorEvent)>,
}

impl Decisions {
    /// Adds the events of `status` not seen yet, for a run that started at
    /// `start_ms` (Unix milliseconds).
    pub fn absorb(&mut self, status: &MonitorStatus, start_ms: u64) {
        for e in &status.events {
            let key = (e.at_ms, e.policy.clone(), e.action.clone());
            if self.seen.insert(key) {
                let t = (e.at_ms as f64 - start_ms as f64) / 1000.0;
                self.list.push((t, e.clone()));
            }
        }
    }

    /// When `policy` first decided `action` at or after `after` seconds.
    pub fn first(&self, policy: &str, action: &str, after: f64) -> Option<f64> {
        self.list
            .iter()
            .filter(|(t, e)| *t >= after && e.policy == policy && e.action == action)
            .map(|(t, _)| *t)
            .reduce(f64::min)
    }
}

/// What [`write_results`] writes: one row per window, named columns, and
/// the labelled instants drawn as markers.
pub struct Results<'a> {
    pub title: &'a str,
    pub columns: &'a [&'a str],
    pub rows: Vec<Vec<String>>,
    pub events: Vec<(f64, String)>,
    /// The columns drawn: throughput (left axis), node count (a step line
    /// on the right axis), p99 (a lower panel).
    pub plot: [&'a str; 3],
}

/// Writes `out/NAME.csv` and `out/NAME.svg`; returns their paths.
pub fn write_results(out: &Path, name: &str, r: &Results) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(out)?;
    let mut csv = String::new();
    for (t, label) in &r.events {
        csv.push_str(&format!("# event,{t:.3},{}\n", label.replace(',', ";")));
    }
    csv.push_str(&r.columns.join(","));
    csv.push('\n');
    for row in &r.rows {
        csv.push_str(&row.join(","));
        csv.push('\n');
    }
    let chart = crate::plot::from_csv(&csv, r.title, r.plot[0], r.plot[1], Some(r.plot[2]))
        .map_err(BackendError::Protocol)?;
    let (csv_path, svg_path) = (
        out.join(format!("{name}.csv")),
        out.join(format!("{name}.svg")),
    );
    std::fs::write(&csv_path, csv)?;
    std::fs::write(&svg_path, crate::plot::svg(&chart))?;
    Ok((csv_path, svg_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anna::protocol::compute::ComputeStatus;

    fn done(ms: u64, latency_us: u64) -> Done {
        Done {
            at_us: ms * 1000,
            latency_us,
            ok: true,
        }
    }

    #[test]
    fn completions_fall_into_their_window_and_rates_count_successes() {
        let mut all: Vec<Done> = (0..100).map(|i| done(i * 5, 100 + i)).collect();
        all.push(Done {
            at_us: 10_000,
            latency_us: 1,
            ok: false,
        });
        let w = windows(&all, 3);
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].rate, 50.0 / 0.25);
        assert_eq!(w[0].errors, 1);
        assert_eq!(w[0].p99_ms, Some(0.149));
        assert_eq!(w[2].p99_ms, None);
        assert_eq!(rate_between(&all, 0.0, 0.5), Some(200.0));
        assert_eq!(rate_between(&all, 1.0, 1.0), None);
        assert_eq!(p99_between(&all, 0.25, 0.5), Some(0.199));
    }

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let mut v: Vec<u64> = (1..=200).rev().collect();
        assert_eq!(quantile(&mut v, 0.99), Some(198));
        assert_eq!(quantile(&mut [7], 0.99), Some(7));
        assert_eq!(quantile(&mut [], 0.5), None);
    }

    #[test]
    fn decisions_are_kept_once_and_timed_from_the_start() {
        let event = |at_ms, action: &str| MonitorEvent {
            at_ms,
            policy: "storage".into(),
            action: action.into(),
            ..MonitorEvent::default()
        };
        let status = MonitorStatus {
            storage: Vec::new(),
            compute: ComputeStatus {
                executors: Vec::new(),
                caches: Vec::new(),
                in_flight: 0,
                queued: 0,
                calls: Default::default(),
            },
            replicas: Vec::new(),
            raised: Vec::new(),
            events: vec![event(13_000, "add-node"), event(50_500, "remove-node")],
        };
        let mut d = Decisions::default();
        d.absorb(&status, 1_000);
        d.absorb(&status, 1_000);
        assert_eq!(d.list.len(), 2);
        assert_eq!(d.first("storage", "add-node", 10.0), Some(12.0));
        assert_eq!(d.first("storage", "remove-node", 50.0), None);
        assert_eq!(d.first("storage", "remove-node", 40.0), Some(49.5));
    }
}
