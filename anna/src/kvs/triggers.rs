//! Changes for triggers: schedulers watch key prefixes
//! ([`crate::protocol::compute::Watch`]), and the storage thread that
//! takes a client's write of a watched key keeps the change until a
//! watcher says the trigger's function ran for it.
//!
//! Only the thread that answers the client's put or delete records the
//! change (a replica merging gossip does not), so a change is recorded
//! once; a client that retries its write at another replica before gossip
//! reached it records it twice, with the same timestamp.
//!
//! Each change goes to one live watcher of its trigger (chosen by the
//! key's hash, so several schedulers share the work), at most
//! [`WINDOW`] of a trigger in flight at once, and is sent again, to a
//! watcher live then, every `retry` until a [`Message::ChangesDone`]
//! names it: delivery is at least once. A thread keeps at most
//! [`MAX_BACKLOG`] changes per trigger; past it, new changes are dropped
//! and counted. A graceful departure ([`super::departure`]) waits for the
//! backlog to drain before the thread reports `Left`. A trigger whose
//! watchers have all lapsed for [`FORGET_AFTER`] is forgotten with its
//! backlog (it was unregistered, or no scheduler is left).

use super::StorageWorker;
use crate::lattice::{LatticeValue, Timestamp, WriterId};
use crate::protocol::compute::{
    encode_value, ChangeEvent, ChangeKind, Changes, TriggerSpec, Watch, WatchState, SYSTEM_PREFIX,
};
use crate::protocol::{Address, Message};
use crate::role::{Outbox, StableHashMap};
use crate::time::Time;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Most changes of one trigger a thread keeps (waiting and in flight).
pub const MAX_BACKLOG: usize = 10_000;
/// Most changes of one trigger in flight (sent, not done) at once.
pub const WINDOW: usize = 64;
/// Most changes in one [`Changes`] message.
const BATCH: usize = 32;
/// The longest lease granted.
const MAX_LEASE: Duration = Duration::from_secs(60);
/// How long a trigger without a live watcher is kept.
pub const FORGET_AFTER: Duration = Duration::from_secs(120);
/// The shortest resend period, whatever a watcher asks.
const MIN_RETRY: Duration = Duration::from_millis(100);

/// One watched trigger at one thread.
#[derive(Debug)]
struct Watched {
    spec: TriggerSpec,
    watchers: Vec<(Address, Time)>,
    retry: Duration,
    /// Changes not sent yet, oldest first.
    waiting: VecDeque<ChangeEvent>,
    /// Changes sent and not done: by seq, with when they were last sent.
    sent: BTreeMap<u64, (ChangeEvent, Time)>,
    dropped: u64,
    /// When the last watcher's lease lapses (or lapsed).
    live_until: Time,
}

impl Watched {
    fn backlog(&self) -> usize {
        self.waiting.len() + self.sent.len()
    }

    fn live(&self, now: Time) -> Vec<&Address> {
        self.watchers
            .iter()
            .filter(|(_, t)| *t > now)
            .map(|(a, _)| a)
            .collect()
    }
}

/// The watched triggers of one storage thread, their backlogs, and the
/// thread's clock for changes that carry no timestamp of their own.
#[derive(Debug, Default)]
pub struct Triggers {
    by_name: StableHashMap<String, Watched>,
    last_seq: u64,
    last_stamp: (u64, u32),
    writer: WriterId,
    /// The latest time seen, for [`Triggers::next_due`].
    last_now: Time,
    /// Changes recorded, sent (first time and again) and dropped, since
    /// the thread started.
    pub recorded: u64,
    pub sent: u64,
    pub resent: u64,
    pub dropped: u64,
}

impl Triggers {
    /// Triggers of the thread at `me` (its stamps carry a writer id of its
    /// address's hash).
    pub fn new(me: &Address) -> Self {
        Triggers {
            writer: WriterId(crate::ring::stable_hash(me.as_str().as_bytes())),
            ..Triggers::default()
        }
    }

    /// Records (or renews) `watch`; the trigger's state at this thread.
    pub fn watch(&mut self, now: Time, watch: Watch, me: &Address) -> WatchState {
        self.last_now = self.last_now.max(now);
        let until = now + Duration::from_millis(u64::from(watch.lease_ms)).min(MAX_LEASE);
        let retry = Duration::from_millis(u64::from(watch.retry_ms)).max(MIN_RETRY);
        let name = watch.trigger.name.clone();
        let w = self.by_name.entry(name.clone()).or_insert_with(|| Watched {
            spec: watch.trigger.clone(),
            watchers: Vec::new(),
            retry,
            waiting: VecDeque::new(),
            sent: BTreeMap::new(),
            dropped: 0,
            live_until: until,
        });
        w.spec = watch.trigger;
        w.retry = retry;
        w.watchers.retain(|(_, t)| *t > now);
        match w.watchers.iter_mut().find(|(a, _)| *a == watch.watcher) {
            Some((_, t)) => *t = (*t).max(until),
            None => w.watchers.push((watch.watcher, until)),
        }
        w.live_until = w.live_until.max(until);
        WatchState {
            from: me.clone(),
            trigger: name,
            backlog: w.backlog() as u64,
            dropped: w.dropped,
        }
    }

    /// Whether any trigger is watched.
    pub fn any(&self) -> bool {
        !self.by_name.is_empty()
    }

    /// Records a change of `key` for every trigger watching it. `at` is the
    /// write's own timestamp, if it has one; `value` the key's value after
    /// a put.
    pub fn changed(
        &mut self,
        now: Time,
        key: &str,
        kind: ChangeKind,
        at: Option<Timestamp>,
        value: Option<&LatticeValue>,
    ) {
        if self.by_name.is_empty() {
            return;
        }
        self.last_now = self.last_now.max(now);
        let mut encoded: Option<Vec<u8>> = None;
        let mut stamp: Option<Timestamp> = at;
        for w in self.by_name.values_mut() {
            if w.spec.on != kind || !key.starts_with(w.spec.prefix.as_str()) {
                continue;
            }
            // The system's own keys fire only triggers that ask for them.
            if key.starts_with(SYSTEM_PREFIX) && !w.spec.prefix.starts_with(SYSTEM_PREFIX) {
                continue;
            }
            if w.backlog() >= MAX_BACKLOG {
                w.dropped += 1;
                self.dropped += 1;
                if w.dropped.is_power_of_two() {
                    tracing::warn!(trigger = %w.spec.name, dropped = w.dropped, "trigger backlog full: change dropped");
                }
                continue;
            }
            let at = *stamp.get_or_insert_with(|| {
                let wall = now.as_millis();
                self.last_stamp = if wall > self.last_stamp.0 {
                    (wall, 0)
                } else {
                    (self.last_stamp.0, self.last_stamp.1 + 1)
                };
                Timestamp {
                    wall_ms: self.last_stamp.0,
                    logical: self.last_stamp.1,
                    writer: self.writer,
                }
            });
            let value = encoded
                .get_or_insert_with(|| value.map(encode_value).unwrap_or_default())
                .clone();
            self.last_seq += 1;
            self.recorded += 1;
            w.waiting.push_back(ChangeEvent {
                seq: self.last_seq,
                trigger: w.spec.name.clone(),
                key: key.to_string(),
                kind,
                at,
                value,
            });
        }
    }

    /// Forgets the changes `seqs`: their function ran.
    pub fn done(&mut self, seqs: &[u64]) {
        for w in self.by_name.values_mut() {
            for seq in seqs {
                w.sent.remove(seq);
            }
        }
    }

    /// Changes held, every trigger together.
    pub fn backlog(&self) -> usize {
        self.by_name.values().map(Watched::backlog).sum()
    }

    /// Sends, from `me`, changes due: those not sent yet (within the
    /// window) and those sent `retry` ago without an answer, each to a
    /// live watcher of its trigger. Forgets triggers long without one.
    pub fn send(&mut self, now: Time, me: &Address, out: &mut Outbox) {
        self.last_now = self.last_now.max(now);
        self.by_name.retain(|name, w| {
            let keep = w.live_until + FORGET_AFTER > now;
            if !keep && w.backlog() > 0 {
                tracing::warn!(trigger = %name, backlog = w.backlog(), "trigger without a watcher for long: its changes are dropped");
            }
            keep
        });
        let mut batches: BTreeMap<Address, Vec<ChangeEvent>> = BTreeMap::new();
        for w in self.by_name.values_mut() {
            let live: Vec<Address> = w.live(now).into_iter().cloned().collect();
            if live.is_empty() {
                continue;
            }
            let pick = |key: &str| {
                let h = crate::ring::stable_hash(key.as_bytes()) as usize;
                live[h % live.len()].clone()
            };
            for (event, at) in w.sent.values_mut() {
                if *at + w.retry <= now {
                    *at = now;
                    self.resent += 1;
                    batches
                        .entry(pick(&event.key))
                        .or_default()
                        .push(event.clone());
                }
            }
            while w.sent.len() < WINDOW {
                let Some(event) = w.waiting.pop_front() else {
                    break;
                };
                self.sent += 1;
                batches
                    .entry(pick(&event.key))
                    .or_default()
                    .push(event.clone());
                w.sent.insert(event.seq, (event, now));
            }
        }
        for (to, events) in batches {
            for chunk in events.chunks(BATCH) {
                out.send(
                    to.clone(),
                    Message::Changes(Changes {
                        from: me.clone(),
                        events: chunk.to_vec(),
                    }),
                );
            }
        }
    }

    /// When [`Triggers::send`] next has work: at `soon` (the next gossip
    /// round) for changes waiting with room in the window and a live
    /// watcher, else the next resend or forgetting.
    pub fn next_due(&self, soon: Time) -> Option<Time> {
        let now = self.last_now;
        let mut next: Option<Time> = None;
        for w in self.by_name.values() {
            let live = w.live_until > now;
            if live && !w.waiting.is_empty() && w.sent.len() < WINDOW {
                return Some(soon);
            }
            let resend = if live {
                w.sent.values().map(|(_, at)| *at + w.retry).min()
            } else {
                Some(w.live_until + FORGET_AFTER)
            };
            for t in [resend, Some(w.live_until + FORGET_AFTER)]
                .into_iter()
                .flatten()
            {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        next
    }
}

impl StorageWorker {
    pub(super) fn on_watch(&mut self, now: Time, watch: Watch, out: &mut Outbox) {
        let to = watch.watcher.clone();
        let state = self.triggers.watch(now, watch, &self.id.me);
        out.send(to, Message::WatchState(state));
    }

    /// A client's write changed `key`: records it for the triggers that
    /// watch it.
    pub(super) fn record_change(&mut self, now: Time, key: &str, kind: ChangeKind) {
        // A file of the old version in shared memory is answered no more
        // (a version merged by gossip is noticed at the key's next read).
        self.shared.retire(now, key);
        if !self.triggers.any() {
            return;
        }
        let state = self.shard.get(key);
        let (at, value) = match kind {
            ChangeKind::Delete => (state.and_then(|s| s.deleted_at()), None),
            ChangeKind::Put => {
                let value = state.and_then(|s| s.visible());
                let at = match value.as_deref() {
                    Some(LatticeValue::Lww(v)) => Some(v.timestamp()),
                    _ => None,
                };
                (at, value)
            }
        };
        self.triggers.changed(now, key, kind, at, value.as_deref());
    }
}

#[cfg(test)]
mod tests;
