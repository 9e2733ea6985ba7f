//! The Python memory cap (`[executor] python_memory_bytes`): counting
//! wrappers around CPython's allocators, which refuse an allocation of a
//! running call that would take the interpreter past the cap, so that
//! CPython raises `MemoryError` in the function and the frames it unwinds
//! give the memory back.
//!
//! What is counted: every block of the raw domain (`PyMem_RawMalloc` and
//! friends, by `malloc_usable_size`) and every pymalloc arena (the arena
//! allocator is told each arena's size when it is freed). Together they are
//! all the memory of the `PyMem_*` and `PyObject_*` domains: pymalloc
//! carves small objects out of arenas and hands anything larger than 512
//! bytes to the raw domain (and falls back to it when it cannot get an
//! arena). The wrappers only delegate to the allocators they replace and
//! add no header, so they are safe to install in a running interpreter,
//! and they are: the count starts at the install (the interpreter's own
//! few megabytes of start-up are not in it; frees of older blocks may take
//! it below zero). Memory a C extension takes with `malloc` directly (a
//! numpy array's data) is outside the count; the process's own limit
//! bounds that (`RLIMIT_DATA`, a container's memory limit).
//!
//! When an allocation is refused: only while a call is armed ([`arm`],
//! around the runtime module's `load` and `invoke`) and only in a thread
//! holding the GIL, so the executor's own work between calls never fails,
//! and a thread creating its thread state (which CPython cannot survive
//! failing) never is. Allocations outside calls still count.
//!
//! The cap is per process (there is one interpreter): executors sharing a
//! process (tests) share it, the last one started setting it.

use pyo3::ffi;
use pyo3::prelude::*;
use std::ffi::c_void;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::sync::{Once, OnceLock};
use tracing::{info, warn};

/// Bytes counted since the install (may be negative: frees of older blocks).
static USED: AtomicIsize = AtomicIsize::new(0);
/// The cap in bytes; 0: none.
static CAP: AtomicUsize = AtomicUsize::new(0);
/// Calls in progress (armed).
static ARMED: AtomicUsize = AtomicUsize::new(0);
/// Whether an allocation was refused since the last [`arm`].
static REFUSED: AtomicBool = AtomicBool::new(false);
/// Whether the wrappers are installed and were seen counting.
static ENFORCED: AtomicBool = AtomicBool::new(false);

/// The allocators the wrappers delegate to. Kept in statics, not in the
/// allocators' `ctx`: a thread allocating raw memory without the GIL while
/// the raw allocator is swapped may see the new function with the old
/// context.
struct Originals {
    raw: ffi::PyMemAllocatorEx,
    arena: ffi::PyObjectArenaAllocator,
}

// SAFETY: the allocators are thread-safe C function pointers and contexts
// owned by CPython, written once before the wrappers are installed.
unsafe impl Send for Originals {}
unsafe impl Sync for Originals {}

static ORIGINALS: OnceLock<Originals> = OnceLock::new();

/// Sets the cap (`0`: none) and, the first time a cap is set, installs the
/// counting allocators. Call with the GIL held, before the interpreter runs
/// any function. If the interpreter's allocators cannot be wrapped safely
/// (debug hooks, a debug build, `tracemalloc` tracing, no
/// `malloc_usable_size`), logs why and leaves the cap unenforced.
pub(crate) fn install(py: Python<'_>, cap: usize) {
    CAP.store(cap, Relaxed);
    if cap == 0 {
        return;
    }
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| match wrap(py) {
        Ok(()) => {
            ENFORCED.store(true, Relaxed);
            info!(cap, "Python memory cap set (python_memory_bytes)");
        }
        Err(why) => {
            warn!(
                cap,
                "the Python memory cap (python_memory_bytes) is not enforced: {why}"
            );
        }
    });
}

/// The cap in bytes (0: none).
pub(crate) fn cap() -> usize {
    CAP.load(Relaxed)
}

/// Whether the cap is installed and counting.
pub fn enforced() -> bool {
    ENFORCED.load(Relaxed)
}

/// Bytes counted since the install.
pub fn used() -> isize {
    USED.load(Relaxed)
}

/// A call in progress: while one is, allocations past the cap are refused.
#[must_use = "the cap holds until the call is finished"]
pub(crate) struct Armed {
    done: bool,
}

/// Arms the cap for a call (and forgets earlier refusals).
pub(crate) fn arm() -> Armed {
    REFUSED.store(false, Relaxed);
    ARMED.fetch_add(1, Relaxed);
    Armed { done: false }
}

impl Armed {
    /// Disarms; returns whether an allocation was refused during the call.
    pub(crate) fn finish(mut self) -> bool {
        self.done = true;
        ARMED.fetch_sub(1, Relaxed);
        REFUSED.load(Relaxed)
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        if !self.done {
            ARMED.fetch_sub(1, Relaxed);
        }
    }
}

/// The error message of a call that went past the cap.
pub(crate) fn exceeded(function: &str) -> String {
    format!(
        "{function} exceeded the executor's Python memory cap of {} bytes \
         ([executor] python_memory_bytes)",
        cap()
    )
}

/// Whether `extra` more bytes may be taken now; records a refusal.
fn admit(extra: usize) -> bool {
    let cap = CAP.load(Relaxed);
    if cap == 0 || ARMED.load(Relaxed) == 0 {
        return true;
    }
    let extra = isize::try_from(extra).unwrap_or(isize::MAX);
    let cap = isize::try_from(cap).unwrap_or(isize::MAX);
    if USED.load(Relaxed).saturating_add(extra) <= cap {
        return true;
    }
    // A thread without the GIL may be creating its thread state
    // (`PyGILState_Ensure`), which CPython treats as fatal if it fails.
    // SAFETY: reads the runtime's GIL state; allocates nothing.
    if unsafe { ffi::PyGILState_Check() } == 0 {
        return true;
    }
    REFUSED.store(true, Relaxed);
    false
}

fn originals() -> &'static Originals {
    ORIGINALS
        .get()
        .expect("wrappers installed after the originals")
}

#[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
fn usable(p: *mut c_void) -> isize {
    // SAFETY: `p` is a live block of the raw domain, i.e. of `malloc` (the
    // install checks the raw allocator is the plain one).
    unsafe { libc::malloc_usable_size(p) as isize }
}

#[cfg(not(all(target_os = "linux", any(target_env = "gnu", target_env = "musl"))))]
fn usable(_p: *mut c_void) -> isize {
    0
}

extern "C" fn raw_malloc(_ctx: *mut c_void, size: usize) -> *mut c_void {
    let raw = &originals().raw;
    let Some(malloc) = raw.malloc else {
        return null_mut();
    };
    if !admit(size) {
        return null_mut();
    }
    let p = malloc(raw.ctx, size);
    if !p.is_null() {
        USED.fetch_add(usable(p), Relaxed);
    }
    p
}

extern "C" fn raw_calloc(_ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    let raw = &originals().raw;
    let Some(calloc) = raw.calloc else {
        return null_mut();
    };
    if !admit(nelem.saturating_mul(elsize)) {
        return null_mut();
    }
    let p = calloc(raw.ctx, nelem, elsize);
    if !p.is_null() {
        USED.fetch_add(usable(p), Relaxed);
    }
    p
}

extern "C" fn raw_realloc(_ctx: *mut c_void, p: *mut c_void, size: usize) -> *mut c_void {
    let raw = &originals().raw;
    let Some(realloc) = raw.realloc else {
        return null_mut();
    };
    let old = if p.is_null() { 0 } else { usable(p) };
    if size > old as usize && !admit(size - old as usize) {
        // As a failed realloc: the old block stays as it was.
        return null_mut();
    }
    let q = realloc(raw.ctx, p, size);
    if !q.is_null() {
        USED.fetch_add(usable(q) - old, Relaxed);
    }
    q
}

extern "C" fn raw_free(_ctx: *mut c_void, p: *mut c_void) {
    let raw = &originals().raw;
    if !p.is_null() {
        USED.fetch_sub(usable(p), Relaxed);
    }
    if let Some(free) = raw.free {
        free(raw.ctx, p);
    }
}

extern "C" fn arena_alloc(_ctx: *mut c_void, size: usize) -> *mut c_void {
    let arena = &originals().arena;
    let Some(alloc) = arena.alloc else {
        return null_mut();
    };
    if !admit(size) {
        return null_mut();
    }
    let p = alloc(arena.ctx, size);
    if !p.is_null() {
        USED.fetch_add(size as isize, Relaxed);
    }
    p
}

extern "C" fn arena_free(_ctx: *mut c_void, p: *mut c_void, size: usize) {
    let arena = &originals().arena;
    if !p.is_null() {
        USED.fetch_sub(size as isize, Relaxed);
    }
    if let Some(free) = arena.free {
        free(arena.ctx, p, size);
    }
}

/// Checks the raw allocator is plain `malloc` and wraps it and the arena
/// allocator; then checks an object allocation is counted.
fn wrap(py: Python<'_>) -> Result<(), String> {
    if cfg!(not(all(
        target_os = "linux",
        any(target_env = "gnu", target_env = "musl")
    ))) {
        return Err("it needs malloc_usable_size (Linux)".into());
    }
    unsafe_allocators(py).map_err(|e| format!("cannot inspect the interpreter: {e}"))??;
    let mut raw = ffi::PyMemAllocatorEx {
        ctx: null_mut(),
        malloc: None,
        calloc: None,
        realloc: None,
        free: None,
    };
    let mut arena = ffi::PyObjectArenaAllocator {
        ctx: null_mut(),
        alloc: None,
        free: None,
    };
    // SAFETY: the GIL is held; these read the current allocators.
    unsafe {
        ffi::PyMem_GetAllocator(ffi::PyMemAllocatorDomain::PYMEM_DOMAIN_RAW, &mut raw);
        ffi::PyObject_GetArenaAllocator(&mut arena);
    }
    if ORIGINALS.set(Originals { raw, arena }).is_err() {
        return Err("installed twice".into());
    }
    let mut raw = ffi::PyMemAllocatorEx {
        ctx: null_mut(),
        malloc: Some(raw_malloc),
        calloc: Some(raw_calloc),
        realloc: Some(raw_realloc),
        free: Some(raw_free),
    };
    let mut arena = ffi::PyObjectArenaAllocator {
        ctx: null_mut(),
        alloc: Some(arena_alloc),
        free: Some(arena_free),
    };
    // SAFETY: the GIL is held. The wrappers delegate every block to the
    // allocator that served it before (they hold no header), so blocks
    // allocated before the install are freed correctly; CPython allows
    // wrapping a running interpreter's allocators that way.
    unsafe {
        ffi::PyMem_SetAllocator(ffi::PyMemAllocatorDomain::PYMEM_DOMAIN_RAW, &mut raw);
        ffi::PyObject_SetArenaAllocator(&mut arena);
    }
    // An object allocation larger than pymalloc serves must reach the raw
    // domain (not so under PYTHONMALLOC=malloc or without pymalloc).
    const PROBE: usize = 1 << 20;
    let before = used();
    // SAFETY: the GIL is held; the block is freed at once.
    let grew = unsafe {
        let p = ffi::PyObject_Malloc(PROBE);
        let grew = used() - before;
        ffi::PyObject_Free(p);
        grew
    };
    if grew < PROBE as isize {
        CAP.store(0, Relaxed);
        return Err("object allocations do not reach the counted allocators \
                    (PYTHONMALLOC=malloc, or a Python built without pymalloc)"
            .into());
    }
    Ok(())
}

/// `Err(reason)` if the raw allocator may not be plain `malloc` (debug
/// hooks add headers, so `malloc_usable_size` would be wrong there) or
/// `tracemalloc` is tracing (stopping it would put back the allocators it
/// wrapped, dropping the counting ones).
fn unsafe_allocators(py: Python<'_>) -> PyResult<Result<(), String>> {
    let sys = py.import("sys")?;
    if sys.hasattr("gettotalrefcount")? {
        return Ok(Err("a debug build of Python (debug allocator hooks)".into()));
    }
    if sys.getattr("flags")?.getattr("dev_mode")?.is_truthy()? {
        return Ok(Err(
            "Python's development mode (debug allocator hooks)".into()
        ));
    }
    let malloc = std::env::var("PYTHONMALLOC").unwrap_or_default();
    if malloc.contains("debug") {
        return Ok(Err(format!(
            "PYTHONMALLOC={malloc} (debug allocator hooks)"
        )));
    }
    let tracing = py.import("_tracemalloc")?.call_method0("is_tracing")?;
    if tracing.is_truthy()? {
        return Ok(Err("tracemalloc is tracing".into()));
    }
    Ok(Ok(()))
}
