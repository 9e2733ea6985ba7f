//! The allocator keeps a large value's memory for the next one
//! (`squall_transport::heap`): a second 10 MB buffer, after the first is
//! freed, is served from memory already mapped, not from fresh pages the
//! kernel must zero and map one fault at a time.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

fn minor_faults() -> i64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct it is given.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    usage.ru_minflt
}

/// Allocates and touches a 10 MB buffer, and drops it: the page faults it
/// took.
fn faults_of_one_buffer() -> i64 {
    let before = minor_faults();
    let buffer = std::hint::black_box(vec![1u8; 10 << 20]);
    assert_eq!(buffer[buffer.len() - 1], 1);
    drop(buffer);
    minor_faults() - before
}

#[test]
fn a_freed_large_buffer_is_reused_without_page_faults() {
    if [
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
        "GLIBC_TUNABLES",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some())
    {
        eprintln!("skipped: the environment chooses the allocator's thresholds");
        return;
    }
    squall_transport::heap::keep_large_buffers();
    let pages = (10 << 20) / 4096;
    let first = faults_of_one_buffer();
    let later: Vec<i64> = (0..4).map(|_| faults_of_one_buffer()).collect();
    // The first buffer maps its pages; each later one finds them kept (a
    // fresh mapping would fault on every one of its 2,560 pages).
    assert!(first >= pages / 2, "the first buffer took {first} faults");
    for faults in later {
        assert!(
            faults < pages / 10,
            "a later buffer took {faults} faults: {first} for the first"
        );
    }
}
