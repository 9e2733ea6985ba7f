//! Function code: fetched from the node's cache on first use (or on a
//! prewarm, see `prewarm`), kept warm (bounded, least recently used out),
//! and dropped when the cache gossips a change of its key, so a
//! re-registration takes effect on the next call.

use super::calls::Invocation;
use super::ExecutorCore;
use crate::job::call_error;
use anna::lattice::LatticeValue;
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
    pub generation: u64,
    pub last_used: Time,
}

/// A code fetch in flight.
#[derive(Debug)]
pub(super) struct Fetch {
    request: RequestId,
    sent: Time,
    /// The key changed while the fetch was in flight: the answer may be the
    /// old code, so fetch again.
    stale: bool,
}

fn function_name(key: &str) -> Option<&str> {
    key.strip_prefix(SYSTEM_PREFIX)?.strip_prefix("fn/")
}

impl ExecutorCore {
    pub(super) fn ensure_fetch(&mut self, now: Time, name: &str, out: &mut Outbox) {
        if !self.fetches.contains_key(name) {
            self.send_fetch(now, name, out);
        }
    }

    fn send_fetch(&mut self, now: Time, name: &str, out: &mut Outbox) {
        self.counters.fetches += 1;
        let request = self.request_id();
        let get = KvsRequest {
            id: request,
            reply_to: self.id.address.clone(),
            ops: vec![KeyOp::Get {
                key: function_key(name),
            }],
            ack: Ack::FirstReplica,
        };
        out.send(self.id.cache.clone(), Message::KvsRequest(get));
        if let Some(old) = self.fetches.insert(
            name.to_string(),
            Fetch {
                request,
                sent: now,
                stale: false,
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
            self.send_fetch(now, &name, out);
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
        let code = match outcome {
            Some(_) if fetch.stale => return self.send_fetch(now, &name, out),
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
                self.install(now, name, code, out);
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

    fn install(&mut self, now: Time, name: String, code: FunctionCode, out: &mut Outbox) {
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
                generation: self.next_generation,
                last_used: now,
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
