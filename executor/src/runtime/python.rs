//! The Python runtime: cloudpickled functions in the embedded CPython.
//!
//! Its Python side is `executor/python/squall_runtime.py`, compiled into
//! the binary (so the executor and its runtime never disagree) and loaded as
//! module `_squall_runtime`. Functions reach the executor through the native
//! module `_squall_executor`, which `squall.user` wraps: `get`, `put` and
//! `delete` go through the worker's [`crate::route::CacheRoute`] (the
//! route WebAssembly's host imports take too), and `executor_id`,
//! `cache_address`, `executor_of`, `deadline`, `send`, `recv`, `version`,
//! `kept_fresh` and `consistency` answer from the running call. Its
//! functions find the worker's [`Ports`] in a thread-local set around
//! every call, or a coroutine's own in its context (see
//! [`super::python_async`]).

use super::python_async::{context_ports, current_call_var, AsyncCall};
use super::python_memory;
use super::watchdog::Watchdog;
use super::{CallExtras, CallInput, Ports, Runtime};
use crate::job::{call_error, CallEnv};
use crate::worker::WorkerEvent;
use anna::protocol::compute::{self, CallError, CallErrorKind, FunctionCode};
use anna::protocol::Address;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use squall_py::parse_ack;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::info;

const RUNTIME_SOURCE: &str = include_str!("../../python/squall_runtime.py");
const RUNTIME_MODULE: &str = "_squall_runtime";
const NATIVE_MODULE: &str = "_squall_executor";

thread_local! {
    static PORTS: RefCell<Option<Arc<Ports>>> = const { RefCell::new(None) };
}

fn outside() -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err(
        "squall.user works only inside a function running on an executor",
    )
}

/// The running call's ports: the worker's, inside a call it runs; a
/// coroutine's own, inside its task (or a thread it handed a request to).
fn ports() -> PyResult<Arc<Ports>> {
    (PORTS.with(|p| p.borrow().clone()))
        .or_else(context_ports)
        .ok_or_else(outside)
}

/// `f` of the running call's surroundings.
fn with_call<T>(f: impl FnOnce(&CallEnv) -> PyResult<T>) -> PyResult<T> {
    let call = ports()?.route.call().ok_or_else(outside)?;
    f(&call)
}

/// Runs `f` with the worker's ports set for the native module's functions
/// (and so for `squall.user`), cleared afterwards. The WebAssembly runtime
/// sets them too: its arguments are converted, and references resolved,
/// in Python.
pub(crate) fn with_ports<T>(ports: &Arc<Ports>, f: impl FnOnce() -> T) -> T {
    let before = PORTS.with(|p| p.borrow_mut().replace(ports.clone()));
    let result = f();
    PORTS.with(|p| *p.borrow_mut() = before);
    result
}

pub(crate) fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    since.as_millis() as u64
}

/// The value of `key` read through the node's cache at the call's
/// consistency level (see [`crate::route`]); `None` if absent. `raw`:
/// last-writer-wins values as `squall.Lww` (bytes and timestamp), not
/// unpickled.
#[pyfunction]
#[pyo3(signature = (key, raw=false))]
fn get(py: Python<'_>, key: &str, raw: bool) -> PyResult<Py<PyAny>> {
    let store = ports()?.route.store()?;
    store.get(py, key, raw, None, true)
}

/// The value of `key` for a `Reference` argument, read as [`get`] reads
/// it: a last-writer-wins value as `(buffer, (wall_ms, logical, writer))`
/// — its bytes as a read-only buffer where they lie (the cache's file
/// mapped, or the frame), not copied into a Python `bytes` — any other
/// value as `get(key, raw=True)` gives it; `None` if absent.
#[pyfunction]
fn get_reference(py: Python<'_>, key: &str) -> PyResult<Py<PyAny>> {
    let store = ports()?.route.store()?;
    match store.get_value(py, key, None, true)? {
        None => Ok(py.None()),
        Some(anna::lattice::LatticeValue::Lww(l)) => {
            let ts = l.timestamp();
            let stamp = (ts.wall_ms, ts.logical, ts.writer.0);
            let buffer = squall_py::values::buffer(py, l.bytes())?;
            Ok((buffer, stamp).into_pyobject(py)?.into_any().unbind())
        }
        Some(value) => Ok(squall_py::values::from_lattice(py, &value, true)?.unbind()),
    }
}

/// Merges `value` into `key` through the node's cache, acknowledged at
/// `ack`, as the invocation's writer.
#[pyfunction]
#[pyo3(signature = (key, value, ack=None))]
fn put(
    py: Python<'_>,
    key: &str,
    value: &Bound<'_, PyAny>,
    ack: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let ack = parse_ack(ack)?;
    ports()?.route.store()?.put(py, key, value, ack)
}

/// Deletes `key` through the node's cache, acknowledged at `ack`.
#[pyfunction]
#[pyo3(signature = (key, ack=None))]
fn delete(py: Python<'_>, key: &str, ack: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
    let ack = parse_ack(ack)?;
    ports()?.route.store()?.delete(py, key, ack)
}

/// The executor's address (its id).
#[pyfunction]
fn executor_id() -> PyResult<String> {
    with_call(|c| Ok(c.executor.0.clone()))
}

/// The node's cache address.
#[pyfunction]
fn cache_address() -> PyResult<String> {
    with_call(|c| Ok(c.cache.0.clone()))
}

/// The executor of function `name` in the current call, if it is part of it.
#[pyfunction]
fn executor_of(name: &str) -> PyResult<Option<String>> {
    with_call(|c| {
        Ok((c.peers.iter())
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.0.clone()))
    })
}

/// The current call's deadline, in seconds since the Unix epoch.
#[pyfunction]
fn deadline() -> PyResult<f64> {
    with_call(|c| Ok(c.deadline_ms as f64 / 1000.0))
}

/// The version of `key` the caller's session wrote (encoded), or `None`.
#[pyfunction]
fn version(py: Python<'_>, key: &str) -> PyResult<Option<Py<PyBytes>>> {
    with_call(|c| {
        Ok(c.session.get(key).map(|w| {
            let bytes = anna::protocol::compute::encode_value(w);
            PyBytes::new(py, &bytes).unbind()
        }))
    })
}

/// Whether a kept last-writer-wins value of `key` written at `timestamp`
/// (`(wall_ms, logical, writer)`) is at least the version the caller's
/// session wrote: true without such a version; false for a version that is
/// a delete or of another type (those are read again).
#[pyfunction]
fn kept_fresh(key: &str, timestamp: (u64, u32, u64)) -> PyResult<bool> {
    let (wall_ms, logical, writer) = timestamp;
    let kept = anna::lattice::Timestamp {
        wall_ms,
        logical,
        writer: anna::lattice::WriterId(writer),
    };
    with_call(|c| {
        Ok(match c.session.get(key) {
            None => true,
            Some(w) => match (w.deleted_at(), w.value()) {
                (None, Some(anna::lattice::LatticeValue::Lww(l))) => kept >= l.timestamp(),
                _ => false,
            },
        })
    })
}

/// The call's consistency level: `"lww"`, `"repeatable_read"` or `"causal"`.
#[pyfunction]
fn consistency() -> PyResult<&'static str> {
    with_call(|c| Ok(c.consistency.name()))
}

/// Sends `payload` to the executor at `to` as a user message.
#[pyfunction]
fn send(to: String, payload: Vec<u8>) -> PyResult<()> {
    ports()?.outlet.send(WorkerEvent::Send {
        to: Address(to),
        payload,
    });
    Ok(())
}

/// The next user message `(from, payload)`, waiting at most `timeout_s`
/// (and never past the call's deadline); `None` if none came.
#[pyfunction]
#[pyo3(signature = (timeout_s=None))]
fn recv(py: Python<'_>, timeout_s: Option<f64>) -> PyResult<Option<(String, Py<PyBytes>)>> {
    let ports = ports()?;
    let deadline_ms = with_call(|c| Ok(c.deadline_ms))?;
    let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms()));
    let wait = match timeout_s {
        Some(t) if t.is_finite() && t >= 0.0 => left.min(Duration::from_secs_f64(t)),
        _ => left,
    };
    let got = py.detach(|| ports.mailbox.recv(wait));
    Ok(got.map(|(from, payload)| (from.0, PyBytes::new(py, &payload).unbind())))
}

fn native_module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let m = PyModule::new(py, NATIVE_MODULE)?;
    m.add_function(wrap_pyfunction!(get, &m)?)?;
    m.add_function(wrap_pyfunction!(get_reference, &m)?)?;
    m.add_function(wrap_pyfunction!(put, &m)?)?;
    m.add_function(wrap_pyfunction!(delete, &m)?)?;
    m.add_function(wrap_pyfunction!(executor_id, &m)?)?;
    m.add_function(wrap_pyfunction!(cache_address, &m)?)?;
    m.add_function(wrap_pyfunction!(executor_of, &m)?)?;
    m.add_function(wrap_pyfunction!(deadline, &m)?)?;
    m.add_function(wrap_pyfunction!(send, &m)?)?;
    m.add_function(wrap_pyfunction!(recv, &m)?)?;
    m.add_function(wrap_pyfunction!(version, &m)?)?;
    m.add_function(wrap_pyfunction!(kept_fresh, &m)?)?;
    m.add_function(wrap_pyfunction!(consistency, &m)?)?;
    m.add_class::<AsyncCall>()?;
    m.add("current_call", current_call_var(py)?)?;
    Ok(m)
}

/// Where the interpreter looks for packages.
#[derive(Clone, Debug, Default)]
pub struct PythonPaths {
    /// Virtualenv roots to try, first found wins (its
    /// `lib/pythonX.Y/site-packages`).
    pub venvs: Vec<PathBuf>,
    /// Extra site-packages directories.
    pub extra: Vec<PathBuf>,
}

impl PythonPaths {
    /// `$VIRTUAL_ENV`, else `.venv` in the working directory or the nearest
    /// ancestor that has one; then `extra`.
    pub fn discover(extra: Vec<PathBuf>) -> Self {
        let mut venvs = Vec::new();
        if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
            venvs.push(PathBuf::from(v));
        }
        if let Ok(cwd) = std::env::current_dir() {
            if let Some(dir) = cwd.ancestors().find(|d| d.join(".venv").is_dir()) {
                venvs.push(dir.join(".venv"));
            }
        }
        PythonPaths { venvs, extra }
    }
}

fn strings(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}

/// Runs cloudpickled Python functions; lives on the worker thread.
pub struct PythonRuntime {
    runtime: Py<PyModule>,
    timeout_class: Py<PyAny>,
    functions: HashMap<String, Py<PyAny>>,
    /// The loaded functions that are coroutine functions.
    coroutine_functions: HashSet<String>,
    watchdog: Watchdog,
    thread_id: std::ffi::c_ulong,
    ports: Arc<Ports>,
}

impl PythonRuntime {
    /// The loaded callable of `function`, or `BadFunction`.
    fn loaded(&self, function: &str) -> Result<Py<PyAny>, CallError> {
        Python::attach(|py| self.functions.get(function).map(|f| f.clone_ref(py))).ok_or_else(
            || {
                call_error(
                    CallErrorKind::BadFunction,
                    "BadFunction",
                    format!("{function} is not loaded"),
                    function,
                )
            },
        )
    }

    /// Sets the interpreter up on the calling (worker) thread: the memory
    /// cap (`python_memory_bytes`, 0: none; see [`python_memory`]), the
    /// paths, the native module, the runtime module, a `cloudpickle` import
    /// check.
    pub fn start(
        paths: &PythonPaths,
        max_value_bytes: usize,
        python_memory_bytes: usize,
        ports: Arc<Ports>,
    ) -> Result<Self, String> {
        // Executors sharing a process (tests) set the modules up one at a
        // time, taking the lock before the GIL so neither waits on the other
        // while holding one: a half-executed runtime module is never seen.
        static SETUP: Mutex<()> = Mutex::new(());
        let _setup = SETUP.lock().unwrap_or_else(|e| e.into_inner());
        Python::attach(|py| {
            python_memory::install(py, python_memory_bytes);
            let describe = |e: PyErr| format!("embedded Python: {e}");
            let sys_modules = py.import("sys").map_err(describe)?.getattr("modules");
            let sys_modules = sys_modules.map_err(describe)?;
            if !sys_modules.contains(NATIVE_MODULE).map_err(describe)? {
                let native = native_module(py).map_err(describe)?;
                sys_modules
                    .set_item(NATIVE_MODULE, native)
                    .map_err(describe)?;
            }
            let runtime = if sys_modules.contains(RUNTIME_MODULE).map_err(describe)? {
                py.import(RUNTIME_MODULE).map_err(describe)?
            } else {
                let source = CString::new(RUNTIME_SOURCE).map_err(|e| e.to_string())?;
                PyModule::from_code(py, &source, c"squall_runtime.py", c"_squall_runtime")
                    .map_err(describe)?
            };
            let info = runtime
                .call_method1("setup", (strings(&paths.venvs), strings(&paths.extra)))
                .map_err(describe)?;
            let text = |k: &str| -> String {
                info.get_item(k)
                    .and_then(|v| v.str().map(|s| s.to_string()))
                    .unwrap_or_default()
            };
            info!(
                python = %text("version"),
                prefix = %text("prefix"),
                paths = %text("paths"),
                cloudpickle = %text("cloudpickle"),
                "embedded Python ready"
            );
            runtime
                .call_method1("configure", (max_value_bytes,))
                .map_err(describe)?;
            let timeout_class = runtime.getattr("CallTimeout").map_err(describe)?.unbind();
            Ok(PythonRuntime {
                watchdog: Watchdog::start(timeout_class.clone_ref(py)),
                // SAFETY: returns the calling thread's identifier.
                thread_id: unsafe { pyo3::ffi::PyThread_get_thread_ident() },
                runtime: runtime.unbind(),
                timeout_class,
                functions: HashMap::new(),
                coroutine_functions: HashSet::new(),
                ports,
            })
        })
    }

    /// Runs `f` with the watchdog armed for `deadline_ms`, the call's
    /// context set, and the GIL held; afterwards no timeout exception is
    /// left pending for this thread.
    fn guarded<T>(&mut self, env: &CallEnv, f: impl FnOnce(Python<'_>, &Self) -> T) -> (T, bool) {
        let ports = self.ports.clone();
        self.guarded_with(&ports, env, f)
    }

    /// [`PythonRuntime::guarded`] with `ports` as the call's.
    fn guarded_with<T>(
        &mut self,
        ports: &Arc<Ports>,
        env: &CallEnv,
        f: impl FnOnce(Python<'_>, &Self) -> T,
    ) -> (T, bool) {
        let left = Duration::from_millis(env.deadline_ms.saturating_sub(now_ms()));
        with_ports(ports, || {
            Python::attach(|py| {
                self.watchdog.arm(Instant::now() + left);
                let value = f(py, self);
                let fired = self.watchdog.disarm(py);
                // SAFETY: GIL held; a null exception clears a pending one.
                unsafe {
                    pyo3::ffi::PyThreadState_SetAsyncExc(self.thread_id as _, std::ptr::null_mut());
                }
                (value, fired)
            })
        })
    }

    /// Reads `("ok", value)` or `("error", kind, type, message, traceback)`.
    fn outcome(
        &self,
        py: Python<'_>,
        function: &str,
        result: PyResult<Bound<'_, PyAny>>,
    ) -> Result<Py<PyAny>, CallError> {
        let tuple = match result {
            Ok(tuple) => tuple,
            Err(e) if e.is_instance(py, self.timeout_class.bind(py)) => {
                return Err(timeout(function))
            }
            Err(e) => {
                let type_name = (e.get_type(py).name())
                    .map(|n| n.to_string())
                    .unwrap_or_else(|_| "Exception".into());
                return Err(call_error(
                    CallErrorKind::Remote,
                    &type_name,
                    e.value(py).to_string(),
                    function,
                ));
            }
        };
        read_outcome(function, &tuple)
    }
}

/// Reads a runtime module's answer, `("ok", value)` or `("error", kind,
/// type, message, traceback)`, as the call's outcome.
pub(crate) fn read_outcome(
    function: &str,
    tuple: &Bound<'_, PyAny>,
) -> Result<Py<PyAny>, CallError> {
    let read = |t: &Bound<'_, PyAny>| -> PyResult<Result<Py<PyAny>, CallError>> {
        let t = t.cast::<PyTuple>()?;
        if t.get_item(0)?.extract::<String>()? == "ok" {
            return Ok(Ok(t.get_item(1)?.unbind()));
        }
        let kind = match t.get_item(1)?.extract::<String>()?.as_str() {
            "BadArguments" => CallErrorKind::BadArguments,
            "BadFunction" => CallErrorKind::BadFunction,
            "Timeout" => CallErrorKind::Timeout,
            _ => CallErrorKind::Remote,
        };
        Ok(Err(CallError {
            kind,
            type_name: t.get_item(2)?.extract()?,
            message: t.get_item(3)?.extract()?,
            traceback: t.get_item(4)?.extract()?,
            function: Some(function.to_string()),
        }))
    };
    read(tuple).unwrap_or_else(|e| {
        Err(call_error(
            CallErrorKind::Remote,
            "RuntimeError",
            format!("the executor's runtime answered oddly: {e}"),
            function,
        ))
    })
}

/// After a call during which the memory cap refused an allocation: collects
/// what the call left in reference cycles (a frame and the exception that
/// unwound it, say), so the next call starts below the cap; and a
/// `MemoryError` of the call becomes an error naming the cap.
fn over_cap<T>(
    function: &str,
    outcome: Result<T, CallError>,
    refused: bool,
) -> Result<T, CallError> {
    if !refused {
        return outcome;
    }
    Python::attach(|py| {
        if let Err(e) = py.import("gc").and_then(|gc| gc.call_method0("collect")) {
            tracing::warn!(error = %e, "collecting garbage after a refused allocation failed");
        }
    });
    match outcome {
        // A refused allocation deep in the interpreter (a frame pushed on
        // a full data stack, say) can surface as CPython's "error return
        // without exception set" SystemError instead of MemoryError.
        Err(mut e) if e.type_name == "MemoryError" || e.type_name == "SystemError" => {
            e.type_name = "MemoryError".to_string();
            tracing::info!(
                function,
                cap = python_memory::cap(),
                "a call went past the Python memory cap"
            );
            e.kind = CallErrorKind::Remote;
            e.message = python_memory::exceeded(function);
            Err(e)
        }
        other => other,
    }
}

pub(crate) fn timeout(function: &str) -> CallError {
    call_error(
        CallErrorKind::Timeout,
        "Timeout",
        format!("{function} did not finish before the call's deadline"),
        function,
    )
}

impl Runtime for PythonRuntime {
    fn kind(&self) -> compute::Runtime {
        compute::Runtime::Python
    }

    fn load(
        &mut self,
        function: &str,
        code: &FunctionCode,
        env: &CallEnv,
    ) -> Result<(), CallError> {
        let ((loaded, refused), fired) = self.guarded(env, |py, me| {
            let runtime = me.runtime.bind(py);
            let bytes = PyBytes::new(py, &code.code);
            let armed = python_memory::arm();
            let result = runtime.call_method1("load", (bytes, code.is_class, function));
            let refused = armed.finish();
            (me.outcome(py, function, result), refused)
        });
        match over_cap(function, loaded, refused) {
            Ok(callable) => {
                let coroutine = Python::attach(|py| {
                    (self.runtime.bind(py))
                        .call_method1("is_coroutine_function", (callable.bind(py),))
                        .and_then(|b| b.extract::<bool>())
                        .unwrap_or(false)
                });
                if coroutine {
                    self.coroutine_functions.insert(function.to_string());
                } else {
                    self.coroutine_functions.remove(function);
                }
                self.functions.insert(function.to_string(), callable);
                Ok(())
            }
            Err(_) if fired => Err(timeout(function)),
            Err(e) => Err(e),
        }
    }

    fn invoke(&mut self, function: &str, input: CallInput<'_>) -> Result<Vec<u8>, CallError> {
        let callable = self.loaded(function)?;
        let (result, fired) = self.guarded(input.env, |py, me| {
            let upstream: Vec<Bound<'_, PyBytes>> =
                input.upstream.iter().map(|u| PyBytes::new(py, u)).collect();
            let kwargs = PyDict::new(py);
            let _ = kwargs.set_item("call", input.env.call.to_string());
            if let Some(instance) = &input.env.instance {
                let _ = kwargs.set_item("instance", instance);
            }
            let args = (
                callable.bind(py),
                PyBytes::new(py, input.payload),
                PyList::new(py, upstream).ok(),
                input.env.deadline_ms as f64 / 1000.0,
                function,
            );
            let armed = python_memory::arm();
            let result = me
                .runtime
                .bind(py)
                .call_method("invoke", args, Some(&kwargs));
            let refused = armed.finish();
            let result = me.outcome(py, function, result).and_then(|value| {
                (value.bind(py).extract::<Vec<u8>>()).map_err(|e| {
                    call_error(CallErrorKind::Remote, "TypeError", e.to_string(), function)
                })
            });
            (result, refused)
        });
        let (result, refused) = result;
        match over_cap(function, result, refused) {
            Err(e) if fired && e.kind == CallErrorKind::Remote => Err(timeout(function)),
            other => other,
        }
    }

    fn is_async(&self, function: &str) -> bool {
        self.coroutine_functions.contains(function)
    }

    fn start(&mut self, function: &str, input: CallInput<'_>, seq: u64) -> Result<(), CallError> {
        let callable = self.loaded(function)?;
        let ports = Arc::new(Ports {
            route: Default::default(),
            mailbox: self.ports.mailbox.clone(),
            outlet: self.ports.outlet.clone(),
        });
        ports.route.begin(input.env);
        // The arguments are made ready here, under the watchdog, reading
        // references through the call's own route.
        let (result, fired) = self.guarded_with(&ports.clone(), input.env, |py, me| {
            let call = Py::new(
                py,
                AsyncCall {
                    seq,
                    function: function.to_string(),
                    ports,
                },
            );
            let call = match call {
                Ok(call) => call,
                Err(e) => {
                    return Err(call_error(
                        CallErrorKind::Remote,
                        "RuntimeError",
                        e.to_string(),
                        function,
                    ))
                }
            };
            let upstream: Vec<Bound<'_, PyBytes>> =
                input.upstream.iter().map(|u| PyBytes::new(py, u)).collect();
            let args = (
                call,
                callable.bind(py),
                PyBytes::new(py, input.payload),
                PyList::new(py, upstream).ok(),
                input.env.deadline_ms as f64 / 1000.0,
                function,
                input.env.call.to_string(),
            );
            let result = me.runtime.bind(py).call_method1("start", args);
            me.outcome(py, function, result).map(drop)
        });
        match result {
            Err(e) if fired && e.kind == CallErrorKind::Remote => Err(timeout(function)),
            other => other,
        }
    }

    fn unload(&mut self, function: &str) {
        self.coroutine_functions.remove(function);
        if let Some(f) = self.functions.remove(function) {
            Python::attach(|_py| drop(f));
        }
    }

    fn take_output(&mut self) -> CallExtras {
        Python::attach(|py| {
            let taken = self.runtime.bind(py).call_method0("take_output");
            let taken = taken.and_then(|o| o.extract::<(String, u32, u64)>());
            match taken {
                Ok((output, kept_reads, kept_bytes)) => CallExtras {
                    output,
                    kept_reads,
                    kept_bytes,
                },
                Err(e) => {
                    tracing::warn!(error = %e, "taking a call's output failed");
                    CallExtras::default()
                }
            }
        })
    }

    fn forget_values(&mut self, keys: &[String]) {
        Python::attach(|py| {
            let runtime = self.runtime.bind(py);
            if let Err(e) = runtime.call_method1("invalidate", (keys.to_vec(),)) {
                tracing::warn!(error = %e, "dropping kept values failed");
            }
        });
    }
}
