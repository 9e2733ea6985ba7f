//! Triggers: a registered function runs once per change of a key under a
//! prefix, called as `fn(event)`.
//!
//! Every `trigger_refresh` the scheduler reads the registered triggers
//! from the KVS ([`TRIGGERS_KEY`], then each [`trigger_key`]) and sends a
//! [`Watch`] for each to every storage thread of the placement its client
//! knows (a lease of three refreshes). The thread that takes a watched
//! write keeps the change and sends it to one live watcher
//! ([`anna::kvs::triggers`]); the scheduler makes it a call of the
//! trigger's function with itself as the caller, and once the call is
//! answered tells the thread [`Message::ChangesDone`]. A call that failed
//! for a reason of the cluster (timeout, executor death, overload) is not
//! done: the thread sends the change again after the retry period. A
//! call whose function raised is done (and counted as failed): running it
//! again would raise again.
//!
//! The event is pickled here, as a call of `squall.events._change` with
//! the trigger's name, the key, the kind, the timestamp's three parts and
//! the value's bytes (a `LatticeValue` as `encode_value` writes it): the
//! executor unpickles it into a `squall.Event`.

use crate::scheduler::Scheduler;
use anna::client::{ClientError, Completion, OpId, OpOutput};
use anna::lattice::LatticeValue;
use anna::protocol::compute::{
    decode_value, trigger_key, CallArgs, CallErrorKind, CallId, CallOutcome, CallRequest,
    CallResult, ChangeEvent, Changes, Consistency, ReplyTo, TriggerSpec, Watch, WatchState,
    TRIGGERS_KEY,
};
use anna::protocol::figures::TriggerFigures;
use anna::protocol::{Address, Message, Session};
use anna::role::Outbox;
use anna::time::Time;
use std::collections::{BTreeMap, HashMap};

/// A change being run: where it came from.
#[derive(Debug)]
struct Running {
    from: Address,
    seq: u64,
    trigger: String,
}

/// A registration read in progress: the index's op, then one op per name.
#[derive(Debug, Default)]
struct Reading {
    index: Option<OpId>,
    names: HashMap<OpId, String>,
    found: BTreeMap<String, TriggerSpec>,
}

/// What one scheduler counted of one trigger.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    runs: u64,
    failures: u64,
    retries: u64,
}

/// The scheduler's triggers: registrations, changes running, counts.
#[derive(Debug, Default)]
pub(crate) struct Triggers {
    specs: BTreeMap<String, TriggerSpec>,
    reading: Option<Reading>,
    /// When the registrations are next read: a refresh after the first
    /// step, then every `trigger_refresh`.
    next_refresh: Option<Time>,
    running: HashMap<CallId, Running>,
    /// Changes running, by (storage thread, its number): a change sent
    /// again while its call runs is not run twice.
    by_change: HashMap<(Address, u64), CallId>,
    last_seq: u64,
    counts: BTreeMap<String, Counts>,
    /// The latest backlog and drop count each storage thread reported,
    /// per trigger.
    backlogs: BTreeMap<(String, Address), (u64, u64)>,
}

impl Triggers {
    /// Whether `op` is one of the registration reads.
    fn owns(&self, op: OpId) -> bool {
        self.reading
            .as_ref()
            .is_some_and(|r| r.index == Some(op) || r.names.contains_key(&op))
    }

    /// When the registrations are next read.
    pub(crate) fn next_refresh(&self) -> Option<Time> {
        self.next_refresh
    }

    /// What the monitor is told of every trigger.
    pub(crate) fn figures(&self) -> Vec<TriggerFigures> {
        self.specs
            .values()
            .map(|spec| {
                let counts = self.counts.get(&spec.name).copied().unwrap_or_default();
                let (backlog, dropped) = self
                    .backlogs
                    .range((spec.name.clone(), Address::default())..)
                    .take_while(|((name, _), _)| *name == spec.name)
                    .fold((0, 0), |(b, d), (_, (b1, d1))| (b + b1, d + d1));
                TriggerFigures {
                    name: spec.name.clone(),
                    function: spec.function.clone(),
                    prefix: spec.prefix.clone(),
                    on: spec.on.as_str().to_string(),
                    runs: counts.runs,
                    failures: counts.failures,
                    retries: counts.retries,
                    backlog,
                    dropped,
                }
            })
            .collect()
    }
}

impl Scheduler {
    /// Every `trigger_refresh`: reads the registrations (unless a read is
    /// out) and renews the watches of those known.
    pub(crate) fn refresh_triggers(&mut self, now: Time, out: &mut Outbox) {
        let refresh = self.config.trigger_refresh;
        match self.triggers.next_refresh {
            None => {
                self.triggers.next_refresh = Some(now + refresh);
                return;
            }
            Some(due) if now < due => return,
            Some(_) => self.triggers.next_refresh = Some(now + refresh),
        }
        if self.triggers.reading.is_none() {
            let index = self.client.get(now, TRIGGERS_KEY.to_string(), out);
            self.triggers.reading = Some(Reading {
                index: Some(index),
                ..Reading::default()
            });
        }
        self.renew_watches(now, out);
    }

    fn renew_watches(&mut self, now: Time, out: &mut Outbox) {
        if self.triggers.specs.is_empty() {
            return;
        }
        let Some(placement) = self.client.placement() else {
            self.client.refresh_placement(now, out);
            return;
        };
        let threads: Vec<Address> = placement
            .nodes()
            .values()
            .flat_map(|n| n.threads.iter().cloned())
            .collect();
        let refresh = self.config.trigger_refresh;
        let lease_ms = millis(refresh * 3);
        let retry = self.config.trigger_timeout + self.config.deadline_grace + refresh;
        for spec in self.triggers.specs.values() {
            for thread in &threads {
                out.send(
                    thread.clone(),
                    Message::Watch(Box::new(Watch {
                        watcher: self.me.clone(),
                        trigger: spec.clone(),
                        lease_ms,
                        retry_ms: millis(retry),
                    })),
                );
            }
        }
    }

    /// Takes the completion of a registration read; `false` if `op` is
    /// not one.
    pub(crate) fn on_trigger_read(
        &mut self,
        now: Time,
        (op, result): &Completion,
        out: &mut Outbox,
    ) -> bool {
        if !self.triggers.owns(*op) {
            return false;
        }
        let Some(mut reading) = self.triggers.reading.take() else {
            return false;
        };
        if reading.index == Some(*op) {
            reading.index = None;
            for name in index_names(result) {
                let key = trigger_key(&name);
                let read = self.client.get(now, key, out);
                reading.names.insert(read, name);
            }
        } else if let Some(name) = reading.names.remove(op) {
            if let Some(spec) = decode_spec(&name, result) {
                reading.found.insert(name, spec);
            }
        }
        let failed = result.is_err();
        if failed {
            // Keep what is known; the next refresh reads again.
            tracing::debug!("reading the triggers failed; keeping the last ones read");
            return true;
        }
        if reading.index.is_none() && reading.names.is_empty() {
            let changed = reading.found != self.triggers.specs;
            if changed {
                tracing::info!(
                    triggers = ?reading.found.keys().collect::<Vec<_>>(),
                    "triggers registered"
                );
            }
            self.triggers.specs = reading.found;
            let specs = &self.triggers.specs;
            self.triggers
                .counts
                .retain(|name, _| specs.contains_key(name));
            self.triggers
                .backlogs
                .retain(|(name, _), _| specs.contains_key(name));
            if changed {
                self.renew_watches(now, out);
            }
        } else {
            self.triggers.reading = Some(reading);
        }
        true
    }

    pub(crate) fn on_watch_state(&mut self, state: WatchState) {
        if self.triggers.specs.contains_key(&state.trigger) {
            self.triggers
                .backlogs
                .insert((state.trigger, state.from), (state.backlog, state.dropped));
        }
    }

    /// Changes from a storage thread: each becomes a call of its trigger's
    /// function (unless it is already running, or the trigger is gone).
    pub(crate) fn on_changes(&mut self, now: Time, changes: Changes, out: &mut Outbox) {
        let Changes { from, events } = changes;
        let mut gone = Vec::new();
        for event in events {
            let change = (from.clone(), event.seq);
            if self.triggers.by_change.contains_key(&change) {
                continue;
            }
            let Some(spec) = self.triggers.specs.get(&event.trigger) else {
                // Unregistered since: nothing will run it.
                gone.push(event.seq);
                continue;
            };
            self.triggers.last_seq += 1;
            let id = CallId {
                caller: self.client.writer().0,
                seq: self.triggers.last_seq,
            };
            let req = CallRequest {
                id,
                function: spec.function.clone(),
                args: CallArgs {
                    payload: event_payload(&event),
                    refs: Vec::new(),
                },
                reply: ReplyTo {
                    address: self.me.clone(),
                    response_key: None,
                },
                timeout_ms: millis(self.config.trigger_timeout),
                session: Session::default(),
                consistency: Consistency::default(),
                instance: None,
                trace: false,
            };
            self.triggers.by_change.insert(change, id);
            self.triggers.running.insert(
                id,
                Running {
                    from: from.clone(),
                    seq: event.seq,
                    trigger: event.trigger,
                },
            );
            self.on_call(now, req, out);
        }
        if !gone.is_empty() {
            out.send(
                from,
                Message::ChangesDone {
                    watcher: self.me.clone(),
                    seqs: gone,
                },
            );
        }
    }

    /// The answer to a trigger's call: done (ran, or raised), or left for
    /// the storage thread to send again.
    pub(crate) fn on_trigger_result(&mut self, result: CallResult, out: &mut Outbox) {
        let Some(running) = self.triggers.running.remove(&result.id) else {
            return;
        };
        self.triggers
            .by_change
            .remove(&(running.from.clone(), running.seq));
        let counts = self
            .triggers
            .counts
            .entry(running.trigger.clone())
            .or_default();
        match &result.outcome {
            CallOutcome::Value(_) => counts.runs += 1,
            CallOutcome::Error(e) => match e.kind {
                CallErrorKind::Timeout
                | CallErrorKind::ExecutorDied
                | CallErrorKind::Overloaded
                | CallErrorKind::Unavailable => {
                    counts.retries += 1;
                    tracing::info!(trigger = %running.trigger, kind = ?e.kind, "a trigger's call failed; its change is sent again later");
                    return;
                }
                _ => {
                    counts.runs += 1;
                    counts.failures += 1;
                    tracing::warn!(
                        trigger = %running.trigger,
                        error = %e.type_name,
                        message = %e.message,
                        "a trigger's function raised"
                    );
                }
            },
        }
        out.send(
            running.from,
            Message::ChangesDone {
                watcher: self.me.clone(),
                seqs: vec![running.seq],
            },
        );
    }
}

fn millis(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// The names of the registration index `result` read (kept as bytes).
fn index_names(result: &Result<OpOutput, ClientError>) -> Vec<String> {
    match result {
        Ok(OpOutput::Value(Some(LatticeValue::Set(set)))) => set
            .reveal()
            .iter()
            .filter_map(|n| String::from_utf8(n.clone()).ok())
            .collect(),
        _ => Vec::new(),
    }
}

/// The registration a read of trigger `name`'s key found, if it holds one.
fn decode_spec(name: &str, result: &Result<OpOutput, ClientError>) -> Option<TriggerSpec> {
    match result {
        Ok(OpOutput::Value(Some(LatticeValue::Lww(v)))) => {
            let spec = decode_value::<TriggerSpec>(v.value());
            if spec.is_none() {
                tracing::warn!(trigger = %name, "a trigger's registration does not decode; register it again");
            }
            spec.filter(|s| s.name == name)
        }
        _ => None,
    }
}

/// `((squall.events._change(trigger, key, kind, wall_ms, logical, writer,
/// value),), {})`, pickled (protocol 4).
fn event_payload(e: &ChangeEvent) -> Vec<u8> {
    let mut out = vec![0x80, 4];
    pickle_str(&mut out, "squall.events");
    pickle_str(&mut out, "_change");
    out.push(0x93); // STACK_GLOBAL
    out.push(b'('); // MARK
    pickle_str(&mut out, &e.trigger);
    pickle_str(&mut out, &e.key);
    pickle_str(&mut out, e.kind.as_str());
    pickle_int(&mut out, e.at.wall_ms);
    pickle_int(&mut out, u64::from(e.at.logical));
    pickle_int(&mut out, e.at.writer.0);
    out.push(b'B'); // BINBYTES
    out.extend_from_slice(&(e.value.len() as u32).to_le_bytes());
    out.extend_from_slice(&e.value);
    out.push(b't'); // TUPLE
    out.push(b'R'); // REDUCE
    out.push(0x85); // TUPLE1: the args
    out.push(b'}'); // EMPTY_DICT: the kwargs
    out.push(0x86); // TUPLE2
    out.push(b'.');
    out
}

fn pickle_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'X'); // BINUNICODE
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A non-negative integer as LONG1: nine little-endian bytes, the last a
/// zero sign byte.
fn pickle_int(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&[0x8a, 9]);
    out.extend_from_slice(&n.to_le_bytes());
    out.push(0);
}

#[cfg(test)]
mod tests;
