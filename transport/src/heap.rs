//! How the process's allocator keeps the memory of large values.
//!
//! glibc's `malloc` serves a block above its mmap threshold (128 KiB at
//! first, raised as such blocks are freed) with a fresh `mmap`, and returns
//! a free heap top above its trim threshold to the kernel. A 10 MB value
//! then costs a fresh mapping at each of its copies (the frame received,
//! the decoded value, the Python object), and the kernel zeroes and maps
//! every page of each on first touch: measured on a node's cache and
//! executor, page faults were a third of a 10 MB read's time, and keeping
//! the memory halved a cached 10 MB read (40 ms to 17 ms; see
//! `benches/RESULTS.md`, "Large values").
//!
//! [`keep_large_buffers`] raises both thresholds once per process: blocks
//! up to [`MMAP_THRESHOLD`] come from the heap, and up to
//! [`TRIM_THRESHOLD`] of free heap top is kept for the next value. The
//! `squall` binary calls it at start, and the Python client module when it
//! is imported. A process given `MALLOC_MMAP_THRESHOLD_`,
//! `MALLOC_TRIM_THRESHOLD_` or `GLIBC_TUNABLES` keeps its own choice.

use std::sync::Once;

/// Blocks up to this size are carved from the heap, not mapped afresh
/// (glibc's largest allowed on 64-bit).
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Free memory at the top of a heap that is kept rather than returned to
/// the kernel: room for the few copies of one large value in flight.
pub const TRIM_THRESHOLD: usize = 64 << 20;

/// Sets the allocator's thresholds (see the module's docs); once per
/// process, and only where the environment has not chosen them.
pub fn keep_large_buffers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let chosen = [
            "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TRIM_THRESHOLD_",
            "GLIBC_TUNABLES",
        ]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
        if !chosen {
            set_thresholds();
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() {
    // SAFETY: mallopt only changes the allocator's parameters; it is safe
    // to call at any time from any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() {}
