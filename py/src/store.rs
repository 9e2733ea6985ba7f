//! [`Store`]: get, put and delete of Python values against any KVS
//! endpoint ([`Kvs`]): the routed cluster client, or one direct endpoint.
//!
//! The network part runs with the GIL released (and under the endpoint's
//! own lock, so one client may be shared by Python threads); conversion
//! runs with the GIL held and never waits on the network.

use crate::errors::KvsFailure;
use crate::values::{self, Writer};
use anna::lattice::{KeyState, LatticeValue, Timestamp, WriterId};
use anna::protocol::{Ack, Session};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::sync::{Mutex, MutexGuard};

/// Blocking get, put and delete against some KVS endpoint.
pub trait Kvs: Send {
    /// Reads `key`, at least at version `at_least` (a session's witness).
    fn get(
        &mut self,
        key: &str,
        at_least: Option<&KeyState>,
    ) -> Result<Option<LatticeValue>, KvsFailure>;
    /// Merges `value` into `key`, acknowledged at `ack` (the endpoint's
    /// default if `None`).
    fn put(&mut self, key: &str, value: LatticeValue, ack: Option<Ack>) -> Result<(), KvsFailure>;
    /// Deletes `key` as of `at`.
    fn delete(&mut self, key: &str, at: Timestamp, ack: Option<Ack>) -> Result<(), KvsFailure>;
    /// The versions this endpoint's client wrote, for calls to carry.
    fn session(&mut self) -> Session {
        Session::default()
    }

    /// The versions written since the last take (an executor's user
    /// library reports a function's writes to its caller).
    fn take_written(&mut self) -> Session {
        Session::default()
    }

    /// Records writes made on this client's behalf (by a function it
    /// called).
    fn record_written(&mut self, _written: &Session) {}

    /// Reads `key` as [`Kvs::get`], and pins the state read: later pinned
    /// reads of the key answer the same version (repeatable read).
    fn get_pinned(
        &mut self,
        key: &str,
        at_least: Option<&KeyState>,
    ) -> Result<Option<LatticeValue>, KvsFailure> {
        self.get(key, at_least)
    }

    /// The states pinned since the last take.
    fn take_pinned(&mut self) -> Session {
        Session::default()
    }

    /// Reads several keys, values in the order of `keys`; fails with the
    /// first error if any read fails. One request per key unless the
    /// endpoint batches.
    fn get_many(&mut self, keys: &[&str]) -> Result<Vec<Option<LatticeValue>>, KvsFailure> {
        keys.iter().map(|k| self.get(k, None)).collect()
    }

    /// Merges several values (acknowledged at the endpoint's default);
    /// fails with the first error if any write fails.
    fn put_many(&mut self, entries: Vec<(String, LatticeValue)>) -> Result<(), KvsFailure> {
        let mut first = None;
        for (key, value) in entries {
            if let Err(e) = self.put(&key, value, None) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Kvs for squall_transport::Client {
    fn get(
        &mut self,
        key: &str,
        _at_least: Option<&KeyState>,
    ) -> Result<Option<LatticeValue>, KvsFailure> {
        // The routed client reads at least at its own session's versions.
        Ok(squall_transport::Client::get(self, key)?)
    }

    fn put(&mut self, key: &str, value: LatticeValue, ack: Option<Ack>) -> Result<(), KvsFailure> {
        let ack = ack.unwrap_or(self.config().put_ack);
        Ok(squall_transport::Client::put_with(self, key, value, ack)?)
    }

    fn delete(&mut self, key: &str, _at: Timestamp, ack: Option<Ack>) -> Result<(), KvsFailure> {
        // The routed client stamps deletes with its own clock.
        let ack = ack.unwrap_or(self.config().delete_ack);
        Ok(squall_transport::Client::delete_with(self, key, ack)?)
    }

    fn session(&mut self) -> Session {
        squall_transport::Client::session(self)
    }

    fn record_written(&mut self, written: &Session) {
        for (key, witness) in written.entries() {
            self.record_write(key, witness);
        }
    }

    /// One request per replica thread holding some of the keys.
    fn get_many(&mut self, keys: &[&str]) -> Result<Vec<Option<LatticeValue>>, KvsFailure> {
        Ok(squall_transport::Client::get_many(self, keys)?)
    }

    /// One request per replica thread holding some of the keys.
    fn put_many(&mut self, entries: Vec<(String, LatticeValue)>) -> Result<(), KvsFailure> {
        Ok(squall_transport::Client::put_many(self, entries)?)
    }
}

impl Kvs for squall_transport::Endpoint {
    fn get(
        &mut self,
        key: &str,
        at_least: Option<&KeyState>,
    ) -> Result<Option<LatticeValue>, KvsFailure> {
        Ok(squall_transport::Endpoint::get(self, key, at_least)?)
    }

    fn put(&mut self, key: &str, value: LatticeValue, ack: Option<Ack>) -> Result<(), KvsFailure> {
        Ok(squall_transport::Endpoint::put(self, key, value, ack)?)
    }

    fn delete(&mut self, key: &str, at: Timestamp, ack: Option<Ack>) -> Result<(), KvsFailure> {
        Ok(squall_transport::Endpoint::delete(self, key, at, ack)?)
    }

    fn take_written(&mut self) -> Session {
        squall_transport::Endpoint::take_written(self)
    }

    fn get_pinned(
        &mut self,
        key: &str,
        at_least: Option<&KeyState>,
    ) -> Result<Option<LatticeValue>, KvsFailure> {
        Ok(squall_transport::Endpoint::get_pinned(self, key, at_least)?)
    }

    fn take_pinned(&mut self) -> Session {
        squall_transport::Endpoint::take_pinned(self)
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

    /// Writes as `writer` from now on, with its own running counter totals
    /// (a function's writes under one invocation: every attempt of the
    /// invocation writes as the same writer, so a retry's increments merge
    /// into the first attempt's instead of adding to them).
    pub fn set_writer(&self, writer: WriterId) {
        let mut w = lock(&self.writer);
        if w.id() != writer {
            *w = Writer::new(writer);
        }
    }

    /// The versions written through this store, for calls to carry.
    pub fn session(&self, py: Python<'_>) -> Session {
        py.detach(|| lock(&self.net).session())
    }

    /// See [`Kvs::take_written`].
    pub fn take_written(&self) -> Session {
        lock(&self.net).take_written()
    }

    /// Runs `f` on the endpoint (for what only one kind of endpoint does).
    pub fn with_net<T>(&self, f: impl FnOnce(&mut B) -> T) -> T {
        f(&mut lock(&self.net))
    }

    /// See [`Kvs::take_pinned`].
    pub fn take_pinned(&self) -> Session {
        lock(&self.net).take_pinned()
    }

    /// See [`Kvs::record_written`].
    pub fn record_written(&self, written: &Session) {
        lock(&self.net).record_written(written)
    }

    /// The key's value as a Python object; `None` if it has none. `pin`:
    /// see [`Kvs::get_pinned`].
    pub fn get(
        &self,
        py: Python<'_>,
        key: &str,
        raw: bool,
        at_least: Option<&KeyState>,
        pin: bool,
    ) -> PyResult<Py<PyAny>> {
        match self.get_value(py, key, at_least, pin)? {
            None => Ok(py.None()),
            Some(v) => Ok(values::from_lattice(py, &v, raw)?.unbind()),
        }
    }

    /// The key's value as [`Store::get`] returns it, except that a large
    /// buffer of a pickled value (a NumPy array's memory) is read where it
    /// lies, read-only ([`values::from_lattice_readonly`]).
    pub fn get_readonly(&self, py: Python<'_>, key: &str) -> PyResult<Py<PyAny>> {
        match self.get_value(py, key, None, false)? {
            None => Ok(py.None()),
            Some(v) => Ok(values::from_lattice_readonly(py, &v)?.unbind()),
        }
    }

    /// The key's value as stored, read as [`Store::get`] reads it.
    pub fn get_value(
        &self,
        py: Python<'_>,
        key: &str,
        at_least: Option<&KeyState>,
        pin: bool,
    ) -> PyResult<Option<LatticeValue>> {
        Ok(py.detach(|| {
            let mut net = lock(&self.net);
            if pin {
                net.get_pinned(key, at_least)
            } else {
                net.get(key, at_least)
            }
        })?)
    }

    /// The key's value as stored, without converting it.
    pub fn get_lattice(&self, py: Python<'_>, key: &str) -> PyResult<Option<LatticeValue>> {
        Ok(py.detach(|| lock(&self.net).get(key, None))?)
    }

    /// Merges `obj` (converted by [`values::to_lattice`]) into `key`,
    /// acknowledged at `ack`.
    pub fn put(
        &self,
        py: Python<'_>,
        key: &str,
        obj: &Bound<'_, PyAny>,
        ack: Option<Ack>,
    ) -> PyResult<()> {
        let stored = if values::needs_stored(obj)? {
            py.detach(|| lock(&self.net).get(key, None))?
        } else {
            None
        };
        let (value, saved) = {
            let mut w = lock(&self.writer);
            let saved = w.save(key);
            (values::to_lattice(obj, key, stored.as_ref(), &mut w), saved)
        };
        let result = value.and_then(|v| Ok(py.detach(|| lock(&self.net).put(key, v, ack))?));
        if result.is_err() {
            // A refused counter write must not count later.
            lock(&self.writer).restore(key, saved);
        }
        result
    }

    /// Merges the value `make` builds with this store's writer (for a
    /// last-writer-wins timestamp) into `key`, acknowledged at `ack`; no
    /// Python involved (the caller holds no GIL to release).
    pub fn put_value(
        &self,
        key: &str,
        make: impl FnOnce(&mut Writer) -> LatticeValue,
        ack: Option<Ack>,
    ) -> Result<(), KvsFailure> {
        let value = make(&mut lock(&self.writer));
        lock(&self.net).put(key, value, ack)
    }

    /// The values of `keys` as Python objects (`None` for a key with
    /// none), in order, read in one batch (see [`Kvs::get_many`]).
    pub fn get_many(&self, py: Python<'_>, keys: &[String], raw: bool) -> PyResult<Vec<Py<PyAny>>> {
        let values = py.detach(|| {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            lock(&self.net).get_many(&keys)
        })?;
        values
            .iter()
            .map(|v| match v {
                None => Ok(py.None()),
                Some(v) => Ok(values::from_lattice(py, v, raw)?.unbind()),
            })
            .collect()
    }

    /// Merges each `(key, obj)` as [`Store::put`] would, in one batch
    /// (see [`Kvs::put_many`]). Values that need the key's stored value
    /// (causal values without a clock) are put one by one first.
    pub fn put_many(&self, py: Python<'_>, entries: &[(String, Bound<'_, PyAny>)]) -> PyResult<()> {
        let mut batch = Vec::with_capacity(entries.len());
        let mut saved = Vec::with_capacity(entries.len());
        for (key, obj) in entries {
            if values::needs_stored(obj)? {
                self.put(py, key, obj, None)?;
                continue;
            }
            let mut w = lock(&self.writer);
            saved.push((key.as_str(), w.save(key)));
            match values::to_lattice(obj, key, None, &mut w) {
                Ok(v) => batch.push((key.clone(), v)),
                Err(e) => {
                    for (key, s) in saved.into_iter().rev() {
                        w.restore(key, s);
                    }
                    return Err(e);
                }
            }
        }
        let result = py.detach(|| lock(&self.net).put_many(batch));
        if result.is_err() {
            let mut w = lock(&self.writer);
            for (key, s) in saved.into_iter().rev() {
                w.restore(key, s);
            }
        }
        Ok(result?)
    }

    /// Deletes `key`, acknowledged at `ack`. The writer keeps its counter
    /// totals: the delete keeps them as the key's baseline, and later
    /// increments count from it (see `anna::lattice::key_state`).
    pub fn delete(&self, py: Python<'_>, key: &str, ack: Option<Ack>) -> PyResult<()> {
        let at = lock(&self.writer).timestamp();
        Ok(py.detach(|| lock(&self.net).delete(key, at, ack))?)
    }
}

/// An acknowledgement level as Python callers give it: `None` (the
/// endpoint's default), `"one"`, `"all"`, `"durable"`, or a number of
/// replicas (see [`Ack`]'s `FromStr`).
pub fn parse_ack(ack: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Ack>> {
    let Some(ack) = ack.filter(|a| !a.is_none()) else {
        return Ok(None);
    };
    let text = match ack.extract::<String>() {
        Ok(name) => name,
        Err(_) => match ack.extract::<i64>() {
            Ok(n) => n.to_string(),
            Err(_) => ack.to_string(),
        },
    };
    text.parse().map(Some).map_err(PyValueError::new_err)
}
