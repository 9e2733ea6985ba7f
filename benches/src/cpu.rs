//! How much CPU something else took during a run.
//!
//! On a shared 2-core machine a compiler or a test suite starting mid-run
//! moves every figure, and nothing in the figures says so. So each run
//! samples the machine's busy time (`/proc/stat`) and the CPU time of the
//! benchmark's own process and of the backend's server processes
//! (`/proc/PID/stat`); the difference, in cores, is what other processes
//! of this machine used. Separately it reports *steal*: time the hypervisor
//! kept our virtual CPUs from running, charged to no process. Steal comes
//! from neighbours on the host but also from our own wake-ups (a halted
//! vCPU's wake-up is partly accounted as steal), so it grows with request
//! rate. A row with a large value of either was measured on a busy machine.
//! Linux only; elsewhere there is no figure.

use std::time::Instant;

/// What else used the CPU during a run, in cores' worth (0 to the core
/// count).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Interference {
    /// Other processes of this machine.
    pub others: f64,
    /// Time the hypervisor did not run our virtual CPUs.
    pub steal: f64,
}

impl Interference {
    /// The time-weighted mean of two periods' figures.
    pub fn weighted(self, weight: f64, other: Interference, other_weight: f64) -> Interference {
        let total = weight + other_weight;
        if total <= 0.0 {
            return self;
        }
        Interference {
            others: (self.others * weight + other.others * other_weight) / total,
            steal: (self.steal * weight + other.steal * other_weight) / total,
        }
    }
}

/// One reading of the machine's and our processes' CPU time.
#[derive(Clone, Debug)]
pub struct CpuSample {
    /// Busy ticks of all cores run by this machine (user, nice, system, irq,
    /// softirq; steal excluded).
    busy: u64,
    /// Ticks stolen by the hypervisor.
    steal: u64,
    /// All ticks of all cores, idle included.
    total: u64,
    /// Ticks of this process and the watched processes.
    ours: u64,
    cores: usize,
    at: Instant,
}

impl CpuSample {
    /// Reads the counters now, counting `pids` (besides this process) as
    /// ours. `None` where `/proc` is not readable.
    pub fn now(pids: &[u32]) -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let Ticks {
            busy,
            steal,
            total,
            cores,
        } = parse_proc_stat(&stat)?;
        let mut ours = process_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        for pid in pids {
            let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            ours += process_ticks(&text)?;
        }
        Some(CpuSample {
            busy,
            steal,
            total,
            ours,
            cores,
            at: Instant::now(),
        })
    }

    /// What other processes and the hypervisor took between `self` and
    /// `later`.
    pub fn interference_since(&self, later: &CpuSample) -> Interference {
        let total = later.total.saturating_sub(self.total);
        if total == 0 || later.at <= self.at {
            return Interference::default();
        }
        let cores = |ticks: u64| ticks as f64 / total as f64 * self.cores as f64;
        let busy = later.busy.saturating_sub(self.busy);
        let ours = later.ours.saturating_sub(self.ours);
        Interference {
            others: cores(busy.saturating_sub(ours)),
            steal: cores(later.steal.saturating_sub(self.steal)),
        }
    }
}

/// The `cpu` line of `/proc/stat`, and the number of `cpuN` lines.
#[derive(Debug, PartialEq)]
struct Ticks {
    busy: u64,
    steal: u64,
    total: u64,
    cores: usize,
}

fn parse_proc_stat(text: &str) -> Option<Ticks> {
    let first = text.lines().next()?;
    let mut fields = first.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest is in user).
    let field = |i: usize| ticks.get(i).copied().unwrap_or(0);
    let busy = field(0) + field(1) + field(2) + field(5) + field(6);
    let steal = field(7);
    let total = busy + steal + field(3) + field(4);
    let cores = text
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some(Ticks {
        busy,
        steal,
        total,
        cores: cores.max(1),
    })
}

/// utime + stime of a `/proc/PID/stat` line (fields 14 and 15; the name
/// in parentheses may hold spaces, so count from the last `)`).
/// CPU seconds (user + system) `pid` has used so far; `None` if it is gone
/// or `/proc` is not readable.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Some(process_ticks(&text)? as f64 / hz)
}

/// Resident memory of `pid` in bytes (`VmRSS`).
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn process_ticks(text: &str) -> Option<u64> {
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_parses_busy_total_and_cores() {
        let text = "cpu  100 5 50 800 10 1 2 3 0 0\ncpu0 50 0 0 0 0 0 0 0 0 0\n\
                    cpu1 50 5 50 800 10 1 2 3 0 0\nintr 1 2 3\n";
        let ticks = Ticks {
            busy: 158,
            steal: 3,
            total: 971,
            cores: 2,
        };
        assert_eq!(parse_proc_stat(text), Some(ticks));
        assert_eq!(parse_proc_stat("intr 1\n"), None);
    }

    #[test]
    fn process_ticks_skip_a_name_with_spaces() {
        let line = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0";
        assert_eq!(process_ticks(line), Some(10));
        assert_eq!(process_ticks("garbage"), None);
    }

    #[test]
    fn others_are_the_busy_ticks_that_are_not_ours_and_steal_is_apart() {
        let at = Instant::now();
        let before = CpuSample {
            busy: 0,
            steal: 0,
            total: 0,
            ours: 0,
            cores: 2,
            at,
        };
        let after = CpuSample {
            busy: 150,
            steal: 20,
            total: 200,
            ours: 100,
            cores: 2,
            at: at + std::time::Duration::from_secs(1),
        };
        let i = before.interference_since(&after);
        assert!((i.others - 0.5).abs() < 1e-9 && (i.steal - 0.2).abs() < 1e-9);
        let mean = i.weighted(1.0, Interference::default(), 3.0);
        assert!((mean.others - 0.125).abs() < 1e-9 && (mean.steal - 0.05).abs() < 1e-9);
        assert!(CpuSample::now(&[]).is_some(), "runs on Linux");
    }
}
