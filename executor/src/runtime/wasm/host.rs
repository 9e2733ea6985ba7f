//! The host side of one call: the store's data ([`Host`]), its memory
//! limiter, and the imports of module `squall` (`get`, `put`, `send`,
//! `recv`, `id`). `get` and `put` take the worker's route to the node's
//! cache ([`crate::route::CacheRoute`]) with values converted by
//! [`super::scalar`]: no Python on the way. Guest memory is read and
//! written with bounds checks; a bad pointer or a failing host call traps
//! the guest (its caller gets a Remote error naming the import), never
//! panics the executor.

use super::abi::{guest_slice, pack};
use super::scalar;
use crate::runtime::python::now_ms;
use crate::runtime::Ports;
use crate::worker::WorkerEvent;
use anna::lattice::{LatticeValue, Lww};
use anna::protocol::Address;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{
    format_err, Caller, Engine, Extern, Linker, Memory, ResourceLimiter, Result, StoreLimits,
    StoreLimitsBuilder,
};

/// The import module every host function lives in.
pub const IMPORT_MODULE: &str = "squall";

/// What a call's store holds.
pub struct Host {
    pub limits: Limits,
    /// The call's deadline (wall-clock milliseconds), for `recv`.
    pub deadline_ms: u64,
    /// This executor's id, for `id`.
    pub executor: Address,
    pub ports: Arc<Ports>,
}

/// The instance's memory cap ([`StoreLimitsBuilder::memory_size`]),
/// remembering a refused growth so that the error the guest then runs into
/// can say why.
pub struct Limits {
    inner: StoreLimits,
    /// The cap, in bytes.
    pub cap: usize,
    /// The size (bytes) of the last growth refused for the cap.
    pub refused: Option<usize>,
}

impl Limits {
    pub fn new(cap: usize) -> Self {
        Limits {
            inner: StoreLimitsBuilder::new().memory_size(cap).build(),
            cap,
            refused: None,
        }
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        max: Option<usize>,
    ) -> Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, max)?;
        if !allowed && desired > self.cap {
            self.refused = Some(desired);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        max: Option<usize>,
    ) -> Result<bool> {
        self.inner.table_growing(current, desired, max)
    }
}

/// The linker with every host import; one per runtime, shared by its calls.
pub fn linker(engine: &Engine) -> Result<Linker<Host>> {
    let mut linker = Linker::new(engine);
    linker.func_wrap(IMPORT_MODULE, "get", get)?;
    linker.func_wrap(IMPORT_MODULE, "put", put)?;
    linker.func_wrap(IMPORT_MODULE, "send", send)?;
    linker.func_wrap(IMPORT_MODULE, "recv", recv)?;
    linker.func_wrap(IMPORT_MODULE, "id", id)?;
    Ok(linker)
}

fn get(mut caller: Caller<'_, Host>, key_ptr: i32, key_len: i32) -> Result<i64> {
    let key = read_str(&mut caller, "get", key_ptr, key_len)?;
    let fail = |e: String| format_err!("squall.get({key:?}): {e}");
    let value = caller.data().ports.route.read(&key);
    let value = value.map_err(|e| fail(e.0.to_string()))?;
    match value
        .map(|v| scalar::readable(&v))
        .transpose()
        .map_err(fail)?
    {
        Some(Some(bytes)) => give(&mut caller, "get", &bytes),
        _ => Ok(-1),
    }
}

fn put(
    mut caller: Caller<'_, Host>,
    key_ptr: i32,
    key_len: i32,
    ptr: i32,
    len: i32,
) -> Result<i32> {
    let key = read_str(&mut caller, "put", key_ptr, key_len)?;
    let data = read(&mut caller, "put", ptr, len)?;
    let route = &caller.data().ports.route;
    let stored = route.store().and_then(|store| {
        let pickle = scalar::pickled_bytes(&data);
        let make =
            |w: &mut squall_py::values::Writer| LatticeValue::Lww(Lww::new(w.timestamp(), pickle));
        store.put_value(&key, make, None)
    });
    match stored {
        Ok(()) => Ok(0),
        Err(e) => {
            tracing::debug!(%key, error = %e.0, "squall.put from WebAssembly failed");
            Ok(-1)
        }
    }
}

fn send(mut caller: Caller<'_, Host>, to_ptr: i32, to_len: i32, ptr: i32, len: i32) -> Result<i32> {
    let to = read_str(&mut caller, "send", to_ptr, to_len)?;
    let payload = read(&mut caller, "send", ptr, len)?;
    caller.data().ports.outlet.send(WorkerEvent::Send {
        to: Address(to),
        payload,
    });
    Ok(0)
}

fn recv(mut caller: Caller<'_, Host>, timeout_ms: i32) -> Result<i64> {
    let left = Duration::from_millis(caller.data().deadline_ms.saturating_sub(now_ms()));
    let wait = match u64::try_from(timeout_ms) {
        Ok(ms) => left.min(Duration::from_millis(ms)),
        Err(_) => left,
    };
    match caller.data().ports.mailbox.recv(wait) {
        Some((_, payload)) => give(&mut caller, "recv", &payload),
        None => Ok(-1),
    }
}

fn id(mut caller: Caller<'_, Host>) -> Result<i64> {
    let me = caller.data().executor.0.clone();
    give(&mut caller, "id", me.as_bytes())
}

fn memory(caller: &mut Caller<'_, Host>, import: &str) -> Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(format_err!("squall.{import}: the module exports no memory")),
    }
}

fn read(caller: &mut Caller<'_, Host>, import: &str, ptr: i32, len: i32) -> Result<Vec<u8>> {
    let memory = memory(caller, import)?;
    guest_slice(memory.data(&*caller), ptr as u32, len as u32)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| {
            format_err!(
                "squall.{import}: ({}, {}) lies outside the module's memory",
                ptr as u32,
                len as u32
            )
        })
}

fn read_str(caller: &mut Caller<'_, Host>, import: &str, ptr: i32, len: i32) -> Result<String> {
    String::from_utf8(read(caller, import, ptr, len)?)
        .map_err(|_| format_err!("squall.{import}: the string is not UTF-8"))
}

/// Copies `bytes` into memory the guest's `alloc` gives, returning it packed.
fn give(caller: &mut Caller<'_, Host>, import: &str, bytes: &[u8]) -> Result<i64> {
    let len = i32::try_from(bytes.len()).map_err(|_| {
        format_err!(
            "squall.{import}: {} bytes are too many to return",
            bytes.len()
        )
    })?;
    let alloc = match caller.get_export("alloc") {
        Some(Extern::Func(f)) => f.typed::<i32, i32>(&*caller)?,
        _ => return Err(format_err!("squall.{import}: the module exports no alloc")),
    };
    let ptr = alloc.call(&mut *caller, len)?;
    let memory = memory(caller, import)?;
    memory
        .write(&mut *caller, ptr as u32 as usize, bytes)
        .map_err(|_| {
            format_err!(
                "squall.{import}: alloc({len}) returned {} outside the module's memory",
                ptr as u32
            )
        })?;
    Ok(pack(ptr as u32, len as u32))
}
