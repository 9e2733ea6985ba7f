//! Processes of the local cluster by pid: whether one is alive (reaping
//! our own exited children), signalling them, waiting for them to exit,
//! and stopping them (a signal, then SIGKILL after a grace period).

use std::time::{Duration, Instant};

/// Whether `pid` is running. An exited process whose parent has not reaped
/// it yet (a zombie) still answers signal 0, so: it is reaped here if it is
/// our child (the monitor starts nodes and outlives them), and otherwise
/// its state is read from `/proc` (an init process may reap late).
pub(crate) fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: waitpid with WNOHANG and a null status pointer only reaps
    // `pid` if it is our exited child; for any other pid it fails.
    unsafe {
        libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
    }
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        return !matches!(state, Some('Z' | 'X') | None);
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

pub(crate) fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: sending a signal has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Waits up to `limit` for every one of `pids` to exit; true if they did.
pub(crate) fn wait_exit(pids: &[u32], limit: Duration) -> bool {
    let started = Instant::now();
    while pids.iter().any(|&p| alive(p)) {
        if started.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Stops `pids`: `sig`, then SIGKILL for those still running after
/// `grace`. Returns how many were running.
pub(crate) fn stop_processes(pids: &[u32], sig: libc::c_int, grace: Duration) -> usize {
    let pids: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    for &pid in &pids {
        signal(pid, sig);
    }
    wait_exit(&pids, grace);
    for &pid in pids.iter().filter(|&&p| alive(p)) {
        tracing::warn!(pid, signal = sig, "process ignored the signal; killing it");
        signal(pid, libc::SIGKILL);
    }
    pids.len()
}
