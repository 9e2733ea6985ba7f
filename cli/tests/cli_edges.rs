//! The binary's edges as a person meets them: output into a closed pipe
//! (`squall status | head`), `kv put` with no value, a value from stdin or
//! a file (bigger than a command line takes), a router that does not
//! answer.

mod cluster;

use cluster::{Cluster, SQUALL};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use tempfile::TempDir;

/// A value bigger than one command-line argument may be (128 KiB on
/// Linux) and than the whole command line (2 MiB by default).
const BIG: usize = 3 << 20;

/// Settings for commands against a router that is down: give up soon.
const QUICK_CLIENT: &str = "[client]\nattempt_timeout = 200\nop_timeout = 1000\n";

/// `squall --config CONFIG --state-dir DIR/state ARGS`, none of the
/// `SQUALL_*` environment, with `input` on stdin; `closed_stdout` makes
/// stdout a pipe nobody reads, closed before the command writes.
fn squall(dir: &Path, config: &Path, args: &[&str], input: &[u8], closed_stdout: bool) -> Output {
    cluster::write_cluster_key(&dir.join("state"));
    let mut child = Command::new(SQUALL)
        .env_remove("SQUALL_CONFIG")
        .env_remove("SQUALL_STATE_DIR")
        .env_remove("SQUALL_LOG")
        .env_remove("SQUALL_KEY_FILE")
        .env_remove("SQUALL_INSECURE")
        .arg("--config")
        .arg(config)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting squall");
    if closed_stdout {
        drop(child.stdout.take());
    }
    let mut stdin = child.stdin.take().expect("stdin");
    // A command that reads no stdin may exit before taking it all.
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().expect("waiting for squall")
}

/// What a command printed, for assertion messages.
fn shown(out: &Output) -> String {
    format!(
        "{:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Ended as `yes | head` ends `yes`: killed by SIGPIPE, no panic, nothing
/// said.
fn assert_quiet_sigpipe(out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{}", shown(out));
    assert!(!stderr.contains("Broken pipe"), "{}", shown(out));
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{}", shown(out));
}

/// A loopback port nothing listens on (it was free a moment ago).
fn dead_router() -> String {
    let port = TcpListener::bind(("127.0.0.1", 0))
        .expect("binding a loopback port")
        .local_addr()
        .expect("its address")
        .port();
    format!("tcp://127.0.0.1:{port}")
}

/// A temporary directory with a config file of `config`.
fn scratch(config: &str) -> (TempDir, std::path::PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("squall-edges-")
        .tempdir()
        .expect("temporary directory");
    let path = dir.path().join("squall.toml");
    std::fs::write(&path, config).expect("writing the config");
    (dir, path)
}

#[test]
fn status_into_a_closed_pipe_ends_quietly() {
    let (dir, config) = scratch(QUICK_CLIENT);
    let router = dead_router();
    // `status` prints a line for the router whatever it answers.
    let out = squall(
        dir.path(),
        &config,
        &["status", "--router", &router],
        b"",
        true,
    );
    assert_quiet_sigpipe(&out);
}

#[test]
fn a_client_whose_router_is_down_names_the_router() {
    let (dir, config) = scratch(QUICK_CLIENT);
    let router = dead_router();
    let out = squall(
        dir.path(),
        &config,
        &["kv", "get", "k", "--router", &router],
        b"",
        false,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", shown(&out));
    assert!(
        stderr.contains(&format!("{router}: no router answered, is the cluster up?")),
        "{}",
        shown(&out)
    );
}

#[test]
fn kv_put_without_a_value_is_refused_before_asking_anyone() {
    let (dir, config) = scratch(QUICK_CLIENT);
    // No local cluster and no --router: the value is checked first.
    for args in [
        &["kv", "put", "k"][..],
        &["kv", "put", "-t", "set", "k"],
        &["kv", "put", "-t", "priority", "k", "5"],
    ] {
        let out = squall(dir.path(), &config, args, b"", false);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", shown(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("no value given") && stderr.contains("--file"),
            "{args:?}: {}",
            shown(&out)
        );
    }
    let router = dead_router();
    let missing = dir.path().join("no-such-file");
    let missing = missing.to_str().expect("a UTF-8 path");
    for (args, message) in [
        (&["kv", "put", "k", "--file", missing][..], "no-such-file"),
        (&["kv", "put", "k", "--file", missing, "v"], "give no VALUE"),
        (&["kv", "put", "-t", "counter", "k", "-"], "as arguments"),
    ] {
        let mut all = args.to_vec();
        all.extend(["--router", &router]);
        let out = squall(dir.path(), &config, &all, b"3", false);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", shown(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {}", shown(&out));
    }
}

#[test]
fn kv_values_come_from_stdin_or_a_file_and_big_ones_print_into_a_closed_pipe() {
    let cluster = Cluster::start(1, 1, 1);
    let dir = cluster.dir();
    let config = dir.join("squall.toml");
    let router = cluster.router().as_str().to_string();
    let run = |args: &[&str], input: &[u8]| {
        let mut all = args.to_vec();
        all.extend(["--router", &router]);
        squall(dir, &config, &all, input, false)
    };
    let ok = |args: &[&str], input: &[u8]| {
        let out = run(args, input);
        assert!(out.status.success(), "{args:?}: {}", shown(&out));
        out.stdout
    };

    // A missing value stores nothing; an explicit empty one is a value.
    let out = run(&["kv", "put", "nothing"], b"");
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert_eq!(run(&["kv", "get", "nothing"], b"").status.code(), Some(1));
    ok(&["kv", "put", "empty", ""], b"");
    assert_eq!(ok(&["kv", "get", "empty"], b""), b"\n");

    // Bigger than any command line, from stdin and from a file, bytes
    // unchanged (the trailing newline too).
    let big: Vec<u8> = (0..BIG)
        .map(|i| {
            if i % 80 == 79 {
                b'\n'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect();
    ok(&["kv", "put", "from-stdin", "-"], &big);
    let mut expected = big.clone();
    expected.push(b'\n');
    assert!(ok(&["kv", "get", "from-stdin"], b"") == expected);
    let file = dir.join("value.txt");
    std::fs::write(&file, &big[..BIG - 1]).expect("writing the value file");
    let mut expected = big[..BIG - 1].to_vec();
    expected.push(b'\n');
    ok(
        &[
            "kv",
            "put",
            "from-file",
            "--file",
            file.to_str().expect("UTF-8"),
        ],
        b"",
    );
    assert!(ok(&["kv", "get", "from-file"], b"") == expected);

    // The other types that take bytes: one element, a priority's value,
    // and JSON from stdin.
    ok(
        &["kv", "put", "-t", "set", "one-element", "-"],
        b"two words",
    );
    assert_eq!(ok(&["kv", "get", "one-element"], b""), b"two words\n");
    ok(&["kv", "put", "-t", "priority", "prio", "5", "-"], b"x");
    assert_eq!(ok(&["kv", "get", "prio"], b""), b"5\tx\n");
    let json = ok(&["kv", "get", "one-element", "--json"], b"");
    ok(&["kv", "put", "copy", "--json", "-"], &json);
    assert_eq!(ok(&["kv", "get", "copy"], b""), b"two words\n");

    // The big value into a pipe nobody reads.
    let out = squall(
        dir,
        &config,
        &["kv", "get", "from-stdin", "--router", &router],
        b"",
        true,
    );
    assert_quiet_sigpipe(&out);
}
