//! `squall kv get` of values a Python client put: pickles of plain values
//! print as Python prints them, other pickles are named and never run, and
//! bytes that are no pickle print as they are.

mod cluster;

use cluster::{client_config, Cluster, SQUALL};
use std::process::{Command, Output};

/// Bytes from hex.
fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// `cloudpickle.dumps({"name": "ada", "langs": ["en", "fr"], "age": 36,
/// "ok": True})`, as `squall.Client.put` stores it.
const RECORD: &str = "80059536000000000000007d94288c046e616d65948c03616461948c056c616e677394\
                      5d94288c02656e948c02667294658c03616765944b248c026f6b9488752e";
/// `cloudpickle.dumps(datetime.date(2024, 5, 1))`: unpickling it calls
/// `datetime.date`.
const DATE: &str = "80059520000000000000008c086461746574696d65948c0464617465949394430407e80501\
                    94859452942e";
/// `cloudpickle.dumps(3.25)`.
const FLOAT: &str = "8005950a0000000000000047400a0000000000002e";

/// `squall kv get KEY EXTRA...` against the cluster.
fn get(cluster: &Cluster, key: &str, extra: &[&str]) -> Output {
    let dir = cluster.dir();
    cluster::write_cluster_key(&dir.join("state"));
    Command::new(SQUALL)
        .env_remove("SQUALL_CONFIG")
        .env_remove("SQUALL_STATE_DIR")
        .env_remove("SQUALL_LOG")
        .env_remove("SQUALL_KEY_FILE")
        .env_remove("SQUALL_INSECURE")
        .arg("--config")
        .arg(dir.join("squall.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["kv", "get", key, "--router", cluster.router().as_str()])
        .args(extra)
        .output()
        .expect("running squall kv get")
}

fn printed(cluster: &Cluster, key: &str) -> String {
    let out = get(cluster, key, &[]);
    assert!(
        out.status.success(),
        "kv get {key}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn kv_get_prints_a_python_clients_values_readably_and_runs_no_pickle() {
    let cluster = Cluster::start(1, 1, 1);
    let mut client = cluster.client(client_config());
    for (key, value) in [
        ("record", hex(RECORD)),
        ("date", hex(DATE)),
        ("float", hex(FLOAT)),
        ("text", b"plain words".to_vec()),
    ] {
        client.put_lww(key, value).expect("a put");
    }

    assert_eq!(
        printed(&cluster, "record"),
        "{'name': 'ada', 'langs': ['en', 'fr'], 'age': 36, 'ok': True}\n"
    );
    assert_eq!(printed(&cluster, "float"), "3.25\n");
    assert_eq!(
        printed(&cluster, "date"),
        format!(
            "<pickled Python object, {} bytes; read it with squall.Client.get>\n",
            hex(DATE).len()
        )
    );
    assert_eq!(printed(&cluster, "text"), "plain words\n");

    // `--json` still prints the stored bytes, unchanged.
    let json = get(&cluster, "float", &["--json"]);
    assert!(json.status.success());
    let text = String::from_utf8_lossy(&json.stdout);
    assert!(text.contains("Lww"), "{text}");
    assert!(!text.contains("3.25"), "{text}");
}
