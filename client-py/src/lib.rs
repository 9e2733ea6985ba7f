//! The native half of the `squall` Python package: `squall._native`.
//!
//! Only plumbing lives here; the API users see is the pure-Python package
//! (`client-py/python/squall/`), which imports this module lazily.
//!
//! # Layout
//!
//! - `lib.rs`: the module: [`Client`], [`DirectKvs`] and the record helpers
//!   (`encode_function`, `encode_dag`, `encode_traffic`, keys), registered
//!   with Python.
//! - [`values`]: the one conversion between `LatticeValue` and Python
//!   objects (pickled last-writer-wins, or the `squall.lattices` classes).
//! - [`store`]: get/put/delete of Python values over any KVS endpoint,
//!   with the GIL released while waiting.
//! - [`direct`]: one endpoint, plain request/response (the executor's
//!   cache), and user messages between executors.
//! - calls and DAG calls to schedulers, and their results:
//!   `squall_transport::calls`, shared with the HTTP gateway.
//! - [`errors`]: Rust errors as `squall.errors` exceptions.
//! - [`wasm`]: WebAssembly modules for `register_wasm`: WAT to binary,
//!   validation, the calling convention's exports and imports.

mod wasm;

use anna::client::ClientConfig;
use anna::lattice::LatticeValue;
use anna::protocol::compute::{
    self, CallArgs, CallId, CallOutcome, CallOutput, CallTrace, Dag, FunctionCode, Runtime,
    Traffic, ValueKind,
};
use anna::protocol::Address;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use squall_py::{errors, lock, parse_ack, values, Store};
use squall_transport::calls;
use squall_transport::Endpoint;
use std::time::Duration;

fn seconds(timeout_s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(timeout_s)
        .map_err(|_| PyValueError::new_err(format!("bad timeout {timeout_s}")))
}

fn call_failed(py: Python<'_>, message: String) -> PyErr {
    errors::squall_error(py, "SquallError", message)
}

/// The `squall.errors` exception for a call error of `kind` (a
/// `CallErrorKind` name), raised here rather than by a scheduler.
fn call_error(py: Python<'_>, kind: &str, message: String, function: &str) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let errors = py.import("squall.errors")?;
        let exc =
            errors
                .getattr("call_error")?
                .call1((kind, kind, message.clone(), "", function))?;
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|e| e)
}

/// A call that could not be sent, as its exception.
fn not_sent(py: Python<'_>, function: &str, e: calls::SendError) -> PyErr {
    match e {
        calls::SendError::Unavailable(m) => call_error(py, "Unavailable", m, function),
        calls::SendError::Failed(m) => call_failed(py, m),
    }
}

/// Refuses arguments over `[limits] max_value_bytes` at once (the
/// default: this client reads no config file; the cluster enforces its
/// own on arrival too), with `squall.TooLargeError` naming both sizes.
fn check_args(py: Python<'_>, function: &str, args: &CallArgs) -> PyResult<()> {
    let limit = anna::config::Limits::default().max_value_bytes;
    if args.payload.len() <= limit {
        return Ok(());
    }
    let message = format!(
        "arguments of `{function}` are {} bytes, over the limit of {limit} bytes \
         ([limits] max_value_bytes): pass large values by reference (put them, \
         then give a squall.Reference)",
        args.payload.len()
    );
    Err(call_error(py, "TooLarge", message, function))
}

/// A client of a Squall cluster: the KVS through its routers, and calls
/// through its schedulers. Use `squall.connect()`, which wraps this.
#[pyclass(module = "squall._native", frozen)]
struct Client {
    kvs: Store<squall_transport::Client>,
    /// `None` without schedulers: a KVS-only client keeps no reply socket.
    calls: Option<calls::Calls>,
}

const NO_SCHEDULER: &str = "no scheduler known: the cluster record lists no `schedulers` \
     (start the compute tier, e.g. `squall up --compute-nodes 1`) and none was given \
     to connect(scheduler=...)";

impl Client {
    fn calls(&self, py: Python<'_>) -> PyResult<&calls::Calls> {
        self.calls
            .as_ref()
            .ok_or_else(|| call_failed(py, NO_SCHEDULER.to_string()))
    }
}

#[pymethods]
impl Client {
    /// Connects to the routers `routers` (and, for calls, the schedulers
    /// `schedulers`). `timeout_s` bounds every KVS operation. Answers come
    /// to free ports on `bind_host`.
    #[new]
    #[pyo3(signature = (routers, schedulers, timeout_s = 5.0, bind_host = "127.0.0.1"))]
    fn new(
        py: Python<'_>,
        routers: Vec<String>,
        schedulers: Vec<String>,
        timeout_s: f64,
        bind_host: &str,
    ) -> PyResult<Self> {
        let timeout = seconds(timeout_s)?;
        let config = ClientConfig {
            op_timeout: timeout,
            attempt_timeout: ClientConfig::default().attempt_timeout.min(timeout),
            ..ClientConfig::default()
        };
        let bind = Address(format!("tcp://{bind_host}:*"));
        let routers = routers.into_iter().map(Address).collect();
        let net = squall_transport::Client::connect_from(&bind, routers, config)
            .map_err(errors::KvsFailure)?;
        let writer = net.writer();
        let schedulers: Vec<Address> = schedulers.into_iter().map(Address).collect();
        let calls = if schedulers.is_empty() {
            None
        } else {
            let calls =
                calls::Calls::start(writer.0, schedulers, &bind).map_err(|e| call_failed(py, e))?;
            Some(calls)
        };
        Ok(Client {
            kvs: Store::new(net, writer),
            calls,
        })
    }

    /// This client's unique id: its writer id, and the caller of its calls.
    #[getter]
    fn writer(&self) -> u64 {
        self.kvs.writer().0
    }

    /// The address call results come to (`None` without schedulers).
    #[getter]
    fn reply_address(&self) -> Option<String> {
        self.calls.as_ref().map(|c| c.reply_address().to_string())
    }

    /// The schedulers calls go to.
    #[getter]
    fn schedulers(&self) -> Vec<String> {
        self.calls.as_ref().map_or_else(Vec::new, |c| {
            c.schedulers().iter().map(|a| a.to_string()).collect()
        })
    }

    /// The key's value (see `squall.Client.get`); `None` if it has none.
    /// At least at the version this client wrote, if it wrote the key.
    #[pyo3(signature = (key, raw = false))]
    fn get(&self, py: Python<'_>, key: &str, raw: bool) -> PyResult<Py<PyAny>> {
        self.kvs.get(py, key, raw, None, false)
    }

    /// The key's value as `get` returns it, its large buffers (a NumPy
    /// array's memory) read where the value lies, read-only (see
    /// `squall.Client.get`'s `readonly`).
    fn get_readonly(&self, py: Python<'_>, key: &str) -> PyResult<Py<PyAny>> {
        self.kvs.get_readonly(py, key)
    }

    /// Whether the key holds a value.
    fn exists(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        Ok(self.kvs.get_lattice(py, key)?.is_some())
    }

    /// Merges `value` into `key` (see `squall.Client.put`), acknowledged
    /// at `ack` (`"one"`, an integer k, `"all"`; `None`: the default).
    #[pyo3(signature = (key, value, ack = None))]
    fn put(
        &self,
        py: Python<'_>,
        key: &str,
        value: &Bound<'_, PyAny>,
        ack: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.kvs.put(py, key, value, parse_ack(ack)?)
    }

    /// Deletes `key`, acknowledged at `ack` (default: every replica).
    #[pyo3(signature = (key, ack = None))]
    fn delete(&self, py: Python<'_>, key: &str, ack: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.kvs.delete(py, key, parse_ack(ack)?)
    }

    /// How many keys this client's session remembers having written.
    fn session_keys(&self, py: Python<'_>) -> usize {
        self.kvs.session(py).len()
    }

    /// Sends a call of `function` with `payload` (cloudpickled
    /// `(args, kwargs)`) referencing `refs`, its reads at `consistency`
    /// (`"lww"`, `"repeatable_read"`); returns its sequence number. A
    /// `watched` call's result comes from `next_done`, not `wait`.
    /// `instance`: the call is of a method of the named instance of class
    /// `function` (see `squall.Instance`).
    #[pyo3(signature = (function, payload, refs, timeout_ms, consistency, watched = false, instance = None, trace = false))]
    #[allow(clippy::too_many_arguments)]
    fn call(
        &self,
        py: Python<'_>,
        function: String,
        payload: Vec<u8>,
        refs: Vec<String>,
        timeout_ms: u32,
        consistency: &str,
        watched: bool,
        instance: Option<String>,
        trace: bool,
    ) -> PyResult<u64> {
        let args = CallArgs { payload, refs };
        check_args(py, &function, &args)?;
        let consistency = parse_consistency(consistency)?;
        let session = self.kvs.session(py);
        let name = function.clone();
        let instance = instance.map(|i| compute::instance_key(&function, &i));
        self.calls(py)?
            .call(
                function,
                args,
                timeout_ms,
                session,
                consistency,
                watched,
                instance,
                trace,
            )
            .map_err(|e| not_sent(py, &name, e))
    }

    /// Sends a call of DAG `dag` with `args`, a list of
    /// `(function, payload, refs)`, at `consistency`; returns its sequence
    /// number (`watched` as for `call`).
    #[pyo3(signature = (dag, args, timeout_ms, consistency, watched = false, trace = false))]
    #[allow(clippy::too_many_arguments)]
    fn call_dag(
        &self,
        py: Python<'_>,
        dag: String,
        args: Vec<(String, Vec<u8>, Vec<String>)>,
        timeout_ms: u32,
        consistency: &str,
        watched: bool,
        trace: bool,
    ) -> PyResult<u64> {
        let args: Vec<(String, CallArgs)> = args
            .into_iter()
            .map(|(f, payload, refs)| (f, CallArgs { payload, refs }))
            .collect();
        for (f, a) in &args {
            check_args(py, f, a)?;
        }
        let consistency = parse_consistency(consistency)?;
        let session = self.kvs.session(py);
        let name = dag.clone();
        self.calls(py)?
            .call_dag(dag, args, timeout_ms, session, consistency, watched, trace)
            .map_err(|e| not_sent(py, &name, e))
    }

    /// Tells every scheduler that DAG `name` changed.
    fn dag_changed(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.calls(py)?
            .dag_changed(name)
            .map_err(|e| call_failed(py, e))
    }

    /// Waits up to `timeout_s` (forever if `None`) for call `seq`'s result,
    /// with the GIL released. Returns `None` if none arrived, else
    /// `("value", bytes, output, trace)` or `("error", kind, type_name, message,
    /// traceback, function, output, trace)` (see `outcome_tuple`).
    #[pyo3(signature = (seq, timeout_s = None))]
    fn wait<'py>(
        &self,
        py: Python<'py>,
        seq: u64,
        timeout_s: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let timeout = timeout_s.map(|t| seconds(t.max(0.0))).transpose()?;
        let calls = self.calls(py)?;
        let outcome = py.detach(|| calls.wait(seq, timeout));
        outcome
            .map(|(o, written, output, trace)| {
                // What the call wrote is this client's to read from now on.
                self.kvs.record_written(&written);
                outcome_tuple(py, o, output, trace)
            })
            .transpose()
    }

    /// Waits up to `timeout_s` (GIL released) for results of watched
    /// calls; returns every one arrived as `(seq, outcome)`, the outcome as
    /// `wait` gives it (an empty list when none came).
    fn next_done<'py>(
        &self,
        py: Python<'py>,
        timeout_s: f64,
    ) -> PyResult<Vec<(u64, Bound<'py, PyTuple>)>> {
        let timeout = seconds(timeout_s.max(0.0))?;
        let calls = self.calls(py)?;
        let arrived = py.detach(|| calls.next_done(timeout));
        arrived
            .into_iter()
            .map(|(seq, (outcome, written, output, trace))| {
                self.kvs.record_written(&written);
                Ok((seq, outcome_tuple(py, outcome, output, trace)?))
            })
            .collect()
    }

    /// Asks the scheduler to drop call `seq` if it has not started; waits
    /// up to `timeout_s` for its answer. `True`: dropped (no result will
    /// come); `False`: it runs on; `None`: no answer.
    fn cancel(&self, py: Python<'_>, seq: u64, timeout_s: f64) -> PyResult<Option<bool>> {
        let timeout = seconds(timeout_s.max(0.0))?;
        let calls = self.calls(py)?;
        Ok(py.detach(|| calls.cancel(seq, timeout)))
    }

    /// The values of `keys`, in order (`None` where a key has none), read
    /// with one request per replica thread.
    #[pyo3(signature = (keys, raw = false))]
    fn get_many(&self, py: Python<'_>, keys: Vec<String>, raw: bool) -> PyResult<Vec<Py<PyAny>>> {
        self.kvs.get_many(py, &keys, raw)
    }

    /// Merges each `(key, value)` of `entries` (see `put`), with one
    /// request per replica thread, acknowledged at the client's default.
    fn put_many(&self, py: Python<'_>, entries: Vec<(String, Bound<'_, PyAny>)>) -> PyResult<()> {
        self.kvs.put_many(py, &entries)
    }

    /// Whether call `seq`'s result has arrived.
    fn done(&self, seq: u64) -> bool {
        self.calls.as_ref().is_some_and(|c| c.done(seq))
    }

    /// Stops waiting for call `seq`; a late result is dropped.
    fn forget(&self, seq: u64) {
        if let Some(c) = &self.calls {
            c.forget(seq)
        }
    }
}

/// A consistency level as Python names it; an unknown one is a
/// `ValueError`.
fn parse_consistency(name: &str) -> PyResult<compute::Consistency> {
    name.parse().map_err(PyValueError::new_err)
}

/// A call's outcome as Python sees it: `("value", bytes, output, trace)`
/// or `("error", kind, type_name, message, traceback, function, output,
/// trace)`, `output` a list of `(function, text)` of what its functions
/// printed, `trace` `None` or a dict (see `trace_dict`).
fn outcome_tuple(
    py: Python<'_>,
    outcome: CallOutcome,
    output: Vec<CallOutput>,
    trace: Option<Box<CallTrace>>,
) -> PyResult<Bound<'_, PyTuple>> {
    let output: Vec<(String, String)> = output.into_iter().map(|o| (o.function, o.text)).collect();
    let trace = trace.map(|t| trace_dict(py, &t)).transpose()?;
    match outcome {
        CallOutcome::Value(bytes) => {
            ("value", PyBytes::new(py, &bytes), output, trace).into_pyobject(py)
        }
        CallOutcome::Error(e) => (
            "error",
            format!("{:?}", e.kind),
            e.type_name,
            e.message,
            e.traceback,
            e.function,
            output,
            trace,
        )
            .into_pyobject(py),
    }
}

/// A call's trace as a dict: `arrived` (seconds since the epoch, the
/// scheduler's clock), `queued_ms` and `steps`, one dict per function
/// (`function`, `executor`, `placed`, `waited_ms`, `ran_ms`, `reads`,
/// `cache_hits`, `bytes_read`, `done`).
fn trace_dict<'py>(py: Python<'py>, trace: &CallTrace) -> PyResult<Bound<'py, PyDict>> {
    let ms = |us: u64| us as f64 / 1000.0;
    let dict = PyDict::new(py);
    dict.set_item("arrived", trace.arrived_us as f64 / 1e6)?;
    dict.set_item("queued_ms", ms(trace.queued_us))?;
    let steps = PyList::empty(py);
    for s in &trace.steps {
        let step = PyDict::new(py);
        step.set_item("function", &s.function)?;
        step.set_item("executor", s.executor.as_str())?;
        step.set_item("placed", &s.placed)?;
        step.set_item("waited_ms", ms(s.waited_us))?;
        step.set_item("ran_ms", ms(s.ran_us))?;
        step.set_item("reads", s.reads)?;
        step.set_item("cache_hits", s.cache_hits)?;
        step.set_item("kept_reads", s.kept_reads)?;
        step.set_item("bytes_read", s.bytes_read)?;
        step.set_item("done", s.done)?;
        steps.append(step)?;
    }
    dict.set_item("steps", steps)?;
    Ok(dict)
}

/// Get, put and delete against ONE endpoint (a compute node's cache, which
/// answers for any key; or one storage thread, for the keys it owns), each
/// a plain request/response bounded by `timeout_s`. Values convert exactly
/// as `squall.Client`'s do. For tests and fault campaigns that ask one
/// node directly; functions on an executor use `squall.user`.
#[pyclass(module = "squall._native", frozen)]
struct DirectKvs {
    store: Store<Endpoint>,
    address: String,
    target: String,
}

#[pymethods]
impl DirectKvs {
    /// Talks to `address`, receiving answers on a free port of `bind_host`.
    #[new]
    #[pyo3(signature = (address, timeout_s = 5.0, bind_host = "127.0.0.1"))]
    fn new(py: Python<'_>, address: String, timeout_s: f64, bind_host: &str) -> PyResult<Self> {
        let bind = Address(format!("tcp://{bind_host}:*"));
        let net = Endpoint::connect(Address(address.clone()), &bind, seconds(timeout_s)?)
            .map_err(|e| errors::squall_error(py, "KvsError", e.to_string()))?;
        let me = net.address().to_string();
        let writer = values::fresh_writer(&me);
        Ok(DirectKvs {
            store: Store::new(net, writer),
            address: me,
            target: address,
        })
    }

    /// The endpoint asked.
    #[getter]
    fn target(&self) -> String {
        self.target.clone()
    }

    /// Where its answers come.
    #[getter]
    fn address(&self) -> String {
        self.address.clone()
    }

    /// This writer's id.
    #[getter]
    fn writer(&self) -> u64 {
        self.store.writer().0
    }

    /// The key's value; `None` if it has none. `raw`: last-writer-wins
    /// bytes as they are, not unpickled.
    #[pyo3(signature = (key, raw = false))]
    fn get(&self, py: Python<'_>, key: &str, raw: bool) -> PyResult<Py<PyAny>> {
        self.store.get(py, key, raw, None, false)
    }

    /// Merges `value` into `key`, acknowledged at `ack` (see
    /// `Client.put`).
    #[pyo3(signature = (key, value, ack = None))]
    fn put(
        &self,
        py: Python<'_>,
        key: &str,
        value: &Bound<'_, PyAny>,
        ack: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.store.put(py, key, value, parse_ack(ack)?)
    }

    /// Deletes `key`.
    #[pyo3(signature = (key, ack = None))]
    fn delete(&self, py: Python<'_>, key: &str, ack: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.store.delete(py, key, parse_ack(ack)?)
    }
}

/// A key-value store in this process's memory that merges values as a
/// storage node does, with the client's conversions and errors: the store
/// of the local test mode (`squall.testing.local()`).
#[pyclass(module = "squall._native", frozen)]
struct LocalKvs {
    store: Store<squall_py::MemoryKvs>,
}

#[pymethods]
impl LocalKvs {
    #[new]
    fn new() -> Self {
        let writer = values::fresh_writer("local");
        LocalKvs {
            store: Store::new(squall_py::MemoryKvs::default(), writer),
        }
    }

    /// This store's writer id.
    #[getter]
    fn writer(&self) -> u64 {
        self.store.writer().0
    }

    /// The key's value; `None` if it has none (see `squall.Client.get`).
    #[pyo3(signature = (key, raw = false))]
    fn get(&self, py: Python<'_>, key: &str, raw: bool) -> PyResult<Py<PyAny>> {
        self.store.get(py, key, raw, None, false)
    }

    /// The key's value as `get` returns it, its large buffers read where
    /// they lie, read-only (see `squall.Client.get`'s `readonly`).
    fn get_readonly(&self, py: Python<'_>, key: &str) -> PyResult<Py<PyAny>> {
        self.store.get_readonly(py, key)
    }

    /// Whether the key holds a value.
    fn exists(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        Ok(self.store.get_lattice(py, key)?.is_some())
    }

    /// Merges `value` into `key` (see `squall.Client.put`); `ack` is
    /// checked and otherwise moot.
    #[pyo3(signature = (key, value, ack = None))]
    fn put(
        &self,
        py: Python<'_>,
        key: &str,
        value: &Bound<'_, PyAny>,
        ack: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.store.put(py, key, value, parse_ack(ack)?)
    }

    /// Deletes `key`.
    #[pyo3(signature = (key, ack = None))]
    fn delete(&self, py: Python<'_>, key: &str, ack: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.store.delete(py, key, parse_ack(ack)?)
    }

    /// The values of `keys`, in order.
    #[pyo3(signature = (keys, raw = false))]
    fn get_many(&self, py: Python<'_>, keys: Vec<String>, raw: bool) -> PyResult<Vec<Py<PyAny>>> {
        self.store.get_many(py, &keys, raw)
    }

    /// Merges each `(key, value)`.
    fn put_many(&self, py: Python<'_>, entries: Vec<(String, Bound<'_, PyAny>)>) -> PyResult<()> {
        self.store.put_many(py, &entries)
    }

    /// The keys holding a value that start with `prefix`, sorted.
    #[pyo3(signature = (prefix = ""))]
    fn keys(&self, prefix: &str) -> Vec<String> {
        self.store.with_net(|net| net.keys(prefix))
    }
}

/// The process's sender of user messages, with its context.
struct UserSender {
    tx: squall_transport::Sender,
    _ctx: zmq::Context,
}

static USER_SENDER: std::sync::OnceLock<std::sync::Mutex<UserSender>> = std::sync::OnceLock::new();

/// Sends `payload` to the executor at `to` as a `UserMessage` from `from`,
/// without blocking (a full queue drops it, with an error).
fn send_user(
    to: &Address,
    from: &Address,
    payload: Vec<u8>,
) -> Result<(), squall_transport::TransportError> {
    let sender = USER_SENDER.get_or_init(|| {
        let ctx = zmq::Context::new();
        std::sync::Mutex::new(UserSender {
            tx: squall_transport::Sender::new(&ctx),
            _ctx: ctx,
        })
    });
    let msg = anna::protocol::Message::UserMessage(anna::protocol::compute::UserMessage {
        from: from.clone(),
        payload,
    });
    lock(sender).tx.send(to, &msg)
}

/// Sends `payload` to the executor at `to_address` as a user message from
/// `from_address` (one process-wide sender; never blocks).
#[pyfunction]
fn send_user_message(
    py: Python<'_>,
    to_address: &str,
    from_address: &str,
    payload: Vec<u8>,
) -> PyResult<()> {
    send_user(
        &Address::from(to_address),
        &Address::from(from_address),
        payload,
    )
    .map_err(|e| errors::squall_error(py, "SquallError", e.to_string()))
}

/// Whether last-writer-wins bytes are a pickle (and so read back as the
/// object they pickle) rather than raw bytes: the rule `get` applies.
#[pyfunction]
fn looks_pickled(data: &[u8]) -> bool {
    values::looks_pickled(data)
}

/// `pickle.loads(data)` with the large buffers the writer marked read
/// where they lie in `data` (a `bytes` or a stored value's buffer),
/// read-only; returns `(object, bytes shared with data)`.
#[pyfunction]
fn loads_readonly<'py>(data: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyAny>, usize)> {
    values::unpickle_readonly(data)
}

fn value_kind(name: &str) -> PyResult<ValueKind> {
    Ok(match name {
        "bytes" => ValueKind::Bytes,
        "str" => ValueKind::Str,
        "int" => ValueKind::Int,
        "float" => ValueKind::Float,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown result kind `{other}`; expected bytes, str, int or float"
            )))
        }
    })
}

fn value_kind_name(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::Bytes => "bytes",
        ValueKind::Str => "str",
        ValueKind::Int => "int",
        ValueKind::Float => "float",
    }
}

/// A `FunctionCode` record (`runtime` "python" or "wasm"; `result` "bytes",
/// "str", "int" or "float", how a WebAssembly function's result bytes
/// become a Python value), encoded for storage under a function key.
#[pyfunction]
#[pyo3(signature = (code, is_class, runtime = "python", export = "", result = "bytes"))]
fn encode_function<'py>(
    py: Python<'py>,
    code: Vec<u8>,
    is_class: bool,
    runtime: &str,
    export: &str,
    result: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let runtime = match runtime {
        "python" => Runtime::Python,
        "wasm" => Runtime::Wasm,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown runtime `{other}`; expected python or wasm"
            )))
        }
    };
    let record = FunctionCode {
        runtime,
        code,
        is_class,
        export: export.to_string(),
        result: value_kind(result)?,
    };
    Ok(PyBytes::new(py, &compute::encode_value(&record)))
}

/// Decodes a `FunctionCode` record: `(runtime, code, is_class, export)`,
/// plus the result kind with `with_result=True`, or `None` if the bytes
/// are not one.
#[pyfunction]
#[pyo3(signature = (data, with_result = false))]
fn decode_function<'py>(
    py: Python<'py>,
    data: &[u8],
    with_result: bool,
) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Some(f) = compute::decode_value::<FunctionCode>(data) else {
        return Ok(None);
    };
    let runtime = match f.runtime {
        Runtime::Python => "python",
        Runtime::Wasm => "wasm",
    };
    let code = PyBytes::new(py, &f.code);
    let tuple = if with_result {
        let result = value_kind_name(f.result);
        (runtime, code, f.is_class, f.export, result).into_pyobject(py)?
    } else {
        (runtime, code, f.is_class, f.export).into_pyobject(py)?
    };
    Ok(Some(tuple))
}

/// `module` (a WebAssembly binary, or WAT text) as a validated binary
/// whose entry point is `export`; `ValueError` with the reason if it is
/// not a valid module following Squall's calling convention.
#[pyfunction]
#[pyo3(signature = (module, export = "run"))]
fn wasm_module<'py>(py: Python<'py>, module: &[u8], export: &str) -> PyResult<Bound<'py, PyBytes>> {
    let checked = py.detach(|| {
        let binary = wasm::to_binary(module)?;
        wasm::check(&binary, export)?;
        Ok::<_, String>(binary)
    });
    checked
        .map(|binary| PyBytes::new(py, &binary))
        .map_err(PyValueError::new_err)
}

/// A `Dag` record, encoded for storage under a DAG key.
#[pyfunction]
fn encode_dag<'py>(
    py: Python<'py>,
    name: String,
    functions: Vec<String>,
    connections: Vec<(String, String)>,
) -> Bound<'py, PyBytes> {
    let dag = Dag {
        name,
        functions,
        connections,
    };
    PyBytes::new(py, &compute::encode_value(&dag))
}

/// A DAG as Python sees it: `(name, functions, connections)`.
type DagParts = (String, Vec<String>, Vec<(String, String)>);

/// Decodes a `Dag` record: `(name, functions, connections)`, or `None`.
#[pyfunction]
fn decode_dag(data: &[u8]) -> Option<DagParts> {
    compute::decode_value::<Dag>(data).map(|d| (d.name, d.functions, d.connections))
}

/// The record of trigger `name` (a bincode `TriggerSpec`): `function`
/// runs once per change of kind `on` (`"put"` or `"delete"`) of a key
/// starting with `prefix`.
#[pyfunction]
fn encode_trigger<'py>(
    py: Python<'py>,
    name: String,
    function: String,
    prefix: String,
    on: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let on = match on {
        "put" => compute::ChangeKind::Put,
        "delete" => compute::ChangeKind::Delete,
        other => {
            return Err(PyValueError::new_err(format!(
                "on must be \"put\" or \"delete\", not {other:?}"
            )))
        }
    };
    let spec = compute::TriggerSpec {
        name,
        function,
        prefix,
        on,
    };
    Ok(PyBytes::new(py, &compute::encode_value(&spec)))
}

/// `(name, function, prefix, on)` of a trigger record, or `None` if the
/// bytes are not one.
#[pyfunction]
fn decode_trigger(data: &[u8]) -> Option<(String, String, String, &'static str)> {
    compute::decode_value::<compute::TriggerSpec>(data)
        .map(|t| (t.name, t.function, t.prefix, t.on.as_str()))
}

/// The KVS key of trigger `name`'s registration.
#[pyfunction]
fn trigger_key(name: &str) -> String {
    compute::trigger_key(name)
}

/// A `Traffic` record (a function's split: `(version, parts of
/// TRAFFIC_PARTS)`), encoded for storage under a traffic key.
#[pyfunction]
fn encode_traffic(py: Python<'_>, versions: Vec<(u32, u32)>) -> Bound<'_, PyBytes> {
    PyBytes::new(py, &compute::encode_value(&Traffic { versions }))
}

/// Decodes a `Traffic` record: `[(version, parts)]`, or `None`.
#[pyfunction]
fn decode_traffic(data: &[u8]) -> Option<Vec<(u32, u32)>> {
    compute::decode_value::<Traffic>(data).map(|t| t.versions)
}

/// The version the split `versions` sends call `(caller, seq)` to, or
/// `None` (the current version): the scheduler's pick, for the local mode.
#[pyfunction]
fn traffic_pick(versions: Vec<(u32, u32)>, caller: u64, seq: u64) -> Option<u32> {
    Traffic { versions }.pick(CallId { caller, seq })
}

/// Decodes a `LatticeValue` in its wire encoding (bincode, as
/// `encode_value` writes it) into its Python object, as `get` would return
/// it. For the executor, which receives values as bytes.
#[pyfunction]
#[pyo3(signature = (data, raw = false))]
fn decode_lattice(py: Python<'_>, data: &[u8], raw: bool) -> PyResult<Py<PyAny>> {
    let value: LatticeValue = compute::decode_value(data)
        .ok_or_else(|| PyValueError::new_err("not an encoded lattice value"))?;
    Ok(values::from_lattice(py, &value, raw)?.unbind())
}

static ENCODE_WRITER: std::sync::OnceLock<std::sync::Mutex<values::Writer>> =
    std::sync::OnceLock::new();

/// Encodes a Python value as the `LatticeValue` a put would merge, in its
/// wire encoding (one process-wide writer; causal values need an explicit
/// clock).
#[pyfunction]
fn encode_lattice<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let writer = ENCODE_WRITER
        .get_or_init(|| std::sync::Mutex::new(values::Writer::new(values::fresh_writer("encode"))));
    let lattice = values::to_lattice(value, "", None, &mut lock(writer))?;
    Ok(PyBytes::new(py, &compute::encode_value(&lattice)))
}

/// The KVS key of function `name`'s code.
#[pyfunction]
fn function_key(name: &str) -> String {
    compute::function_key(name)
}

/// The KVS key of DAG `name`'s definition.
#[pyfunction]
fn dag_key(name: &str) -> String {
    compute::dag_key(name)
}

/// The KVS key of function `name`'s traffic split.
#[pyfunction]
fn traffic_key(name: &str) -> String {
    compute::traffic_key(name)
}

/// The KVS key of the state of instance `name` of class `class`.
#[pyfunction]
fn instance_key(class: &str, name: &str) -> String {
    compute::instance_key(class, name)
}

/// Makes this process seal its frames with the key in `key_file` (a
/// client's key or the cluster's secret), or send open frames when `None`
/// (a cluster run with `--insecure`). Clients made afterwards use it.
#[pyfunction]
#[pyo3(signature = (key_file, encrypt = false))]
fn use_key(py: Python<'_>, key_file: Option<std::path::PathBuf>, encrypt: bool) -> PyResult<()> {
    use anna::protocol::seal::Security;
    let security = match key_file {
        None => Security::insecure(),
        Some(path) => {
            let identity = squall_transport::security::read_identity(&path)
                .map_err(|e| errors::squall_error(py, "SquallError", e))?;
            Security {
                identity: Some(identity),
                clients: Default::default(),
                encrypt,
            }
        }
    };
    squall_transport::security::set_security(security);
    Ok(())
}

#[pymodule(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    squall_transport::heap::keep_large_buffers();
    m.add_class::<Client>()?;
    m.add_class::<DirectKvs>()?;
    m.add_class::<LocalKvs>()?;
    m.add_function(wrap_pyfunction!(use_key, m)?)?;
    m.add_function(wrap_pyfunction!(send_user_message, m)?)?;
    m.add_function(wrap_pyfunction!(looks_pickled, m)?)?;
    m.add_function(wrap_pyfunction!(loads_readonly, m)?)?;
    m.add_function(wrap_pyfunction!(encode_function, m)?)?;
    m.add_function(wrap_pyfunction!(decode_function, m)?)?;
    m.add_function(wrap_pyfunction!(wasm_module, m)?)?;
    m.add_function(wrap_pyfunction!(encode_dag, m)?)?;
    m.add_function(wrap_pyfunction!(decode_dag, m)?)?;
    m.add_function(wrap_pyfunction!(encode_lattice, m)?)?;
    m.add_function(wrap_pyfunction!(decode_lattice, m)?)?;
    m.add_function(wrap_pyfunction!(function_key, m)?)?;
    m.add_function(wrap_pyfunction!(dag_key, m)?)?;
    m.add_function(wrap_pyfunction!(instance_key, m)?)?;
    m.add_function(wrap_pyfunction!(encode_traffic, m)?)?;
    m.add_function(wrap_pyfunction!(decode_traffic, m)?)?;
    m.add_function(wrap_pyfunction!(traffic_pick, m)?)?;
    m.add_function(wrap_pyfunction!(traffic_key, m)?)?;
    m.add("TRAFFIC_PARTS", compute::TRAFFIC_PARTS)?;
    m.add("FUNCTIONS_KEY", compute::FUNCTIONS_KEY)?;
    m.add("DAGS_KEY", compute::DAGS_KEY)?;
    m.add("TRIGGERS_KEY", compute::TRIGGERS_KEY)?;
    m.add_function(wrap_pyfunction!(encode_trigger, m)?)?;
    m.add_function(wrap_pyfunction!(decode_trigger, m)?)?;
    m.add_function(wrap_pyfunction!(trigger_key, m)?)?;
    Ok(())
}
