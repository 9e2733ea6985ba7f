//! The watchdog thread: at a call's deadline it raises an exception in the
//! worker thread, so that pure-Python code (an infinite loop included)
//! stops and the executor keeps serving.
//!
//! It waits without the GIL. To fire it attaches to the interpreter (a
//! looping function gives the GIL up every switch interval) and, under the
//! GIL, checks the call is still armed before `PyThreadState_SetAsyncExc`.
//! The worker disarms under the GIL too and then clears any exception still
//! pending for its thread, so an exception aimed at one call never lands in
//! the next. A function stuck in C with the GIL held also blocks the
//! watchdog; the I/O thread's grace check covers that case.

use pyo3::prelude::*;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Instant;
use tracing::debug;

#[derive(Default)]
struct State {
    armed: Option<(u64, Instant)>,
    fired: Option<u64>,
    /// When the watchdog wakes by itself (it waits for that deadline);
    /// `None`: it waits until told. A call armed to end at or after it
    /// needs no wake-up: the watchdog looks again then.
    wakes_at: Option<Instant>,
    stop: bool,
}

/// A handle to the watchdog of one worker thread; dropping it stops the
/// watchdog.
pub struct Watchdog {
    shared: Arc<(Mutex<State>, Condvar)>,
    next: u64,
}

impl Watchdog {
    /// Starts a watchdog for the calling thread (the worker), raising
    /// `exception` (a class) in it.
    pub fn start(exception: Py<PyAny>) -> Self {
        // SAFETY: returns the calling thread's identifier; no state involved.
        let thread_id = unsafe { pyo3::ffi::PyThread_get_thread_ident() };
        let shared: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let theirs = shared.clone();
        thread::Builder::new()
            .name("squall-watchdog".into())
            .spawn(move || watch(&theirs, thread_id, exception))
            .expect("spawning the watchdog thread");
        Watchdog { shared, next: 0 }
    }

    /// Arms the watchdog for a call ending at `deadline`.
    pub fn arm(&mut self, deadline: Instant) {
        self.next += 1;
        let (lock, wake) = &*self.shared;
        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
        state.armed = Some((self.next, deadline));
        // Calls mostly share one timeout, so each ends after the last one
        // armed: the watchdog, asleep until then, is left asleep (a
        // wake-up per call cost a context switch per call).
        if state.wakes_at.is_none_or(|at| at > deadline) {
            wake.notify_one();
        }
    }

    /// Disarms it; returns whether it fired for this call. Call with the
    /// GIL held (`_py`), then clear the thread's pending async exception.
    pub fn disarm(&mut self, _py: Python<'_>) -> bool {
        let (lock, _) = &*self.shared;
        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
        state.armed = None;
        state.fired == Some(self.next)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, wake) = &*self.shared;
        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
        state.stop = true;
        wake.notify_one();
    }
}

fn watch(shared: &(Mutex<State>, Condvar), thread_id: std::ffi::c_ulong, exception: Py<PyAny>) {
    let (lock, wake) = shared;
    loop {
        let due = {
            let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if state.stop {
                    return;
                }
                match state.armed {
                    Some((seq, deadline)) if state.fired != Some(seq) => {
                        let now = Instant::now();
                        if now >= deadline {
                            state.wakes_at = None;
                            break seq;
                        }
                        state.wakes_at = Some(deadline);
                        state = wake
                            .wait_timeout(state, deadline - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    _ => {
                        state.wakes_at = None;
                        state = wake.wait(state).unwrap_or_else(|e| e.into_inner());
                    }
                }
            }
        };
        // Never wait for the GIL while holding the lock: the worker takes
        // the lock while holding the GIL.
        Python::attach(|py| {
            let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
            if state.armed.map(|(seq, _)| seq) != Some(due) {
                return;
            }
            state.fired = Some(due);
            // SAFETY: the GIL is held; `exception` is a live class object.
            let n =
                unsafe { pyo3::ffi::PyThreadState_SetAsyncExc(thread_id as _, exception.as_ptr()) };
            debug!(threads = n, "raised the call timeout in the worker thread");
            let _ = py;
        });
    }
}
