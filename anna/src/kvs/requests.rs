//! Client requests: gets, puts and deletes.
//!
//! A write is merged here first; if its acknowledgement level asks for more
//! replicas, the merged state is sent to the other owners as a gossip that
//! asks for an acknowledgement, and the answer waits for them (or for the
//! acknowledgement timeout, which answers `AckTimeout`). A read during a
//! ring transition also asks the key's previous owners (`Fetch`) and answers
//! with the merge, so no client sees a key missing because it moved.

use super::StorageWorker;
use crate::lattice::{KeyState, Lattice, Timestamp};
use crate::protocol::compute::ChangeKind;
use crate::protocol::{
    Ack, Address, Gossip, Key, KeyOp, KeyResult, KvsError, KvsRequest, KvsResponse, Message,
    Outcome, RequestId,
};
use crate::role::Outbox;
use crate::role::{StableHashMap, StableHashSet};
use crate::time::Time;
use std::collections::BTreeMap;
use std::time::Duration;

/// A client request waiting for replica acknowledgements or for the
/// previous owners' copies of keys.
struct Pending {
    reply_to: Address,
    /// Its reader maps this thread's files of shared memory: a large
    /// value read goes there ([`crate::shared`]).
    maps: bool,
    client_id: RequestId,
    results: Vec<KeyResult>,
    open: usize,
    waits: Vec<RequestId>,
    deadline: Time,
}

/// What one internal request id (an acked gossip or a fetch) waits for.
struct Wait {
    pending: RequestId,
    op: usize,
    what: WaitFor,
}

enum WaitFor {
    /// Acknowledgements from other replicas of a write.
    Acks {
        wanted: usize,
        got: StableHashSet<Address>,
        /// The delete epoch the write landed in, for the answer.
        epoch: Option<Timestamp>,
    },
    /// The next sync of the shard's store (a durable write).
    Sync {
        /// The delete epoch the write landed in, for the answer.
        epoch: Option<Timestamp>,
    },
    /// Copies of a key from its previous owners; asked again every
    /// `handoff_retry` until they answer or the request's deadline.
    Fetch {
        key: Key,
        expect: StableHashSet<Address>,
        state: KeyState,
        asked: Time,
        /// The read asked for the whole state (`KeyOp::ReadState`).
        whole: bool,
    },
}

/// The client requests a worker has not answered yet, the internal ids
/// (acked gossip, fetches) they wait on, and their deadlines.
#[derive(Default)]
pub(super) struct Requests {
    pending: StableHashMap<RequestId, Pending>,
    waits: StableHashMap<RequestId, Wait>,
    deadlines: BTreeMap<(Time, RequestId), ()>,
    /// The last id this worker gave a request of its own.
    last_id: u64,
}

impl Requests {
    /// A fresh id for a request this worker sends (a replication, a fetch,
    /// a handoff).
    pub(super) fn fresh_id(&mut self) -> RequestId {
        self.last_id += 1;
        RequestId(self.last_id)
    }

    /// Records request `pending_id`, answered by `deadline` at the latest.
    fn open(&mut self, pending_id: RequestId, pending: Pending) {
        self.deadlines.insert((pending.deadline, pending_id), ());
        self.pending.insert(pending_id, pending);
    }

    /// The earliest deadline of an open request.
    pub(super) fn next_deadline(&self) -> Option<Time> {
        self.deadlines
            .first_key_value()
            .map(|((deadline, _), ())| *deadline)
    }

    /// When the oldest unanswered fetch is due to be asked again.
    pub(super) fn fetch_retry_due(&self, retry: Duration) -> Option<Time> {
        self.waits
            .values()
            .filter_map(|w| match &w.what {
                WaitFor::Fetch { asked, .. } => Some(*asked + retry),
                WaitFor::Acks { .. } | WaitFor::Sync { .. } => None,
            })
            .min()
    }

    /// Asks previous owners again whose copies have not arrived after
    /// `retry`, for `me`: a lost fetch must not turn into a read that
    /// misses data.
    pub(super) fn retry_fetches(
        &mut self,
        now: Time,
        retry: Duration,
        me: &Address,
        out: &mut Outbox,
    ) {
        for (id, wait) in self.waits.iter_mut() {
            let WaitFor::Fetch {
                key, expect, asked, ..
            } = &mut wait.what
            else {
                continue;
            };
            if *asked + retry > now {
                continue;
            }
            *asked = now;
            for to in expect.iter() {
                out.send(
                    to.clone(),
                    Message::Fetch {
                        id: *id,
                        reply_to: me.clone(),
                        keys: vec![key.clone()],
                    },
                );
            }
        }
    }

    /// Records `from`'s acknowledgement of the write `id` waits for;
    /// whether the write now has every acknowledgement it wanted.
    pub(super) fn acked(&mut self, id: RequestId, from: Address) -> bool {
        let Some(wait) = self.waits.get_mut(&id) else {
            return false;
        };
        let WaitFor::Acks { wanted, got, .. } = &mut wait.what else {
            return false;
        };
        got.insert(from);
        got.len() >= *wanted
    }

    /// Merges `from`'s copies into the fetch `id` waits for; whether every
    /// previous owner asked has now answered.
    fn fetched(&mut self, id: RequestId, from: &Address, entries: Vec<(Key, KeyState)>) -> bool {
        let Some(wait) = self.waits.get_mut(&id) else {
            return false;
        };
        let WaitFor::Fetch { expect, state, .. } = &mut wait.what else {
            return false;
        };
        if !expect.remove(from) {
            return false;
        }
        for (_, s) in entries {
            state.merge(s);
        }
        expect.is_empty()
    }

    /// Settles operation `op` of request `pending_id` with `outcome`,
    /// answering the request if it was the last open one.
    fn settle(&mut self, pending_id: RequestId, op: usize, outcome: Outcome, out: &mut Outbox) {
        let Some(pending) = self.pending.get_mut(&pending_id) else {
            return;
        };
        if let Some(r) = pending.results.get_mut(op) {
            // An operation waiting on two things (replicas and a sync)
            // fails if either does.
            if !matches!(r.outcome, Outcome::Error(_)) {
                r.outcome = outcome;
            }
        }
        pending.open = pending.open.saturating_sub(1);
        if pending.open == 0 {
            self.answer(pending_id, out);
        }
    }

    fn answer(&mut self, pending_id: RequestId, out: &mut Outbox) {
        if let Some(p) = self.pending.remove(&pending_id) {
            self.deadlines.remove(&(p.deadline, pending_id));
            out.send(
                p.reply_to,
                Message::KvsResponse(KvsResponse {
                    id: p.client_id,
                    results: p.results,
                    hits: 0,
                }),
            );
        }
    }

    /// The first request whose deadline has passed by `now`, with the
    /// waits it still has open (taken from it).
    fn next_expired(&mut self, now: Time) -> Option<(RequestId, Vec<RequestId>)> {
        let (&(deadline, pending_id), ()) = self.deadlines.first_key_value()?;
        if deadline > now {
            return None;
        }
        self.deadlines.remove(&(deadline, pending_id));
        let waits = self
            .pending
            .get_mut(&pending_id)
            .map(|p| std::mem::take(&mut p.waits))
            .unwrap_or_default();
        Some((pending_id, waits))
    }
}

/// The answer to an operation whose key's disk copy could not be read.
fn disk_error(e: crate::kvs::StoreError) -> Outcome {
    Outcome::Error(KvsError::DiskRead {
        reason: e.to_string(),
    })
}

/// What a read of `state` answers.
pub(super) fn read_outcome(state: Option<&KeyState>, whole: bool) -> Outcome {
    if whole {
        return Outcome::State(state.cloned().unwrap_or_default());
    }
    match state.and_then(KeyState::visible) {
        Some(v) => Outcome::Value(v.into_owned()),
        None => Outcome::NotFound,
    }
}

impl StorageWorker {
    pub(super) fn on_request(&mut self, now: Time, req: KvsRequest, out: &mut Outbox) {
        let KvsRequest {
            id,
            reply_to,
            ops,
            ack,
            shared_memory,
        } = req;
        let pending_id = self.fresh_id();
        let maps = shared_memory.is_some() && shared_memory == self.shared_memory;
        let mut results = Vec::with_capacity(ops.len());
        let mut opened = Vec::new();
        for (index, op) in ops.into_iter().enumerate() {
            let key = op.key().clone();
            if !self.owns(&key) {
                self.stats.not_mine += 1;
                results.push(KeyResult {
                    key,
                    outcome: Outcome::NotMine {
                        ring_version: self.ring.placement().version(),
                    },
                });
                continue;
            }
            if let Err(error) = self.config.limits.check_write(now, &op) {
                self.stats.writes_refused += 1;
                if self.stats.writes_refused.is_power_of_two() {
                    tracing::warn!(%key, %error, refused = self.stats.writes_refused, "write refused");
                }
                results.push(KeyResult {
                    key,
                    outcome: Outcome::Error(error),
                });
                continue;
            }
            // Only keys served count: a key misrouted here is not hot here.
            // Nor is a key read while it holds no value: a reader waiting
            // for a key to appear (an executor resolving a `Reference`)
            // asks again every few milliseconds, and those polls must not
            // raise the replication of a key nobody wrote.
            let outcome = match op {
                KeyOp::Get { .. } | KeyOp::ReadState { .. } => {
                    self.stats.gets += 1;
                    // A thread answers what it holds; waiting for a
                    // version (`at_least`) is the reader's business.
                    let whole = matches!(op, KeyOp::ReadState { .. });
                    match self.start_fetch(now, pending_id, index, &key, whole, out) {
                        Some(wait) => {
                            // What the previous owners answer is not known
                            // yet: a read during a ring change counts.
                            self.stats.record_access(now, &key);
                            opened.push(wait);
                            Outcome::NotFound
                        }
                        None => match self.shard.read(&key) {
                            Ok(state) => {
                                if state.is_some_and(|s| s.value().is_some()) {
                                    self.stats.record_access(now, &key);
                                } else {
                                    self.stats.advance(now);
                                }
                                let outcome = read_outcome(state, whole);
                                self.shared.share(now, &key, outcome, maps, None)
                            }
                            Err(e) => disk_error(e),
                        },
                    }
                }
                KeyOp::Put { key, value } => {
                    self.stats.record_access(now, &key);
                    self.stats.puts += 1;
                    self.shard.touch(&key);
                    let entry = match self.shard.entry(&key) {
                        Ok(entry) => entry,
                        Err(e) => {
                            results.push(KeyResult {
                                key,
                                outcome: disk_error(e),
                            });
                            continue;
                        }
                    };
                    match entry.put(value) {
                        Ok(changed) => {
                            if changed {
                                self.rounds.note_changed(&key);
                                self.mark_leave_dirty(&key);
                                self.record_change(now, &key, ChangeKind::Put);
                            }
                            self.announce_replication(&key, out);
                            self.replicate(pending_id, index, &key, ack, &mut opened, out)
                        }
                        Err(e) => {
                            if entry.value().is_none() && entry.deleted_at().is_none() {
                                self.shard.remove(&key);
                            }
                            Outcome::Error(KvsError::TypeMismatch(e))
                        }
                    }
                }
                KeyOp::Delete { key, at } => {
                    self.stats.record_access(now, &key);
                    self.stats.deletes += 1;
                    let deleted = match self.shard.entry(&key) {
                        Ok(entry) => entry.delete(at),
                        Err(e) => {
                            results.push(KeyResult {
                                key,
                                outcome: disk_error(e),
                            });
                            continue;
                        }
                    };
                    if deleted {
                        self.rounds.note_changed(&key);
                        self.mark_leave_dirty(&key);
                        self.record_change(now, &key, ChangeKind::Delete);
                    }
                    self.announce_replication(&key, out);
                    self.replicate(pending_id, index, &key, ack, &mut opened, out)
                }
            };
            results.push(KeyResult { key, outcome });
        }
        if opened.is_empty() {
            out.send(
                reply_to,
                Message::KvsResponse(KvsResponse {
                    id,
                    results,
                    hits: 0,
                }),
            );
            return;
        }
        let deadline = now + self.config.ack_timeout;
        self.reqs.open(
            pending_id,
            Pending {
                reply_to,
                maps,
                client_id: id,
                results,
                open: opened.len(),
                waits: opened,
                deadline,
            },
        );
    }

    /// Sends the merged state of `key` to the other owners if `ack` asks
    /// for more than this replica; returns the outcome to answer now.
    fn replicate(
        &mut self,
        pending: RequestId,
        op: usize,
        key: &Key,
        ack: Ack,
        opened: &mut Vec<RequestId>,
        out: &mut Outbox,
    ) -> Outcome {
        let others: StableHashSet<Address> =
            (self.ring.other_owners(key, &self.id.me).iter().cloned()).collect();
        let wanted = match ack {
            Ack::FirstReplica | Ack::Durable => 0,
            Ack::Replicas(k) => usize::from(k).saturating_sub(1).min(others.len()),
            Ack::All => others.len(),
        };
        let epoch = self.shard.get(key).and_then(KeyState::deleted_at);
        if ack == Ack::Durable || self.syncs_every_write() {
            if !self.shard.persistent() {
                return Outcome::Error(KvsError::NotDurable {
                    reason: format!(
                        "{} keeps its keys in memory only (no data directory)",
                        self.id.me
                    ),
                });
            }
            let id = self.fresh_id();
            self.reqs.waits.insert(
                id,
                Wait {
                    pending,
                    op,
                    what: WaitFor::Sync { epoch },
                },
            );
            self.flushes.wait_for_sync(id);
            self.shard.owe_sync();
            opened.push(id);
        }
        if wanted == 0 {
            return Outcome::Stored { epoch };
        }
        let id = self.fresh_id();
        let state = self.shard.get(key).cloned().unwrap_or_default();
        for to in &others {
            out.send(
                to.clone(),
                Message::Gossip(Gossip {
                    from: self.id.me.clone(),
                    entries: vec![(key.clone(), state.clone())],
                    ack: Some(id),
                }),
            );
        }
        self.reqs.waits.insert(
            id,
            Wait {
                pending,
                op,
                what: WaitFor::Acks {
                    wanted,
                    got: StableHashSet::default(),
                    epoch,
                },
            },
        );
        opened.push(id);
        Outcome::Stored { epoch }
    }

    /// During a ring transition, if this worker is new to `key` (it did not
    /// hold it as this incarnation before the change), asks the key's
    /// previous owners for their copies; returns the wait, if it asked.
    fn start_fetch(
        &mut self,
        now: Time,
        pending: RequestId,
        op: usize,
        key: &Key,
        whole: bool,
        out: &mut Outbox,
    ) -> Option<RequestId> {
        let previous = self.ring.previous(now)?;
        if previous.held_by_same(self.ring.placement(), key, &self.id.me) {
            return None;
        }
        // Only previous owners still live: a node that departed handed its
        // keys over first (or crashed and cannot answer), and waiting for
        // it would hold the read for `ack_timeout`.
        let expect: StableHashSet<Address> = previous
            .owners(key)
            .into_iter()
            .filter(|a| *a != self.id.me && self.ring.placement().holder(a).is_some())
            .collect();
        if expect.is_empty() {
            return None;
        }
        let id = self.fresh_id();
        for to in &expect {
            out.send(
                to.clone(),
                Message::Fetch {
                    id,
                    reply_to: self.id.me.clone(),
                    keys: vec![key.clone()],
                },
            );
        }
        self.stats.fetches += 1;
        self.reqs.waits.insert(
            id,
            Wait {
                pending,
                op,
                what: WaitFor::Fetch {
                    key: key.clone(),
                    expect,
                    state: (self.shard.peek(key).map(|s| s.into_owned())).unwrap_or_default(),
                    asked: now,
                    whole,
                },
            },
        );
        Some(id)
    }

    pub(super) fn on_fetch(
        &mut self,
        id: RequestId,
        reply_to: Address,
        keys: Vec<Key>,
        out: &mut Outbox,
    ) {
        let entries = keys
            .into_iter()
            .map(|k| {
                let state = (self.shard.peek(&k).map(|s| s.into_owned())).unwrap_or_default();
                (k, state)
            })
            .collect();
        out.send(
            reply_to,
            Message::FetchReply {
                id,
                from: self.id.me.clone(),
                entries,
            },
        );
    }

    pub(super) fn on_fetch_reply(
        &mut self,
        now: Time,
        id: RequestId,
        from: Address,
        entries: Vec<(Key, KeyState)>,
        out: &mut Outbox,
    ) {
        if self.reqs.fetched(id, &from, entries) {
            self.finish_wait(now, id, out);
        }
    }

    /// Settles the operation an internal id waited for, answering its
    /// request if it was the last open one.
    pub(super) fn finish_wait(&mut self, now: Time, id: RequestId, out: &mut Outbox) {
        let Some(wait) = self.reqs.waits.remove(&id) else {
            return;
        };
        let outcome = match wait.what {
            WaitFor::Acks {
                wanted, got, epoch, ..
            } if got.len() >= wanted => Outcome::Stored { epoch },
            WaitFor::Acks { wanted, got, .. } => Outcome::Error(KvsError::AckTimeout {
                acked: u8::try_from(got.len() + 1).unwrap_or(u8::MAX),
                wanted: u8::try_from(wanted + 1).unwrap_or(u8::MAX),
            }),
            // Only a request that expired settles a sync here.
            WaitFor::Sync { .. } => Outcome::Error(KvsError::NotDurable {
                reason: "the store did not sync within the acknowledgement timeout".into(),
            }),
            WaitFor::Fetch {
                key,
                mut state,
                whole,
                ..
            } => {
                // `state` began as the local copy when the read arrived; the
                // key may have moved on since (handed to a newer owner), so
                // the answer is that copy, what the previous owners sent,
                // and whatever is held now.
                if let Some(local) = self.shard.peek(&key) {
                    state.merge(local.into_owned());
                }
                let outcome = read_outcome(Some(&state), whole);
                if self.owns(&key) && state != KeyState::default() {
                    // Read repair: what the previous owners held is ours now.
                    if let Ok(entry) = self.shard.entry(&key) {
                        entry.merge(state);
                    }
                }
                let maps = self.reqs.pending.get(&wait.pending).is_some_and(|p| p.maps);
                self.shared.share(now, &key, outcome, maps, None)
            }
        };
        self.reqs.settle(wait.pending, wait.op, outcome, out);
    }

    /// Settles the durable write wait `id` after a sync: stored, or
    /// `failure`.
    pub(super) fn finish_sync(
        &mut self,
        id: RequestId,
        failure: Option<KvsError>,
        out: &mut Outbox,
    ) {
        let Some(wait) = self.reqs.waits.remove(&id) else {
            return;
        };
        let outcome = match (failure, wait.what) {
            (Some(error), _) => Outcome::Error(error),
            (None, WaitFor::Sync { epoch }) => Outcome::Stored { epoch },
            (None, _) => return,
        };
        self.reqs.settle(wait.pending, wait.op, outcome, out);
    }

    /// Answers every request whose deadline has passed with what it has:
    /// writes short of their replicas as `AckTimeout`, reads with the copies
    /// that did arrive.
    pub(super) fn expire_pending(&mut self, now: Time, out: &mut Outbox) {
        while let Some((pending_id, waits)) = self.reqs.next_expired(now) {
            for id in waits {
                self.finish_wait(now, id, out);
            }
            self.reqs.answer(pending_id, out);
        }
    }
}

#[cfg(test)]
mod tests;
