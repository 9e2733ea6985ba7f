//! The routing tier: answers "which threads hold key K?" and keeps the
//! cluster's membership.
//!
//! A router holds the [`ClusterState`] lattice. Joins, departures and
//! replication overrides are merged into it and the result is broadcast to
//! every live storage thread and every other router; states received from
//! peers are merged the same way, so routers agree without coordinating. A
//! node whose heartbeats stop for `failure_timeout` has its incarnation
//! declared departed, and the survivors re-replicate its keys. The whole
//! state is also re-broadcast every `broadcast_period`, so a lost broadcast
//! costs only time.

use crate::cluster::{ClusterState, MemberStatus, Placement, ReplicationFactor};
use crate::lattice::Lattice;
use crate::protocol::{Address, Membership, Message, NodeId, RouteRequest, RouteResponse};
use crate::role::{Input, Outbox, PauseDetector, Role};
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Settings of a router. Every field has a default that runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Replication factor of keys without an override; must match the
    /// storage workers'.
    pub replication: ReplicationFactor,
    /// A node silent this long is declared departed.
    #[serde(with = "crate::config::millis")]
    pub failure_timeout: Duration,
    /// How often the whole cluster state is re-sent to everyone.
    #[serde(with = "crate::config::millis")]
    pub broadcast_period: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            replication: crate::kvs::WorkerConfig::default().replication,
            failure_timeout: Duration::from_secs(3),
            broadcast_period: Duration::from_secs(1),
        }
    }
}

/// Counters of one router.
#[derive(Clone, Debug, Default)]
pub struct RouterStats {
    pub route_requests: u64,
    pub joins: u64,
    pub departures: u64,
    pub failures_declared: u64,
    /// Times this router found it had not been running (a stall) for over
    /// half the failure timeout, and did not count it against the nodes.
    pub pauses: u64,
    /// Heartbeats of incarnations already departed (answered with the state).
    pub stale_heartbeats: u64,
    /// Departures refused: of a node this router does not know as up in
    /// that incarnation (an incarnation it never saw, one already
    /// replaced, a node it never heard of).
    pub departures_refused: u64,
    /// Heartbeats refused: of an incarnation later than the one this
    /// router knows for the node (incarnations come from joins).
    pub heartbeats_refused: u64,
    pub unexpected: u64,
    /// The driver's transport counters, as last observed.
    pub transport: crate::role::TransportStats,
}

impl RouterStats {
    /// Every counter by name, for status replies.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let own = [
            ("route_requests", self.route_requests),
            ("joins", self.joins),
            ("departures", self.departures),
            ("failures_declared", self.failures_declared),
            ("stale_heartbeats", self.stale_heartbeats),
            ("departures_refused", self.departures_refused),
            ("heartbeats_refused", self.heartbeats_refused),
            ("pauses", self.pauses),
            ("unexpected", self.unexpected),
        ];
        crate::role::named_counters(&own, &self.transport)
    }
}

/// One routing thread.
pub struct Router {
    config: RouterConfig,
    me: Address,
    peers: Vec<Address>,
    cluster: ClusterState,
    placement: Placement,
    last_heard: BTreeMap<NodeId, Time>,
    next_broadcast: Time,
    /// Notices when this router itself was not running, so that its own
    /// stall is not taken for the silence of every node.
    pause: PauseDetector,
    stats: RouterStats,
}

impl Router {
    /// A router at `me` that shares state with the routers `peers`.
    pub fn new(config: RouterConfig, me: Address, peers: Vec<Address>) -> Self {
        let cluster = ClusterState::default();
        let placement = Placement::new(&cluster, config.replication);
        let peers = peers.into_iter().filter(|p| *p != me).collect();
        Router {
            config,
            me,
            peers,
            cluster,
            placement,
            last_heard: BTreeMap::new(),
            next_broadcast: Time::default(),
            pause: PauseDetector::default(),
            stats: RouterStats::default(),
        }
    }

    /// The membership this router knows.
    pub fn cluster(&self) -> &ClusterState {
        &self.cluster
    }

    /// The placement it answers from.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Its counters.
    pub fn stats(&self) -> &RouterStats {
        &self.stats
    }

    /// The address it receives at.
    pub fn address(&self) -> &Address {
        &self.me
    }

    fn on_route(&mut self, req: RouteRequest, out: &mut Outbox) {
        self.stats.route_requests += 1;
        let placements = req
            .keys
            .into_iter()
            .map(|k| {
                let owners = self.placement.owners(&k);
                (k, owners)
            })
            .collect();
        out.send(
            req.reply_to,
            Message::RouteResponse(RouteResponse {
                id: req.id,
                ring_version: self.placement.version(),
                placements,
            }),
        );
    }

    fn on_membership(&mut self, now: Time, m: Membership, out: &mut Outbox) {
        let changed = match m {
            Membership::Join { node } => {
                let id = node.id;
                self.last_heard.insert(id, now);
                let already = self
                    .cluster
                    .member(id)
                    .is_some_and(|r| r.status == MemberStatus::Up(node.clone()));
                if already {
                    // A repeated join of the same process (its answer was
                    // lost): the same incarnation, shown to it again.
                    self.send_state_to_node(id, out);
                    false
                } else {
                    self.stats.joins += 1;
                    let incarnation = self.cluster.record_join(node);
                    tracing::info!(node = id.0, incarnation, "node joined");
                    true
                }
            }
            Membership::Depart { node, incarnation } => {
                let known = self.cluster.member(node).cloned();
                match known {
                    Some(r)
                        if r.incarnation == incarnation && r.status != MemberStatus::Departed =>
                    {
                        self.stats.departures += 1;
                        tracing::info!(node = node.0, incarnation, "node departed");
                        self.last_heard.remove(&node);
                        self.cluster.record_departure(node, incarnation)
                    }
                    // A repeated departure: nothing to do.
                    Some(r) if r.incarnation == incarnation => false,
                    _ => {
                        // Only the incarnation the router knows as up may
                        // depart: a departure of any other (a forged or a
                        // garbled one) would remove a live node for good.
                        self.stats.departures_refused += 1;
                        tracing::warn!(
                            node = node.0,
                            incarnation,
                            known = ?known.map(|r| r.incarnation),
                            refused = self.stats.departures_refused,
                            "departure refused: not the incarnation this router knows as up"
                        );
                        false
                    }
                }
            }
            Membership::Heartbeat { node, incarnation } => {
                let id = node.id;
                let known = self.cluster.member(id).map(|r| r.incarnation);
                if known.is_some_and(|k| incarnation > k) {
                    // Incarnations come from joins: a later one this router
                    // never gave out (nor heard of from its peers) would
                    // replace a known node's record, threads and all. A
                    // router that does not know the node at all (it
                    // restarted) still learns it from the heartbeat.
                    self.stats.heartbeats_refused += 1;
                    if self.stats.heartbeats_refused.is_power_of_two() {
                        tracing::warn!(
                            node = id.0,
                            incarnation,
                            known,
                            refused = self.stats.heartbeats_refused,
                            "heartbeat refused: an incarnation this router never saw"
                        );
                    }
                    return;
                }
                self.last_heard.insert(id, now);
                // A router that restarted learns the member from its own
                // heartbeat; a departure it knows of is not undone by it.
                let learnt = self.cluster.record_alive(node.clone(), incarnation);
                let current = self.cluster.member(id).is_some_and(|r| {
                    r.incarnation == incarnation
                        && matches!(&r.status, MemberStatus::Up(info) if *info == node)
                });
                if !current {
                    // The node was declared departed while alive (a stall, a
                    // partition) or a later incarnation replaced it: show it
                    // the state, so it hands its keys over and rejoins.
                    tracing::warn!(
                        node = id.0,
                        incarnation,
                        "heartbeat from a departed incarnation: telling the node to rejoin"
                    );
                    self.stats.stale_heartbeats += 1;
                    for t in &node.threads {
                        out.send(
                            t.clone(),
                            Message::Membership(Membership::State(self.cluster.clone())),
                        );
                    }
                } else if learnt {
                    tracing::info!(
                        node = id.0,
                        incarnation,
                        "learnt a live node from its heartbeat"
                    );
                }
                learnt
            }
            Membership::State(state) => self.cluster.merge(state),
            Membership::Leave { .. } | Membership::Left { .. } => {
                self.stats.unexpected += 1;
                false
            }
            Membership::SetReplication { key, at, factor } => {
                tracing::info!(%key, global = factor.global, local = factor.local, "replication override");
                self.cluster.set_replication(key, at, factor)
            }
        };
        if changed {
            self.placement = Placement::new(&self.cluster, self.config.replication);
            self.broadcast(now, out);
        }
    }

    fn send_state_to_node(&self, node: NodeId, out: &mut Outbox) {
        if let Some(MemberStatus::Up(info)) = self.cluster.member(node).map(|r| &r.status) {
            for t in &info.threads {
                out.send(
                    t.clone(),
                    Message::Membership(Membership::State(self.cluster.clone())),
                );
            }
        }
    }

    /// Sends the state to every live storage thread and every peer router.
    fn broadcast(&mut self, now: Time, out: &mut Outbox) {
        self.next_broadcast = now + self.config.broadcast_period;
        let msg = Message::Membership(Membership::State(self.cluster.clone()));
        for (_, info) in self.cluster.live_nodes() {
            for t in &info.threads {
                out.send(t.clone(), msg.clone());
            }
        }
        for p in &self.peers {
            out.send(p.clone(), msg.clone());
        }
    }

    /// Declares departed every live node silent for the failure timeout,
    /// and forgets silent nodes that are not live.
    fn declare_failures(&mut self, now: Time) -> bool {
        let timeout = self.config.failure_timeout;
        let silent: Vec<(NodeId, Time)> = self
            .last_heard
            .iter()
            .filter(|(_, heard)| **heard + timeout <= now)
            .map(|(n, t)| (*n, *t))
            .collect();
        let mut changed = false;
        for (node, heard) in silent {
            self.last_heard.remove(&node);
            let Some(record) = self.cluster.member(node) else {
                continue;
            };
            if !matches!(record.status, MemberStatus::Up(_)) {
                continue;
            }
            let incarnation = record.incarnation;
            tracing::warn!(
                node = node.0,
                incarnation,
                silent_ms = now.saturating_since(heard).as_millis() as u64,
                "node declared failed"
            );
            self.stats.failures_declared += 1;
            changed |= self.cluster.record_departure(node, incarnation);
        }
        changed
    }
}

impl Router {
    fn dispatch(&mut self, now: Time, input: Input, out: &mut Outbox) {
        match input {
            Input::Message(Message::Ping { id, reply_to }) => {
                out.send(reply_to, Message::Pong { id, boot: 0 })
            }
            Input::Message(Message::RouteRequest(req)) => self.on_route(req, out),
            Input::Message(Message::StatusRequest { id, reply_to }) => {
                let counters = self.stats.counters();
                let reply = Message::status_reply(
                    id,
                    &self.me,
                    &self.cluster,
                    self.config.replication,
                    counters,
                );
                out.send(reply_to, reply)
            }
            Input::Message(Message::Membership(m)) => self.on_membership(now, m, out),
            Input::Message(other) => {
                self.stats.unexpected += 1;
                tracing::debug!(kind = other.kind(), "router ignored a message");
            }
            Input::Tick => {
                if self.declare_failures(now) {
                    self.placement = Placement::new(&self.cluster, self.config.replication);
                    self.broadcast(now, out);
                } else if now >= self.next_broadcast {
                    self.broadcast(now, out);
                }
            }
        }
    }
}

impl Role for Router {
    fn observe_transport(&mut self, stats: crate::role::TransportStats) {
        self.stats.transport = stats;
    }

    fn step(&mut self, now: Time, input: Input, out: &mut Outbox) {
        if let Some(idle) = self.pause.woke(now, self.config.failure_timeout / 2) {
            // This router was not running (a stall, a paused machine): the
            // nodes' heartbeats of that time wait unread, so the pause
            // does not count as their silence.
            tracing::warn!(
                idle_ms = idle.as_millis() as u64,
                "router ran late: not counting its own pause against the nodes"
            );
            self.stats.pauses += 1;
            for heard in self.last_heard.values_mut() {
                *heard = *heard + idle;
            }
        }
        self.dispatch(now, input, out);
        self.pause.asked(now, self.next_tick());
    }

    fn next_tick(&self) -> Option<Time> {
        let earliest_failure = self
            .last_heard
            .values()
            .min()
            .map(|t| *t + self.config.failure_timeout);
        let anyone_to_tell = self.cluster.live_nodes().next().is_some() || !self.peers.is_empty();
        let broadcast = anyone_to_tell.then_some(self.next_broadcast);
        [earliest_failure, broadcast].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::NodeInfo;

    fn node(id: u64) -> NodeInfo {
        NodeInfo {
            id: NodeId(id),
            threads: vec![Address(format!("node{id}/t0"))],
            boot: 7,
            direct: Vec::new(),
        }
    }

    fn heartbeat(r: &mut Router, now: Time, id: u64, incarnation: u64) -> Vec<(Address, Message)> {
        let mut out = Outbox::default();
        let m = Membership::Heartbeat {
            node: node(id),
            incarnation,
        };
        r.step(now, Input::Message(Message::Membership(m)), &mut out);
        out.drain().collect()
    }

    #[test]
    fn a_restarted_router_learns_the_live_nodes_from_their_heartbeats() {
        let mut r = Router::new(RouterConfig::default(), Address::from("router"), vec![]);
        assert_eq!(r.cluster().live_nodes().count(), 0);
        let sent = heartbeat(&mut r, Time(1), 1, 4);
        let record = r.cluster().member(NodeId(1)).cloned().expect("learnt");
        assert_eq!(record.incarnation, 4);
        assert_eq!(record.status, MemberStatus::Up(node(1)));
        assert_eq!(r.placement().nodes().len(), 1, "it places keys on it");
        // Learning it changed the state: the router tells everyone.
        assert!(sent.iter().any(|(to, m)| to.as_str() == "node1/t0"
            && matches!(m, Message::Membership(Membership::State(_)))));
        // The same heartbeat again changes nothing and tells nobody.
        assert!(heartbeat(&mut r, Time(2), 1, 4).is_empty());
    }

    #[test]
    fn a_heartbeat_of_a_departed_incarnation_is_answered_and_does_not_revive_it() {
        let mut r = Router::new(RouterConfig::default(), Address::from("router"), vec![]);
        heartbeat(&mut r, Time(1), 1, 2);
        let mut departed = r.cluster().clone();
        departed.record_departure(NodeId(1), 2);
        let mut out = Outbox::default();
        let state = Message::Membership(Membership::State(departed));
        r.step(Time(2), Input::Message(state), &mut out);
        let sent = heartbeat(&mut r, Time(3), 1, 2);
        assert_eq!(
            r.cluster().member(NodeId(1)).map(|m| m.status.clone()),
            Some(MemberStatus::Departed)
        );
        assert!(sent.iter().any(|(to, m)| to.as_str() == "node1/t0"
            && matches!(m, Message::Membership(Membership::State(_)))));
        assert_eq!(r.stats().stale_heartbeats, 1);
    }

    fn depart(r: &mut Router, now: Time, id: u64, incarnation: u64) {
        let m = Membership::Depart {
            node: NodeId(id),
            incarnation,
        };
        r.step(
            now,
            Input::Message(Message::Membership(m)),
            &mut Outbox::default(),
        );
    }

    #[test]
    fn only_the_incarnation_known_as_up_may_depart() {
        let mut r = Router::new(RouterConfig::default(), Address::from("router"), vec![]);
        heartbeat(&mut r, Time(1), 1, 3);
        // An incarnation never seen (the forged frame of the security
        // issue), an older one, and a node never heard of: refused.
        depart(&mut r, Time(2), 1, u64::from(u32::MAX));
        depart(&mut r, Time(2), 1, 2);
        depart(&mut r, Time(2), 9, 1);
        assert_eq!(r.stats().departures_refused, 3);
        assert_eq!(
            r.cluster().member(NodeId(1)).map(|m| m.status.clone()),
            Some(MemberStatus::Up(node(1)))
        );
        assert_eq!(r.cluster().live_nodes().count(), 1);
        // Its own departure is taken, once.
        depart(&mut r, Time(3), 1, 3);
        depart(&mut r, Time(3), 1, 3);
        assert_eq!(
            r.cluster().member(NodeId(1)).map(|m| m.status.clone()),
            Some(MemberStatus::Departed)
        );
        assert_eq!(r.stats().departures, 1);
        assert_eq!(r.stats().departures_refused, 3);
    }

    #[test]
    fn a_heartbeat_of_an_incarnation_never_given_out_is_refused() {
        let mut r = Router::new(RouterConfig::default(), Address::from("router"), vec![]);
        heartbeat(&mut r, Time(1), 1, 3);
        // A later incarnation with other threads (a forged or garbled
        // frame) does not replace the known node.
        let mut out = Outbox::default();
        let forged = Membership::Heartbeat {
            node: NodeInfo {
                threads: vec![Address::from("elsewhere/t0")],
                ..node(1)
            },
            incarnation: u64::from(u32::MAX),
        };
        r.step(
            Time(2),
            Input::Message(Message::Membership(forged)),
            &mut out,
        );
        assert!(out.drain().next().is_none());
        assert_eq!(r.stats().heartbeats_refused, 1);
        let record = r.cluster().member(NodeId(1)).cloned().expect("known");
        assert_eq!(
            (record.incarnation, record.status),
            (3, MemberStatus::Up(node(1)))
        );
        // Its own heartbeats still count, and a node never heard of is
        // still learnt from its heartbeat.
        heartbeat(&mut r, Time(3), 1, 3);
        heartbeat(&mut r, Time(3), 2, 5);
        assert_eq!(r.cluster().live_nodes().count(), 2);
        assert_eq!(r.stats().heartbeats_refused, 1);
    }
}
