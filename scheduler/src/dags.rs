//! DAG definitions: read from the KVS on a miss, cached for
//! `dag_cache_ttl`, dropped on `DagChanged`. Calls of a DAG whose
//! definition is being read wait for the read (one read per DAG, however
//! many calls wait), each until its own deadline.
//!
//! Sessions: a cached definition serves a call only if its version covers
//! what the caller wrote of the DAG's key (a register or delete right
//! before the call); otherwise the definition is read again, at least at
//! the join of the waiting calls' versions.

use anna::client::OpId;
use anna::lattice::{KeyState, Lattice};
use anna::protocol::compute::{dag_key, Dag, DagCallRequest};
use anna::time::Time;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A call waiting for its DAG's definition.
#[derive(Debug)]
pub(crate) struct Waiting {
    pub req: DagCallRequest,
    pub deadline_ms: u64,
}

impl Waiting {
    /// The version of the DAG's key the caller wrote, if it did.
    pub fn at_least(&self) -> Option<&KeyState> {
        self.req.session.get(&dag_key(&self.req.dag))
    }
}

/// A read of one DAG's definition in progress.
#[derive(Debug)]
pub(crate) struct Fetch {
    /// The DAG changed while the read was out: its answer may predate the
    /// change, so it is read again before anyone uses it.
    pub stale: bool,
    pub waiting: Vec<Waiting>,
    /// The version the read waits for.
    pub at_least: Option<KeyState>,
}

/// A cached definition: the DAG, the version of its key it was read at,
/// and when.
type Cached = (Arc<Dag>, KeyState, Time);

/// The join of the versions `waiting` calls need.
pub(crate) fn needed<'a>(waiting: impl IntoIterator<Item = &'a Waiting>) -> Option<KeyState> {
    waiting
        .into_iter()
        .filter_map(Waiting::at_least)
        .cloned()
        .reduce(Lattice::join)
}

/// Cached definitions and reads in progress, by DAG name.
#[derive(Debug, Default)]
pub(crate) struct Dags {
    cached: BTreeMap<String, Cached>,
    fetching: BTreeMap<String, Fetch>,
    ops: BTreeMap<OpId, String>,
}

impl Dags {
    /// The cached definition of `name`, if read less than `ttl` ago at a
    /// version covering `at_least`.
    pub fn lookup(
        &self,
        name: &str,
        now: Time,
        ttl: Duration,
        at_least: Option<&KeyState>,
    ) -> Option<Arc<Dag>> {
        self.cached
            .get(name)
            .filter(|(_, version, at)| {
                *at + ttl > now && at_least.is_none_or(|w| version.covers(w))
            })
            .map(|(dag, _, _)| dag.clone())
    }

    /// Caches a definition read at `now` from a state of its key.
    pub fn insert(&mut self, name: String, dag: Arc<Dag>, version: KeyState, now: Time) {
        self.cached.insert(name, (dag, version.witness(), now));
    }

    /// Drops definitions older than `ttl`.
    pub fn prune(&mut self, now: Time, ttl: Duration) {
        self.cached.retain(|_, (_, _, at)| *at + ttl > now);
    }

    /// `name` changed: forget its definition; a read in progress is marked
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
    pub fn wait(&mut self, name: &str, call: Waiting) -> Option<Waiting> {
        match self.fetching.get_mut(name) {
            Some(f) => {
                if let Some(w) = call.at_least() {
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

    /// Records that operation `op` reads `name`'s definition, at least at
    /// `at_least`, for `waiting`.
    pub fn start(
        &mut self,
        name: String,
        op: OpId,
        waiting: Vec<Waiting>,
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

    /// The read `op` finished: its DAG and what waited for it (`None` if
    /// `op` is not a DAG read).
    pub fn finish(&mut self, op: OpId) -> Option<(String, Fetch)> {
        let name = self.ops.remove(&op)?;
        let fetch = self.fetching.remove(&name)?;
        Some((name, fetch))
    }

    /// Takes the waiting calls whose deadline is at or before `now_ms`.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Waiting> {
        let mut expired = Vec::new();
        for f in self.fetching.values_mut() {
            let (late, on_time): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut f.waiting)
                .into_iter()
                .partition(|w| w.deadline_ms <= now_ms);
            f.waiting = on_time;
            expired.extend(late);
        }
        expired
    }

    /// How many calls wait for a definition.
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
