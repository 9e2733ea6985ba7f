//! Coroutine functions (`async def`) in the Python runtime.
//!
//! A call of one is started on the worker thread (its arguments unpickled
//! and its references resolved there, as for any call) and then runs as a
//! task on one asyncio event loop, in a thread of its own that the runtime
//! module starts at the first such call. The worker returns at once and
//! takes the next job; many calls that await share the process. The task
//! ends by calling [`AsyncCall::finish`], which sends the call's
//! [`crate::job::JobDone`] to the I/O thread through the worker's outlet,
//! as the worker does for a call it ran.
//!
//! Each call has its own [`Ports`]: its own [`crate::route::CacheRoute`]
//! (reading and writing as that call, collecting that call's writes and
//! reads), beside the worker's shared mailbox and outlet. The native
//! module's functions find the running call's ports in the worker thread's
//! thread-local (a call the worker runs), or else in the context variable
//! [`CURRENT_CALL`], which the runtime module sets in every task's context
//! (and which `asyncio.to_thread` carries to the threads `aget` and `aput`
//! run their requests on).

use super::python::read_outcome;
use super::Ports;
use crate::job::{call_error, Effects, JobDone};
use crate::worker::WorkerEvent;
use anna::protocol::compute::CallErrorKind;
use pyo3::prelude::*;
use std::sync::{Arc, OnceLock};

/// The context variable holding the [`AsyncCall`] a coroutine belongs to
/// (`_squall_executor.current_call`).
static CURRENT_CALL: OnceLock<Py<PyAny>> = OnceLock::new();

/// Makes the context variable once per process and returns it.
pub(crate) fn current_call_var(py: Python<'_>) -> PyResult<Py<PyAny>> {
    if let Some(var) = CURRENT_CALL.get() {
        return Ok(var.clone_ref(py));
    }
    let made = (py.import("contextvars")?.getattr("ContextVar")?)
        .call1(("squall_call",))?
        .unbind();
    Ok(CURRENT_CALL.get_or_init(|| made).clone_ref(py))
}

/// The ports of the coroutine whose context is current, if any.
pub(crate) fn context_ports() -> Option<Arc<Ports>> {
    let var = CURRENT_CALL.get()?;
    Python::attach(|py| {
        let call = var.bind(py).call_method1("get", (py.None(),)).ok()?;
        let call = call.cast::<AsyncCall>().ok()?;
        Some(call.get().ports.clone())
    })
}

/// One call of a coroutine function in flight: how its task reaches the
/// world and reports its end.
#[pyclass(frozen, module = "_squall_executor")]
pub(crate) struct AsyncCall {
    pub seq: u64,
    pub function: String,
    pub ports: Arc<Ports>,
}

#[pymethods]
impl AsyncCall {
    /// Ends the call with `outcome` (`("ok", pickled)` or an error tuple),
    /// what it printed, and how many of its reference reads kept values
    /// answered (and their bytes). Called once, from its task.
    fn finish(
        &self,
        py: Python<'_>,
        outcome: &Bound<'_, PyAny>,
        output: String,
        kept_reads: u32,
        kept_bytes: u64,
    ) {
        let function = self.function.as_str();
        let outcome = read_outcome(function, outcome).and_then(|value| {
            (value.bind(py).extract::<Vec<u8>>()).map_err(|e| {
                call_error(CallErrorKind::Remote, "TypeError", e.to_string(), function)
            })
        });
        // A request of the call still in flight (its task was cancelled at
        // the deadline) holds the route's connection without the GIL.
        let mut effects: Effects = py.detach(|| self.ports.route.end());
        effects.output = output;
        effects.kept_reads += kept_reads;
        effects.reads.bytes += kept_bytes;
        // A later call reads a key this one wrote anew, not a value kept
        // from before the write.
        let written: Vec<String> = (effects.written.entries().iter())
            .map(|(k, _)| k.clone())
            .collect();
        if !written.is_empty() {
            let invalidated = (py.import("_squall_runtime"))
                .and_then(|m| m.call_method1("invalidate", (written,)));
            if let Err(e) = invalidated {
                tracing::warn!(error = %e, "dropping kept values failed");
            }
        }
        self.ports.outlet.send(WorkerEvent::Done(JobDone {
            seq: self.seq,
            outcome,
            effects,
        }));
    }
}
