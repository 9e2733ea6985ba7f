//! The disk store on a real directory: what comes back after a reopen, a
//! damaged journal tail, an undecodable record, and fewer threads.

use anna::kvs::ShardStore;
use anna::lattice::{KeyState, LatticeValue, Lww, Timestamp, WriterId};
use squall_disk::Disk;
use std::path::{Path, PathBuf};

fn state(n: u64) -> KeyState {
    let ts = Timestamp {
        wall_ms: n,
        logical: 0,
        writer: WriterId(1),
    };
    KeyState::from_value(LatticeValue::Lww(Lww::new(ts, n.to_le_bytes().to_vec())))
}

/// Writes `batches` synced batches of `per` keys (`k{batch}-{i}`) through
/// thread 0's store of a fresh disk in `dir`.
fn write_batches(dir: &Path, batches: u64, per: u64) {
    let disk = Disk::open(dir).unwrap();
    let mut store = disk.thread_store(0, 1).unwrap();
    assert!(store.load().unwrap().entries.is_empty());
    for b in 0..batches {
        for i in 0..per {
            store
                .put(&format!("k{b}-{i}"), &state(b * per + i))
                .unwrap();
        }
        store.commit(true).unwrap();
    }
}

fn load(dir: &Path, thread: u32, threads: u32) -> anna::kvs::Recovered {
    let disk = Disk::open(dir).unwrap();
    disk.thread_store(thread, threads).unwrap().load().unwrap()
}

#[test]
fn committed_keys_and_removals_come_back_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let disk = Disk::open(dir.path()).unwrap();
        let mut store = disk.thread_store(0, 1).unwrap();
        store.put("a", &state(1)).unwrap();
        store.put("b", &state(2)).unwrap();
        store.commit(true).unwrap();
        store.remove("a").unwrap();
        store.put("c", &state(3)).unwrap();
        // Handed to the operating system only: a process crash keeps it.
        store.commit(false).unwrap();
    }
    let back = load(dir.path(), 0, 1);
    assert_eq!(back.skipped, 0);
    let keys: Vec<&str> = back.entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["b", "c"]);
    assert_eq!(back.entries[0].1, state(2));
}

/// The newest non-empty journal file under `dir`.
fn journal(dir: &Path) -> PathBuf {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.retain(|p| {
        let name = p.to_string_lossy();
        (name.contains("journal") || p.extension().is_some_and(|e| e == "jnl"))
            && std::fs::metadata(p).is_ok_and(|m| m.len() > 0)
    });
    files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    files.pop().expect("a journal file")
}

/// Damages the last `cut` bytes of records of the journal: cuts them off
/// (`truncate`) or zeroes them (a torn write).
fn damage(dir: &Path, cut: u64, truncate: bool) {
    use std::io::{Seek, SeekFrom, Write};
    let file = journal(dir);
    let data = std::fs::read(&file).unwrap();
    // The journal is preallocated: damage the records, not the padding.
    let end = data
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1);
    let from = end.saturating_sub(cut);
    let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    if truncate {
        f.set_len(from).unwrap();
    } else {
        f.seek(SeekFrom::Start(from)).unwrap();
        f.write_all(&vec![0; (end - from) as usize]).unwrap();
        f.sync_all().unwrap();
    }
}

#[test]
fn a_damaged_journal_tail_costs_at_most_the_last_batch_and_the_store_opens() {
    for truncate in [true, false] {
        for cut in [1, 100, 4096] {
            let dir = tempfile::tempdir().unwrap();
            // Batches of 200 keys (about 12 KB): a damaged 4 KiB is in the
            // last one only.
            write_batches(dir.path(), 20, 200);
            damage(dir.path(), cut, truncate);
            let back = load(dir.path(), 0, 1);
            let n = back.entries.len();
            assert!(
                (19 * 200..=20 * 200).contains(&n),
                "{} {cut} bytes: {n} keys back",
                if truncate { "cut" } else { "zeroed" }
            );
            // Whole batches only, each key with the state written.
            for (key, s) in &back.entries {
                let (b, i) = key[1..].split_once('-').unwrap();
                let (b, i): (u64, u64) = (b.parse().unwrap(), i.parse().unwrap());
                assert_eq!(*s, state(b * 200 + i), "{key}");
            }
            assert_eq!(n % 200, 0, "no partial batch");
        }
    }
}

#[test]
fn an_undecodable_record_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    write_batches(dir.path(), 1, 3);
    {
        // A record of an unknown format, as a later version might write.
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let ks = db
            .keyspace("thread-0", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        ks.insert("bad", [99u8, 1, 2, 3]).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let back = load(dir.path(), 0, 1);
    assert_eq!(back.skipped, 1);
    assert_eq!(back.entries.len(), 3);
}

#[test]
fn thread_zero_adopts_the_keys_of_threads_the_node_no_longer_runs() {
    let dir = tempfile::tempdir().unwrap();
    {
        let disk = Disk::open(dir.path()).unwrap();
        for t in 0..3 {
            let mut store = disk.thread_store(t, 3).unwrap();
            store.load().unwrap();
            store.put(&format!("t{t}"), &state(u64::from(t))).unwrap();
            store.put("shared", &state(10 + u64::from(t))).unwrap();
            store.commit(true).unwrap();
        }
    }
    // Restarted with one thread: thread 0 serves every key, the states of
    // a key held by several threads merged (the latest write wins).
    let back = load(dir.path(), 0, 1);
    let keys: Vec<&str> = back.entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["shared", "t0", "t1", "t2"]);
    assert_eq!(back.entries[0].1, state(12));
    // Adopted for good: the old keyspaces are gone, the keys are thread 0's.
    let again = load(dir.path(), 0, 1);
    assert_eq!(again.entries, back.entries);
    assert!(load(dir.path(), 1, 2).entries.is_empty());
}

#[test]
fn get_reads_the_latest_write_committed_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Disk::open(dir.path()).unwrap();
    let mut store = disk.thread_store(0, 1).unwrap();
    store.load().unwrap();
    store.put("k", &state(1)).unwrap();
    store.commit(true).unwrap();
    assert_eq!(store.get("k").unwrap(), Some(state(1)));
    store.put("k", &state(2)).unwrap();
    assert_eq!(store.get("k").unwrap(), Some(state(2)), "pending");
    store.remove("k").unwrap();
    assert_eq!(store.get("k").unwrap(), None, "removed, pending");
    store.commit(false).unwrap();
    assert_eq!(store.get("k").unwrap(), None);
    assert_eq!(store.get("absent").unwrap(), None);
}
