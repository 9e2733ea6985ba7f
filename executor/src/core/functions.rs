//! Function code: fetched from the node's cache on first use (or on a
//! prewarm, see `prewarm`), kept warm (bounded, least recently used out),
//! and dropped when the cache gossips a change of its key, so a
//! re-registration takes effect on the next call.
//!
//! Sessions: warm code remembers the version of its key it was read at. A
//! call whose caller wrote the function's key (registered, re-registered
//! or deleted it) runs warm code only if that version covers the caller's;
//! otherwise the code is fetched again at least at the caller's version
//! (the cache waits for it), so a call right after a register runs the new
//! code and one after a delete fails `UnknownFunction`.

use super::calls::Invocation;
use super::ExecutorCore;
use crate::job::call_error;
use anna::lattice::{KeyState, Lattice, LatticeValue};
use anna::protocol::compute::{
    decode_value, function_key, CallErrorKind, FunctionCode, Subscribe, SYSTEM_PREFIX,
};
use anna::protocol::{Ack, Gossip, KeyOp, KvsRequest, KvsResponse, Message, Outcome, RequestId};
use anna::role::Outbox;
use anna::time::Time;
use std::sync::Arc;

/// A loaded function.
#[derive(Debug)]
pub(super) struct Warm {
    pub code: Arc<FunctionCode>,
    /// The version of the function's key the code was read at.
    pub version: KeyState,
    pub generation: u64,
    pub last_used: Time,
    /// A coroutine function: a call of it started on the event loop (the
    /// worker said so). Such calls count against `max_async_calls`.
    pub is_async: bool,
}

/// A code fetch in flight.
#[derive(Debug)]
pub(super) struct Fetch {
    request: RequestId,
    sent: Time,
    /// The key changed while the fetch was in flight: the answer may be the
    /// old code, so fetch again.
    stale: bool,
    /// The version the answer must cover: the join of the waiting calls'
    /// sessions' versions of the key.
    at_least: Option<KeyState>,
}

fn function_name(key: &str) -> Option<&str> {
    key.strip_prefix(SYSTEM_PREFIX)?.strip_prefix("fn/")
}

impl ExecutorCore {
    /// Makes sure `name`'s code is being fetched, at least at `at_least`
    /// (a fetch in flight for an older version is marked stale and sent
    /// again for the newer one when it answers).
    pub(super) fn ensure_fetch(
        &mut self,
        now: Time,
        name: &str,
        at_least: Option<&KeyState>,
        out: &mut Outbox,
    ) {
        match self.fetches.get_mut(name) {
            None => {
                let at_least = at_least.cloned();
                self.send_fetch(now, name, at_least, out)
            }
            Some(f) => {
                if let Some(w) = at_least {
                    if !f.at_least.as_ref().is_some_and(|a| a.covers(w)) {
                        f.stale = true;
                        let joined = f.at_least.take().map_or(w.clone(), |a| a.join(w.clone()));
                        f.at_least = Some(joined);
                    }
                }
            }
        }
    }

    /// Whether warm code of `name` may serve a call whose caller wrote the
    /// version `at_least` of its key.
    pub(super) fn warm_covers(&self, name: &str, at_least: Option<&KeyState>) -> bool {
        self.warm
            .get(name)
            .is_some_and(|w| at_least.is_none_or(|a| w.version.covers(a)))
    }

    fn send_fetch(&mut self, now: Time, name: &str, at_least: Option<KeyState>, out: &mut Outbox) {
        self.counters.fetches += 1;
        let request = self.request_id();
        let get = KvsRequest {
            id: request,
            reply_to: self.id.address.clone(),
            ops: vec![KeyOp::ReadState {
                key: function_key(name),
                at_least: at_least.clone(),
            }],
            ack: Ack::FirstReplica,
            shared_memory: None,
        };
        out.send(self.id.cache.clone(), Message::KvsRequest(get));
        if let Some(old) = self.fetches.insert(
            name.to_string(),
            Fetch {
                request,
                sent: now,
                stale: false,
                at_least,
            },
        ) {
            self.fetch_ids.remove(&old.request);
        }
        self.fetch_ids.insert(request, name.to_string());
    }

    pub(super) fn retry_fetches(&mut self, now: Time, out: &mut Outbox) {
        // Fetches nobody waits for any more (their calls expired, their
        // prewarms gave up) end; the rest are sent again when due.
        self.expire_prewarms(now);
        let (waiting, prewarms) = (&self.waiting, &self.prewarms);
        let ids = &mut self.fetch_ids;
        self.fetches.retain(|name, f| {
            let keep = waiting.contains_key(name) || prewarms.contains_key(name);
            if !keep {
                ids.remove(&f.request);
            }
            keep
        });
        let retry = self.config.fetch_retry;
        let due: Vec<String> = (self.fetches.iter())
            .filter(|(_, f)| now.saturating_since(f.sent) >= retry)
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            let at_least = self.fetches.get(&name).and_then(|f| f.at_least.clone());
            self.send_fetch(now, &name, at_least, out);
        }
    }

    pub(super) fn on_kvs_response(&mut self, now: Time, response: KvsResponse, out: &mut Outbox) {
        // Answers to response-key puts land here too; only fetches matter.
        let Some(name) = self.fetch_ids.remove(&response.id) else {
            return;
        };
        let Some(fetch) = self.fetches.remove(&name) else {
            return;
        };
        let outcome = response.results.into_iter().next().map(|r| r.outcome);
        let version = match &outcome {
            Some(Outcome::State(state)) => state.witness(),
            _ => KeyState::default(),
        };
        let value = match outcome {
            Some(Outcome::State(state)) => match state.visible() {
                Some(v) => Some(Outcome::Value(v.into_owned())),
                None => Some(Outcome::NotFound),
            },
            other => other,
        };
        let code = match value {
            Some(_) if fetch.stale => return self.send_fetch(now, &name, fetch.at_least, out),
            Some(Outcome::Value(LatticeValue::Lww(lww))) => {
                decode_value::<FunctionCode>(lww.value()).ok_or("is not a function record")
            }
            Some(Outcome::Value(_)) => Err("holds a lattice other than last-writer-wins"),
            Some(Outcome::NotFound) => {
                let message = format!("no function named '{name}' is registered");
                let error = call_error(
                    CallErrorKind::UnknownFunction,
                    "UnknownFunction",
                    message,
                    &name,
                );
                self.prewarm_failed(&name, true);
                return self.fail_waiting(now, &name, error, out);
            }
            // An error or a misrouted answer: retried at the next tick.
            _ => {
                self.fetches.insert(name.clone(), fetch);
                self.fetch_ids.insert(response.id, name);
                return;
            }
        };
        match code {
            Ok(code) => {
                self.prewarm_installed(&name);
                self.install(now, name, code, version, out);
            }
            Err(why) => {
                self.prewarm_failed(&name, false);
                let message = format!("the stored code of '{name}' {why}");
                let error = call_error(CallErrorKind::BadFunction, "BadFunction", message, &name);
                self.fail_waiting(now, &name, error, out);
            }
        }
    }

    fn fail_waiting(
        &mut self,
        now: Time,
        name: &str,
        error: anna::protocol::compute::CallError,
        out: &mut Outbox,
    ) {
        let waiting: Vec<Invocation> = self.waiting.remove(name).unwrap_or_default();
        for inv in waiting {
            self.finish(now, inv, Err(error.clone()), out);
        }
    }

    fn install(
        &mut self,
        now: Time,
        name: String,
        code: FunctionCode,
        version: KeyState,
        out: &mut Outbox,
    ) {
        let held = |warm: &super::StableHashMap<String, Warm>| -> usize {
            warm.values().map(|w| w.code.code.len()).sum()
        };
        while !self.warm.is_empty()
            && held(&self.warm) + code.code.len() > self.config.max_warm_bytes
        {
            let Some(oldest) = (self.warm.iter())
                .min_by_key(|(_, w)| (w.last_used, w.generation))
                .map(|(n, _)| n.clone())
            else {
                break;
            };
            self.warm.remove(&oldest);
            self.evicted.push(oldest);
        }
        self.next_generation += 1;
        self.warm.insert(
            name.clone(),
            Warm {
                code: Arc::new(code),
                version,
                generation: self.next_generation,
                last_used: now,
                is_async: false,
            },
        );
        let subscribe = Subscribe {
            subscriber: self.id.address.clone(),
            keys: vec![function_key(&name)],
            lease_ms: self.config.subscription_lease.as_millis() as u32,
        };
        out.send(self.id.cache.clone(), Message::Subscribe(subscribe));
        self.ready
            .extend(self.waiting.remove(&name).unwrap_or_default());
    }

    pub(super) fn renew_subscriptions(&mut self, now: Time, out: &mut Outbox) {
        if now.saturating_since(self.subscribed_at) < self.config.subscription_lease / 2 {
            return;
        }
        self.subscribed_at = now;
        let mut keys: Vec<String> = self.warm.keys().map(|n| function_key(n)).collect();
        keys.extend(self.watched_values().cloned());
        if keys.is_empty() {
            return;
        }
        keys.sort();
        self.subscribe(keys, out);
    }

    pub(super) fn on_gossip(&mut self, gossip: &Gossip) {
        for (key, state) in &gossip.entries {
            let Some(name) = function_name(key) else {
                continue;
            };
            // Subscriptions also push states that did not change (the
            // current state on every renewal): keep a function whose code
            // is the one loaded.
            let same = match (state.value(), self.warm.get(name)) {
                (Some(LatticeValue::Lww(lww)), Some(warm)) => {
                    decode_value::<FunctionCode>(lww.value()).as_ref() == Some(&*warm.code)
                }
                _ => false,
            };
            if same {
                if let Some(warm) = self.warm.get_mut(name) {
                    warm.version.merge(state.witness());
                }
                continue;
            }
            if self.warm.remove(name).is_some() {
                self.counters.invalidations += 1;
                self.evicted.push(name.to_string());
            }
            if let Some(fetch) = self.fetches.get_mut(name) {
                fetch.stale = true;
            }
        }
    }
}
