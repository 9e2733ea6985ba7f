//! The layering the build enforces: `anna` is the pure core. Its manifest
//! names no socket library, and its sources read no clock, sleep, or start
//! a thread: real time and sockets are `squall-transport`'s, on top.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading anna/src") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_manifest_names_no_socket_library() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("reading anna/Cargo.toml");
    for forbidden in ["zmq", "tokio", "mio"] {
        assert!(
            !manifest
                .lines()
                .any(|l| l.trim_start().starts_with(forbidden)),
            "anna depends on {forbidden}: sockets and runtimes belong in squall-transport"
        );
    }
}

#[test]
fn no_source_reads_a_clock_sleeps_or_starts_a_thread() {
    let mut files = Vec::new();
    sources(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut files,
    );
    assert!(files.len() > 20, "found {} sources", files.len());
    let forbidden = [
        "SystemTime::now",
        "Instant::now",
        "thread::sleep",
        "thread::spawn",
        "zmq::",
    ];
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("reading a source");
        for (n, line) in text.lines().enumerate() {
            for f in forbidden {
                if line.contains(f) {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the pure core touches the world (move it to squall-transport):\n{}",
        found.join("\n")
    );
}
