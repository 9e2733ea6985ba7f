//! `squall scheduler`, `squall cache`, `squall executor`: the compute tier's
//! processes, what `squall up` starts for each compute node (a cache and its
//! executors) and for the cluster (schedulers).
//!
//! The scheduler and the cache are role state machines behind a ZeroMQ
//! driver, like the storage roles; the executor is its own loop around an
//! embedded Python interpreter (`squall_executor::run`), run as the child
//! of a small supervisor that starts it again if it dies. Each runs until
//! SIGINT or SIGTERM. A stopped executor tells its schedulers it is leaving
//! (they re-plan its calls at once): the supervisor passes the signal on to
//! the child, which runs the executor and says goodbye, and does not start
//! it again.

use crate::config::SquallConfig;
use crate::roles::{signals, spawn_driver, stop_drivers, wait_for_signal};
use anna::lattice::WriterId;
use anna::protocol::Address;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::collections::VecDeque;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, PartialEq, Args, Serialize)]
pub struct SchedulerArgs {
    /// Host to bind and be reached at.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) host: String,
    /// Port to listen at.
    #[arg(long)]
    pub(crate) port: u16,
    /// A router of the storage cluster (repeat for several).
    #[arg(long = "router", required = true)]
    pub(crate) routers: Vec<String>,
}

impl SchedulerArgs {
    /// The `squall scheduler ...` arguments that parse to these (see
    /// [`crate::argv`]).
    pub(crate) fn to_args(&self) -> Result<Vec<String>> {
        crate::argv::render("scheduler", self)
    }
}

#[derive(Debug, PartialEq, Args, Serialize)]
pub struct CacheArgs {
    /// The compute node this cache serves (its executors name the same).
    #[arg(long)]
    pub(crate) node: String,
    /// Host to bind and be reached at by storage nodes.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) host: String,
    /// Port storage nodes push subscribed keys to.
    #[arg(long)]
    pub(crate) port: u16,
    /// Where the node's executors reach the cache (an `ipc://` path).
    #[arg(long)]
    pub(crate) ipc: String,
    /// A router of the storage cluster (repeat for several).
    #[arg(long = "router", required = true)]
    pub(crate) routers: Vec<String>,
    /// A scheduler to report held keys to (repeat).
    #[arg(long = "scheduler")]
    pub(crate) schedulers: Vec<String>,
}

impl CacheArgs {
    /// The `squall cache ...` arguments that parse to these (see
    /// [`crate::argv`]).
    pub(crate) fn to_args(&self) -> Result<Vec<String>> {
        crate::argv::render("cache", self)
    }
}

#[derive(Debug, PartialEq, Args, Serialize)]
pub struct ExecutorArgs {
    /// The compute node this executor runs on.
    #[arg(long)]
    pub(crate) node: String,
    /// Host to bind and be reached at.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) host: String,
    /// Port to listen at; `tcp://HOST:PORT` is the executor's id.
    #[arg(long)]
    pub(crate) port: u16,
    /// The node's cache (its `ipc://` address).
    #[arg(long)]
    pub(crate) cache: String,
    /// A scheduler to report to (repeat).
    #[arg(long = "scheduler", required = true)]
    pub(crate) schedulers: Vec<String>,
    /// A Python virtualenv whose site-packages functions import from
    /// (cloudpickle, the `squall` package); default `$VIRTUAL_ENV`, else
    /// `./.venv`.
    #[arg(long)]
    pub(crate) venv: Option<PathBuf>,
    /// An extra directory for Python's import path (repeat).
    #[arg(long = "python-path")]
    pub(crate) python_path: Vec<PathBuf>,
    /// Run the executor in this process. Without it, this process is a
    /// supervisor that runs the executor as a child and starts it again if
    /// it dies (a function that crashed the interpreter, or got stuck in C
    /// past its timeout).
    #[arg(long)]
    pub(crate) no_supervisor: bool,
}

impl ExecutorArgs {
    /// The `squall executor ...` arguments that parse to these (see
    /// [`crate::argv`]).
    pub(crate) fn to_args(&self) -> Result<Vec<String>> {
        crate::argv::render("executor", self)
    }
}

/// Restarts allowed within [`RESTART_WINDOW`] before the supervisor gives
/// up: an executor that cannot start at all should fail loudly, not spin.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// Runs the executor as a child process (`--no-supervisor`) and starts it
/// again whenever it ends abnormally. The child dies with the supervisor
/// (`PR_SET_PDEATHSIG`), so `kill -9` of the supervisor leaves nothing
/// behind. SIGINT and SIGTERM are passed on to the child, which sends
/// `ExecutorLeaving` to its schedulers and exits; once a signal came, the
/// supervisor starts no child again, however the last one ended (a child
/// the signal reached before its handlers were installed dies of it).
fn supervise() -> Result<()> {
    let exe = std::env::current_exe().context("locating the squall binary")?;
    let mut child_args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    child_args.push("--no-supervisor".into());
    let child_pid = Arc::new(AtomicU32::new(0));
    let stopping = Arc::new(AtomicBool::new(false));
    let mut signals = signals()?;
    {
        let (child_pid, stopping) = (child_pid.clone(), stopping.clone());
        std::thread::Builder::new()
            .name("signals".to_string())
            .spawn(move || {
                for sig in signals.forever() {
                    stopping.store(true, Ordering::SeqCst);
                    let pid = child_pid.load(Ordering::SeqCst);
                    if pid != 0 {
                        // SAFETY: sending a signal has no memory-safety
                        // preconditions.
                        unsafe { libc::kill(pid as libc::pid_t, sig) };
                    }
                }
            })
            .context("spawning the signal thread")?;
    }
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    loop {
        let mut cmd = Command::new(&exe);
        cmd.args(&child_args);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("starting the executor process")?;
        child_pid.store(child.id(), Ordering::SeqCst);
        if stopping.load(Ordering::SeqCst) {
            // A signal came while it started: pass it on now.
            // SAFETY: as above.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        }
        let status = child.wait().context("waiting for the executor process")?;
        child_pid.store(0, Ordering::SeqCst);
        if status.success() || stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        let now = Instant::now();
        restarts.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
        if restarts.len() >= MAX_RESTARTS {
            bail!("the executor ended abnormally {MAX_RESTARTS} times within {RESTART_WINDOW:?} ({status}); giving up");
        }
        restarts.push_back(now);
        tracing::error!(%status, "the executor process ended abnormally; starting it again");
        std::thread::sleep(Duration::from_millis(200));
        if stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
    }
}

fn addresses(list: &[String]) -> Vec<Address> {
    list.iter().map(|a| Address(a.clone())).collect()
}

/// A writer id unique to this process start and address.
fn writer_for(me: &Address) -> WriterId {
    WriterId(squall_transport::clock::fresh_id(me.as_str()))
}

/// The site-packages directories of a virtualenv.
fn site_packages(venv: &Path) -> Result<Vec<PathBuf>> {
    let lib = venv.join("lib");
    let dirs: Vec<PathBuf> = std::fs::read_dir(&lib)
        .with_context(|| {
            format!(
                "reading {} (is {} a virtualenv?)",
                lib.display(),
                venv.display()
            )
        })?
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .filter(|p| p.is_dir())
        .collect();
    if dirs.is_empty() {
        anyhow::bail!("no lib/python*/site-packages under {}", venv.display());
    }
    Ok(dirs)
}

pub fn run_scheduler(args: &SchedulerArgs, config: &SquallConfig) -> Result<()> {
    config.scheduler.validate()?;
    let me = Address(format!("tcp://{}:{}", args.host, args.port));
    let ctx = zmq::Context::new();
    let scheduler = squall_scheduler::Scheduler::new(
        config.scheduler.clone(),
        me.clone(),
        addresses(&args.routers),
        writer_for(&me),
    );
    let driver = spawn_driver(&ctx, &me, scheduler, "scheduler".to_string())?;
    tracing::info!(address = %me, "scheduler serving");
    let mut signals = signals()?;
    wait_for_signal(&mut signals, "scheduler");
    stop_drivers("scheduler", vec![driver])
}

pub fn run_cache(args: &CacheArgs, config: &SquallConfig) -> Result<()> {
    config.cache.validate()?;
    let me = Address(format!("tcp://{}:{}", args.host, args.port));
    let ipc = Address(args.ipc.clone());
    let ctx = zmq::Context::new();
    let mut cache = squall_cache::Cache::new(
        config.cache.clone(),
        args.node.clone(),
        me.clone(),
        addresses(&args.routers),
        addresses(&args.schedulers),
        writer_for(&me),
    );
    let shared_dir = &config.cache.shared_dir;
    if !shared_dir.is_empty() {
        match crate::shared_memory::SharedDir::create(Path::new(shared_dir), &args.node) {
            Ok(files) => {
                tracing::info!(dir = %files.path().display(), "cache: large values go to executors in shared memory");
                cache.share_values_in(Box::new(files));
            }
            Err(error) => tracing::warn!(dir = %shared_dir, %error,
                "cache: no directory for values in shared memory; every value goes in the frame"),
        }
    }
    // Misses of large values a storage node on this machine holds are read
    // from its files, mapped ([client] shared_memory of [cache.client]).
    squall_transport::shared::map_storage_files(cache.client_mut());
    let driver =
        crate::roles::spawn_driver_also(&ctx, &me, std::slice::from_ref(&ipc), cache, "cache")?;
    open_ipc_socket(&ipc)?;
    tracing::info!(node = %args.node, address = %me, executors_at = %ipc, "cache serving");
    let mut signals = signals()?;
    wait_for_signal(&mut signals, "cache");
    stop_drivers("cache", vec![driver])
}

/// Becomes user `user` (its group, no supplementary groups) if this
/// process runs as root and `user` is not empty, so that user functions
/// run without root's rights; `needed` are the directories the executor
/// reads afterwards (the interpreter's library, site-packages, the
/// directory of its cache's `ipc://` socket). The cluster's secret was read before (its file stays
/// readable by root only); the cache's `ipc://` socket is open to every
/// local user ([`open_ipc_socket`]).
///
/// If `user` cannot read one of them (an interpreter installed in root's
/// home, a state directory only root may enter), the executor stays root
/// and says so once: an executor that cannot import or reach its cache
/// would run no function at all.
fn drop_root(user: &str, needed: &[PathBuf]) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if user.is_empty() || unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let name = std::ffi::CString::new(user).context("[executor] run_as: a NUL in the name")?;
    // SAFETY: getpwnam reads the user database into static storage, copied
    // out at once; this runs before the executor starts its threads.
    let (uid, gid) = unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            anyhow::bail!("[executor] run_as: no user {user:?} on this machine");
        }
        ((*pw).pw_uid, (*pw).pw_gid)
    };
    if let Some(dir) = needed.iter().find(|d| !readable_as(uid, gid, d)) {
        tracing::warn!(
            user,
            unreadable = %dir.display(),
            "user functions run as root: {user} cannot read {}, which the executor needs \
             (the interpreter's library, site-packages, its cache's socket); make it readable \
             by other users (Debian's python3, a state directory of mode 0755) or set \
             [executor] run_as to a user who can",
            dir.display()
        );
        return Ok(());
    }
    // The kernel clears the parent-death signal (a supervised executor's:
    // die with the supervisor) when the user changes; it is set again below.
    let mut death_signal: libc::c_int = 0;
    // SAFETY: PR_GET_PDEATHSIG writes one int through the pointer given.
    unsafe {
        libc::prctl(
            libc::PR_GET_PDEATHSIG,
            &mut death_signal as *mut libc::c_int,
        )
    };
    // SAFETY: setgroups, setgid and setuid take plain values; the order
    // (groups, group, then user) is the one that can still succeed.
    let failed = unsafe {
        libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
    };
    if failed {
        let e = std::io::Error::last_os_error();
        anyhow::bail!("[executor] run_as: cannot become {user:?} (uid {uid}): {e}");
    }
    if death_signal != 0 {
        // SAFETY: prctl and getppid take plain values.
        let supervisor = unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, death_signal as libc::c_ulong);
            libc::getppid()
        };
        if supervisor == 1 {
            anyhow::bail!("the executor's supervisor is gone");
        }
    }
    tracing::info!(user, uid, gid, "user functions run as {user}, not root");
    Ok(())
}

/// Whether user `uid` (group `gid`) can list and read `dir`: asked of the
/// kernel by a child process that becomes that user.
fn readable_as(uid: u32, gid: u32, dir: &Path) -> bool {
    use std::os::unix::process::CommandExt;
    Command::new("/bin/sh")
        .args(["-c", "test -r \"$1\" && test -x \"$1\"", "sh"])
        .arg(dir)
        .uid(uid)
        .gid(gid)
        .stdin(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The standard library of the CPython this process embeds: found beside
/// the `libpython3.X` it loaded (a pyenv or source build keeps it in
/// `lib/python3.X`), else in `/usr/lib/python3.X` (Debian's).
fn embedded_stdlib() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let lib = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libpython3"))
        .map(PathBuf::from)?;
    let file = lib.file_name()?.to_str()?;
    let version = file.strip_prefix("lib")?.split(".so").next()?.to_string();
    [
        lib.parent()?.join(&version),
        Path::new("/usr/lib").join(&version),
    ]
    .into_iter()
    .find(|d| d.join("os.py").is_file())
}

/// Lets every local user connect to the cache's `ipc://` socket: executors
/// that dropped root ([`drop_root`]) reach their cache through it. Frames
/// are authenticated, so the socket file's mode is not what keeps others
/// out.
fn open_ipc_socket(address: &Address) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = address.as_str().strip_prefix("ipc://") else {
        return Ok(());
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("opening {path} to executors"))
}

pub fn run_executor(args: &ExecutorArgs, config: &SquallConfig) -> Result<()> {
    config.executor.validate()?;
    if !args.no_supervisor {
        return supervise();
    }
    let me = Address(format!("tcp://{}:{}", args.host, args.port));
    let mut python_path = args.python_path.clone();
    let venv = args
        .venv
        .clone()
        .or_else(|| std::env::var_os("VIRTUAL_ENV").map(PathBuf::from))
        .or_else(|| Some(PathBuf::from(".venv")).filter(|p| p.is_dir()));
    if let Some(venv) = &venv {
        python_path.extend(site_packages(venv)?);
    }
    // What the executor reads after it dropped root: the interpreter's
    // library, the site-packages, and the directory of its cache's socket.
    let socket_dir = args
        .cache
        .strip_prefix("ipc://")
        .and_then(|p| Path::new(p).parent())
        .map(Path::to_path_buf);
    let needed: Vec<PathBuf> = embedded_stdlib()
        .into_iter()
        .chain(python_path.clone())
        .chain(socket_dir)
        .collect();
    drop_root(&config.executor.run_as, &needed)?;
    let opts = squall_executor::ExecutorOptions {
        address: me,
        node: args.node.clone(),
        cache: Address(args.cache.clone()),
        schedulers: addresses(&args.schedulers),
        python_path,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = signals()?;
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("signals".to_string())
        .spawn(move || {
            wait_for_signal(&mut signals, "executor");
            flag.store(true, Ordering::Relaxed);
        })
        .context("spawning the signal thread")?;
    squall_executor::run(opts, &config.executor, stop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn what_another_user_can_read_is_asked_of_the_kernel() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("not root: no other user to become");
            return;
        }
        let (nobody, nogroup) = (65534, 65534);
        let open = tempfile::tempdir().unwrap();
        std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(readable_as(nobody, nogroup, open.path()));
        let inside = open.path().join("private");
        std::fs::create_dir(&inside).unwrap();
        std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!readable_as(nobody, nogroup, &inside));
        assert!(readable_as(0, 0, &inside));
        // Below a directory nobody may enter, even an open one is closed.
        let below = inside.join("open");
        std::fs::create_dir(&below).unwrap();
        std::fs::set_permissions(&below, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!readable_as(nobody, nogroup, &below));
    }

    #[test]
    fn the_embedded_standard_library_is_found_where_the_loaded_libpython_is() {
        // Found only where a libpython is loaded; then it is a standard
        // library.
        let loaded = std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .contains("/libpython3");
        match embedded_stdlib() {
            Some(dir) => assert!(loaded && dir.join("os.py").is_file(), "{dir:?}"),
            None => assert!(!loaded, "a libpython is loaded and no stdlib was found"),
        }
    }
}
