//! What a run measured, and the side-by-side table of several runs.

use crate::cpu::Interference;
use crate::runner::Counts;
use crate::workload::Workload;
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::time::Duration;

/// The largest latency a histogram holds: one minute, in microseconds.
/// Longer requests are recorded as a minute.
pub const HISTOGRAM_MAX_MICROS: u64 = 60_000_000;

/// The outcome of one workload against one backend.
#[derive(Clone, Debug)]
pub struct Report {
    /// The backend's name, e.g. `redis`.
    pub backend: String,
    /// The workload, as run.
    pub workload: Workload,
    /// Latencies of the measured successful requests, in microseconds.
    pub histogram: Histogram<u64>,
    /// Requests measured, by kind.
    pub counts: Counts,
    /// The measured period.
    pub elapsed: Duration,
    /// The first error any client saw, if any.
    pub first_error: Option<String>,
    /// What other processes and the hypervisor took during the run
    /// (warm-up included); `None` where it cannot be read. See
    /// [`crate::cpu`].
    pub interference: Option<Interference>,
    /// Resident memory of the store's processes (summed) before and after
    /// the measured requests, in bytes; `None` where it cannot be read.
    pub resident: Option<(u64, u64)>,
}

impl Report {
    /// A report with nothing measured yet.
    pub fn empty(backend: String, workload: Workload) -> Self {
        Report {
            backend,
            workload,
            histogram: crate::runner::new_histogram(),
            counts: Counts::default(),
            elapsed: Duration::ZERO,
            first_error: None,
            interference: None,
            resident: None,
        }
    }

    /// Adds one client's figures.
    pub fn absorb(&mut self, histogram: Histogram<u64>, counts: Counts, error: Option<String>) {
        self.histogram
            .add(histogram)
            .expect("histograms with the same bounds always add");
        self.counts.reads += counts.reads;
        self.counts.writes += counts.writes;
        self.counts.errors += counts.errors;
        self.counts.misses += counts.misses;
        if self.first_error.is_none() {
            self.first_error = error;
        }
    }

    /// Adds the figures of another run of the same workload and backend
    /// (another round of an interleaved comparison).
    pub fn merge(&mut self, other: Report) {
        let (ours, theirs) = (self.elapsed.as_secs_f64(), other.elapsed.as_secs_f64());
        self.interference = match (self.interference, other.interference) {
            (Some(a), Some(b)) => Some(a.weighted(ours, b, theirs)),
            (a, b) => a.or(b),
        };
        self.resident = match (self.resident, other.resident) {
            (Some((before, _)), Some((_, after))) => Some((before, after)),
            (a, b) => a.or(b),
        };
        self.elapsed += other.elapsed;
        self.absorb(other.histogram, other.counts, other.first_error);
    }

    /// Successful requests per second over the measured period.
    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs == 0.0 {
            return 0.0;
        }
        (self.counts.reads + self.counts.writes) as f64 / secs
    }

    /// The latency at quantile `q` (0.5 is the median), in microseconds; 0
    /// if nothing was measured.
    pub fn latency_micros(&self, q: f64) -> u64 {
        if self.histogram.is_empty() {
            return 0;
        }
        self.histogram.value_at_quantile(q)
    }

    /// Median latency, µs.
    pub fn p50(&self) -> u64 {
        self.latency_micros(0.5)
    }

    /// 99th-percentile latency, µs.
    pub fn p99(&self) -> u64 {
        self.latency_micros(0.99)
    }

    /// 99.9th-percentile latency, µs.
    pub fn p999(&self) -> u64 {
        self.latency_micros(0.999)
    }
}

/// Formats reports as one table, each row with its ratio to the `baseline`
/// backend's row of the same workload and client count (`-` where there is
/// none, or for the baseline itself).
pub fn table(reports: &[Report], baseline: &str) -> String {
    let header = vec![
        "backend".to_string(),
        "workload".to_string(),
        "clients".to_string(),
        "ops/s".to_string(),
        "p50 µs".to_string(),
        "p99 µs".to_string(),
        "p99.9 µs".to_string(),
        "errors".to_string(),
        "other CPU".to_string(),
        "steal".to_string(),
        "server MiB".to_string(),
        format!("ops/s ÷ {baseline}"),
        format!("p50 ÷ {baseline}"),
    ];
    let mut rows = vec![header];
    for r in reports {
        let base = reports.iter().find(|b| {
            b.backend == baseline
                && b.backend != r.backend
                && b.workload.label() == r.workload.label()
                && b.workload.clients == r.workload.clients
        });
        let ratio = |ours: f64, theirs: f64| match base {
            Some(_) if theirs > 0.0 => format!("{:.2}x", ours / theirs),
            _ => "-".to_string(),
        };
        rows.push(vec![
            r.backend.clone(),
            r.workload.label(),
            r.workload.clients.to_string(),
            format!("{:.0}", r.ops_per_sec()),
            r.p50().to_string(),
            r.p99().to_string(),
            r.p999().to_string(),
            (r.counts.errors + r.counts.misses).to_string(),
            r.interference
                .map_or("-".to_string(), |i| format!("{:.2}", i.others)),
            r.interference
                .map_or("-".to_string(), |i| format!("{:.2}", i.steal)),
            r.resident.map_or("-".to_string(), |(before, after)| {
                let mib = |b: u64| b as f64 / f64::from(1 << 20);
                format!("{:.1}→{:.1}", mib(before), mib(after))
            }),
            ratio(r.ops_per_sec(), base.map_or(0.0, Report::ops_per_sec)),
            ratio(r.p50() as f64, base.map_or(0, Report::p50) as f64),
        ]);
    }
    render(&rows)
}

/// Left-aligns text columns and right-aligns numeric ones, GitHub-table
/// style so RESULTS.md can take it verbatim.
fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let width = |c: usize| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns).map(width).collect();
    let numeric = |c: usize| c >= 2;
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        out.push('|');
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            let (left, right) = if numeric(c) && i > 0 {
                (pad, 0)
            } else {
                (0, pad)
            };
            let _ = write!(out, " {}{}{} |", " ".repeat(left), cell, " ".repeat(right));
        }
        out.push('\n');
        if i == 0 {
            out.push('|');
            for (c, w) in widths.iter().enumerate() {
                let dashes = "-".repeat(*w);
                let _ = if numeric(c) {
                    write!(out, " {dashes}:|")
                } else {
                    write!(out, " {dashes} |")
                };
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(backend: &str, clients: usize, ops: u64, latency: u64) -> Report {
        let w = Workload {
            clients,
            ..Workload::default()
        };
        let mut r = Report::empty(backend.into(), w);
        for _ in 0..ops {
            r.histogram.record(latency).unwrap();
        }
        r.counts.reads = ops;
        r.elapsed = Duration::from_secs(1);
        r
    }

    #[test]
    fn the_table_shows_ratios_to_the_baseline_of_the_same_cell() {
        let reports = [
            report("redis", 16, 1000, 100),
            report("zmq-floor", 16, 500, 200),
            report("zmq-floor", 1, 500, 200),
        ];
        let t = table(&reports, "redis");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert!(lines[0].contains("ops/s ÷ redis"));
        assert!(lines[2].starts_with("| redis "));
        assert!(lines[2].trim_end().ends_with("- |"), "{t}");
        assert!(
            lines[3].contains("0.50x") && lines[3].contains("2.00x"),
            "{t}"
        );
        assert!(!lines[4].contains('x'), "no redis row at 1 client: {t}");
        let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "{t}");
    }

    #[test]
    fn an_empty_report_has_zero_figures() {
        let r = Report::empty("x".into(), Workload::default());
        assert_eq!((r.ops_per_sec(), r.p50(), r.p999()), (0.0, 0, 0));
    }
}
