//! Replication overrides stored as metadata keys in the KVS itself.
//!
//! The override of key `K` lives under [`replication_key`]`(K)` as a
//! last-writer-wins value (see [`crate::cluster::REPLICATION_PREFIX`]). It
//! is stored, replicated, gossiped and handed over like any key; what makes
//! it take effect is that every owner thread that merges a write of it
//! (from a client, or by gossip) announces it to the routers as a
//! [`Membership::SetReplication`] stamped with the value's own timestamp.
//! Routers merge it into the cluster state they broadcast, so every worker
//! and client places `K` by it without a lookup per request. Owners
//! announce the overrides they hold again with every anti-entropy slice:
//! a lost announcement or a restarted router costs time, never the
//! override. Deleting the metadata key returns `K` to the default factor.

use super::StorageWorker;
use crate::cluster::{ReplicationFactor, REPLICATION_PREFIX};
use crate::lattice::LatticeValue;
use crate::protocol::{Membership, Message};
use crate::role::Outbox;

impl StorageWorker {
    /// If `key` is a replication metadata key this worker owns and holds,
    /// tells every router the override it holds.
    pub(super) fn announce_replication(&mut self, key: &str, out: &mut Outbox) {
        let Some(target) = key.strip_prefix(REPLICATION_PREFIX) else {
            return;
        };
        if !self.owns(key) {
            return;
        }
        let Some(state) = self.shard.peek(key).map(std::borrow::Cow::into_owned) else {
            return;
        };
        let (at, factor) = match (state.value(), state.deleted_at()) {
            (Some(LatticeValue::Lww(lww)), _) => match ReplicationFactor::from_bytes(lww.value()) {
                Some(factor) => (lww.timestamp(), factor),
                None => {
                    self.stats.bad_replication_metadata += 1;
                    return;
                }
            },
            (None, Some(deleted)) => (deleted, self.config.replication),
            _ => {
                self.stats.bad_replication_metadata += 1;
                return;
            }
        };
        self.stats.replication_announcements += 1;
        let msg = Message::Membership(Membership::SetReplication {
            key: target.to_string(),
            at,
            factor,
        });
        for r in &self.id.routers {
            out.send(r.clone(), msg.clone());
        }
    }
}

#[cfg(test)]
mod tests;
