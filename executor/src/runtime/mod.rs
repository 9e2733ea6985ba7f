//! [`Runtime`]: what runs a function's code. [`python::PythonRuntime`]
//! runs cloudpickled Python (under the memory cap of [`python_memory`]);
//! [`wasm::WasmRuntime`] runs WebAssembly modules
//! (compiled once per code generation, a fresh store per call, epoch
//! deadlines; its module docs state the calling convention).
//!
//! A runtime lives on the worker thread and runs one call at a time; the
//! worker keeps track of which code generation each runtime has loaded and
//! calls [`Runtime::load`] again when the code changed. A prewarm reaches a
//! runtime as a load-only job: [`Runtime::load`] and no invoke. A
//! function the runtime calls a coroutine function ([`Runtime::is_async`];
//! Python's `async def`) is started instead ([`Runtime::start`]) and ends
//! on the runtime's event loop, the worker free meanwhile.

pub mod python;
mod python_async;
pub mod python_memory;
pub mod wasm;
mod watchdog;

use crate::job::CallEnv;
use crate::route::CacheRoute;
use crate::worker::{Mailbox, Outlet};
use anna::protocol::compute::{self, CallError, FunctionCode};
use std::sync::Arc;

/// What a running function reaches besides its arguments, whatever its
/// runtime: the node's cache (and the running call, through the route),
/// its mailbox (`user.recv`) and the I/O thread (`user.send`). One per
/// worker, shared by its runtimes.
pub struct Ports {
    pub route: CacheRoute,
    pub mailbox: Arc<Mailbox>,
    pub outlet: Arc<Outlet>,
}

/// One call's input.
#[derive(Clone, Copy, Debug)]
pub struct CallInput<'a> {
    /// The caller's arguments in the runtime's encoding (empty: none).
    pub payload: &'a [u8],
    /// Upstream results, in the plan's order, passed before the arguments.
    pub upstream: &'a [Vec<u8>],
    /// The call's surroundings; `env.deadline_ms` bounds the call.
    pub env: &'a CallEnv,
}

/// What a runtime saw of a call besides its result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallExtras {
    /// What it printed.
    pub output: String,
    /// Reads the runtime's kept values answered, and their bytes.
    pub kept_reads: u32,
    pub kept_bytes: u64,
}

/// Runs functions of one kind of code.
pub trait Runtime {
    /// The kind of [`FunctionCode`] it runs.
    fn kind(&self) -> compute::Runtime;

    /// Loads (or reloads) `function` from `code`, keeping it warm until
    /// [`Runtime::unload`]. May run user code (a class's initialiser),
    /// bounded by `env.deadline_ms`.
    fn load(&mut self, function: &str, code: &FunctionCode, env: &CallEnv)
        -> Result<(), CallError>;

    /// Calls a loaded function; its result is in the runtime's encoding.
    /// Returns a `Timeout` error if the call ran past its deadline.
    fn invoke(&mut self, function: &str, input: CallInput<'_>) -> Result<Vec<u8>, CallError>;

    /// Whether loaded `function` is a coroutine function, whose calls go
    /// through [`Runtime::start`].
    fn is_async(&self, _function: &str) -> bool {
        false
    }

    /// Starts a call of a loaded coroutine function and returns: its
    /// [`crate::job::JobDone`], numbered `seq`, reaches the I/O thread
    /// later through the worker's outlet. `Err`: it did not start, and
    /// the call fails so.
    fn start(&mut self, function: &str, _input: CallInput<'_>, _seq: u64) -> Result<(), CallError> {
        Err(crate::job::call_error(
            compute::CallErrorKind::BadFunction,
            "BadFunction",
            format!("{function} is not a coroutine function"),
            function,
        ))
    }

    /// Drops a loaded function.
    fn unload(&mut self, function: &str);

    /// Drops kept referenced values of these keys (they changed). Runtimes
    /// that keep none ignore it.
    fn forget_values(&mut self, _keys: &[String]) {}

    /// What the last call printed (stdout, stderr, `logging`) and read
    /// from values the runtime keeps, taken; nothing if the runtime
    /// captures nothing.
    fn take_output(&mut self) -> CallExtras {
        CallExtras::default()
    }
}
