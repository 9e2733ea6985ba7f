//! The directory a node's cache writes large values into for its
//! executors to map, and a storage thread for clients on its machine
//! (`anna::shared`): one per cache process and per storage thread,
//! `DIR/squall-NAME-PID` on a `tmpfs` (`[cache] shared_dir`,
//! `[storage] shared_dir`, `/dev/shm` by default). A cache that read a
//! value from a storage thread's file gives it a second name in its own
//! directory (a hard link) instead of a copy.
//!
//! The directory may be entered but not listed by others (mode 0711) and
//! each file is readable by all (0644: executors may run as another user)
//! under a random 128-bit name, told only in sealed frames: a process
//! that is not told a name cannot find the value. A file is written under
//! a temporary name and renamed when complete, so a reader never maps a
//! partial value. The directory goes when the cache stops; the
//! directories of this node's caches that died without removing theirs
//! (their process is gone) are removed when the next one starts.

use squall_cache::ValueFiles;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A cache's directory of values in shared memory.
pub struct SharedDir {
    dir: PathBuf,
}

impl SharedDir {
    /// Makes `base/squall-NODE-PID`, after removing the directories left
    /// in `base` by this node's earlier caches whose process is gone.
    pub fn create(base: &Path, node: &str) -> io::Result<SharedDir> {
        let node: String = node
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let prefix = format!("squall-{node}-");
        if let Ok(entries) = fs::read_dir(base) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                    continue;
                };
                if pid.parse::<u32>().is_ok_and(|pid| !alive(pid)) {
                    let _ = fs::remove_dir_all(entry.path());
                    tracing::info!(dir = %entry.path().display(), "removed a dead cache's values in shared memory");
                }
            }
        }
        let dir = base.join(format!("{prefix}{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o711))?;
        Ok(SharedDir { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A random 128-bit name no one can guess.
    fn fresh_name(&self) -> String {
        squall_transport::security::sender_id()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Whether process `pid` runs: it exists and is not a zombie (a cache
/// killed with SIGKILL stays one until its parent reaps it, often after
/// the next cache started).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

impl ValueFiles for SharedDir {
    fn write(&mut self, bytes: &[u8]) -> io::Result<String> {
        let name = self.fresh_name();
        let partial = self.dir.join(format!(".{name}"));
        let path = self.dir.join(&name);
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&partial)?;
            file.write_all(bytes)?;
            fs::rename(&partial, &path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
        path.into_os_string()
            .into_string()
            .map_err(|_| io::Error::other("a path that is not UTF-8"))
    }

    fn link(&mut self, source: &str) -> io::Result<String> {
        // A second name of the same file (a storage thread's on this
        // machine's shared memory): nothing is copied. Only where the
        // file may be linked (the same filesystem, a file of this user).
        let path = self.dir.join(self.fresh_name());
        fs::hard_link(source, &path)?;
        path.into_os_string()
            .into_string()
            .map_err(|_| io::Error::other("a path that is not UTF-8"))
    }

    fn remove(&mut self, path: &str) {
        let _ = fs::remove_file(path);
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_whole_readable_and_removed_with_the_directory() {
        let base = std::env::temp_dir().join(format!("squall-shm-test-{}", std::process::id()));
        fs::create_dir_all(&base).unwrap();
        // A dead cache's directory of the same node is swept; another
        // node's and a live one's are not.
        let dead = base.join("squall-compute-0-4000000000");
        // A killed cache not yet reaped by its parent: a zombie.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let zombie = base.join(format!("squall-compute-0-{}", child.id()));
        fs::create_dir_all(&zombie).unwrap();
        let other = base.join("squall-compute-1-4000000000");
        let live = base.join(format!(
            "squall-compute-0-{}",
            std::os::unix::process::parent_id()
        ));
        for d in [&dead, &other, &live] {
            fs::create_dir_all(d).unwrap();
        }
        let mut files = SharedDir::create(&base, "compute-0").unwrap();
        assert!(!dead.exists() && other.exists() && live.exists());
        assert!(!zombie.exists(), "a zombie's directory is swept");
        child.wait().unwrap();
        let mode = fs::metadata(files.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o711);

        let value: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let path = files.write(&value).unwrap();
        assert_eq!(fs::read(&path).unwrap(), value);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let second = files.write(b"another").unwrap();
        assert_ne!(path, second, "every file has its own name");
        assert_eq!(
            fs::read_dir(files.path()).unwrap().count(),
            2,
            "no partial file is left"
        );
        files.remove(&second);
        assert!(!Path::new(&second).exists());

        let dir = files.path().to_path_buf();
        drop(files);
        assert!(!dir.exists());
        fs::remove_dir_all(&base).unwrap();
    }
}
