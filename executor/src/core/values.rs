//! Referenced values the runtime keeps between calls, and how they are
//! dropped when they change.
//!
//! The runtime keeps the bytes of every last-writer-wins value a
//! `Reference` argument resolved to (bounded by `max_value_bytes`, on its
//! side). The core watches those keys: before a job runs it subscribes at
//! the node's cache to the job's referenced keys (renewed with the function
//! keys); when the cache pushes a key's state that differs from the last
//! one seen (or the first push after subscribing, since the runtime may
//! have read an older state before it), the key goes into the next job's
//! `stale_values` and the runtime drops it. At most `max_value_keys` keys
//! are watched; one that falls out is dropped by the runtime too, since
//! nobody would tell it of a change.

use super::ExecutorCore;
use anna::lattice::{KeyState, LatticeValue};
use anna::protocol::compute::{Subscribe, SYSTEM_PREFIX};
use anna::protocol::{Gossip, Message};
use anna::role::Outbox;
use anna::time::Time;

/// A referenced key the core watches.
#[derive(Debug)]
pub(super) struct Watched {
    /// What the last pushed state was, `None` before the first push.
    seen: Option<u64>,
    last_used: Time,
}

/// A short stand-in for a pushed state: equal states give equal numbers.
/// Last-writer-wins values are told apart by their timestamp and any
/// delete time (no value bytes are hashed, nothing allocated); other
/// lattices by a hash of their encoding.
fn fingerprint(state: &KeyState) -> u64 {
    match (state.value(), state.deleted_at()) {
        (Some(LatticeValue::Lww(l)), deleted) => {
            let t = l.timestamp();
            let d = deleted.unwrap_or_default();
            let words = [
                t.wall_ms,
                t.logical.into(),
                t.writer.0,
                d.wall_ms,
                d.logical.into(),
                d.writer.0,
            ];
            let mut bytes = [0u8; 48];
            for (chunk, w) in bytes.chunks_exact_mut(8).zip(words) {
                chunk.copy_from_slice(&w.to_le_bytes());
            }
            anna::ring::stable_hash(&bytes)
        }
        _ => anna::ring::stable_hash(
            &bincode::serde::encode_to_vec(state, bincode::config::standard()).unwrap_or_default(),
        ),
    }
}

impl ExecutorCore {
    /// Watches `keys` (a job's references) from now on.
    pub(super) fn watch_values(&mut self, now: Time, keys: &[String], out: &mut Outbox) {
        let mut new = Vec::new();
        for key in keys {
            if key.starts_with(SYSTEM_PREFIX) {
                continue;
            }
            match self.values.get_mut(key) {
                Some(w) => w.last_used = now,
                None => {
                    self.values.insert(
                        key.clone(),
                        Watched {
                            seen: None,
                            last_used: now,
                        },
                    );
                    new.push(key.clone());
                }
            }
        }
        while self.values.len() > self.config.max_value_keys {
            let Some(oldest) = (self.values.iter())
                .min_by(|a, b| (a.1.last_used, a.0).cmp(&(b.1.last_used, b.0)))
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.values.remove(&oldest);
            new.retain(|k| *k != oldest);
            self.stale_values.push(oldest);
        }
        if !new.is_empty() {
            self.subscribe(new, out);
        }
    }

    /// The watched keys, for the periodic renewal.
    pub(super) fn watched_values(&self) -> impl Iterator<Item = &String> {
        self.values.keys()
    }

    pub(super) fn subscribe(&mut self, keys: Vec<String>, out: &mut Outbox) {
        let subscribe = Subscribe {
            subscriber: self.id.address.clone(),
            keys,
            lease_ms: self.config.subscription_lease.as_millis() as u32,
        };
        out.send(self.id.cache.clone(), Message::Subscribe(subscribe));
    }

    /// A push from the cache: watched keys whose state changed go stale.
    pub(super) fn on_value_gossip(&mut self, gossip: &Gossip) {
        for (key, state) in &gossip.entries {
            let Some(w) = self.values.get_mut(key) else {
                continue;
            };
            let now = fingerprint(state);
            if w.seen != Some(now) {
                w.seen = Some(now);
                self.stale_values.push(key.clone());
                self.counters.value_invalidations += 1;
            }
        }
    }
}
