//! [`Store`]: get, put and delete of Python values against any KVS
//! endpoint ([`Kvs`]): the routed cluster client, or one direct endpoint.
//!
//! The network part runs with the GIL released (and under the endpoint's
//! own lock, so one client may be shared by Python threads); conversion
//! runs with the GIL held and never waits on the network.

use crate::errors::KvsFailure;
use crate::values::{self, Writer};
use anna::lattice::{LatticeValue, Timestamp, WriterId};
use pyo3::prelude::*;
use std::sync::{Mutex, MutexGuard};

/// Blocking get, put and delete against some KVS endpoint.
pub trait Kvs: Send {
    fn get(&mut self, key: &str) -> Result<Option<LatticeValue>, KvsFailure>;
    fn put(&mut self, key: &str, value: LatticeValue) -> Result<(), KvsFailure>;
    /// Deletes `key` as of `at`.
    fn delete(&mut self, key: &str, at: Timestamp) -> Result<(), KvsFailure>;
}

impl Kvs for anna::client::Client {
    fn get(&mut self, key: &str) -> Result<Option<LatticeValue>, KvsFailure> {
        Ok(anna::client::Client::get(self, key)?)
    }

    fn put(&mut self, key: &str, value: LatticeValue) -> Result<(), KvsFailure> {
        Ok(anna::client::Client::put(self, key, value)?)
    }

    fn delete(&mut self, key: &str, _at: Timestamp) -> Result<(), KvsFailure> {
        // The routed client stamps deletes with its own clock.
        Ok(anna::client::Client::delete(self, key)?)
    }
}

/// Locks `m`, recovering from a panic of an earlier holder (the guarded
/// state stays consistent: every operation is a whole request).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Python values in and out of one KVS endpoint.
pub struct Store<B: Kvs> {
    net: Mutex<B>,
    writer: Mutex<Writer>,
}

impl<B: Kvs> Store<B> {
    pub fn new(net: B, writer: WriterId) -> Self {
        Store {
            net: Mutex::new(net),
            writer: Mutex::new(Writer::new(writer)),
        }
    }

    pub fn writer(&self) -> WriterId {
        lock(&self.writer).id()
    }

    /// The key's value as a Python object; `None` if it has none.
    pub fn get(&self, py: Python<'_>, key: &str, raw: bool) -> PyResult<Py<PyAny>> {
        let value = py.detach(|| lock(&self.net).get(key))?;
        match value {
            None => Ok(py.None()),
            Some(v) => Ok(values::from_lattice(py, &v, raw)?.unbind()),
        }
    }

    /// The key's value as stored, without converting it.
    pub fn get_lattice(&self, py: Python<'_>, key: &str) -> PyResult<Option<LatticeValue>> {
        Ok(py.detach(|| lock(&self.net).get(key))?)
    }

    /// Merges `obj` (converted by [`values::to_lattice`]) into `key`.
    pub fn put(&self, py: Python<'_>, key: &str, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let stored = if values::needs_stored(obj)? {
            py.detach(|| lock(&self.net).get(key))?
        } else {
            None
        };
        let (value, saved) = {
            let mut w = lock(&self.writer);
            let saved = w.save(key);
            (values::to_lattice(obj, key, stored.as_ref(), &mut w), saved)
        };
        let result = value.and_then(|v| Ok(py.detach(|| lock(&self.net).put(key, v))?));
        if result.is_err() {
            // A refused counter write must not count later.
            lock(&self.writer).restore(key, saved);
        }
        result
    }

    /// Deletes `key`.
    pub fn delete(&self, py: Python<'_>, key: &str) -> PyResult<()> {
        let at = {
            let mut w = lock(&self.writer);
            w.forget(key);
            w.timestamp()
        };
        Ok(py.detach(|| lock(&self.net).delete(key, at))?)
    }
}
