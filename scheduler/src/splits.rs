//! Traffic splits: a call of a function by its plain name goes to the
//! version its split picks for the call's id (`NAME@N`), or to the
//! current version (`NAME`). Splits are records of the [`Splits`] cache,
//! read through the KVS client like DAG definitions.
//!
//! Unlike a DAG definition, a split is not needed to run a call: a call
//! whose split is not cached runs the current version at once while the
//! split is read for the calls after it, and one whose split is older than
//! `dag_cache_ttl` runs by it while it is read again. A call waits for the
//! read only if its caller wrote the split (a `set_traffic` right before
//! the call): what a caller set applies to its next call. A call pinned to
//! a version (`NAME@N`) or of a named instance is not split.
//!
//! [`Splits`]: crate::records::Splits

use crate::records::{needed, Fetch, Waiting};
use crate::scheduler::Scheduler;
use anna::client::{ClientError, OpOutput};
use anna::lattice::LatticeValue;
use anna::protocol::compute::{decode_value, traffic_key, CallErrorKind, CallRequest, Traffic};
use anna::role::Outbox;
use anna::time::Time;
use std::sync::Arc;

impl Scheduler {
    /// `req` with its function resolved through its split, if it can run
    /// now; `None` if it waits for a read of the split (or was refused).
    pub(crate) fn through_split(
        &mut self,
        now: Time,
        mut req: CallRequest,
        deadline_ms: u64,
        out: &mut Outbox,
    ) -> Option<CallRequest> {
        if req.function.contains('@') || req.instance.is_some() {
            return Some(req);
        }
        // The caller's version of the split, if it wrote it (no key is
        // made for the many calls whose session is empty).
        let at_least = (!req.session.is_empty())
            .then(|| req.session.get(&traffic_key(&req.function)).cloned())
            .flatten();
        match self.splits.cached(&req.function, at_least.as_ref()) {
            Some((split, read_at)) => {
                if read_at + self.config.dag_cache_ttl <= now {
                    self.refresh_split(now, req.function.clone(), out);
                }
                split_call(&split, &mut req, &mut self.stats.split_calls);
                Some(req)
            }
            None if at_least.is_none() => {
                self.refresh_split(now, req.function.clone(), out);
                Some(req)
            }
            None => {
                if self.queued() >= self.config.queue_capacity {
                    self.refuse_overloaded(now, req.id, &req.reply, out);
                    return None;
                }
                let name = req.function.clone();
                let call = Waiting {
                    req,
                    deadline_ms,
                    at_least,
                };
                if let Some(first) = self.splits.wait(&name, call) {
                    self.start_split_read(now, name, vec![first], out);
                }
                None
            }
        }
    }

    /// Reads `name`'s split for later calls, unless a read is out.
    fn refresh_split(&mut self, now: Time, name: String, out: &mut Outbox) {
        if !self.splits.fetching(&name) {
            self.start_split_read(now, name, Vec::new(), out);
        }
    }

    /// Starts reading function `name`'s split for the calls `waiting`.
    pub(crate) fn start_split_read(
        &mut self,
        now: Time,
        name: String,
        waiting: Vec<Waiting<CallRequest>>,
        out: &mut Outbox,
    ) {
        self.stats.split_reads += 1;
        let at_least = needed(&waiting);
        let op = (self.client).read_state(now, traffic_key(&name), at_least.clone(), out);
        self.splits.start(name, op, waiting, at_least);
    }

    /// A read of `name`'s split answered `result`: caches the split and
    /// admits the calls that waited for it. A read that failed caches
    /// nothing (the next call reads again) and the calls run the current
    /// version. A read a newer caller joined is made again.
    pub(crate) fn on_split_read(
        &mut self,
        now: Time,
        name: String,
        fetch: Fetch<CallRequest>,
        result: Result<OpOutput, ClientError>,
        out: &mut Outbox,
    ) {
        if fetch.stale {
            return self.start_split_read(now, name, fetch.waiting, out);
        }
        let split = match result {
            Ok(OpOutput::State(state)) => {
                let split = match state.visible().as_deref() {
                    None => Traffic::default(),
                    Some(LatticeValue::Lww(stored)) => decode_value::<Traffic>(stored.value())
                        .unwrap_or_else(|| {
                            self.stats.bad_splits += 1;
                            tracing::warn!(%name, "a traffic split does not decode: ignored");
                            Traffic::default()
                        }),
                    Some(other) => {
                        self.stats.bad_splits += 1;
                        let kind = other.kind().name();
                        tracing::warn!(%name, kind, "a traffic split is no last-writer-wins value");
                        Traffic::default()
                    }
                };
                let split = Arc::new(split);
                self.splits.insert(name, split.clone(), state, now);
                Some(split)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(%name, %e, "reading a traffic split failed");
                None
            }
        };
        for w in fetch.waiting {
            let mut req = w.req;
            if let Some(split) = &split {
                split_call(split, &mut req, &mut self.stats.split_calls);
            }
            self.admit_call(now, req, w.deadline_ms, out);
        }
    }

    /// Answers `Timeout` to calls that waited for their split past their
    /// deadline.
    pub(crate) fn expire_split_waiting(&mut self, now: Time, out: &mut Outbox) {
        for w in self.splits.expire(now.as_millis()) {
            self.stats.timeouts += 1;
            let message = format!(
                "the traffic split of `{}` could not be read before the call's deadline",
                w.req.function
            );
            let kind = CallErrorKind::Timeout;
            self.answer_error(now, w.req.id, &w.req.reply, kind, message, None, out);
        }
    }
}

/// Sends `req` to the version `split` picks for it, if any.
fn split_call(split: &Traffic, req: &mut CallRequest, split_calls: &mut u64) {
    if let Some(version) = split.pick(req.id) {
        *split_calls += 1;
        req.function = format!("{}@{version}", req.function);
    }
}
