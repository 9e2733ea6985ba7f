//! [`Monitor`]: the monitor as a state machine.
//!
//! Every `period` it evaluates the policies on what arrived during the last
//! period, then asks again: the cluster state of one router (which storage
//! threads are live, the replication overrides), a `StorageReport` of every
//! live storage thread, and the compute status of every scheduler (each
//! holds every executor's and cache's latest report). Every decision is
//! carried out from here, as messages: `Prewarm` to executors, replication
//! overrides written to the KVS by the monitor's own client (`ClientCore`),
//! and `Message::Scale` to the actuator (the `squall monitor` process's
//! provider, on its own thread, so a slow provider never stalls the
//! statistics). The Prometheus text of each evaluation goes to the
//! `/metrics` server as `Message::Metrics`. So the simulator drives the
//! whole monitor, actions included.
//!
//! Every decision is also an event: logged as one structured line (target
//! `squall::monitor::event`), kept (the last `events_kept`) for
//! `MonitorStatusRequest`, and counted for `/metrics`.

use crate::config::MonitorConfig;
use crate::history::{Figures, History, SPAN};
use crate::policy::{
    self, Action, Decision, ExecutorFigures, KeyFigures, RaisedKey, TierFigures, TierState,
};
use crate::provider::NodeKind;
use anna::client::{ClientCore, OpId, OpOutput};
use anna::cluster::{replication_key, ClusterState, ReplicationFactor};
use anna::lattice::{Lattice, LatticeValue, Lww, WriterId};
use anna::protocol::compute::{ComputeStatus, ExecutorReport};
use anna::protocol::monitor::{MonitorEvent, MonitorStatus, StorageReport};
use anna::protocol::{Address, Key, Message, RequestId};
use anna::role::{Input, Outbox, Role};
use anna::time::Time;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Where the monitor's decisions and figures go, besides the cluster.
#[derive(Clone, Debug, Default)]
pub struct Outlets {
    /// The actuator that carries out `Message::Scale`; none: scaling
    /// decisions are logged only.
    pub actuator: Option<Address>,
    /// The `/metrics` server, sent `Message::Metrics` every period.
    pub metrics: Option<Address>,
}

/// Reports older than this many periods are not used.
const STALE_PERIODS: u32 = 3;

/// The monitor's state machine.
pub struct Monitor {
    config: MonitorConfig,
    me: Address,
    routers: Vec<Address>,
    schedulers: Vec<Address>,
    outlets: Outlets,
    /// Writes replication overrides (metadata keys of the KVS).
    client: ClientCore,
    /// Override writes in flight, for the log line of their outcome.
    writes: BTreeMap<OpId, Action>,
    next_tick: Time,
    last_evaluation: Option<Time>,
    next_id: u64,
    turn: usize,
    cluster: ClusterState,
    default_replication: ReplicationFactor,
    storage: BTreeMap<Address, (Time, StorageReport)>,
    /// Outstanding compute status requests, by id.
    asked: BTreeMap<RequestId, Address>,
    compute: BTreeMap<Address, (Time, ComputeStatus)>,
    /// Completed calls per function of each executor incarnation, as of
    /// the last evaluation.
    calls_seen: BTreeMap<(Address, u64), Vec<(String, u64)>>,
    rates: BTreeMap<String, f64>,
    /// What the monitor last asked of each kind.
    desired: BTreeMap<NodeKind, u32>,
    storage_tier: TierState,
    compute_tier: TierState,
    raised: BTreeMap<Key, RaisedKey>,
    spread: BTreeMap<String, Time>,
    events: VecDeque<MonitorEvent>,
    decisions: BTreeMap<(String, String), u64>,
    /// The last minutes of both tiers' throughput and latency.
    history: History,
    /// Messages this monitor could not use.
    pub unexpected: u64,
}

impl Monitor {
    /// A monitor receiving at `me`, asking `routers` and `schedulers`,
    /// sending scaling decisions and `/metrics` text to `outlets`, and
    /// writing replication overrides with a client of settings `client`,
    /// as `writer`.
    pub fn new(
        config: MonitorConfig,
        me: Address,
        routers: Vec<Address>,
        schedulers: Vec<Address>,
        outlets: Outlets,
        client: anna::client::ClientConfig,
        writer: WriterId,
    ) -> Self {
        let client = ClientCore::new(client, me.clone(), routers.clone(), writer);
        let history = History::new(SPAN, config.period);
        Monitor {
            config,
            me,
            routers,
            schedulers,
            outlets,
            client,
            writes: BTreeMap::new(),
            next_tick: Time::default(),
            last_evaluation: None,
            next_id: 1,
            turn: 0,
            cluster: ClusterState::default(),
            default_replication: ReplicationFactor {
                global: 1,
                local: 1,
            },
            storage: BTreeMap::new(),
            asked: BTreeMap::new(),
            compute: BTreeMap::new(),
            calls_seen: BTreeMap::new(),
            rates: BTreeMap::new(),
            desired: BTreeMap::new(),
            storage_tier: TierState::default(),
            compute_tier: TierState::default(),
            raised: BTreeMap::new(),
            spread: BTreeMap::new(),
            events: VecDeque::new(),
            decisions: BTreeMap::new(),
            history,
            unexpected: 0,
        }
    }

    fn fresh_id(&mut self) -> RequestId {
        self.next_id += 1;
        RequestId(self.next_id)
    }

    fn stale_before(&self, now: Time) -> Time {
        Time::from_micros(
            now.as_micros()
                .saturating_sub((self.config.period * STALE_PERIODS).as_micros() as u64),
        )
    }

    /// The latest report of every live storage thread, fresh enough to use.
    pub fn storage_reports(&self) -> impl Iterator<Item = &StorageReport> {
        self.storage.values().map(|(_, r)| r)
    }

    /// Every executor the schedulers report, once (the latest report).
    pub fn executors(&self) -> Vec<&ExecutorReport> {
        let mut seen: BTreeMap<&Address, &ExecutorReport> = BTreeMap::new();
        for (_, status) in self.compute.values() {
            for e in &status.executors {
                seen.insert(&e.executor, e);
            }
        }
        seen.into_values().collect()
    }

    /// The schedulers' compute status, merged: executors and caches once
    /// each, calls in flight and queued summed, call figures added up.
    pub fn compute_status(&self) -> ComputeStatus {
        let mut caches = BTreeMap::new();
        let (mut in_flight, mut queued) = (0, 0);
        let mut calls = Default::default();
        for (_, s) in self.compute.values() {
            for c in &s.caches {
                caches.insert(c.cache.clone(), c.clone());
            }
            in_flight += s.in_flight;
            queued += s.queued;
            crate::totals::add_calls(&mut calls, &s.calls);
        }
        ComputeStatus {
            executors: self.executors().into_iter().cloned().collect(),
            caches: caches.into_values().collect(),
            in_flight,
            queued,
            calls,
        }
    }

    /// The last minutes of both tiers' throughput and latency.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// KVS operations a second over every storage thread's last epoch.
    pub fn kvs_ops_per_second(&self) -> f64 {
        // A fold from 0.0: an empty `sum()` of floats is -0.0.
        self.storage_reports()
            .map(|r| r.accesses as f64 / (f64::from(r.epoch_ms.max(1)) / 1000.0))
            .fold(0.0, |a, r| a + r)
    }

    /// Adds this period's sample to the history.
    fn sample(&mut self, now: Time) {
        let compute = self.compute_status();
        self.history.push(Figures {
            at_ms: now.as_millis(),
            kvs_ops: self.kvs_ops_per_second(),
            kvs: crate::totals::kvs_latency(&compute.caches),
            calls: self.rates.values().fold(0.0, |a, r| a + r),
            call_latency: crate::totals::call_latency(&compute.calls),
            in_flight: compute.in_flight,
            queued: compute.queued,
        });
    }

    /// Calls completed a second per function over the last period.
    pub fn function_rates(&self) -> &BTreeMap<String, f64> {
        &self.rates
    }

    /// Live storage nodes and their threads, as the routers last said.
    pub fn live_storage(&self) -> impl Iterator<Item = (anna::protocol::NodeId, &[Address])> {
        self.cluster
            .live_nodes()
            .map(|(id, n)| (id, n.threads.as_slice()))
    }

    /// Live storage nodes, as the routers last said.
    pub fn storage_nodes(&self) -> u32 {
        self.cluster.live_nodes().count() as u32
    }

    /// Compute nodes with at least one reporting executor.
    pub fn compute_nodes(&self) -> u32 {
        let nodes: BTreeSet<&str> = self.executors().iter().map(|e| e.node.as_str()).collect();
        nodes.len() as u32
    }

    /// Decisions taken, by (policy, action).
    pub fn decision_counts(&self) -> &BTreeMap<(String, String), u64> {
        &self.decisions
    }

    /// What `squall status` is told.
    /// How often it gathers statistics (the span each report's counts
    /// cover).
    pub fn period(&self) -> std::time::Duration {
        self.config.period
    }

    pub fn status(&self) -> MonitorStatus {
        let observed = [
            (NodeKind::Storage, self.storage_nodes()),
            (NodeKind::Compute, self.compute_nodes()),
        ];
        MonitorStatus {
            storage: self.storage_reports().cloned().collect(),
            compute: self.compute_status(),
            replicas: observed
                .iter()
                .map(|(kind, seen)| {
                    let desired = self.desired.get(kind).copied().unwrap_or(*seen);
                    (kind.to_string(), desired, *seen)
                })
                .collect(),
            raised: self
                .raised
                .iter()
                .filter_map(|(k, r)| {
                    r.factor
                        .map(|f| (k.clone(), u32::from(f.global), u32::from(f.local)))
                })
                .collect(),
            events: self.events.iter().cloned().collect(),
        }
    }

    fn on_message(&mut self, now: Time, msg: Message, out: &mut Outbox) {
        match msg {
            Message::StatusReply {
                ref cluster,
                replication,
                ..
            } => {
                self.cluster.merge(cluster.clone());
                self.default_replication = replication;
                // The client's own placement questions come back here too.
                let done = self.client.handle(now, msg, out);
                self.settle(done);
            }
            Message::KvsResponse(_) => {
                let done = self.client.handle(now, msg, out);
                self.settle(done);
            }
            Message::StorageReport { report, .. } => {
                self.storage.insert(report.from.clone(), (now, report));
            }
            Message::ComputeStatusReply { id, status } => match self.asked.remove(&id) {
                Some(scheduler) => {
                    self.compute.insert(scheduler, (now, status));
                }
                None => self.unexpected += 1,
            },
            Message::MonitorStatusRequest { id, reply_to } => {
                let status = Box::new(self.status());
                out.send(reply_to, Message::MonitorStatusReply { id, status });
            }
            Message::Ping { id, reply_to } => out.send(reply_to, Message::Pong { id, boot: 0 }),
            other => {
                self.unexpected += 1;
                tracing::debug!(kind = other.kind(), "monitor ignored a message");
            }
        }
    }

    /// Evaluates every policy on the last period's figures.
    fn evaluate(&mut self, now: Time, out: &mut Outbox) {
        let stale = self.stale_before(now);
        let live: BTreeSet<Address> = self
            .cluster
            .live_nodes()
            .flat_map(|(_, n)| n.threads.iter().cloned())
            .collect();
        self.storage
            .retain(|a, (t, _)| *t >= stale && live.contains(a));
        self.compute.retain(|_, (t, _)| *t >= stale);
        self.update_rates(now);

        let mut decisions = Vec::new();
        let storage = self.storage_figures();
        decisions.extend(policy::tier(
            NodeKind::Storage,
            &self.config.storage,
            &mut self.storage_tier,
            &storage,
            now,
        ));
        let compute = self.compute_figures();
        decisions.extend(policy::tier(
            NodeKind::Compute,
            &self.config.compute,
            &mut self.compute_tier,
            &compute,
            now,
        ));
        let keys = KeyFigures::from_reports(self.storage.values().map(|(_, r)| r));
        let (cluster, default) = (&self.cluster, self.default_replication);
        decisions.extend(policy::hot_keys(
            &self.config.hot_keys,
            &mut self.raised,
            &keys,
            |k| cluster.replication_override(k).unwrap_or(default),
            now,
        ));
        let executors: Vec<ExecutorFigures> = self
            .executors()
            .into_iter()
            .map(|e| ExecutorFigures {
                address: e.executor.clone(),
                warm: e.warm.clone(),
            })
            .collect();
        decisions.extend(policy::hot_functions(
            &self.config.hot_functions,
            &mut self.spread,
            &self.rates,
            &executors,
            now,
        ));
        for d in decisions {
            self.carry_out(now, d, out);
        }
        self.last_evaluation = Some(now);
        self.sample(now);
        if let Some(to) = self.outlets.metrics.clone() {
            let text = crate::metrics::render(self);
            let dashboard = crate::dashboard::render(self, now);
            out.send(to, Message::Metrics { text, dashboard });
        }
    }

    fn storage_figures(&self) -> TierFigures {
        let reports: Vec<&StorageReport> = self.storage_reports().collect();
        let busy: Vec<u16> = reports.iter().map(|r| r.busy_permille).collect();
        let budget: u64 = reports.iter().map(|r| r.memory_budget).sum();
        let in_memory: u64 = reports.iter().map(|r| r.memory_bytes).sum();
        let disk_hits: u64 = reports.iter().map(|r| r.disk_hits).sum();
        let hits = disk_hits + reports.iter().map(|r| r.memory_hits).sum::<u64>();
        TierFigures {
            nodes: self.storage_nodes(),
            reporting: reports.len() as u32,
            busy_avg: average(&busy),
            busy_max: busy.iter().copied().max().unwrap_or(0),
            bytes: reports.iter().map(|r| r.bytes).sum(),
            queued: 0,
            memory_tier_permille: permille(in_memory, budget),
            disk_reads_permille: permille(disk_hits, hits),
        }
    }

    fn compute_figures(&self) -> TierFigures {
        let executors = self.executors();
        let busy: Vec<u16> = executors.iter().map(|e| e.busy_permille).collect();
        TierFigures {
            nodes: self.compute_nodes(),
            reporting: executors.len() as u32,
            busy_avg: average(&busy),
            busy_max: busy.iter().copied().max().unwrap_or(0),
            bytes: 0,
            queued: self.compute.values().map(|(_, s)| s.queued).sum(),
            ..TierFigures::default()
        }
    }

    /// Per-function call rates from the executors' cumulative counts.
    fn update_rates(&mut self, now: Time) {
        let elapsed = self
            .last_evaluation
            .map(|t| now.saturating_since(t).as_secs_f64())
            .unwrap_or(0.0);
        let mut seen = BTreeMap::new();
        let mut rates: BTreeMap<String, f64> = BTreeMap::new();
        for e in self.executors() {
            let id = (e.executor.clone(), e.boot);
            if let (Some(before), true) = (self.calls_seen.get(&id), elapsed > 0.0) {
                for (function, n) in &e.calls {
                    let was = before
                        .iter()
                        .find(|(f, _)| f == function)
                        .map_or(0, |(_, n)| *n);
                    *rates.entry(function.clone()).or_default() +=
                        n.saturating_sub(was) as f64 / elapsed;
                }
            }
            seen.insert(id, e.calls.clone());
        }
        self.calls_seen = seen;
        self.rates = rates;
    }

    fn carry_out(&mut self, now: Time, d: Decision, out: &mut Outbox) {
        let e = &d.event;
        tracing::info!(
            target: "squall::monitor::event",
            policy = %e.policy,
            action = %e.action,
            reason = %e.reason,
            figures = %e.figures,
            "decision"
        );
        *self
            .decisions
            .entry((e.policy.clone(), e.action.clone()))
            .or_default() += 1;
        self.events.push_back(d.event);
        while self.events.len() > self.config.events_kept {
            self.events.pop_front();
        }
        match d.action {
            Action::Prewarm {
                function,
                executors,
            } => {
                for to in executors {
                    out.send(
                        to,
                        Message::Prewarm {
                            function: function.clone(),
                        },
                    );
                }
            }
            Action::Scale { kind, replicas } => {
                self.desired.insert(kind, replicas);
                match &self.outlets.actuator {
                    Some(to) => out.send(to.clone(), Message::Scale { kind, replicas }),
                    None => tracing::info!(%kind, replicas, "no actuator: not scaling"),
                }
            }
            Action::SetReplication { ref key, factor } => {
                let at = self.client.timestamp(now);
                let value = LatticeValue::Lww(Lww::new(at, factor.to_bytes()));
                let op = self.client.put(now, replication_key(key), value, out);
                self.writes.insert(op, d.action);
            }
            Action::ResetReplication { ref key } => {
                let op = self.client.delete(now, replication_key(key), out);
                self.writes.insert(op, d.action);
            }
        }
    }

    /// Logs how replication override writes ended.
    fn settle(&mut self, done: Vec<(OpId, Result<OpOutput, anna::client::ClientError>)>) {
        for (op, result) in done {
            let Some(action) = self.writes.remove(&op) else {
                continue;
            };
            match result {
                Ok(_) => tracing::info!(?action, "replication changed"),
                Err(error) => tracing::warn!(?action, %error, "changing replication failed"),
            }
        }
    }

    /// Asks for the next period's figures.
    fn ask(&mut self, out: &mut Outbox) {
        if !self.routers.is_empty() {
            let router = self.routers[self.turn % self.routers.len()].clone();
            self.turn = self.turn.wrapping_add(1);
            let id = self.fresh_id();
            out.send(
                router,
                Message::StatusRequest {
                    id,
                    reply_to: self.me.clone(),
                },
            );
        }
        let threads: Vec<Address> = self
            .cluster
            .live_nodes()
            .flat_map(|(_, n)| n.threads.iter().cloned())
            .collect();
        for t in threads {
            let id = self.fresh_id();
            out.send(
                t,
                Message::StatsRequest {
                    id,
                    reply_to: self.me.clone(),
                },
            );
        }
        self.asked.clear();
        for s in self.schedulers.clone() {
            let id = self.fresh_id();
            self.asked.insert(id, s.clone());
            out.send(
                s,
                Message::ComputeStatusRequest {
                    id,
                    reply_to: self.me.clone(),
                },
            );
        }
    }
}

/// `part / whole` in thousandths, at most 1000 (0 for an empty whole).
fn permille(part: u64, whole: u64) -> u16 {
    if whole == 0 {
        return 0;
    }
    (u128::from(part) * 1000 / u128::from(whole)).min(1000) as u16
}

fn average(values: &[u16]) -> u16 {
    if values.is_empty() {
        return 0;
    }
    (values.iter().map(|v| u64::from(*v)).sum::<u64>() / values.len() as u64) as u16
}

impl Role for Monitor {
    fn step(&mut self, now: Time, input: Input, out: &mut Outbox) {
        match input {
            Input::Message(m) => self.on_message(now, m, out),
            Input::Tick => {
                let done = self.client.tick(now, out);
                self.settle(done);
                if now < self.next_tick {
                    return;
                }
                self.evaluate(now, out);
                self.ask(out);
                self.next_tick = now + self.config.period;
            }
        }
    }

    fn next_tick(&self) -> Option<Time> {
        let client = self.client.next_tick();
        Some(client.map_or(self.next_tick, |c| c.min(self.next_tick)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TierPolicy;
    use anna::protocol::{NodeId, NodeInfo};
    use std::time::Duration;

    fn secs(s: u64) -> Time {
        Time::from_micros(s * 1_000_000)
    }

    struct Fixture {
        monitor: Monitor,
        out: Outbox,
        /// Everything the monitor sent, in order.
        log: Vec<(Address, Message)>,
    }

    fn fixture() -> Fixture {
        let config = MonitorConfig {
            storage: TierPolicy {
                sustain: Duration::from_secs(2),
                ..TierPolicy::default()
            },
            ..MonitorConfig::default()
        };
        let monitor = Monitor::new(
            config,
            Address::from("monitor"),
            vec![Address::from("router")],
            vec![Address::from("scheduler")],
            Outlets {
                actuator: Some(Address::from("actuator")),
                metrics: Some(Address::from("metrics")),
            },
            anna::client::ClientConfig::default(),
            WriterId(7),
        );
        Fixture {
            monitor,
            out: Outbox::default(),
            log: Vec::new(),
        }
    }

    impl Fixture {
        fn tick(&mut self, now: Time) -> Vec<(Address, Message)> {
            self.monitor.step(now, Input::Tick, &mut self.out);
            let sent: Vec<_> = self.out.drain().collect();
            self.log.extend(sent.iter().cloned());
            sent
        }

        fn deliver(&mut self, now: Time, m: Message) -> Vec<(Address, Message)> {
            self.monitor.step(now, Input::Message(m), &mut self.out);
            let sent: Vec<_> = self.out.drain().collect();
            self.log.extend(sent.iter().cloned());
            sent
        }

        /// The `Scale` messages sent to the actuator so far.
        fn scalings(&self) -> Vec<(NodeKind, u32)> {
            self.log
                .iter()
                .filter_map(|(to, m)| match m {
                    Message::Scale { kind, replicas } if to.as_str() == "actuator" => {
                        Some((*kind, *replicas))
                    }
                    _ => None,
                })
                .collect()
        }

        /// The last `/metrics` text sent.
        fn metrics(&self) -> String {
            self.log
                .iter()
                .rev()
                .find_map(|(to, m)| match m {
                    Message::Metrics { text, .. } if to.as_str() == "metrics" => Some(text.clone()),
                    _ => None,
                })
                .unwrap_or_default()
        }
    }

    fn one_node() -> ClusterState {
        let mut c = ClusterState::default();
        c.record_join(NodeInfo {
            id: NodeId(1),
            threads: vec![Address::from("t0"), Address::from("t1")],
            boot: 1,
            direct: Vec::new(),
        });
        c
    }

    /// The router's answer: one node of two threads, default replication 1/1.
    fn one_node_state() -> Message {
        Message::StatusReply {
            id: RequestId(2),
            from: Address::from("router"),
            cluster: one_node(),
            replication: ReplicationFactor {
                global: 1,
                local: 1,
            },
            counters: vec![],
        }
    }

    fn busy_report(thread: u32, busy: u16) -> Message {
        Message::StorageReport {
            id: RequestId(0),
            report: StorageReport {
                from: Address(format!("t{thread}")),
                node: NodeId(1),
                thread,
                epoch_ms: 1000,
                keys: 100,
                bytes: 10_000,
                busy_permille: busy,
                accesses: 5000,
                hot_keys: vec![("k".into(), 40)],
                ..StorageReport::default()
            },
        }
    }

    #[test]
    fn asks_every_live_thread_and_scales_storage_after_a_sustained_high_mark() {
        let mut f = fixture();
        let sent = f.tick(secs(0));
        assert!(sent
            .iter()
            .any(|(to, m)| matches!(m, Message::StatusRequest { .. }) && to.as_str() == "router"));
        assert!(sent.iter().any(|(to, m)| to.as_str() == "scheduler"
            && matches!(m, Message::ComputeStatusRequest { .. })));
        f.deliver(secs(0), one_node_state());
        for t in 1..=3 {
            let sent = f.tick(secs(t));
            let asked: Vec<&str> = sent
                .iter()
                .filter(|(_, m)| matches!(m, Message::StatsRequest { .. }))
                .map(|(to, _)| to.as_str())
                .collect();
            assert_eq!(asked, ["t0", "t1"]);
            f.deliver(secs(t), busy_report(0, 950));
            f.deliver(secs(t), busy_report(1, 850));
        }
        assert!(f.scalings().is_empty(), "not before sustain");
        f.tick(secs(4)); // high since t=2 (first evaluation with reports)
        f.tick(secs(5));
        assert_eq!(f.scalings(), [(NodeKind::Storage, 2)]);
        let reply = f.deliver(
            secs(5),
            Message::MonitorStatusRequest {
                id: RequestId(9),
                reply_to: Address::from("me"),
            },
        );
        let Message::MonitorStatusReply { status, .. } = &reply[0].1 else {
            panic!("{reply:?}");
        };
        assert_eq!(status.events.len(), 1);
        assert_eq!(status.events[0].action, "add-node");
        assert!(
            status.events[0].reason.contains("900‰"),
            "{}",
            status.events[0].reason
        );
        assert_eq!(status.replicas[0], ("storage".to_string(), 2, 1));
        let metrics = f.metrics();
        assert!(
            metrics.contains("squall_storage_busy_ratio{node=\"1\",thread=\"0\"} 0.95"),
            "{metrics}"
        );
        assert!(metrics
            .contains("squall_monitor_decisions_total{policy=\"storage\",action=\"add-node\"} 1"));
        assert!(metrics.contains("squall_nodes{kind=\"storage\",state=\"desired\"} 2"));
    }

    #[test]
    fn the_metrics_page_shows_each_threads_memory_tier_and_reads_by_tier() {
        let mut f = fixture();
        f.tick(secs(0));
        f.deliver(secs(0), one_node_state());
        let Message::StorageReport { id, mut report } = busy_report(0, 100) else {
            unreachable!()
        };
        report.memory_bytes = 900;
        report.memory_budget = 1000;
        report.memory_hits = 30;
        report.disk_hits = 10;
        report.keys = 100;
        report.disk_keys = 60;
        report.disk_bytes = 6000;
        f.deliver(secs(0), Message::StorageReport { id, report });
        f.tick(secs(1));
        let metrics = f.metrics();
        for line in [
            "squall_storage_memory_tier_bytes{node=\"1\",thread=\"0\"} 900",
            "squall_storage_memory_budget_bytes{node=\"1\",thread=\"0\"} 1000",
            "squall_storage_reads_per_second{node=\"1\",thread=\"0\",tier=\"memory\"} 30",
            "squall_storage_reads_per_second{node=\"1\",thread=\"0\",tier=\"disk\"} 10",
            "squall_storage_tier_keys{node=\"1\",thread=\"0\",tier=\"memory\"} 40",
            "squall_storage_tier_keys{node=\"1\",thread=\"0\",tier=\"disk\"} 60",
            "squall_storage_disk_tier_bytes{node=\"1\",thread=\"0\"} 6000",
        ] {
            assert!(metrics.contains(line), "{line} in\n{metrics}");
        }
    }

    #[test]
    fn reports_of_departed_threads_and_stale_reports_are_dropped() {
        let mut f = fixture();
        f.tick(secs(0));
        f.deliver(secs(0), one_node_state());
        f.deliver(secs(0), busy_report(0, 10));
        f.deliver(
            secs(0),
            Message::StorageReport {
                id: RequestId(0),
                report: StorageReport {
                    from: Address::from("gone"),
                    ..StorageReport::default()
                },
            },
        );
        f.tick(secs(1));
        assert_eq!(f.monitor.storage_reports().count(), 1);
        f.tick(secs(10));
        assert_eq!(f.monitor.storage_reports().count(), 0);
        // A reply to no request is counted, not used.
        f.deliver(
            secs(10),
            Message::ComputeStatusReply {
                id: RequestId(12345),
                status: ComputeStatus {
                    queued: 99,
                    ..ComputeStatus::default()
                },
            },
        );
        assert_eq!(f.monitor.unexpected, 1);
    }

    #[test]
    fn function_rates_come_from_cumulative_counts_and_restarts_reset_them() {
        let mut f = fixture();
        let report = |calls: u64, boot: u64| ExecutorReport {
            executor: Address::from("e1"),
            node: "c0".into(),
            calls: vec![("f".into(), calls)],
            boot,
            ..ExecutorReport::default()
        };
        let status = |r: ExecutorReport| ComputeStatus {
            executors: vec![r],
            ..ComputeStatus::default()
        };
        let reply = |f: &mut Fixture, t: u64, r: ExecutorReport| {
            let sent = f.tick(secs(t));
            let id = sent
                .iter()
                .find_map(|(_, m)| match m {
                    Message::ComputeStatusRequest { id, .. } => Some(*id),
                    _ => None,
                })
                .unwrap();
            f.deliver(
                secs(t),
                Message::ComputeStatusReply {
                    id,
                    status: status(r),
                },
            );
        };
        reply(&mut f, 0, report(100, 1));
        reply(&mut f, 1, report(300, 1));
        f.tick(secs(2));
        assert_eq!(f.monitor.function_rates()["f"], 200.0);
        // Its reports still come (the same counts): the rate falls to 0.
        assert_eq!(f.monitor.compute_nodes(), 1);
        reply(&mut f, 3, report(5, 2));
        f.tick(secs(4));
        assert!(f
            .monitor
            .function_rates()
            .get("f")
            .is_none_or(|r| *r == 0.0));
    }
}
