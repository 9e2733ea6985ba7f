//! The executor of the compute tier: runs registered Python functions in an
//! embedded CPython, and WebAssembly functions with wasmtime, next to the
//! node's cache.
//!
//! # Layout
//!
//! - [`config`]: [`ExecutorConfig`], the `[executor]` section.
//! - [`core`]: [`ExecutorCore`], the executor's bookkeeping as a pure
//!   [`anna::role::Role`]: invokes, triggers and fan-in, the queue, code
//!   fetches and the warm set, prewarms, results, reports. Unit-tested
//!   with an explicit `now`.
//! - [`job`]: the [`Job`] the core hands the worker (a call, or only the
//!   loading of code for a prewarm) and the [`JobDone`] that comes back.
//! - [`runtime`]: the [`Runtime`] trait (load code, invoke with a deadline)
//!   and its two implementations, Python and WebAssembly
//!   ([`runtime::wasm`] states the WebAssembly calling convention).
//! - [`route`]: [`CacheRoute`], the one way a running function (Python or
//!   WebAssembly) reaches the node's cache, reading and writing at its
//!   call's consistency level.
//! - [`worker`]: the worker thread that runs jobs one after another, the
//!   mailbox of `user.recv`.
//! - [`driver`]: [`run`], the I/O thread.
//!
//! # Threads
//!
//! ```text
//!  sockets ──► I/O thread (driver: ExecutorCore) ──jobs──► worker thread (Runtime, GIL)
//!              ▲   never touches the GIL            ◄─done / user sends (channel + inproc wake)
//!              │                                         ▲
//!              └─ reports keep flowing while a           │ async exception at the deadline
//!                 function runs                 watchdog thread
//!
//!  worker ──starts coroutines──► event-loop thread (asyncio) ──done (the worker's outlet)──► I/O thread
//! ```
//!
//! One function runs at a time: the GIL makes a process per core the honest
//! unit of Python work, so a node runs several executor processes. The
//! worker holds the next job (and more while jobs are short, see
//! [`core::MIN_HANDED`]) before its current one ends, so it goes from job
//! to job without waiting for the I/O thread. A
//! coroutine function (`async def`) is the exception: the worker starts
//! its call on the event loop and takes the next job, and up to
//! [`ExecutorConfig::max_async_calls`] coroutines await there at once
//! (see [`core`] and `runtime::python_async`).
//!
//! # Timeouts and failures
//!
//! Every call carries its plan's deadline. At the deadline the watchdog
//! raises an exception in the worker thread (`PyThreadState_SetAsyncExc`):
//! pure-Python code, an infinite loop included, ends with a `Timeout` error
//! and the executor keeps serving. A function stuck in C code past the
//! deadline plus [`ExecutorConfig::grace`] cannot be interrupted: the core
//! sends its caller the `Timeout` error and [`run`] returns
//! [`ExecutorError::Stuck`], on which the process must exit (non-zero); the
//! schedulers see its reports stop and re-plan or fail its calls. A crash
//! of the interpreter (a segfault) kills the process the same way and is
//! detected the same way. An exception in a function only fails that call.
//! An executor asked to stop (the `stop` flag of [`run`]; SIGTERM or SIGINT
//! in `squall executor`) says so first: `ExecutorLeaving` to every
//! scheduler, which re-plans its calls at once.
//!
//! WebAssembly functions need no watchdog: each call's store carries an
//! epoch deadline (the engine's epoch advances every few milliseconds), so
//! a runaway loop traps at the deadline with a `Timeout` error.

pub mod config;
pub mod core;
pub mod driver;
pub mod job;
pub mod route;
pub mod runtime;
pub mod worker;

pub use crate::core::{Counters, ExecutorCore, Identity};
pub use config::{ConfigError, ExecutorConfig};
pub use driver::{run, ExecutorError, ExecutorOptions};
pub use job::{CallEnv, Job, JobDone};
pub use route::CacheRoute;
pub use runtime::Runtime;
