//! The monitor's dashboard in a real browser, and `squall status --watch`,
//! against clusters `squall up` started: 3 storage nodes and 2 compute
//! nodes with a writer and a reader running, the page rendered by headless
//! Chromium (`--dump-dom`, then a screenshot) must show the nodes,
//! executors and a nonzero KVS throughput the cluster has; the watch must
//! redraw several frames, with the throughput of the load.
//!
//! Chromium comes from `make setup` (APT). Without it the test fails and
//! says so: it never passes by skipping. Set `SQUALL_DASHBOARD_PNG=PATH` to
//! keep the screenshot (`docs/dashboard.png` was made so).
//!
//! Ports: 6 blocks of [`cluster::local::LOCAL_BLOCK`] from 6000, below
//! `monitor.rs`'s.

mod cluster;

use anna::protocol::Address;
use cluster::local::all_pids;
use cluster::{client_config, wait_until, LocalCluster, PortRange, SQUALL};
use squall_transport::Client;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const PORTS: PortRange = PortRange {
    floor: 6_000,
    blocks: 6,
};

/// Short periods, so figures show within a second or two.
const CONFIG: &str = "\
[storage]
stats_epoch = 500

[monitor]
period = 500

[client]
attempt_timeout = 300
op_timeout = 5000
";

/// The browser, or a panic saying how to install it.
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let path = Path::new(dir).join(name);
            if path.is_file() {
                return path;
            }
        }
    }
    panic!(
        "chromium is not installed: this test renders the dashboard in headless Chromium. \
         Run `make setup` (it installs the APT packages, chromium among them)."
    );
}

/// Runs headless Chromium on `url` with `args`; its stdout. Panics if it
/// fails or runs past a minute.
fn browse(url: &str, args: &[&str], profile: &Path) -> String {
    let mut child = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting chromium");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for chromium") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium ran past a minute on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        status.success(),
        "chromium failed on {url}: {status}\n{err}"
    );
    reader.join().expect("chromium's output")
}

/// The text of the element with id `id` in `dom` (no nested elements).
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = format!("id=\"{id}\">");
    let at = dom
        .find(&start)
        .unwrap_or_else(|| panic!("no element #{id} in the page:\n{dom}"))
        + start.len();
    let end = dom[at..].find('<').expect("the element's end") + at;
    &dom[at..end]
}

/// A number the page shows (`1,234.5` or `-` for none).
fn number(text: &str) -> Option<f64> {
    text.replace(',', "").parse().ok()
}

/// A thread putting and getting a few hundred keys until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    fn start(router: Address) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let (s, n) = (stop.clone(), ops.clone());
        let thread = std::thread::spawn(move || {
            let mut client = Client::connect(vec![router], client_config()).expect("client");
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                let key = format!("load-{}", i % 300);
                if client.put_lww(&key, i.to_le_bytes().to_vec()).is_ok() {
                    n.fetch_add(1, Ordering::Relaxed);
                }
                if client.get(&key).is_ok() {
                    n.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        });
        Load {
            stop,
            ops,
            thread: Some(thread),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `GET http://address/path`: the body.
fn get(address: &str, path: &str) -> Option<String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(address).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

fn count(record: &serde_json::Value, part: &str) -> usize {
    record[part].as_array().map_or(0, Vec::len)
}

#[test]
fn the_dashboard_in_chromium_shows_the_clusters_nodes_executors_and_throughput() {
    chromium();
    let mut local = LocalCluster::new(CONFIG, "squall-dashboard-", PORTS);
    local.up(&[
        "--routers",
        "1",
        "--nodes",
        "3",
        "--threads",
        "2",
        "--compute-nodes",
        "2",
        "--executors",
        "1",
    ]);
    let record = local.record();
    let (nodes, executors) = (count(&record, "nodes"), count(&record, "executors"));
    assert_eq!((nodes, executors), (3, 2), "{record}");
    let load = Load::start(local.address("routers"));
    let http = format!("127.0.0.1:{}", local.base() + 61);

    // The monitor has gathered a period with every node, executor and
    // some of the load.
    let data = wait_until("the dashboard's data", Duration::from_secs(30), || {
        let body = get(&http, "/api/cluster")?;
        let d: serde_json::Value = serde_json::from_str(&body).ok()?;
        let s = &d["storage"];
        let ready = s["node_count"] == 3
            && d["compute"]["executor_count"] == 2
            && s["ops_per_second"].as_f64() > Some(0.0)
            && s["nodes"].as_array()?.iter().all(|n| {
                n["threads"]
                    .as_array()
                    .is_some_and(|t| t.iter().all(|t| t["reporting"] == true))
            });
        ready.then_some(d)
    });
    assert!(load.ops.load(Ordering::Relaxed) > 0);
    assert_eq!(data["compute"]["node_count"], 2, "{data}");
    let metrics = get(&http, "/metrics").expect("/metrics");
    for family in [
        "# TYPE squall_call_duration_seconds histogram",
        "# TYPE squall_kvs_op_duration_seconds histogram",
        "squall_call_timeouts_total 0",
        "squall_call_retries_total{reason=\"executor-died\"} 0",
        "squall_kvs_op_duration_seconds_bucket{node=\"",
    ] {
        assert!(metrics.contains(family), "{family} in\n{metrics}");
    }

    let profile = tempfile::tempdir().expect("a browser profile");
    let url = format!("http://{http}/");
    let dom = browse(&url, &["--dump-dom"], profile.path());
    assert_eq!(text_of(&dom, "storage-nodes"), nodes.to_string(), "{dom}");
    assert_eq!(text_of(&dom, "storage-threads"), "6");
    assert_eq!(text_of(&dom, "compute-nodes"), "2");
    assert_eq!(text_of(&dom, "executors"), executors.to_string());
    let throughput = text_of(&dom, "kvs-throughput");
    assert!(
        number(throughput).is_some_and(|x| x > 0.0),
        "KVS throughput {throughput:?} on the page"
    );
    // Every thread of every node has its row, every executor its row.
    assert_eq!(dom.matches("<td>node ").count(), 6, "{dom}");
    assert_eq!(
        dom.matches("<td>tcp://127.0.0.1:").count(),
        executors,
        "{dom}"
    );
    // Both plots were drawn from the monitor's history: a throughput and
    // a p99 line each (the script's own source names none by colour).
    assert_eq!(
        dom.matches("<polyline fill=\"none\" stroke=\"#").count(),
        4,
        "{dom}"
    );

    let png = match std::env::var_os("SQUALL_DASHBOARD_PNG") {
        Some(p) => PathBuf::from(p),
        None => profile.path().join("dashboard.png"),
    };
    let shot = format!("--screenshot={}", png.display());
    browse(&url, &[&shot, "--window-size=1280,900"], profile.path());
    let bytes = std::fs::read(&png).expect("the screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 10_000, "a {}-byte screenshot", bytes.len());
    drop(load);
    local.down(all_pids(&record).len());
}

#[test]
fn status_watch_redraws_frames_with_the_throughput_of_the_load() {
    let mut local = LocalCluster::new(CONFIG, "squall-watch-", PORTS);
    local.up(&["--routers", "1", "--nodes", "1", "--threads", "1"]);
    let _load = Load::start(local.address("routers"));
    let config = local.state_dir().with_file_name("squall.toml");
    let out = local.state_dir().with_file_name("watch.out");
    let mut watch = Command::new(SQUALL)
        .env_remove("SQUALL_CONFIG")
        .env_remove("SQUALL_STATE_DIR")
        .env_remove("SQUALL_KEY_FILE")
        .env_remove("SQUALL_INSECURE")
        .env("SQUALL_LOG", "warn")
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(local.state_dir())
        .args(["status", "--watch", "--interval", "0.5"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("output file"))
        .spawn()
        .expect("starting squall status --watch");
    std::thread::sleep(Duration::from_secs(4));
    let still_running = watch.try_wait().expect("waiting").is_none();
    let _ = watch.kill();
    let _ = watch.wait();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(still_running, "the watch stopped by itself:\n{text}");
    let frames = text.matches("squall status --watch: frame ").count();
    assert!(frames >= 4, "{frames} frame(s) in 4 s:\n{text}");
    // Every frame clears the screen, and every frame after the first
    // has a rate from the counters' differences: some of them nonzero.
    assert_eq!(text.matches("\x1b[2J\x1b[H").count(), frames);
    let rates: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("throughput: KVS "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(rates.len() >= frames - 2, "{text}");
    assert!(rates.iter().any(|r| *r > 0.0), "{rates:?}\n{text}");
    assert!(text.contains("storage threads:"), "{text}");
}
