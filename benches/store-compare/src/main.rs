//! store-compare: measures the two embedded-store candidates (fjall 3.x, redb 5.x)
//! for the storage node's disk store, with the node's access pattern:
//! whole-value replacements of encoded lattice states, written in batches with
//! one fsync per batch (group commit) or a periodic sync every 100 ms,
//! point reads, a full scan on restart, deletes, and crash/truncation behaviour.
//!
//! Usage: `store-compare <subcommand> [--flag value]...`, see `usage()`.

use std::collections::{HashMap, HashSet};
use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

type R<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Store caches are set equal (64 MiB) so neither wins reads by a bigger cache
/// (defaults: fjall 32 MiB, redb 1 GiB).
const CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// The periodic flush policy: a sync every 100 ms.
const SYNC_PERIOD: Duration = Duration::from_millis(100);
/// redb only: verify every page checksum on open (`Builder::set_check_integrity_on_open`).
static REDB_CHECK_ON_OPEN: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

// ---------------------------------------------------------------- stores

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Fjall,
    Redb,
    /// redb with quick-repair: allocator state saved in every commit, 2-phase commit,
    /// so the open after a crash does not walk the whole file.
    RedbQr,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Fjall => "fjall",
            Kind::Redb => "redb",
            Kind::RedbQr => "redb-qr",
        }
    }
    fn parse(s: &str) -> Kind {
        match s {
            "fjall" => Kind::Fjall,
            "redb" => Kind::Redb,
            "redb-qr" => Kind::RedbQr,
            _ => panic!("unknown store {s:?} (fjall, redb, redb-qr)"),
        }
    }
    /// The file holding the journal (fjall) or the whole database (redb).
    fn data_path(self, dir: &Path) -> PathBuf {
        match self {
            Kind::Fjall => dir.join("fjall"),
            Kind::Redb | Kind::RedbQr => dir.join("redb").join("data.redb"),
        }
    }
}

trait Kv {
    /// Applies one batch atomically. `sync`: make it durable (one fsync) before returning.
    fn commit(&mut self, puts: &[(Vec<u8>, Vec<u8>)], dels: &[Vec<u8>], sync: bool) -> R<()>;
    /// Makes every earlier commit durable (the periodic flush).
    fn sync(&mut self) -> R<()>;
    fn get(&self, k: &[u8]) -> R<Option<Vec<u8>>>;
    /// Loads every key/value into `map` (what a restarted node does).
    fn scan(&self, map: &mut HashMap<Vec<u8>, Vec<u8>>) -> R<()>;
    fn close(self: Box<Self>) -> R<()>;
}

struct FjallKv {
    db: fjall::Database,
    ks: fjall::Keyspace,
}

impl Kv for FjallKv {
    fn commit(&mut self, puts: &[(Vec<u8>, Vec<u8>)], dels: &[Vec<u8>], sync: bool) -> R<()> {
        // Unsynced batches still go to the OS (Buffer = write(2), no fsync): a
        // WriteBatch with no durability would stay in fjall's user-space journal
        // buffer and be lost with the process.
        let mode = if sync {
            fjall::PersistMode::SyncData
        } else {
            fjall::PersistMode::Buffer
        };
        let mut b = self.db.batch().durability(Some(mode));
        for (k, v) in puts {
            b.insert(&self.ks, k.as_slice(), v.as_slice());
        }
        for k in dels {
            b.remove(&self.ks, k.as_slice());
        }
        b.commit()?;
        Ok(())
    }
    fn sync(&mut self) -> R<()> {
        self.db.persist(fjall::PersistMode::SyncData)?;
        Ok(())
    }
    fn get(&self, k: &[u8]) -> R<Option<Vec<u8>>> {
        Ok(self.ks.get(k)?.map(|v| v.to_vec()))
    }
    fn scan(&self, map: &mut HashMap<Vec<u8>, Vec<u8>>) -> R<()> {
        for g in self.ks.iter() {
            let (k, v) = g.into_inner()?;
            map.insert(k.to_vec(), v.to_vec());
        }
        Ok(())
    }
    fn close(self: Box<Self>) -> R<()> {
        let FjallKv { db, ks } = *self;
        drop(ks);
        drop(db); // persists the journal (SyncAll) and stops the workers
        Ok(())
    }
}

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("kv");

struct RedbKv {
    db: redb::Database,
    quick_repair: bool,
}

impl RedbKv {
    fn begin(&self, sync: bool) -> R<redb::WriteTransaction> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(if sync {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        })?;
        if self.quick_repair {
            tx.set_quick_repair(true);
        }
        Ok(tx)
    }
}

impl Kv for RedbKv {
    fn commit(&mut self, puts: &[(Vec<u8>, Vec<u8>)], dels: &[Vec<u8>], sync: bool) -> R<()> {
        let tx = self.begin(sync)?;
        {
            let mut t = tx.open_table(TABLE)?;
            for (k, v) in puts {
                t.insert(k.as_slice(), v.as_slice())?;
            }
            for k in dels {
                t.remove(k.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }
    fn sync(&mut self) -> R<()> {
        // An empty Immediate commit makes the earlier Durability::None commits durable.
        self.begin(true)?.commit()?;
        Ok(())
    }
    fn get(&self, k: &[u8]) -> R<Option<Vec<u8>>> {
        use redb::{ReadableDatabase, ReadableTable};
        let rt = self.db.begin_read()?;
        let t = rt.open_table(TABLE)?;
        let v = t.get(k)?.map(|g| g.value().to_vec());
        Ok(v)
    }
    fn scan(&self, map: &mut HashMap<Vec<u8>, Vec<u8>>) -> R<()> {
        use redb::{ReadableDatabase, ReadableTable};
        let rt = self.db.begin_read()?;
        let t = rt.open_table(TABLE)?;
        for r in t.iter()? {
            let (k, v) = r?;
            map.insert(k.value().to_vec(), v.value().to_vec());
        }
        Ok(())
    }
    fn close(self: Box<Self>) -> R<()> {
        self.db.close()?;
        Ok(())
    }
}

fn open(kind: Kind, dir: &Path) -> R<Box<dyn Kv>> {
    match kind {
        Kind::Fjall => {
            let db = fjall::Database::builder(dir.join("fjall"))
                .cache_size(CACHE_BYTES)
                .open()?;
            let ks = db.keyspace("kv", fjall::KeyspaceCreateOptions::default)?;
            Ok(Box::new(FjallKv { db, ks }))
        }
        Kind::Redb | Kind::RedbQr => {
            use redb::ReadableDatabase;
            std::fs::create_dir_all(dir.join("redb"))?;
            let db = redb::Builder::new()
                .set_cache_size(CACHE_BYTES as usize)
                .set_check_integrity_on_open(
                    REDB_CHECK_ON_OPEN.load(std::sync::atomic::Ordering::Relaxed),
                )
                .create(kind.data_path(dir))?;
            let exists = {
                let rt = db.begin_read()?;
                match rt.open_table(TABLE) {
                    Ok(_) => true,
                    Err(redb::TableError::TableDoesNotExist(_)) => false,
                    Err(e) => return Err(e.into()),
                }
            };
            let kv = RedbKv {
                db,
                quick_repair: kind == Kind::RedbQr,
            };
            if !exists {
                let tx = kv.begin(true)?;
                tx.open_table(TABLE)?;
                tx.commit()?;
            }
            Ok(Box::new(kv))
        }
    }
}

// ---------------------------------------------------------------- data

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let x = self.next().to_le_bytes();
            c.copy_from_slice(&x[..c.len()]);
        }
    }
}

/// A 17..40-byte key: "squall/kNNNNNNNN/" plus 0..23 bytes of padding.
fn key(i: u64) -> Vec<u8> {
    let mut k = format!("squall/k{i:08}/").into_bytes();
    let pad = (i.wrapping_mul(0x9E37_79B9) >> 7) % 24;
    k.extend(std::iter::repeat(b'x').take(pad as usize));
    k
}

/// An encoded-state stand-in: id and version, then incompressible bytes.
fn value(rng: &mut Rng, id: u64, ver: u64, size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size];
    v[..8].copy_from_slice(&id.to_le_bytes());
    v[8..16].copy_from_slice(&ver.to_le_bytes());
    rng.fill(&mut v[16..]);
    v
}

fn check_value(v: &[u8], id: u64, ver: u64) -> bool {
    v.len() >= 16 && v[..8] == id.to_le_bytes() && v[8..16] == ver.to_le_bytes()
}

fn shuffled(n: u64, rng: &mut Rng) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

/// `n` distinct random ids below `keys` (a batch holds each key once: the node merged them).
fn distinct(rng: &mut Rng, keys: u64, n: usize) -> Vec<u64> {
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let k = rng.below(keys);
        if seen.insert(k) {
            out.push(k);
        }
    }
    out
}

// ---------------------------------------------------------------- utilities

struct Stats {
    sorted_ns: Vec<u64>,
}
impl Stats {
    fn new(mut v: Vec<u64>) -> Stats {
        v.sort_unstable();
        Stats { sorted_ns: v }
    }
    fn pct_us(&self, p: f64) -> f64 {
        if self.sorted_ns.is_empty() {
            return f64::NAN;
        }
        let i = ((self.sorted_ns.len() as f64 - 1.0) * p).round() as usize;
        self.sorted_ns[i] as f64 / 1000.0
    }
}

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

/// Disk usage like `du`: allocated blocks of every file under `p`.
fn du(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if let Ok(m) = std::fs::symlink_metadata(&path) {
                total += m.blocks() * 512;
                if m.is_dir() {
                    total += du(&path);
                }
            }
        }
    }
    total
}

fn files_under(p: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                files_under(&path, out);
            } else {
                out.push(path);
            }
        }
    }
}

extern "C" {
    fn posix_fadvise(fd: i32, offset: i64, len: i64, advice: i32) -> i32;
}
const POSIX_FADV_DONTNEED: i32 = 4;

/// Evicts the store's files from the OS page cache (no root needed): a "cold" read
/// then goes to the disk, as after a machine restart.
fn drop_page_cache(dir: &Path) {
    let mut files = Vec::new();
    files_under(dir, &mut files);
    for f in files {
        if let Ok(file) = std::fs::File::open(&f) {
            let _ = file.sync_all();
            unsafe {
                posix_fadvise(file.as_raw_fd(), 0, 0, POSIX_FADV_DONTNEED);
            }
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn fresh_dir(p: &Path) -> R<()> {
    if p.exists() {
        std::fs::remove_dir_all(p)?;
    }
    std::fs::create_dir_all(p)?;
    Ok(())
}

struct Args(HashMap<String, String>);
impl Args {
    fn parse(v: &[String]) -> Args {
        let mut m = HashMap::new();
        let mut i = 0;
        while i < v.len() {
            let k = v[i].trim_start_matches("--").to_string();
            let val = v.get(i + 1).cloned().unwrap_or_default();
            m.insert(k, val);
            i += 2;
        }
        Args(m)
    }
    fn s(&self, k: &str, d: &str) -> String {
        self.0.get(k).cloned().unwrap_or_else(|| d.to_string())
    }
    fn u(&self, k: &str, d: u64) -> u64 {
        self.0
            .get(k)
            .map(|s| s.parse().expect("number"))
            .unwrap_or(d)
    }
    fn stores(&self) -> Vec<Kind> {
        self.s("stores", "fjall,redb")
            .split(',')
            .map(Kind::parse)
            .collect()
    }
}

// ---------------------------------------------------------------- write/read/delete bench

struct Versions {
    ver: Vec<u64>,
    live: Vec<bool>,
    next: u64,
}

struct WriteRow {
    store: Kind,
    vsize: usize,
    batch: usize,
    synced: bool,
    writes: u64,
    secs: f64,
    commit: Stats,
    syncs: u64,
}

struct ReadRow {
    store: Kind,
    vsize: usize,
    warm: Stats,
    cold: Stats,
    cold_open_ms: f64,
    bad: u64,
}

struct OtherRow {
    store: Kind,
    vsize: usize,
    footprint_after_writes: u64,
    footprint_after_deletes: u64,
    deletes_per_s: f64,
    delete_p99_us: f64,
    scan_count_ok: bool,
    deleted_absent: bool,
    logical_bytes: u64,
}

fn write_phase(
    kv: &mut dyn Kv,
    rng: &mut Rng,
    vs: &mut Versions,
    keys: u64,
    vsize: usize,
    batch: usize,
    batches: usize,
    synced: bool,
) -> R<(u64, f64, Stats, u64)> {
    let mut lat = Vec::with_capacity(batches);
    let mut syncs = 0;
    let mut last_sync = Instant::now();
    let t0 = Instant::now();
    for _ in 0..batches {
        if !synced && last_sync.elapsed() >= SYNC_PERIOD {
            kv.sync()?;
            syncs += 1;
            last_sync = Instant::now();
        }
        let ids = distinct(rng, keys, batch);
        let puts: Vec<(Vec<u8>, Vec<u8>)> = ids
            .iter()
            .map(|&id| {
                vs.next += 1;
                vs.ver[id as usize] = vs.next;
                vs.live[id as usize] = true;
                (key(id), value(rng, id, vs.next, vsize))
            })
            .collect();
        let c = Instant::now();
        kv.commit(&puts, &[], synced)?;
        lat.push(ns(c.elapsed()));
    }
    if !synced {
        kv.sync()?;
        syncs += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(((batch * batches) as u64, secs, Stats::new(lat), syncs))
}

fn read_phase(kv: &dyn Kv, rng: &mut Rng, vs: &Versions, n: usize) -> R<(Stats, u64)> {
    let keys = vs.ver.len() as u64;
    let mut lat = Vec::with_capacity(n);
    let mut bad = 0;
    for _ in 0..n {
        let id = rng.below(keys);
        let k = key(id);
        let c = Instant::now();
        let v = kv.get(&k)?;
        lat.push(ns(c.elapsed()));
        let ok = match (&v, vs.live[id as usize]) {
            (Some(v), true) => check_value(v, id, vs.ver[id as usize]),
            (None, false) => true,
            _ => false,
        };
        if !ok {
            bad += 1;
        }
    }
    Ok((Stats::new(lat), bad))
}

fn bench_writes(
    kind: Kind,
    root: &Path,
    vsize: usize,
    keys: u64,
    scale: f64,
    wrows: &mut Vec<WriteRow>,
    rrows: &mut Vec<ReadRow>,
    orows: &mut Vec<OtherRow>,
) -> R<()> {
    let dir = root.join(format!("writes-{}-{}", kind.name(), vsize));
    fresh_dir(&dir)?;
    let mut rng = Rng(0x5eed ^ vsize as u64);
    let mut vs = Versions {
        ver: vec![0; keys as usize],
        live: vec![false; keys as usize],
        next: 0,
    };
    eprintln!(
        "[{}] {} B values: preload {} keys (load {})",
        kind.name(),
        vsize,
        keys,
        loadavg()
    );
    let mut kv = open(kind, &dir)?;
    // Preload every key once (batches of 1000, unsynced, one sync at the end) so
    // every measured write below overwrites an existing key.
    let order = shuffled(keys, &mut rng);
    for chunk in order.chunks(1000) {
        let puts: Vec<_> = chunk
            .iter()
            .map(|&id| {
                vs.next += 1;
                vs.ver[id as usize] = vs.next;
                vs.live[id as usize] = true;
                (key(id), value(&mut rng, id, vs.next, vsize))
            })
            .collect();
        kv.commit(&puts, &[], false)?;
    }
    kv.sync()?;

    // Group commit: one fsync per batch.
    for &(batch, batches) in &[(1usize, 4000usize), (16, 2000), (128, 600)] {
        let batches = ((batches as f64) * scale).max(20.0) as usize;
        let (writes, secs, commit, syncs) = write_phase(
            &mut *kv, &mut rng, &mut vs, keys, vsize, batch, batches, true,
        )?;
        eprintln!(
            "[{}] {} B fsync/batch b={batch}: {:.0} writes/s, commit p50 {:.0} us p99 {:.0} us",
            kind.name(),
            vsize,
            writes as f64 / secs,
            commit.pct_us(0.5),
            commit.pct_us(0.99)
        );
        wrows.push(WriteRow {
            store: kind,
            vsize,
            batch,
            synced: true,
            writes,
            secs,
            commit,
            syncs,
        });
    }
    // Periodic flush policy: no fsync per batch, one sync every 100 ms.
    for &batch in &[1usize, 16, 128] {
        let total = (100_000.0 * scale) as usize;
        let batches = (total / batch).max(20);
        let (writes, secs, commit, syncs) = write_phase(
            &mut *kv, &mut rng, &mut vs, keys, vsize, batch, batches, false,
        )?;
        eprintln!(
            "[{}] {} B sync/100ms b={batch}: {:.0} writes/s ({} syncs)",
            kind.name(),
            vsize,
            writes as f64 / secs,
            syncs
        );
        wrows.push(WriteRow {
            store: kind,
            vsize,
            batch,
            synced: false,
            writes,
            secs,
            commit,
            syncs,
        });
    }

    // Warm point reads (same process, after the writes).
    let (warm, bad_w) = read_phase(&*kv, &mut rng, &vs, 50_000)?;
    kv.close()?;
    let footprint_after_writes = du(&dir);

    // Cold point reads: reopen, with the store's files evicted from the page cache.
    drop_page_cache(&dir);
    let t = Instant::now();
    let mut kv = open(kind, &dir)?;
    let cold_open_ms = t.elapsed().as_secs_f64() * 1000.0;
    let (cold, bad_c) = read_phase(&*kv, &mut rng, &vs, 20_000)?;
    eprintln!(
        "[{}] {} B reads: warm p50 {:.1} p99 {:.1} us, cold p50 {:.1} p99 {:.1} us",
        kind.name(),
        vsize,
        warm.pct_us(0.5),
        warm.pct_us(0.99),
        cold.pct_us(0.5),
        cold.pct_us(0.99)
    );
    rrows.push(ReadRow {
        store: kind,
        vsize,
        warm,
        cold,
        cold_open_ms,
        bad: bad_w + bad_c,
    });

    // Deletes (tombstones): 20% of the keys, batches of 128, one fsync per batch.
    let ndel = (keys / 5) as usize;
    let del_ids: Vec<u64> = shuffled(keys, &mut rng).into_iter().take(ndel).collect();
    let mut lat = Vec::new();
    let t0 = Instant::now();
    for chunk in del_ids.chunks(128) {
        let dels: Vec<Vec<u8>> = chunk.iter().map(|&id| key(id)).collect();
        for &id in chunk {
            vs.live[id as usize] = false;
        }
        let c = Instant::now();
        kv.commit(&[], &dels, true)?;
        lat.push(ns(c.elapsed()));
    }
    let deletes_per_s = ndel as f64 / t0.elapsed().as_secs_f64();
    let delete_p99_us = Stats::new(lat).pct_us(0.99);
    kv.close()?;
    let footprint_after_deletes = du(&dir);

    // Reopen: deleted keys stay deleted, and a full scan sees exactly the live keys.
    let kv = open(kind, &dir)?;
    let deleted_absent = del_ids
        .iter()
        .take(2000)
        .all(|&id| matches!(kv.get(&key(id)), Ok(None)));
    let mut map = HashMap::new();
    kv.scan(&mut map)?;
    let live = vs.live.iter().filter(|&&l| l).count();
    let scan_count_ok = map.len() == live
        && map.iter().all(|(k, v)| {
            let id = u64::from_le_bytes(v[..8].try_into().unwrap());
            key(id) == *k && vs.live[id as usize] && check_value(v, id, vs.ver[id as usize])
        });
    kv.close()?;
    let logical_bytes: u64 = (0..keys)
        .filter(|&i| vs.live[i as usize])
        .map(|i| key(i).len() as u64 + vsize as u64)
        .sum();
    eprintln!(
        "[{}] {} B deletes {:.0}/s, footprint {:.1} MiB -> {:.1} MiB (live data {:.1} MiB), scan ok {}",
        kind.name(),
        vsize,
        deletes_per_s,
        mib(footprint_after_writes),
        mib(footprint_after_deletes),
        mib(logical_bytes),
        scan_count_ok
    );
    orows.push(OtherRow {
        store: kind,
        vsize,
        footprint_after_writes,
        footprint_after_deletes,
        deletes_per_s,
        delete_p99_us,
        scan_count_ok,
        deleted_absent,
        logical_bytes,
    });
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

// ---------------------------------------------------------------- recovery bench

struct RecRow {
    store: Kind,
    keys: u64,
    load_secs: f64,
    footprint: u64,
    open_warm: f64,
    open_scan_warm: f64,
    open_cold: f64,
    open_scan_cold: f64,
    open_after_crash: f64,
    open_scan_after_crash: f64,
    count_ok: bool,
}

fn load_keys(kv: &mut dyn Kv, keys: u64, vsize: usize) -> R<()> {
    let mut rng = Rng(0xfeed);
    let order = shuffled(keys, &mut rng);
    let mut last_sync = Instant::now();
    for chunk in order.chunks(1000) {
        let puts: Vec<_> = chunk
            .iter()
            .map(|&id| (key(id), value(&mut rng, id, 1, vsize)))
            .collect();
        kv.commit(&puts, &[], false)?;
        if last_sync.elapsed() >= SYNC_PERIOD {
            kv.sync()?;
            last_sync = Instant::now();
        }
    }
    kv.sync()?;
    Ok(())
}

fn timed_open_scan(kind: Kind, dir: &Path, keys: u64) -> R<(f64, bool)> {
    let t = Instant::now();
    let kv = open(kind, dir)?;
    let mut map = HashMap::new();
    kv.scan(&mut map)?;
    let secs = t.elapsed().as_secs_f64();
    let ok = map.len() as u64 == keys;
    kv.close()?;
    Ok((secs, ok))
}

fn timed_open(kind: Kind, dir: &Path) -> R<f64> {
    let t = Instant::now();
    let kv = open(kind, dir)?;
    let secs = t.elapsed().as_secs_f64();
    kv.close()?;
    Ok(secs)
}

fn bench_recovery(kind: Kind, root: &Path, keys: u64) -> R<RecRow> {
    let dir = root.join(format!("recovery-{}", kind.name()));
    fresh_dir(&dir)?;
    eprintln!(
        "[{}] recovery: loading {keys} keys of 100 B (load {})",
        kind.name(),
        loadavg()
    );
    let t = Instant::now();
    let mut kv = open(kind, &dir)?;
    load_keys(&mut *kv, keys, 100)?;
    kv.close()?;
    let load_secs = t.elapsed().as_secs_f64();
    let footprint = du(&dir);
    let per_m = 1_000_000.0 / keys as f64;

    // The first open after the load may do one-off work (fjall: journal replay into
    // memtables); take the steady state as the second of two runs.
    timed_open(kind, &dir)?;
    let open_warm = timed_open(kind, &dir)? * per_m;
    let (s, ok1) = timed_open_scan(kind, &dir, keys)?;
    let open_scan_warm = s * per_m;
    drop_page_cache(&dir);
    let open_cold = timed_open(kind, &dir)? * per_m;
    drop_page_cache(&dir);
    let (s, ok2) = timed_open_scan(kind, &dir, keys)?;
    let open_scan_cold = s * per_m;

    // After a crash: a child process opens the store, commits one fsync'd batch of
    // 100 overwrites and aborts; the next open has to recover (redb: repair).
    let exe = std::env::current_exe()?;
    let st = Command::new(&exe)
        .args([
            "abort-after-write",
            "--store",
            kind.name(),
            "--dir",
            dir.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .status()?;
    assert!(!st.success(), "child should abort");
    let t = Instant::now();
    let kv = open(kind, &dir)?;
    let open_after_crash = t.elapsed().as_secs_f64() * per_m;
    kv.close()?;
    // and once more, crash then open + scan
    Command::new(&exe)
        .args([
            "abort-after-write",
            "--store",
            kind.name(),
            "--dir",
            dir.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .status()?;
    let (s, ok3) = timed_open_scan(kind, &dir, keys)?;
    let open_scan_after_crash = s * per_m;
    eprintln!(
        "[{}] recovery s/M keys: open {:.3} open+scan {:.3} | cold {:.3} / {:.3} | after crash {:.3} / {:.3}",
        kind.name(),
        open_warm,
        open_scan_warm,
        open_cold,
        open_scan_cold,
        open_after_crash,
        open_scan_after_crash
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(RecRow {
        store: kind,
        keys,
        load_secs,
        footprint,
        open_warm,
        open_scan_warm,
        open_cold,
        open_scan_cold,
        open_after_crash,
        open_scan_after_crash,
        count_ok: ok1 && ok2 && ok3,
    })
}

fn cmd_abort_after_write(a: &Args) -> R<()> {
    let kind = Kind::parse(&a.s("store", "fjall"));
    let dir = PathBuf::from(a.s("dir", "/tmp/sc"));
    let mut kv = open(kind, &dir)?;
    let mut rng = Rng(7);
    let puts: Vec<_> = (0..100u64)
        .map(|i| (key(i), value(&mut rng, i, 1, 100)))
        .collect();
    kv.commit(&puts, &[], true)?;
    std::process::abort();
}

// ---------------------------------------------------------------- crash bench

fn crash_key(trial: u64, batch: u64, j: u64) -> Vec<u8> {
    format!("crash/t{trial:03}/b{batch:07}/{j:03}").into_bytes()
}

const CRASH_BATCH: u64 = 16;

/// Child: streams batches of 16 and reports each acknowledged batch on stdout;
/// a timer thread aborts the process at a random point of the stream.
fn cmd_crash_child(a: &Args) -> R<()> {
    let kind = Kind::parse(&a.s("store", "fjall"));
    let dir = PathBuf::from(a.s("dir", "/tmp/sc"));
    let trial = a.u("trial", 0);
    let abort_ms = a.u("abort-ms", 500);
    let periodic = a.s("mode", "fsync") == "periodic";
    let mut kv = open(kind, &dir)?;
    let out = std::io::stdout();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(abort_ms));
        std::process::abort();
    });
    let mut rng = Rng(trial);
    let mut last_sync = Instant::now();
    for b in 0u64.. {
        if periodic && last_sync.elapsed() >= SYNC_PERIOD {
            kv.sync()?;
            last_sync = Instant::now();
            // everything acknowledged up to b-1 is now durable
            writeln!(out.lock(), "SYNCED {}", b as i64 - 1)?;
        }
        let puts: Vec<_> = (0..CRASH_BATCH)
            .map(|j| (crash_key(trial, b, j), value(&mut rng, b, j, 100)))
            .collect();
        kv.commit(&puts, &[], !periodic)?;
        let mut o = out.lock();
        writeln!(o, "ACK {b}")?;
        o.flush()?;
    }
    Ok(())
}

struct CrashRow {
    store: Kind,
    mode: &'static str,
    trials: u64,
    opens_ok: u64,
    acked: u64,
    durable_acked: u64,
    durable_missing: u64,
    nondurable_lost: u64,
    partial_batches: u64,
    reopen_ms_max: f64,
}

fn bench_crash(kind: Kind, root: &Path, trials: u64, periodic: bool) -> R<CrashRow> {
    let dir = root.join(format!(
        "crash-{}-{}",
        kind.name(),
        if periodic { "periodic" } else { "fsync" }
    ));
    fresh_dir(&dir)?;
    // Some data to start with, as a node has.
    {
        let mut kv = open(kind, &dir)?;
        load_keys(&mut *kv, 50_000, 100)?;
        kv.close()?;
    }
    let exe = std::env::current_exe()?;
    let mut row = CrashRow {
        store: kind,
        mode: if periodic {
            "sync/100ms"
        } else {
            "fsync/batch"
        },
        trials,
        opens_ok: 0,
        acked: 0,
        durable_acked: 0,
        durable_missing: 0,
        nondurable_lost: 0,
        partial_batches: 0,
        reopen_ms_max: 0.0,
    };
    for trial in 0..trials {
        let abort_ms = 250 + (trial * 397) % 1000;
        let mut child = Command::new(&exe)
            .args([
                "crash-child",
                "--store",
                kind.name(),
                "--dir",
                dir.to_str().unwrap(),
                "--trial",
                &trial.to_string(),
                "--abort-ms",
                &abort_ms.to_string(),
                "--mode",
                if periodic { "periodic" } else { "fsync" },
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut last_ack: i64 = -1;
        let mut last_synced: i64 = -1;
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line?;
            if let Some(n) = line.strip_prefix("ACK ") {
                last_ack = n.parse()?;
            } else if let Some(n) = line.strip_prefix("SYNCED ") {
                last_synced = n.parse()?;
            }
        }
        let st = child.wait()?;
        assert!(!st.success(), "crash child exited normally");
        let durable_upto = if periodic { last_synced } else { last_ack };
        let t = Instant::now();
        let res = std::panic::catch_unwind(|| open(kind, &dir));
        let reopen_ms = t.elapsed().as_secs_f64() * 1000.0;
        row.reopen_ms_max = row.reopen_ms_max.max(reopen_ms);
        let kv = match res {
            Ok(Ok(kv)) => kv,
            Ok(Err(e)) => {
                eprintln!("[{}] crash trial {trial}: open failed: {e}", kind.name());
                continue;
            }
            Err(_) => {
                eprintln!("[{}] crash trial {trial}: open panicked", kind.name());
                continue;
            }
        };
        row.opens_ok += 1;
        row.acked += (last_ack + 1) as u64;
        row.durable_acked += (durable_upto + 1) as u64;
        // every batch up to last_ack + 1 (the one in flight at the abort)
        for b in 0..=(last_ack + 1) as u64 {
            let mut rng = Rng(trial);
            let _ = &mut rng;
            let mut present = 0;
            for j in 0..CRASH_BATCH {
                if let Some(v) = kv.get(&crash_key(trial, b, j))? {
                    if check_value(&v, b, j) {
                        present += 1;
                    }
                }
            }
            if present != 0 && present != CRASH_BATCH {
                row.partial_batches += 1;
            }
            if present != CRASH_BATCH && (b as i64) <= last_ack {
                if (b as i64) <= durable_upto {
                    row.durable_missing += 1;
                } else {
                    row.nondurable_lost += 1;
                }
            }
        }
        eprintln!(
            "[{}] crash {} trial {trial}: abort at {abort_ms} ms, acked {} batches (durable {}), reopen {:.1} ms",
            kind.name(),
            row.mode,
            last_ack + 1,
            durable_upto + 1,
            reopen_ms
        );
        kv.close()?;
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(row)
}

// ---------------------------------------------------------------- truncation bench

struct TruncRow {
    store: Kind,
    check: bool,
    file: String,
    cut: u64,
    op: &'static str,
    outcome: String,
}

fn copy_dir(from: &Path, to: &Path) -> R<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dst)?;
        } else {
            std::fs::copy(e.path(), &dst)?;
        }
    }
    Ok(())
}

/// The file to truncate: redb's single file; fjall's journal (the newest
/// journal file: fjall keeps them under `journals/` or as numbered files).
fn victim(kind: Kind, dir: &Path) -> PathBuf {
    match kind {
        Kind::Redb | Kind::RedbQr => kind.data_path(dir),
        Kind::Fjall => {
            let mut files = Vec::new();
            files_under(&dir.join("fjall"), &mut files);
            let mut j: Vec<PathBuf> = files
                .into_iter()
                .filter(|p| {
                    let s = p.to_string_lossy();
                    s.contains("journal") || p.extension().map_or(false, |e| e == "jnl")
                })
                .filter(|p| std::fs::metadata(p).map_or(false, |m| m.len() > 0))
                .collect();
            j.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
            j.pop().expect("no journal file found")
        }
    }
}

fn bench_truncate(kind: Kind, root: &Path) -> R<Vec<TruncRow>> {
    let pristine = root.join(format!("trunc-{}-pristine", kind.name()));
    fresh_dir(&pristine)?;
    let keys = 10_000u64;
    let batch = 100usize;
    {
        let mut kv = open(kind, &pristine)?;
        let mut rng = Rng(11);
        for b in 0..(keys as usize / batch) {
            let puts: Vec<_> = (0..batch as u64)
                .map(|j| {
                    let id = (b * batch) as u64 + j;
                    (key(id), value(&mut rng, id, 1, 100))
                })
                .collect();
            kv.commit(&puts, &[], true)?;
        }
        kv.close()?;
    }
    let mut listing = Vec::new();
    files_under(&pristine, &mut listing);
    listing.sort();
    eprintln!("[{}] files after clean close:", kind.name());
    for f in &listing {
        eprintln!("    {:>10}  {}", std::fs::metadata(f)?.len(), f.display());
    }
    let mut rows = Vec::new();
    let checks: &[bool] = if kind == Kind::Fjall {
        &[false]
    } else {
        &[false, true]
    };
    for &check in checks {
        REDB_CHECK_ON_OPEN.store(check, std::sync::atomic::Ordering::Relaxed);
        for op in ["truncate", "zero"] {
            for &cut in &[1u64, 100, 4096] {
                let dir = root.join(format!("trunc-{}-{op}-{cut}", kind.name()));
                if dir.exists() {
                    std::fs::remove_dir_all(&dir)?;
                }
                copy_dir(&pristine, &dir)?;
                let f = victim(kind, &dir);
                let len = std::fs::metadata(&f)?.len();
                // fjall preallocates its journal (zeros past the last record): cut the
                // records, not the zero padding.
                let data = std::fs::read(&f)?;
                let end = data
                    .iter()
                    .rposition(|&b| b != 0)
                    .map_or(0, |i| i as u64 + 1);
                let from = end.saturating_sub(cut);
                if op == "truncate" {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&f)?
                        .set_len(from)?;
                } else {
                    use std::io::{Seek, SeekFrom};
                    let mut fh = std::fs::OpenOptions::new().write(true).open(&f)?;
                    fh.seek(SeekFrom::Start(from))?;
                    fh.write_all(&vec![0u8; (end - from) as usize])?;
                    fh.sync_all()?;
                }
                let rel = f.strip_prefix(&dir).unwrap().display().to_string();
                let res = std::panic::catch_unwind(|| -> R<(usize, usize)> {
                    let kv = open(kind, &dir)?;
                    let mut map = HashMap::new();
                    kv.scan(&mut map)?;
                    let good = (0..keys)
                        .filter(|&id| map.get(&key(id)).map_or(false, |v| check_value(v, id, 1)))
                        .count();
                    kv.close()?;
                    Ok((map.len(), good))
                });
                let outcome = match res {
                    Ok(Ok((n, good))) => {
                        format!(
                            "opens; {} of {} keys intact, {} missing, {} with wrong value",
                            good,
                            keys,
                            keys as usize - n.min(keys as usize),
                            n - good,
                        ) + if n != good {
                            " (silent corruption)"
                        } else {
                            ""
                        }
                    }
                    Ok(Err(e)) => format!("open/scan fails: {e}"),
                    Err(_) => {
                        "open or scan panics (redb: unreachable!() in btree_cursor.rs)".to_string()
                    }
                };
                eprintln!(
                    "[{}] {op} last {cut} B of {rel} (len {len}, data end {end}): {outcome}",
                    kind.name()
                );
                rows.push(TruncRow {
                    store: kind,
                    check,
                    file: format!("{rel} (data end {end} B)"),
                    cut,
                    op,
                    outcome,
                });
                std::fs::remove_dir_all(&dir)?;
            }
        }
    }
    REDB_CHECK_ON_OPEN.store(false, std::sync::atomic::Ordering::Relaxed);
    std::fs::remove_dir_all(&pristine)?;
    Ok(rows)
}

// ---------------------------------------------------------------- reports

/// Prints a Markdown table: `title` (with its blank lines), the header row
/// of `headers`, and one line per row of cells.
fn table(title: &str, headers: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    println!("{title}");
    println!("| {} |", headers.join(" | "));
    println!("|{}", "---|".repeat(headers.len()));
    for cells in rows {
        println!("| {} |", cells.join(" | "));
    }
}

fn print_writes(rows: &[WriteRow]) {
    table(
        "\n### Writes (100,000 keys, random overwrites; commit latency is per batch)\n",
        &[
            "store",
            "value",
            "batch",
            "policy",
            "writes",
            "writes/s",
            "commit p50 us",
            "commit p99 us",
            "syncs",
        ],
        rows.iter().map(|r| {
            vec![
                r.store.name().to_string(),
                format!("{} B", r.vsize),
                r.batch.to_string(),
                format!(
                    "{}",
                    if r.synced {
                        "fsync/batch"
                    } else {
                        "sync/100ms"
                    }
                ),
                r.writes.to_string(),
                format!("{:.0}", r.writes as f64 / r.secs),
                format!("{:.0}", r.commit.pct_us(0.5)),
                format!("{:.0}", r.commit.pct_us(0.99)),
                r.syncs.to_string(),
            ]
        }),
    );
}

fn print_reads(rows: &[ReadRow]) {
    table(
        "\n### Point reads (random keys of 100,000; cold = reopened, page cache evicted)\n",
        &[
            "store",
            "value",
            "warm p50 us",
            "warm p99 us",
            "cold p50 us",
            "cold p99 us",
            "reopen ms",
            "wrong values",
        ],
        rows.iter().map(|r| {
            vec![
                r.store.name().to_string(),
                format!("{} B", r.vsize),
                format!("{:.1}", r.warm.pct_us(0.5)),
                format!("{:.1}", r.warm.pct_us(0.99)),
                format!("{:.1}", r.cold.pct_us(0.5)),
                format!("{:.1}", r.cold.pct_us(0.99)),
                format!("{:.1}", r.cold_open_ms),
                r.bad.to_string(),
            ]
        }),
    );
}

fn print_other(rows: &[OtherRow]) {
    table(
        "\n### Deletes (20% of keys, batches of 128, fsync/batch) and footprint (du after close)\n",
        &[
            "store",
            "value",
            "deletes/s",
            "delete batch p99 us",
            "du after writes MiB",
            "du after deletes MiB",
            "live data MiB",
            "deleted stay deleted",
            "scan == live set",
        ],
        rows.iter().map(|r| {
            vec![
                r.store.name().to_string(),
                format!("{} B", r.vsize),
                format!("{:.0}", r.deletes_per_s),
                format!("{:.0}", r.delete_p99_us),
                format!("{:.1}", mib(r.footprint_after_writes)),
                format!("{:.1}", mib(r.footprint_after_deletes)),
                format!("{:.1}", mib(r.logical_bytes)),
                r.deleted_absent.to_string(),
                r.scan_count_ok.to_string(),
            ]
        }),
    );
}

fn print_recovery(rows: &[RecRow]) {
    table(
        "\n### Recovery (100 B values; seconds per million keys)\n",
        &[
            "store",
            "keys",
            "load s",
            "du MiB",
            "open",
            "open+scan",
            "open cold",
            "open+scan cold",
            "open after crash",
            "open+scan after crash",
            "all keys back",
        ],
        rows.iter().map(|r| {
            vec![
                r.store.name().to_string(),
                r.keys.to_string(),
                format!("{:.1}", r.load_secs),
                format!("{:.1}", mib(r.footprint)),
                format!("{:.3}", r.open_warm),
                format!("{:.3}", r.open_scan_warm),
                format!("{:.3}", r.open_cold),
                format!("{:.3}", r.open_scan_cold),
                format!("{:.3}", r.open_after_crash),
                format!("{:.3}", r.open_scan_after_crash),
                r.count_ok.to_string(),
            ]
        }),
    );
}

fn print_crash(rows: &[CrashRow]) {
    table(
        "\n### Crash (child aborts mid-stream of 16-key batches; reopen and check)\n",
        &[
            "store",
            "policy",
            "trials",
            "opens ok",
            "batches acked",
            "of them durable",
            "durable missing",
            "non-durable lost",
            "partial batches",
            "max reopen ms",
        ],
        rows.iter().map(|r| {
            vec![
                r.store.name().to_string(),
                r.mode.to_string(),
                r.trials.to_string(),
                r.opens_ok.to_string(),
                r.acked.to_string(),
                r.durable_acked.to_string(),
                r.durable_missing.to_string(),
                r.nondurable_lost.to_string(),
                r.partial_batches.to_string(),
                format!("{:.1}", r.reopen_ms_max),
            ]
        }),
    );
}

fn print_trunc(rows: &[TruncRow]) {
    table(
        "\n### Truncation (10,000 keys in 100 fsync'd batches of 100, clean close; truncate = cut the last bytes, zero = overwrite them with zeros (torn write))\n",
        &["store", "file", "damage", "outcome"],
        rows.iter().map(|r| {
            vec![
                format!("{}{}", r.store.name(), if r.check { " +check_integrity_on_open" } else { "" }),
                r.file.to_string(),
                format!("{} last {} B", r.op, r.cut),
                r.outcome.to_string(),
            ]
        }),
    );
}

// ---------------------------------------------------------------- main

fn usage() -> ! {
    eprintln!(
        "usage: store-compare <cmd> [--dir /tmp/sc] [--stores fjall,redb[,redb-qr]] ...
  all        everything below, then the tables
  writes     [--value-sizes 100,4096] [--keys 100000] [--scale 1.0]
  recovery   [--keys 1000000]
  crash      [--trials 4]
  truncate"
    );
    std::process::exit(2)
}

fn main() -> R<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first().cloned() else {
        usage()
    };
    let a = Args::parse(&argv[1..]);
    // internal child commands
    match cmd.as_str() {
        "crash-child" => return cmd_crash_child(&a),
        "abort-after-write" => return cmd_abort_after_write(&a),
        _ => {}
    }
    let root = PathBuf::from(a.s("dir", "/tmp/sc"));
    std::fs::create_dir_all(&root)?;
    let stores = a.stores();
    let run = |what: &str| cmd == "all" || cmd == what;
    if !["all", "writes", "recovery", "crash", "truncate"].contains(&cmd.as_str()) {
        usage();
    }
    println!(
        "store-compare {cmd}: dir {} stores {:?} cache {} MiB each, load {}",
        root.display(),
        stores.iter().map(|k| k.name()).collect::<Vec<_>>(),
        CACHE_BYTES >> 20,
        loadavg()
    );
    let started = Instant::now();
    let (mut w, mut rd, mut o) = (Vec::new(), Vec::new(), Vec::new());
    let mut rec = Vec::new();
    let mut cr = Vec::new();
    let mut tr = Vec::new();
    if run("writes") {
        let sizes: Vec<usize> = a
            .s("value-sizes", "100,4096")
            .split(',')
            .map(|s| s.parse().unwrap())
            .collect();
        let keys = a.u("keys", 100_000);
        let scale: f64 = a.s("scale", "1.0").parse()?;
        for &vsize in &sizes {
            for &k in &stores {
                bench_writes(k, &root, vsize, keys, scale, &mut w, &mut rd, &mut o)?;
            }
        }
    }
    if run("recovery") {
        let keys = a.u("keys", 1_000_000);
        for &k in &stores {
            rec.push(bench_recovery(k, &root, keys)?);
        }
    }
    if run("crash") {
        let trials = a.u("trials", 4);
        for &k in &stores {
            cr.push(bench_crash(k, &root, trials, false)?);
            cr.push(bench_crash(k, &root, trials, true)?);
        }
    }
    if run("truncate") {
        for &k in &stores {
            tr.extend(bench_truncate(k, &root)?);
        }
    }
    if !w.is_empty() {
        print_writes(&w);
        print_reads(&rd);
        print_other(&o);
    }
    if !rec.is_empty() {
        print_recovery(&rec);
    }
    if !cr.is_empty() {
        print_crash(&cr);
    }
    if !tr.is_empty() {
        print_trunc(&tr);
    }
    println!(
        "\n(took {:.0} s, load at end {})",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    Ok(())
}
