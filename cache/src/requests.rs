//! Executors' reads and writes, answered like a storage thread answers
//! them, for any key.
//!
//! A read of a held key is a hit, answered at once. A miss goes to the KVS
//! through the embedded client (one fetch however many reads wait on it);
//! the value found is held from then on and subscribed at its owners; a key
//! the KVS does not hold is answered `NotFound` and not held. A write is
//! merged into the held state (refused, untouched, if its lattice kind
//! differs), relayed to the KVS at the request's acknowledgement level and
//! answered when the KVS acknowledges; a delete also stops holding the key.
//!
//! A `ReadState` with a version (`at_least`, from a caller's session) is a
//! hit only if the held state covers it; otherwise the embedded client
//! reads the replicas until one covers it (or the read fails `Stale`), the
//! answer is merged into the held state, and that is what the executor
//! gets: never an older version than its caller wrote.

use crate::cache::{Cache, InFlight, OpKind, Pending};
use anna::client::{ClientError, Completion, OpOutput};
use anna::kvs::subscriptions::{push_batches, PushBatches};
use anna::lattice::{KeyState, Timestamp};
use anna::protocol::{
    Address, KeyOp, KeyResult, KvsError, KvsRequest, KvsResponse, Message, Outcome, RequestId,
};
use anna::role::Outbox;
use anna::time::Time;

/// What a read of `state` answers: its visible value, or the whole state
/// for a `ReadState`.
fn read_outcome(state: Option<&KeyState>, kind: OpKind) -> Outcome {
    if kind == OpKind::ReadState {
        return Outcome::State(state.cloned().unwrap_or_default());
    }
    match state.and_then(KeyState::visible) {
        Some(v) => Outcome::Value(v.into_owned()),
        None => Outcome::NotFound,
    }
}

/// What an executor is told of a failed KVS operation. The protocol has no
/// "unavailable" error: a read or write that no replica answered in time
/// reads as a write no replica acknowledged.
fn error_outcome(error: ClientError) -> Outcome {
    if matches!(
        error,
        ClientError::Timeout { .. } | ClientError::NoNodes { .. } | ClientError::Transport(_)
    ) {
        tracing::debug!(%error, "cache: the KVS did not answer");
    }
    Outcome::Error(error.to_kvs())
}

impl Cache {
    pub(crate) fn on_request(&mut self, now: Time, req: KvsRequest, out: &mut Outbox) {
        let KvsRequest {
            id,
            reply_to,
            ops,
            ack,
            // The cache shares values with its executors alone: their
            // `ipc://` addresses say so.
            shared_memory: _,
        } = req;
        let pending = self.fresh_pending();
        let mut results = Vec::with_capacity(ops.len());
        let mut open = 0;
        let mut hits = 0;
        for (index, op) in ops.into_iter().enumerate() {
            let key = op.key().clone();
            let waiter = (pending, index);
            if let Err(error) = self.config.limits.check_write(now, &op) {
                self.stats.writes_refused += 1;
                tracing::debug!(%key, %error, "cache: write refused");
                results.push(KeyResult {
                    key,
                    outcome: Outcome::Error(error),
                });
                continue;
            }
            let outcome = match op {
                KeyOp::Get { key } => {
                    let hit = self.get(now, key, None, OpKind::Get, waiter, out);
                    hits += u32::from(hit.is_some());
                    hit
                }
                KeyOp::ReadState { key, at_least } => {
                    let hit = self.get(now, key, at_least, OpKind::ReadState, waiter, out);
                    hits += u32::from(hit.is_some());
                    hit
                }
                KeyOp::Put { key, value } => {
                    self.stats.puts += 1;
                    match self.store.put_held(&key, value.clone()) {
                        Err(mismatch) => Some(Outcome::Error(KvsError::TypeMismatch(mismatch))),
                        Ok(changed) => {
                            if changed == Some(true) {
                                self.to_push.insert(key.clone());
                            }
                            let op = self.client.put_with(now, key.clone(), value, ack, out);
                            self.wait(op, key, OpKind::Write, waiter);
                            None
                        }
                    }
                }
                KeyOp::Delete { key, at } => {
                    self.stats.deletes += 1;
                    self.drop_deleted(now, &key, at, out);
                    let op = self.client.delete_at(now, key.clone(), at, ack, out);
                    self.wait(op, key, OpKind::Write, waiter);
                    None
                }
            };
            if outcome.is_none() {
                open += 1;
            }
            results.push(KeyResult {
                key,
                outcome: outcome.unwrap_or(Outcome::NotFound),
            });
        }
        if open == 0 {
            self.answer(now, reply_to, id, results, hits, out);
        } else {
            self.pending.insert(
                pending,
                Pending {
                    reply_to,
                    id,
                    results,
                    open,
                    hits,
                },
            );
        }
    }

    /// A read: the answer if it is a hit (a held state covering
    /// `at_least`, if given), `None` if it waits for the KVS.
    fn get(
        &mut self,
        now: Time,
        key: String,
        at_least: Option<KeyState>,
        kind: OpKind,
        waiter: (u64, usize),
        out: &mut Outbox,
    ) -> Option<Outcome> {
        if let Some(state) = self.store.read(&key) {
            if at_least.as_ref().is_none_or(|w| state.covers(w)) {
                self.stats.hits += 1;
                return Some(read_outcome(Some(state), kind));
            }
        }
        self.stats.misses += 1;
        if kind == OpKind::Get {
            // Plain reads of one missing key share one fetch.
            if let Some(op) = self.fetching.get(&key) {
                if let Some(f) = self.ops.get_mut(op) {
                    f.waiters.push(waiter);
                    return None;
                }
            }
        }
        // The whole state, so the held copy is a faithful replica (its
        // delete time and counters' baseline included).
        let op = self.client.read_state(now, key.clone(), at_least, out);
        if kind == OpKind::Get {
            self.fetching.insert(key.clone(), op);
        }
        self.wait(op, key, kind, waiter);
        None
    }

    fn wait(&mut self, op: anna::client::OpId, key: String, kind: OpKind, waiter: (u64, usize)) {
        self.ops.insert(
            op,
            InFlight {
                key,
                kind,
                waiters: vec![waiter],
            },
        );
    }

    /// Answers an executor's request, its large values in shared memory
    /// if the executor is on this machine (see [`anna::shared`]).
    fn answer(
        &mut self,
        now: Time,
        reply_to: Address,
        id: RequestId,
        mut results: Vec<KeyResult>,
        hits: u32,
        out: &mut Outbox,
    ) {
        for r in &mut results {
            let outcome = std::mem::replace(&mut r.outcome, Outcome::NotFound);
            // Only an executor of this node (`ipc://`) maps the cache's files.
            let local = reply_to.as_str().starts_with("ipc://");
            let source = self.client.shared_source(&r.key);
            r.outcome = self.shared.share(now, &r.key, outcome, local, source);
        }
        out.send(
            reply_to,
            Message::KvsResponse(KvsResponse { id, results, hits }),
        );
    }

    /// A deleted key is no longer held; executors subscribed to it are told.
    fn drop_deleted(&mut self, now: Time, key: &str, at: Timestamp, out: &mut Outbox) {
        self.shared.retire(now, key);
        self.store.remove(key);
        self.unsubscribed.remove(key);
        self.to_push.remove(key);
        let batches: PushBatches = self
            .executors
            .batch([&key.to_string()], now, |_| Some(KeyState::tombstone(at)));
        self.stats.pushes += push_batches(&self.me, batches, out);
    }

    /// Settles the executor operations waiting on finished KVS operations.
    pub(crate) fn complete(&mut self, now: Time, done: Vec<Completion>, out: &mut Outbox) {
        for (op, result) in done {
            let Some(f) = self.ops.remove(&op) else {
                continue;
            };
            if f.kind == OpKind::Get && self.fetching.get(&f.key) == Some(&op) {
                self.fetching.remove(&f.key);
            }
            let outcome = match result {
                Ok(OpOutput::State(state)) => self.fetched(now, &f.key, state, f.kind),
                Ok(OpOutput::Value(_)) => Outcome::NotFound,
                Ok(OpOutput::Written { epoch }) => Outcome::Stored { epoch },
                Err(e) => {
                    self.stats.kvs_errors += 1;
                    error_outcome(e)
                }
            };
            for (pending, index) in f.waiters {
                self.settle(now, pending, index, outcome.clone(), out);
            }
        }
    }

    /// A state fetched from the KVS: merged into the held copy (held from
    /// now on, subscribed at the next renewal) and answered from it. A key
    /// with no value (never written, or deleted) that is not held is
    /// answered as found and not held.
    fn fetched(&mut self, now: Time, key: &str, state: KeyState, kind: OpKind) -> Outcome {
        if state.value().is_none() && !self.store.contains(key) {
            return read_outcome(Some(&state), kind);
        }
        let was_empty = self.store.is_empty();
        if self.store.fill(key, state) {
            self.to_push.insert(key.to_string());
        }
        if was_empty {
            // Nothing was held, so no renewal was due: the first comes a
            // period after the first key.
            self.next_renewal = now + self.config.renewal_period();
        }
        self.unsubscribed.insert(key.to_string());
        // Eviction runs after the request, so the key is held here.
        read_outcome(self.store.peek(key), kind)
    }

    fn settle(
        &mut self,
        now: Time,
        pending: u64,
        index: usize,
        outcome: Outcome,
        out: &mut Outbox,
    ) {
        let Some(p) = self.pending.get_mut(&pending) else {
            return;
        };
        if let Some(r) = p.results.get_mut(index) {
            r.outcome = outcome;
        }
        p.open = p.open.saturating_sub(1);
        if p.open == 0 {
            if let Some(p) = self.pending.remove(&pending) {
                self.answer(now, p.reply_to, p.id, p.results, p.hits, out);
            }
        }
    }
}
