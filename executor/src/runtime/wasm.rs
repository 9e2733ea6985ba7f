//! The WebAssembly runtime: modules run by wasmtime on the worker thread,
//! beside the Python runtime, so calls, futures, References and DAGs mix
//! both kinds of function.
//!
//! # The calling convention
//!
//! - The module exports `memory`, `alloc(len: i32) -> i32` (the host asks
//!   the guest for `len` bytes of its memory to write into), and the
//!   function named by `FunctionCode::export` (default `"run"`) with
//!   signature `(ptr: i32, len: i32) -> i64`.
//! - Input at `[ptr, ptr+len)`: the argument block: u32 little-endian
//!   count N, then N times (u32 LE length, bytes). The arguments are the
//!   upstream results (in a DAG) first, then the caller's positional
//!   arguments (keyword arguments are refused: `BadArguments`). Each
//!   argument is converted from its Python value to bytes: `bytes` /
//!   `bytearray` / `memoryview` as they are; `str` UTF-8; `bool` one byte
//!   0/1; `int` 8 bytes LE two's complement (out of range →
//!   `BadArguments`); `float` 8 bytes LE IEEE 754; anything else →
//!   `BadArguments` naming the type. `squall.Reference` arguments are
//!   resolved first (as for Python functions, through the same value cache)
//!   and then converted.
//! - The i64 result packs `(result_ptr << 32) | result_len`, pointing into
//!   guest memory. The bytes are converted for Python by the function's
//!   `FunctionCode::result` kind: `Bytes` → `bytes`, `Str` → `str`
//!   (invalid UTF-8 → Remote error), `Int` → `int` from 8 bytes LE (wrong
//!   length → Remote error), `Float` → `float`. The executor returns them to
//!   the caller pickled with cloudpickle like a Python function's result, so
//!   Python callers and Python functions downstream get ordinary Python
//!   values.
//! - Host imports, module `"squall"` (all i32/i64; a string/bytes argument
//!   is `(ptr, len)` in guest memory; a returned buffer is written into
//!   memory the host obtains from the guest's `alloc` and returned packed
//!   as `(ptr << 32) | len`, or -1):
//!   - `get(key_ptr, key_len) -> i64`: the key's value through the node's
//!     cache, converted to bytes by the argument rules above (so a Python
//!     `put(k, 41)` reads as 8 bytes LE; a last-writer-wins raw value as
//!     its bytes); -1 if the key has no value. A value that cannot be
//!     converted (a set lattice, say) or a failed read traps.
//!   - `put(key_ptr, key_len, val_ptr, val_len) -> i32`: stores the bytes
//!     as a Python `bytes` object under last-writer-wins (exactly what
//!     `squall.user.put(key, data)` does, so Python functions and clients
//!     `get` it back as `bytes`); 0 ok, -1 error.
//!   - `send(to_ptr, to_len, data_ptr, data_len) -> i32`: sends the bytes
//!     to the executor with that id (best effort, as `squall.user.send`);
//!     0.
//!   - `recv(timeout_ms: i32) -> i64`: the next message's payload, waiting
//!     at most `timeout_ms` (a negative one: until the call's deadline),
//!     never past the call's deadline; -1 on timeout.
//!   - `id() -> i64`: the executor's id string (what `send` takes).
//!
//!   A pointer outside the guest's memory, a string that is not UTF-8 or a
//!   missing `alloc` traps the guest.
//!
//! # Isolation
//!
//! One [`Engine`] per process with epoch interruption; a ticker thread
//! advances its epoch every [`TICK`]. Each call gets a fresh [`Store`] and
//! instance whose epoch deadline is the plan's deadline, so a runaway loop
//! ends with a `Timeout` error and the executor keeps serving. Each
//! instance's memory is capped at `[executor] wasm_memory_bytes`:
//! `memory.grow` beyond it returns -1, and if the call then fails, its error
//! says the growth was refused. A trap is a Remote error of type `Trap`
//! whose message is the trap's (`wasm trap: wasm `unreachable` instruction
//! executed`) and whose traceback is wasmtime's backtrace.
//!
//! Modules are compiled and linked (`InstancePre`) once per code generation
//! at [`Runtime::load`]; one that does not validate, lacks an export or
//! imports what the host does not provide fails with `BadFunction`.
//!
//! Conversions of the caller's Python arguments and of the result, and
//! Reference resolution, run in Python (`_squall_runtime.wasm_args`,
//! `wasm_result`) with the GIL taken only for them: one pickle and
//! Reference path for both runtimes. The host's `get` and `put` take the
//! worker's route to the cache in Rust ([`scalar`] converts the stored
//! value), as Python's `squall.user` does: one cache path for both.

mod abi;
mod host;
pub mod scalar;

use super::python::{now_ms, read_outcome, timeout, with_ports};
use super::{CallInput, Ports, Runtime};
use crate::job::{call_error, CallEnv};
use anna::protocol::compute::{self, CallError, CallErrorKind, FunctionCode, ValueKind};
use host::{Host, Limits};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyModule};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wasmtime::{
    Config, Engine, ExternType, InstancePre, Linker, Module, Store, Trap, ValType, WasmBacktrace,
};

pub use abi::{decode_args, encode_args, pack, unpack};

/// How often the engine's epoch advances: the granularity of deadlines.
pub const TICK: Duration = Duration::from_millis(5);

/// The export called when `FunctionCode::export` is empty.
pub const DEFAULT_EXPORT: &str = "run";

/// The process's engine, its epoch advanced by a ticker thread.
fn engine() -> Result<Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config.epoch_interruption(true);
            let engine = Engine::new(&config).map_err(|e| format!("wasmtime: {e:#}"))?;
            let ticking = engine.clone();
            std::thread::Builder::new()
                .name("squall-wasm-epoch".into())
                .spawn(move || loop {
                    std::thread::sleep(TICK);
                    ticking.increment_epoch();
                })
                .map_err(|e| format!("cannot spawn the epoch ticker: {e}"))?;
            Ok(engine)
        })
        .clone()
}

struct Loaded {
    pre: InstancePre<Host>,
    export: String,
    result: ValueKind,
}

/// Runs WebAssembly functions; lives on the worker thread, after the
/// Python runtime has loaded `_squall_runtime`.
pub struct WasmRuntime {
    engine: Engine,
    linker: Linker<Host>,
    functions: HashMap<String, Loaded>,
    memory_bytes: usize,
    runtime: Py<PyModule>,
    ports: Arc<Ports>,
}

impl WasmRuntime {
    /// A runtime capping each instance's memory at `memory_bytes`.
    pub fn start(memory_bytes: usize, ports: Arc<Ports>) -> Result<Self, String> {
        let engine = engine()?;
        let linker = host::linker(&engine).map_err(|e| format!("wasmtime: {e:#}"))?;
        let runtime = Python::attach(|py| {
            let module = py.import("_squall_runtime")?;
            PyResult::Ok(module.unbind())
        })
        .map_err(|e| format!("the WebAssembly runtime needs _squall_runtime: {e}"))?;
        Ok(WasmRuntime {
            engine,
            linker,
            functions: HashMap::new(),
            memory_bytes,
            runtime,
            ports,
        })
    }

    fn python_args(
        &self,
        function: &str,
        input: &CallInput<'_>,
    ) -> Result<Vec<Vec<u8>>, CallError> {
        Python::attach(|py| {
            let upstream = input.upstream.iter().map(|u| PyBytes::new(py, u));
            let args = (
                PyBytes::new(py, input.payload),
                PyList::new(py, upstream).ok(),
                input.env.deadline_ms as f64 / 1000.0,
            );
            let answer = self.runtime.bind(py).call_method1("wasm_args", args);
            let value = answer
                .map_err(|e| python_error(py, function, e))
                .and_then(|a| read_outcome(function, &a))?;
            value.bind(py).extract::<Vec<Vec<u8>>>().map_err(|e| {
                call_error(CallErrorKind::Remote, "TypeError", e.to_string(), function)
            })
        })
    }

    fn python_result(
        &self,
        function: &str,
        data: &[u8],
        kind: ValueKind,
    ) -> Result<Vec<u8>, CallError> {
        Python::attach(|py| {
            let kind = format!("{kind:?}");
            let answer =
                (self.runtime.bind(py)).call_method1("wasm_result", (PyBytes::new(py, data), kind));
            let value = answer
                .map_err(|e| python_error(py, function, e))
                .and_then(|a| read_outcome(function, &a))?;
            value.bind(py).extract::<Vec<u8>>().map_err(|e| {
                call_error(CallErrorKind::Remote, "TypeError", e.to_string(), function)
            })
        })
    }

    /// Instantiates the module in a fresh store and calls it with `block`;
    /// the result's bytes.
    fn execute(
        &self,
        function: &str,
        loaded: &Loaded,
        env: &CallEnv,
        block: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        let left_ms = env.deadline_ms.saturating_sub(now_ms());
        if left_ms == 0 {
            return Err(timeout(function));
        }
        let host = Host {
            limits: Limits::new(self.memory_bytes),
            deadline_ms: env.deadline_ms,
            executor: env.executor.clone(),
            ports: self.ports.clone(),
        };
        let mut store = Store::new(&self.engine, host);
        store.limiter(|h| &mut h.limits);
        store.set_epoch_deadline(left_ms.div_ceil(TICK.as_millis() as u64));
        let run = |store: &mut Store<Host>| -> wasmtime::Result<Result<Vec<u8>, String>> {
            let instance = loaded.pre.instantiate(&mut *store)?;
            let memory = instance
                .get_memory(&mut *store, "memory")
                .ok_or_else(|| wasmtime::format_err!("the module exports no memory"))?;
            let alloc = instance.get_typed_func::<i32, i32>(&mut *store, "alloc")?;
            let entry = instance.get_typed_func::<(i32, i32), i64>(&mut *store, &loaded.export)?;
            let ptr = alloc.call(&mut *store, block.len() as i32)?;
            if memory
                .write(&mut *store, ptr as u32 as usize, block)
                .is_err()
            {
                return Ok(Err(format!(
                    "alloc({}) returned {} outside the module's memory",
                    block.len(),
                    ptr as u32
                )));
            }
            let packed = entry.call(&mut *store, (ptr, block.len() as i32))?;
            let (rptr, rlen) = unpack(packed);
            Ok(abi::guest_slice(memory.data(&*store), rptr, rlen)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| {
                    format!("the result ({rptr}, {rlen}) lies outside the module's memory")
                }))
        };
        match run(&mut store) {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(message)) => Err(call_error(
                CallErrorKind::Remote,
                "BadResult",
                message,
                function,
            )),
            Err(e) => Err(failure(function, &e, &store.data().limits)),
        }
    }
}

/// A Python exception from the runtime module itself, as a Remote error.
fn python_error(py: Python<'_>, function: &str, e: PyErr) -> CallError {
    let type_name = (e.get_type(py).name())
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    call_error(
        CallErrorKind::Remote,
        &type_name,
        e.value(py).to_string(),
        function,
    )
}

/// The caller's error for a failed instantiation or call.
fn failure(function: &str, e: &wasmtime::Error, limits: &Limits) -> CallError {
    let trap = e.downcast_ref::<Trap>().copied();
    if trap == Some(Trap::Interrupt) {
        return timeout(function);
    }
    let mut message = match trap {
        Some(trap) => trap.to_string(),
        None => e.root_cause().to_string(),
    };
    let backtrace = (e.downcast_ref::<WasmBacktrace>())
        .map(|b| b.to_string())
        .unwrap_or_default();
    // Contexts around the root, outermost first: the backtrace (kept for
    // the traceback) and, for a memory fault, where it was.
    let mut chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    chain.pop();
    for context in chain.into_iter().filter(|c| *c != backtrace) {
        message.push_str(&format!(" ({context})"));
    }
    if let Some(size) = limits.refused {
        message.push_str(&format!(
            "; growing memory to {size} bytes was refused: an instance may use at most \
             {} bytes of memory ([executor] wasm_memory_bytes)",
            limits.cap
        ));
    }
    CallError {
        kind: CallErrorKind::Remote,
        type_name: "Trap".into(),
        message,
        traceback: backtrace,
        function: Some(function.to_string()),
    }
}

/// Why `module` cannot serve calls of `export`, if it cannot.
fn check_exports(module: &Module, export: &str) -> Result<(), String> {
    let func = |name: &str, params: &[ValType], results: &[ValType]| -> Result<(), String> {
        let signature = format!("({}) -> ({})", types(params), types(results));
        match module.get_export(name) {
            Some(ExternType::Func(f)) => {
                let same = |got: Vec<ValType>, want: &[ValType]| {
                    got.len() == want.len() && got.iter().zip(want).all(|(g, w)| ValType::eq(g, w))
                };
                if same(f.params().collect(), params) && same(f.results().collect(), results) {
                    Ok(())
                } else {
                    Err(format!("export {name:?} must be a function {signature}"))
                }
            }
            _ => Err(format!(
                "the module must export a function {name:?} {signature}"
            )),
        }
    };
    if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
        return Err("the module must export its memory as \"memory\"".into());
    }
    func("alloc", &[ValType::I32], &[ValType::I32])?;
    func(export, &[ValType::I32, ValType::I32], &[ValType::I64])
}

fn types(list: &[ValType]) -> String {
    list.iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Runtime for WasmRuntime {
    fn kind(&self) -> compute::Runtime {
        compute::Runtime::Wasm
    }

    fn load(
        &mut self,
        function: &str,
        code: &FunctionCode,
        _env: &CallEnv,
    ) -> Result<(), CallError> {
        let bad = |message: String| {
            call_error(CallErrorKind::BadFunction, "BadFunction", message, function)
        };
        let module = Module::new(&self.engine, &code.code)
            .map_err(|e| bad(format!("not a valid WebAssembly module: {e:#}")))?;
        let export = match code.export.as_str() {
            "" => DEFAULT_EXPORT.to_string(),
            name => name.to_string(),
        };
        check_exports(&module, &export).map_err(bad)?;
        let pre = (self.linker.instantiate_pre(&module)).map_err(|e| bad(format!("{e:#}")))?;
        self.functions.insert(
            function.to_string(),
            Loaded {
                pre,
                export,
                result: code.result,
            },
        );
        Ok(())
    }

    fn invoke(&mut self, function: &str, input: CallInput<'_>) -> Result<Vec<u8>, CallError> {
        let Some(loaded) = self.functions.get(function) else {
            return Err(call_error(
                CallErrorKind::BadFunction,
                "BadFunction",
                format!("{function} is not loaded"),
                function,
            ));
        };
        with_ports(&self.ports, || {
            let args = self.python_args(function, &input)?;
            let block = abi::encode_args(&args)
                .map_err(|m| call_error(CallErrorKind::BadArguments, "ValueError", m, function))?;
            let data = self.execute(function, loaded, input.env, &block)?;
            self.python_result(function, &data, loaded.result)
        })
    }

    fn unload(&mut self, function: &str) {
        self.functions.remove(function);
    }
}
