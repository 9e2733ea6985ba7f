//! A `redis-server` process the benchmark starts and always stops.
//!
//! [`RedisServer::start`] runs the binary on a free loopback port with
//! persistence off (`--save '' --appendonly no`), waits until it answers
//! `PING`, and returns a guard whose `Drop` kills and reaps it: an error or
//! a panic anywhere after the start still stops the server.
//! [`RedisServer::start_with`] picks the [`Persistence`] (an append-only
//! file synced before every reply, or every second) and the directory that
//! holds it: a fresh one under the system temp dir, removed on drop, or a
//! given one that outlives the server (to start it again on the same
//! file). On Linux the
//! child also gets `PR_SET_PDEATHSIG`, so it dies if this process is killed
//! outright and no destructor runs. (That signal follows the *thread* that
//! started the server: start it on a thread that outlives it, as the main
//! thread and a test's own thread do.)

use super::client::RedisConnection;
use crate::backend::{BackendError, Result};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh server has to answer `PING`.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);
/// Ports tried before giving up (another process may take a free port
/// between our check and the server's bind).
const START_ATTEMPTS: usize = 3;

/// How long a server with an append-only file has to answer `PING`: it
/// loads the whole file first.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// What a server keeps on disk. RDB snapshots stay off (`--save ''`) in
/// every mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing (`--appendonly no`): the in-memory baseline.
    None,
    /// An append-only file synced before each reply (`--appendonly yes
    /// --appendfsync always`).
    AofAlways,
    /// An append-only file synced once a second (`--appendonly yes
    /// --appendfsync everysec`).
    AofEverysec,
}

impl Persistence {
    /// As the command line and the tables name it: `none`, `always`,
    /// `everysec`.
    pub fn label(self) -> &'static str {
        match self {
            Persistence::None => "none",
            Persistence::AofAlways => "always",
            Persistence::AofEverysec => "everysec",
        }
    }

    fn args(self) -> [&'static str; 4] {
        match self {
            Persistence::None => ["--appendonly", "no", "--appendfsync", "everysec"],
            Persistence::AofAlways => ["--appendonly", "yes", "--appendfsync", "always"],
            Persistence::AofEverysec => ["--appendonly", "yes", "--appendfsync", "everysec"],
        }
    }
}

/// A running `redis-server`, killed when dropped.
pub struct RedisServer {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    /// Its data directory if the server owns it (removed on drop).
    owned_dir: Option<PathBuf>,
    /// Whether it keeps an append-only file (and may fork a rewrite child
    /// that a SIGKILL of the server would leave running).
    persistent: bool,
}

impl RedisServer {
    /// Starts `binary` (a path, or a name looked up on `PATH`) with
    /// persistence off.
    pub fn start(binary: &str) -> Result<Self> {
        Self::start_with(binary, Persistence::None, None)
    }

    /// Starts `binary` keeping `persistence`, its files in `dir` (kept
    /// after the server stops), or in a fresh directory under the system
    /// temp dir (removed when it stops) if `dir` is `None` and the mode
    /// keeps any. Returns once it answers `PING`: with an append-only file
    /// in `dir`, after loading it.
    pub fn start_with(binary: &str, persistence: Persistence, dir: Option<&Path>) -> Result<Self> {
        let Some(path) = find_program(binary) else {
            return Err(BackendError::Setup(format!(
                "`{binary}` not found on PATH: the Redis comparison needs it. \
                 Run `make setup`, or `apt-get install redis-server` (Debian package \
                 redis-server), or pass --redis-server /path/to/redis-server"
            )));
        };
        let mut attempt = 1;
        loop {
            match Self::start_on_free_port(&path, persistence, dir) {
                Ok(server) => return Ok(server),
                Err(e) if attempt >= START_ATTEMPTS => return Err(e),
                Err(_) => attempt += 1,
            }
        }
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it as an operator would (`SIGTERM`: Redis stops a rewrite
    /// child, writes and syncs its append-only file, then exits) and waits
    /// for it to exit.
    pub fn shut_down(mut self) -> Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait()?;
        Ok(())
    }

    /// Kills it (`SIGKILL`: a crash; a rewrite child it forked runs on
    /// until it notices) and waits for it to exit.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    fn start_on_free_port(
        path: &Path,
        persistence: Persistence,
        dir: Option<&Path>,
    ) -> Result<Self> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let tag = format!("squall-bench-redis-{}-{port}", std::process::id());
        let log = std::env::temp_dir().join(format!("{tag}.log"));
        let (data_dir, owned_dir) = match (dir, persistence) {
            (Some(d), _) => (d.to_path_buf(), None),
            (None, Persistence::None) => (std::env::temp_dir(), None),
            (None, _) => {
                let d = std::env::temp_dir().join(tag);
                std::fs::create_dir_all(&d)?;
                (d.clone(), Some(d))
            }
        };
        let mut command = Command::new(path);
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no"])
            .args(persistence.args())
            .arg("--dir")
            .arg(&data_dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .map_err(|e| BackendError::Setup(format!("cannot start {}: {e}", path.display())))?;
        // From here on the guard owns the process: any error drops it.
        let mut server = RedisServer {
            child,
            addr,
            log,
            owned_dir,
            persistent: persistence != Persistence::None,
        };
        let limit = if dir.is_some() {
            LOAD_TIMEOUT
        } else {
            START_TIMEOUT
        };
        server.wait_until_ready(limit)?;
        Ok(server)
    }

    fn wait_until_ready(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(BackendError::Setup(format!(
                    "redis-server exited at start ({status}); its log ends:\n{}",
                    self.log_tail()
                )));
            }
            let answer = RedisConnection::connect(self.addr, Duration::from_millis(500))
                .and_then(|mut conn| conn.ping());
            match answer {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(BackendError::Setup(format!(
                        "redis-server on {} did not answer PING within {limit:?} \
                         ({e}); its log ends:\n{}",
                        self.addr,
                        self.log_tail()
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A server with an append-only file gets SIGTERM first, so that it
        // stops a rewrite child too (SIGKILL would leave that running).
        if self.persistent && matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on our own child's pid, not yet reaped.
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // Killing an already exited child fails harmlessly; wait reaps it
        // either way, so no zombie is left.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
        if let Some(dir) = &self.owned_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `name` if it is a path to a file, else the first match on `PATH`.
fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return path.is_file().then_some(path);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the forked child before exec; prctl and getppid are
    // async-signal-safe and touch no memory of the parent's.
    let parent = std::process::id();
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::ErrorKind::Other.into());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}
