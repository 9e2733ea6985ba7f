//! `squall executor` stopped the way the local provider stops a compute
//! node: SIGTERM to the supervisor reaches the executor process, which tells
//! its scheduler it is leaving before it exits, and the supervisor does not
//! start it again. The test plays the scheduler (and the cache) on one
//! socket.

mod cluster;

use anna::protocol::compute::ExecutorReport;
use anna::protocol::{Address, Message};
use cluster::{reserve_ports, running, signal, wait_until, SQUALL};
use squall_transport::Receiver;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The supervisor; killed on drop if the test failed before it exited (its
/// child dies with it).
struct Supervisor(Child);

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first child process of `pid`.
fn child_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Receives at `rx` until `pick` takes a message; panics after `limit`.
fn receive<T>(
    rx: &mut Receiver,
    limit: Duration,
    what: &str,
    mut pick: impl FnMut(&Message) -> Option<T>,
) -> T {
    let end = Instant::now() + limit;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match rx.recv(Some(left)).expect("receiving") {
            Some(msg) => {
                if let Some(t) = pick(&msg) {
                    return t;
                }
            }
            None => break,
        }
    }
    panic!("no {what} within {limit:?}");
}

#[test]
fn a_terminated_executor_tells_its_scheduler_it_is_leaving_and_is_not_restarted() {
    let dir = tempfile::tempdir().unwrap();
    // The executors' key, as `squall up` gives executors: the test's own
    // sockets are a member's.
    cluster::write_cluster_key(dir.path());
    let key = cluster::write_executor_key(dir.path());
    let ctx = zmq::Context::new();
    let mut scheduler = Receiver::bind(&ctx, &Address::from("tcp://127.0.0.1:*")).unwrap();
    let me = scheduler.address().to_string();
    let log = dir.path().join("executor.log");
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv");
    let port = reserve_ports().to_string();
    let mut supervisor = Supervisor(
        Command::new(SQUALL)
            .args(["executor", "--node", "n1", "--host", "127.0.0.1"])
            .args(["--port", &port, "--cache", &me, "--scheduler", &me])
            .arg("--venv")
            .arg(&venv)
            .arg("--key-file")
            .arg(&key)
            .env_remove("SQUALL_CONFIG")
            .env("SQUALL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting squall executor"),
    );
    let supervisor_pid = supervisor.0.id();
    let report: ExecutorReport =
        receive(
            &mut scheduler,
            Duration::from_secs(60),
            "report",
            |m| match m {
                Message::ExecutorReport(r) => Some(r.clone()),
                _ => None,
            },
        );
    let executor_pid = child_of(supervisor_pid).expect("the executor process");

    let stopped = Instant::now();
    signal(supervisor_pid, libc::SIGTERM);
    let leaving = receive(
        &mut scheduler,
        Duration::from_secs(10),
        "goodbye",
        |m| match m {
            Message::ExecutorLeaving { executor } => Some(executor.clone()),
            _ => None,
        },
    );
    let took = stopped.elapsed();
    assert_eq!(leaving, report.executor);
    assert!(
        took < Duration::from_millis(1500),
        "the goodbye took {took:?}: no sooner than the scheduler's executor_timeout"
    );

    let status = wait_until("the supervisor to exit", Duration::from_secs(10), || {
        supervisor.0.try_wait().expect("waiting for the supervisor")
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{status}\n{text}");
    assert!(!running(executor_pid), "the executor process is gone");
    assert!(
        text.contains("executor stopping: telling the schedulers"),
        "the executor process itself said goodbye:\n{text}"
    );
    assert!(!text.contains("starting it again"), "{text}");
}
