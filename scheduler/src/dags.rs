//! DAG definitions: read from the KVS on a miss, cached for
//! `dag_cache_ttl`, dropped on `DagChanged`. Calls of a DAG whose
//! definition is being read wait for the read (one read per DAG, however
//! many calls wait), each until its own deadline.

use anna::client::OpId;
use anna::protocol::compute::{Dag, DagCallRequest};
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

/// A read of one DAG's definition in progress.
#[derive(Debug)]
pub(crate) struct Fetch {
    /// The DAG changed while the read was out: its answer may predate the
    /// change, so it is read again before anyone uses it.
    pub stale: bool,
    pub waiting: Vec<Waiting>,
}

/// Cached definitions and reads in progress, by DAG name.
#[derive(Debug, Default)]
pub(crate) struct Dags {
    cached: BTreeMap<String, (Arc<Dag>, Time)>,
    fetching: BTreeMap<String, Fetch>,
    ops: BTreeMap<OpId, String>,
}

impl Dags {
    /// The cached definition of `name`, if read less than `ttl` ago.
    pub fn lookup(&self, name: &str, now: Time, ttl: Duration) -> Option<Arc<Dag>> {
        self.cached
            .get(name)
            .filter(|(_, at)| *at + ttl > now)
            .map(|(dag, _)| dag.clone())
    }

    /// Caches a definition read at `now`.
    pub fn insert(&mut self, name: String, dag: Arc<Dag>, now: Time) {
        self.cached.insert(name, (dag, now));
    }

    /// Drops definitions older than `ttl`.
    pub fn prune(&mut self, now: Time, ttl: Duration) {
        self.cached.retain(|_, (_, at)| *at + ttl > now);
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
    pub fn wait(&mut self, name: &str, call: Waiting) -> Option<Waiting> {
        match self.fetching.get_mut(name) {
            Some(f) => {
                f.waiting.push(call);
                None
            }
            None => Some(call),
        }
    }

    /// Records that operation `op` reads `name`'s definition for `waiting`.
    pub fn start(&mut self, name: String, op: OpId, waiting: Vec<Waiting>) {
        self.ops.insert(op, name.clone());
        self.fetching.insert(
            name,
            Fetch {
                stale: false,
                waiting,
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
