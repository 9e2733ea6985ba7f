//! Records the scheduler reads from the KVS by name and caches: DAG
//! definitions ([`Dags`]) and functions' traffic splits ([`Splits`]). One
//! mechanism for both: a record is read on a miss, cached for
//! `dag_cache_ttl`, dropped when it is known to have changed. Calls that
//! need a record being read wait for the read (one read per name, however
//! many calls wait), each until its own deadline.
//!
//! Sessions: a cached record serves a call only if its version covers
//! what the caller wrote of the record's key (a register, split or delete
//! right before the call); otherwise the record is read again, at least at
//! the join of the waiting calls' versions.

use anna::client::OpId;
use anna::lattice::{KeyState, Lattice};
use anna::protocol::compute::{CallRequest, Dag, DagCallRequest, Traffic};
use anna::time::Time;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// DAG definitions, for calls of DAGs.
pub(crate) type Dags = Records<Dag, DagCallRequest>;

/// Traffic splits, for calls of functions by their plain name.
pub(crate) type Splits = Records<Traffic, CallRequest>;

/// A call waiting for a record.
#[derive(Debug)]
pub(crate) struct Waiting<R> {
    pub req: R,
    pub deadline_ms: u64,
    /// The version of the record's key the caller wrote, if it did.
    pub at_least: Option<KeyState>,
}

/// A read of one record in progress.
#[derive(Debug)]
pub(crate) struct Fetch<R> {
    /// The record changed while the read was out: its answer may predate
    /// the change, so it is read again before anyone uses it.
    pub stale: bool,
    pub waiting: Vec<Waiting<R>>,
    /// The version the read waits for.
    pub at_least: Option<KeyState>,
}

/// A cached record, the version of its key it was read at, and when.
type Cached<T> = (Arc<T>, KeyState, Time);

/// The join of the versions `waiting` calls need.
pub(crate) fn needed<'a, R: 'a>(
    waiting: impl IntoIterator<Item = &'a Waiting<R>>,
) -> Option<KeyState> {
    waiting
        .into_iter()
        .filter_map(|w| w.at_least.clone())
        .reduce(Lattice::join)
}

/// Cached records (of type `T`) and reads in progress, by name, for calls
/// of type `R`.
#[derive(Debug)]
pub(crate) struct Records<T, R> {
    cached: BTreeMap<String, Cached<T>>,
    fetching: BTreeMap<String, Fetch<R>>,
    ops: BTreeMap<OpId, String>,
}

impl<T, R> Default for Records<T, R> {
    fn default() -> Self {
        Records {
            cached: BTreeMap::new(),
            fetching: BTreeMap::new(),
            ops: BTreeMap::new(),
        }
    }
}

impl<T, R> Records<T, R> {
    /// The cached record of `name`, if read less than `ttl` ago at a
    /// version covering `at_least`.
    pub fn lookup(
        &self,
        name: &str,
        now: Time,
        ttl: Duration,
        at_least: Option<&KeyState>,
    ) -> Option<Arc<T>> {
        self.cached(name, at_least)
            .filter(|(_, at)| *at + ttl > now)
            .map(|(record, _)| record)
    }

    /// The cached record of `name` however old, with when it was read, if
    /// read at a version covering `at_least`.
    pub fn cached(&self, name: &str, at_least: Option<&KeyState>) -> Option<(Arc<T>, Time)> {
        self.cached
            .get(name)
            .filter(|(_, version, _)| at_least.is_none_or(|w| version.covers(w)))
            .map(|(record, _, at)| (record.clone(), *at))
    }

    /// Whether `name` is being read.
    pub fn fetching(&self, name: &str) -> bool {
        self.fetching.contains_key(name)
    }

    /// Caches a record read at `now` from a state of its key.
    pub fn insert(&mut self, name: String, record: Arc<T>, version: KeyState, now: Time) {
        self.cached.insert(name, (record, version.witness(), now));
    }

    /// Drops records older than `ttl`.
    pub fn prune(&mut self, now: Time, ttl: Duration) {
        self.cached.retain(|_, (_, _, at)| *at + ttl > now);
    }

    /// `name` changed: forget its record; a read in progress is marked
    /// stale.
    pub fn changed(&mut self, name: &str) {
        self.cached.remove(name);
        if let Some(f) = self.fetching.get_mut(name) {
            f.stale = true;
        }
    }

    /// If `name` is being read, makes `call` wait for it; otherwise gives
    /// the call back.
    /// A read in progress that does not wait for the call's version is
    /// marked stale (read again, at least at the call's version).
    pub fn wait(&mut self, name: &str, call: Waiting<R>) -> Option<Waiting<R>> {
        match self.fetching.get_mut(name) {
            Some(f) => {
                if let Some(w) = &call.at_least {
                    if !f.at_least.as_ref().is_some_and(|a| a.covers(w)) {
                        f.stale = true;
                    }
                }
                f.waiting.push(call);
                None
            }
            None => Some(call),
        }
    }

    /// Records that operation `op` reads `name`'s record, at least at
    /// `at_least`, for `waiting`.
    pub fn start(
        &mut self,
        name: String,
        op: OpId,
        waiting: Vec<Waiting<R>>,
        at_least: Option<KeyState>,
    ) {
        self.ops.insert(op, name.clone());
        self.fetching.insert(
            name,
            Fetch {
                stale: false,
                waiting,
                at_least,
            },
        );
    }

    /// The read `op` finished: its name and what waited for it (`None` if
    /// `op` is not a read of these records).
    pub fn finish(&mut self, op: OpId) -> Option<(String, Fetch<R>)> {
        let name = self.ops.remove(&op)?;
        let fetch = self.fetching.remove(&name)?;
        Some((name, fetch))
    }

    /// Takes the waiting calls whose deadline is at or before `now_ms`.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Waiting<R>> {
        let mut expired = Vec::new();
        for f in self.fetching.values_mut() {
            let (late, on_time): (Vec<Waiting<R>>, Vec<Waiting<R>>) =
                std::mem::take(&mut f.waiting)
                    .into_iter()
                    .partition(|w| w.deadline_ms <= now_ms);
            f.waiting = on_time;
            expired.extend(late);
        }
        expired
    }

    /// How many calls wait for a record.
    pub fn waiting(&self) -> usize {
        self.fetching.values().map(|f| f.waiting.len()).sum()
    }

    /// The earliest deadline of a waiting call.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.fetching
            .values()
            .flat_map(|f| f.waiting.iter().map(|w| w.deadline_ms))
            .min()
    }
}
