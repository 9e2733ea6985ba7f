//! Large values in shared memory between storage nodes and clients on one
//! machine, against real processes: a read of a large last-writer-wins
//! value by a client naming the node's shared memory is answered with a
//! file of it, mapped by the client (the thread writes a version's file
//! once, answers every later read with it, and writes another for a new
//! version); small values, and clients told not to, get the bytes in the
//! frame; a node told to keep none (`shared_dir = ""`) answers everything
//! in frames.

mod cluster;

use anna::client::ClientConfig;
use anna::lattice::LatticeValue;
use anna::protocol::Address;
use cluster::{client_config, Cluster, Probe};

/// The sum of counter `name` over every thread of nodes 1 and 2.
fn counted(cluster: &Cluster, probe: &mut Probe, name: &str) -> u64 {
    cluster.threads_counter(probe, &[1, 2], name)
}

fn bytes(value: Option<LatticeValue>) -> Vec<u8> {
    match value {
        Some(LatticeValue::Lww(l)) => l.value().to_vec(),
        other => panic!("expected a last-writer-wins value, got {other:?}"),
    }
}

fn large(seed: u8) -> Vec<u8> {
    (0..3u32 << 20)
        .map(|i| (i % 251) as u8 ^ seed)
        .collect::<Vec<u8>>()
}

#[test]
fn a_large_value_reaches_a_client_on_the_machine_in_shared_memory() {
    let cluster = Cluster::start(2, 2, 2);
    let mut probe = Probe::new();
    let mut client = cluster.client(client_config());
    let first = large(1);
    client.put_lww("shared-large", first.clone()).unwrap();
    client.put_lww("shared-small", vec![7; 1000]).unwrap();

    assert_eq!(bytes(client.get("shared-large").unwrap()), first);
    assert_eq!(client.figures().shared, 1, "read from a file");
    let written = counted(&cluster, &mut probe, "shared_written");
    assert_eq!(written, 1, "one file for the version");
    // Reads of the same version: the same file, whichever replica answers
    // (each writes its own at its first such read).
    for _ in 0..5 {
        assert_eq!(bytes(client.get("shared-large").unwrap()), first);
    }
    assert_eq!(client.figures().shared, 6);
    assert!(counted(&cluster, &mut probe, "shared_written") <= 2);
    // Small values travel in the frame.
    assert_eq!(bytes(client.get("shared-small").unwrap()), vec![7; 1000]);
    assert_eq!(client.figures().shared, 6);

    // A new version: a new file, the new bytes; the old file is retired.
    let second = large(2);
    client.put_lww("shared-large", second.clone()).unwrap();
    assert_eq!(bytes(client.get("shared-large").unwrap()), second);
    assert_eq!(client.figures().shared, 7);

    // A client told not to map gets every value in the frame.
    let mut framed = cluster.client(ClientConfig {
        shared_memory: false,
        ..client_config()
    });
    assert_eq!(bytes(framed.get("shared-large").unwrap()), second);
    assert_eq!(framed.figures().shared, 0);
    assert_eq!(counted(&cluster, &mut probe, "shared_failures"), 0);
}

#[test]
fn a_node_without_a_shared_directory_answers_in_frames() {
    let config =
        cluster::config_toml(2).replacen("[storage]\n", "[storage]\nshared_dir = \"\"\n", 1);
    let cluster = Cluster::start_as(2, 1, config, false);
    let mut probe = Probe::new();
    let mut client = cluster.client(client_config());
    let value = large(3);
    client.put_lww("framed-large", value.clone()).unwrap();
    for _ in 0..3 {
        assert_eq!(bytes(client.get("framed-large").unwrap()), value);
    }
    assert_eq!(client.figures().shared, 0);
    assert_eq!(counted(&cluster, &mut probe, "shared_written"), 0);
}

/// Files of values in a directory of this machine's shared memory, as a
/// cache process keeps them: written, or linked from a storage thread's.
struct TestFiles {
    dir: std::path::PathBuf,
    next: u64,
}

impl squall_cache::ValueFiles for TestFiles {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<String> {
        self.next += 1;
        let path = self.dir.join(format!("w{}", self.next));
        std::fs::write(&path, bytes)?;
        Ok(path.to_string_lossy().into_owned())
    }

    fn link(&mut self, source: &str) -> std::io::Result<String> {
        self.next += 1;
        let path = self.dir.join(format!("l{}", self.next));
        std::fs::hard_link(source, &path)?;
        Ok(path.to_string_lossy().into_owned())
    }

    fn remove(&mut self, path: &str) {
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn a_cache_gives_its_executors_the_storage_threads_file_without_a_copy() {
    use anna::lattice::WriterId;
    use anna::role::Driver;
    use squall_cache::{Cache, CacheConfig};
    use squall_transport::{Endpoint, ZmqDriver};
    use std::os::unix::fs::MetadataExt;
    use std::time::Duration;

    let cluster = Cluster::start(1, 1, 1);
    let mut client = cluster.client(client_config());
    let value = large(4);
    client.put_lww("linked-large", value.clone()).unwrap();
    let shm = std::path::Path::new(squall_transport::shared::SHARED_DIR);
    let dir = shm.join(format!("squall-test-link-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ctx = zmq::Context::new();
    let config = CacheConfig {
        client: client_config(),
        ..CacheConfig::default()
    };
    let routers = vec![cluster.router()];
    let files = TestFiles {
        dir: dir.clone(),
        next: 0,
    };
    let any = Address::from("tcp://127.0.0.1:*");
    let mut driver = ZmqDriver::bind_with(&ctx, &any, |me| {
        let mut cache = Cache::new(
            config,
            "test".into(),
            me.clone(),
            routers,
            vec![],
            WriterId(78),
        );
        cache.share_values_in(Box::new(files));
        squall_transport::shared::map_storage_files(cache.client_mut());
        cache
    })
    .unwrap();
    let cache = driver.address().clone();
    let stop = driver.shutdown_handle();
    let running = std::thread::spawn(move || driver.run());
    // An executor of the node: an `ipc://` address.
    let ipc = Address(format!("ipc://{}", dir.join("executor").display()));
    let mut endpoint = Endpoint::connect(cache.clone(), &ipc, Duration::from_secs(5)).unwrap();
    assert_eq!(bytes(endpoint.get("linked-large", None).unwrap()), value);
    let mut probe = Probe::new();
    assert_eq!(
        probe.counter(&cache, "shared_linked"),
        Some(1),
        "linked, not copied"
    );
    assert_eq!(probe.counter(&cache, "shared_written"), Some(1));
    // The cache's file is the storage thread's: one file, two names.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('l'))
        .collect();
    assert_eq!(names.len(), 1);
    assert_eq!(names[0].metadata().unwrap().nlink(), 2);
    stop.stop().unwrap();
    running.join().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
