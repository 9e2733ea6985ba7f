//! [`KvsDouble`]: the storage tier as one object, for tests that drive a
//! single role by hand with an explicit `now`.
//!
//! The compute tier's roles talk to the KVS (the scheduler's and the
//! cache's embedded clients) or to a node's cache (the executor), always
//! with [`KvsRequest`]s, and the clients first ask a router where keys
//! live. A test of such a role collects what it sent, lets the double
//! answer what is addressed to the KVS, and steps the answers back in
//! ([`KvsDouble::serve`]), or answers one message at a time when the test
//! needs to act between a request and its answer ([`KvsDouble::answer`]).
//!
//! The answers are the real ones: the double is a real [`StorageWorker`],
//! the one thread of a one-node cluster that owns every key, so reads,
//! whole-state reads, merging puts, deletes, type mismatches and the
//! `[limits]` checks answer exactly as a storage thread does (and a node's
//! cache answers the same outcomes for the keys it holds). A status
//! request to the router is answered with that cluster. Tests seed keys
//! with [`KvsDouble::put`] and friends (merges, as a replica's gossip
//! would be), read what the role wrote with [`KvsDouble::state`], count
//! and inspect the requests it received with [`KvsDouble::requests`], and
//! make it refuse every operation with [`KvsDouble::fail_with`].
//!
//! It holds no clock: every answer is given at the `now` the test hands in.

use crate::cluster::{ClusterState, ReplicationFactor};
use crate::kvs::{StorageWorker, WorkerConfig};
use crate::lattice::{KeyState, LatticeValue, Timestamp};
use crate::protocol::{
    Address, Gossip, KeyResult, KvsError, KvsRequest, KvsResponse, Message, NodeId, NodeInfo,
    Outcome,
};
use crate::role::{Input, Outbox, Role};
use crate::time::Time;

/// How many rounds of answers [`KvsDouble::serve`] plays before it decides
/// the role and the double would talk forever.
const MAX_ROUNDS: usize = 1000;

/// One storage thread answering a role's KVS requests, and its router.
pub struct KvsDouble {
    worker: StorageWorker,
    router: Option<Address>,
    replication: ReplicationFactor,
    requests: Vec<KvsRequest>,
    failing: Option<KvsError>,
    now: Time,
}

impl KvsDouble {
    /// A double answering the [`KvsRequest`]s sent to `at`, holding no key.
    pub fn new(at: impl Into<Address>) -> Self {
        let node = NodeInfo {
            id: NodeId(1),
            threads: vec![at.into()],
            boot: 1,
            direct: Vec::new(),
        };
        let replication = ReplicationFactor {
            global: 1,
            local: 1,
        };
        let config = WorkerConfig {
            replication,
            ..WorkerConfig::default()
        };
        let mut worker = StorageWorker::new(config, node.clone(), 0, Vec::new());
        let mut cluster = ClusterState::default();
        cluster.record_join(node);
        worker.merge_cluster(Time(0), cluster, &mut Outbox::default());
        KvsDouble {
            worker,
            router: None,
            replication,
            requests: Vec::new(),
            failing: None,
            now: Time(0),
        }
    }

    /// Also answers status requests sent to `router`, with the cluster of
    /// this one thread: how a client learns where keys live.
    pub fn routed_by(mut self, router: impl Into<Address>) -> Self {
        self.router = Some(router.into());
        self
    }

    /// The address requests go to.
    pub fn address(&self) -> &Address {
        self.worker.address()
    }

    /// Merges `value` into `key`, as a write that reached the KVS.
    pub fn put(&mut self, key: &str, value: LatticeValue) {
        self.put_state(key, KeyState::from_value(value));
    }

    /// Merges `state` (a value, a tombstone or both) into `key`.
    pub fn put_state(&mut self, key: &str, state: KeyState) {
        let gossip = Gossip {
            from: Address::from("kvs-double"),
            entries: vec![(key.to_string(), state)],
            ack: None,
        };
        let mut out = Outbox::default();
        self.worker
            .step(self.now, Input::Message(Message::Gossip(gossip)), &mut out);
    }

    /// Deletes `key` at `at`, as a delete that reached the KVS.
    pub fn delete(&mut self, key: &str, at: Timestamp) {
        self.put_state(key, KeyState::tombstone(at));
    }

    /// What the KVS holds for `key`.
    pub fn state(&self, key: &str) -> Option<&KeyState> {
        self.worker.get_state(key)
    }

    /// Every KVS request the double received, oldest first, answered or
    /// refused.
    pub fn requests(&self) -> &[KvsRequest] {
        &self.requests
    }

    /// From now on answers every operation with `error` and changes
    /// nothing (`None`: answers again).
    pub fn fail_with(&mut self, error: Option<KvsError>) {
        self.failing = error;
    }

    /// The double's answer to `msg` sent to `to` at `now`, with the address
    /// it goes to; `None` if it is not a KVS request to the double nor a
    /// status request to its router.
    pub fn answer(
        &mut self,
        now: Time,
        (to, msg): &(Address, Message),
    ) -> Option<(Address, Message)> {
        self.now = self.now.max(now);
        match msg {
            Message::StatusRequest { id, reply_to } if Some(to) == self.router.as_ref() => {
                let reply = Message::status_reply(
                    *id,
                    to,
                    self.worker.cluster(),
                    self.replication,
                    Vec::new(),
                );
                Some((reply_to.clone(), reply))
            }
            Message::KvsRequest(req) if to == self.worker.address() => {
                self.requests.push(req.clone());
                Some(self.respond(now, req.clone()))
            }
            _ => None,
        }
    }

    fn respond(&mut self, now: Time, req: KvsRequest) -> (Address, Message) {
        if let Some(error) = &self.failing {
            let results = (req.ops.iter())
                .map(|op| KeyResult {
                    key: op.key().clone(),
                    outcome: Outcome::Error(error.clone()),
                })
                .collect();
            let response = KvsResponse {
                id: req.id,
                results,
                hits: 0,
            };
            return (req.reply_to, Message::KvsResponse(response));
        }
        let mut out = Outbox::default();
        self.worker
            .step(now, Input::Message(Message::KvsRequest(req)), &mut out);
        // One thread owning every key, replicated once: it answers at once
        // and sends nothing else (no acks to wait for, no previous owners).
        let mut sent: Vec<_> = out.drain().collect();
        assert_eq!(sent.len(), 1, "a one-thread KVS answers at once: {sent:?}");
        sent.remove(0)
    }

    /// Answers what `role` sent in `sent` at `now` (the KVS requests to the
    /// double, the status requests to its router), steps the answers into
    /// `role`, and answers again what it sends on them, until it sends the
    /// double nothing more. Returns everything else `role` sent, in order,
    /// including what `sent` held besides.
    ///
    /// Panics if the exchange does not end.
    pub fn serve<R: Role>(
        &mut self,
        role: &mut R,
        now: Time,
        mut sent: Vec<(Address, Message)>,
    ) -> Vec<(Address, Message)> {
        let mut rest = Vec::new();
        let mut out = Outbox::default();
        for _ in 0..MAX_ROUNDS {
            if sent.is_empty() {
                return rest;
            }
            for message in sent.drain(..) {
                match self.answer(now, &message) {
                    Some((_, answer)) => role.step(now, Input::Message(answer), &mut out),
                    None => rest.push(message),
                }
            }
            sent.extend(out.drain());
        }
        panic!("the role and the KVS double still talk after {MAX_ROUNDS} rounds: {sent:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::{Lww, Max, SetLattice};
    use crate::protocol::{Ack, KeyOp, RequestId};

    fn request(ops: Vec<KeyOp>) -> (Address, Message) {
        let req = KvsRequest {
            id: RequestId(3),
            reply_to: Address::from("me"),
            ops,
            ack: Ack::FirstReplica,
            shared_memory: None,
        };
        (Address::from("kvs"), Message::KvsRequest(req))
    }

    fn results(answer: Option<(Address, Message)>) -> Vec<Outcome> {
        let Some((to, Message::KvsResponse(r))) = answer else {
            panic!("not a response: {answer:?}");
        };
        assert_eq!((to.as_str(), r.id), ("me", RequestId(3)));
        r.results.into_iter().map(|r| r.outcome).collect()
    }

    #[test]
    fn it_answers_reads_puts_and_deletes_as_a_storage_thread_does() {
        let mut kvs = KvsDouble::new("kvs");
        kvs.put("k", LatticeValue::Max(Max::new(5)));
        let at = Timestamp {
            wall_ms: 9,
            ..Timestamp::default()
        };
        let ops = vec![
            KeyOp::Get { key: "k".into() },
            KeyOp::ReadState {
                key: "none".into(),
                at_least: None,
            },
            KeyOp::Put {
                key: "k".into(),
                value: LatticeValue::Max(Max::new(7)),
            },
            KeyOp::Put {
                key: "k".into(),
                value: LatticeValue::Set(SetLattice::new([b"x".to_vec()])),
            },
            KeyOp::Delete {
                key: "d".into(),
                at,
            },
        ];
        let got = results(kvs.answer(Time(1_000), &request(ops)));
        assert_eq!(got[0], Outcome::Value(LatticeValue::Max(Max::new(5))));
        assert_eq!(got[1], Outcome::State(KeyState::default()));
        assert_eq!(got[2], Outcome::Stored { epoch: None });
        assert!(matches!(got[3], Outcome::Error(KvsError::TypeMismatch(_))));
        assert_eq!(got[4], Outcome::Stored { epoch: Some(at) });
        assert_eq!(
            kvs.state("k").and_then(KeyState::value),
            Some(&LatticeValue::Max(Max::new(7)))
        );
        assert_eq!(kvs.requests().len(), 1);
    }

    #[test]
    fn it_fails_on_demand_and_answers_only_what_is_addressed_to_it() {
        let mut kvs = KvsDouble::new("kvs").routed_by("router");
        let lww = LatticeValue::Lww(Lww::new(Timestamp::default(), b"v".to_vec()));
        kvs.fail_with(Some(KvsError::Stale));
        let put = KeyOp::Put {
            key: "k".into(),
            value: lww,
        };
        let got = results(kvs.answer(Time(0), &request(vec![put])));
        assert_eq!(got, vec![Outcome::Error(KvsError::Stale)]);
        assert_eq!(kvs.state("k"), None, "a refused write changes nothing");

        let (_, msg) = request(vec![]);
        assert!(kvs
            .answer(Time(0), &(Address::from("other"), msg))
            .is_none());
        let status = Message::StatusRequest {
            id: RequestId(4),
            reply_to: Address::from("me"),
        };
        let reply = kvs.answer(Time(0), &(Address::from("router"), status));
        let Some((_, Message::StatusReply { cluster, .. })) = reply else {
            panic!("{reply:?}");
        };
        assert_eq!(cluster.live_nodes().count(), 1);
    }
}
