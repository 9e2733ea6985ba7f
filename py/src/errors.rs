//! Errors of the native module, as the exceptions of `squall.errors`.
//!
//! One mapping: [`KvsFailure`] (a KVS operation's failure, from the routed
//! client or from a direct endpoint) becomes the exception a Python caller
//! catches. The exception classes are pure Python (`squall/errors.py`), so
//! the executor and tests can name them without this module.

use anna::client::ClientError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// An instance of `squall.errors.<class>` with `message`, as a `PyErr`.
pub fn squall_error(py: Python<'_>, class: &str, message: String) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let module =
            ERRORS.get_or_try_init(py, || Ok::<_, PyErr>(py.import("squall.errors")?.unbind()))?;
        let exc = module.bind(py).getattr(class)?.call1((message.clone(),))?;
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|e| e)
}

/// A failed KVS operation.
#[derive(Debug)]
pub struct KvsFailure(pub ClientError);

impl From<ClientError> for KvsFailure {
    fn from(e: ClientError) -> Self {
        KvsFailure(e)
    }
}

impl From<squall_transport::TransportError> for KvsFailure {
    fn from(e: squall_transport::TransportError) -> Self {
        KvsFailure(ClientError::Transport(e.to_string()))
    }
}

impl From<KvsFailure> for PyErr {
    fn from(KvsFailure(e): KvsFailure) -> PyErr {
        let class = match &e {
            ClientError::Timeout { .. } => "KvsTimeoutError",
            ClientError::TypeMismatch { .. } | ClientError::WrongKind { .. } => "TypeMismatchError",
            ClientError::Refused { .. } => "RefusedError",
            ClientError::PermissionDenied { .. } => "AccessDeniedError",
            _ => "KvsError",
        };
        Python::attach(|py| squall_error(py, class, e.to_string()))
    }
}
