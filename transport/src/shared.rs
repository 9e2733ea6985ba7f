//! Values in shared memory: how an executor reads the file a node's cache
//! wrote a large value into, and a client the file of a storage thread on
//! its machine (see `anna::shared`, `anna::protocol::SharedValue`),
//! without a copy: the file is mapped, and the value's bytes are the
//! mapping.

use anna::client::ClientCore;
use bytes::Bytes;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Where a client looks for storage threads' files: the shared memory it
/// names in its requests (`[storage] shared_dir` by default too).
pub const SHARED_DIR: &str = "/dev/shm";

/// The shared memory a process can map files of in `dir`: a digest of
/// the machine's boot (`/proc/sys/kernel/random/boot_id`) and of the
/// filesystem `dir` is on (its device), the same for every process that
/// sees the same files there (a container with its own `/dev/shm` names
/// another). `None` if either cannot be read.
pub fn identity(dir: &Path) -> Option<u64> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let device = std::fs::metadata(dir).ok()?.dev();
    // FNV-1a: stable across builds and processes.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in boot.trim().bytes().chain(device.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    Some(hash)
}

/// Makes `core` read large values a storage thread on this machine holds
/// from the thread's files in [`SHARED_DIR`], mapped, if its config asks
/// for that (`shared_memory`, the default) and the shared memory can be
/// named.
pub fn map_storage_files(core: &mut ClientCore) {
    if !core.config().shared_memory {
        return;
    }
    if let Some(identity) = identity(Path::new(SHARED_DIR)) {
        core.map_shared_memory(identity, map_file_kept);
    }
}

/// How many of the files a client mapped last stay mapped for their next
/// read, and how many bytes they may hold at most.
const KEPT_FILES: usize = 8;
const KEPT_BYTES: usize = 256 << 20;

/// The mappings [`map_file_kept`] keeps, the latest last.
static KEPT: std::sync::Mutex<std::collections::VecDeque<(String, Bytes)>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

/// [`map_file`], keeping the latest [`KEPT_FILES`] mappings (at most
/// [`KEPT_BYTES`]) of this process for the next read of the same file: a
/// file holds one version of a value and is never changed, so a reader
/// fetching it again gets the pages it already mapped instead of mapping
/// and faulting them in again. A kept mapping holds its pages after the
/// file is removed, until newer ones push it out.
pub fn map_file_kept(path: &str, len: u64) -> io::Result<Bytes> {
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(at) = kept
        .iter()
        .position(|(p, b)| p == path && b.len() as u64 == len)
    {
        let entry = kept.remove(at).expect("found");
        let bytes = entry.1.clone();
        kept.push_back(entry);
        return Ok(bytes);
    }
    drop(kept);
    let bytes = map_file(path, len)?;
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    kept.push_back((path.to_string(), bytes.clone()));
    let mut held: usize = kept.iter().map(|(_, b)| b.len()).sum();
    while kept.len() > KEPT_FILES || (held > KEPT_BYTES && kept.len() > 1) {
        if let Some((_, b)) = kept.pop_front() {
            held -= b.len();
        }
    }
    Ok(bytes)
}

/// A read-only mapping of a whole file, unmapped when dropped.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and private to this value: any thread
// may read it, and only the drop unmaps it.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until the drop. Their
        // file is never written again once named (its writer renames it
        // into place complete), and unlinking it keeps the mapping.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are exactly what mmap returned.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// The `len` bytes of the file at `path`, mapped read-only: no copy is
/// made, and the bytes stay readable as long as any clone of the result
/// lives, whatever happens to the file's name.
pub fn map_file(path: &str, len: u64) -> io::Result<Bytes> {
    let file = File::open(path)?;
    let found = file.metadata()?.len();
    if found != len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path}: {found} bytes, expected {len}"),
        ));
    }
    if len == 0 {
        return Ok(Bytes::new());
    }
    let len = usize::try_from(len).map_err(|_| io::Error::other("value too large to map"))?;
    // SAFETY: a fresh read-only shared mapping of a file we opened; the
    // descriptor may close afterwards (the mapping holds the file).
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(Bytes::from_owner(Mapping { ptr, len }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapped_file_reads_as_written_and_outlives_its_name() {
        let dir = std::env::temp_dir().join(format!("squall-map-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("value");
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let path = path.to_str().unwrap().to_string();
        let bytes = map_file(&path, data.len() as u64).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(&bytes[..], &data[..]);
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(clone.len(), data.len());
        assert_eq!(clone[999_999], data[999_999]);
    }

    #[test]
    fn the_latest_mappings_are_kept_for_the_next_read_of_their_file() {
        let dir = std::env::temp_dir().join(format!("squall-kept-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files: Vec<String> = (0..=KEPT_FILES)
            .map(|i| {
                let path = dir.join(format!("v{i}"));
                std::fs::write(&path, vec![i as u8; 4096]).unwrap();
                path.to_str().unwrap().to_string()
            })
            .collect();
        let first = map_file_kept(&files[0], 4096).unwrap();
        let again = map_file_kept(&files[0], 4096).unwrap();
        assert_eq!(first.as_ptr(), again.as_ptr(), "the same mapping");
        // Kept past the removal of its name, with its bytes.
        std::fs::remove_file(&files[0]).unwrap();
        let after = map_file_kept(&files[0], 4096).unwrap();
        assert_eq!(after.as_ptr(), first.as_ptr());
        assert_eq!(&after[..], &[0u8; 4096][..]);
        // A length that does not match is not the kept file.
        assert!(map_file_kept(&files[0], 10).is_err());
        // KEPT_FILES newer ones push it out: its name is gone, so it fails.
        for (i, path) in files.iter().enumerate().skip(1) {
            assert_eq!(map_file_kept(path, 4096).unwrap()[0], i as u8);
        }
        assert!(map_file_kept(&files[0], 4096).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_or_short_file_is_an_error() {
        assert!(map_file("/nonexistent/squall/value", 10).is_err());
        let path = std::env::temp_dir().join(format!("squall-short-{}", std::process::id()));
        std::fs::write(&path, b"abc").unwrap();
        let err = map_file(path.to_str().unwrap(), 10).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
