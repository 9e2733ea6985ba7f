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
//! partial value. The directory goes when its process stops; the
//! directories of processes that died without removing theirs (killed:
//! their process is gone), whichever node or thread they served, are
//! removed when the next cache or storage thread on the machine starts.

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
    /// in `base` by earlier caches and storage threads (of any node, of
    /// this user) whose process is gone.
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
        sweep(base);
        let dir = base.join(format!("squall-{node}-{}", std::process::id()));
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

/// Removes the directories `squall-NAME-PID` in `base` that this user
/// owns and whose process is gone.
fn sweep(base: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("squall-"))
            .and_then(|n| n.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let ours = entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == me);
        if ours && !alive(pid) {
            let _ = fs::remove_dir_all(entry.path());
            tracing::info!(dir = %entry.path().display(), "removed a dead process's values in shared memory");
        }
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
        // A dead process's directory is swept, whichever node or thread
        // it served; a live one's is not, nor what is not a directory.
        let dead = base.join("squall-compute-0-4000000000");
        // A killed cache not yet reaped by its parent: a zombie.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let zombie = base.join(format!("squall-compute-0-{}", child.id()));
        fs::create_dir_all(&zombie).unwrap();
        let other = base.join("squall-kvs-4-1-4000000000");
        let live = base.join(format!(
            "squall-kvs-2-0-{}",
            std::os::unix::process::parent_id()
        ));
        for d in [&dead, &other, &live] {
            fs::create_dir_all(d).unwrap();
        }
        let file = base.join("squall-notes-4000000000");
        fs::write(&file, b"not a directory").unwrap();
        let mut files = SharedDir::create(&base, "compute-0").unwrap();
        assert!(!dead.exists() && !other.exists() && live.exists() && file.exists());
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
