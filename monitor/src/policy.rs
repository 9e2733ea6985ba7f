//! The policies: pure functions from the figures of one period (and their
//! own small memory) to decisions. No socket, no clock, no provider: the
//! [`crate::Monitor`] feeds them and carries out what they decide.
//!
//! Every decision carries its [`MonitorEvent`]: what, why in words, and the
//! figures behind it as a JSON object, logged as one line.

use crate::config::{HotFunctionPolicy, HotKeyPolicy, TierPolicy};
use crate::provider::NodeKind;
use anna::cluster::{ReplicationFactor, REPLICATION_PREFIX};
use anna::protocol::monitor::{MonitorEvent, StorageReport};
use anna::protocol::{Address, Key};
use anna::time::Time;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// What a decision asks to be done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run `replicas` nodes of `kind` (through the provider).
    Scale { kind: NodeKind, replicas: u32 },
    /// Write `key`'s replication override (a metadata key in the KVS).
    SetReplication { key: Key, factor: ReplicationFactor },
    /// Delete `key`'s replication override: back to the default factor.
    ResetReplication { key: Key },
    /// Load `function` on these executors and keep it warm.
    Prewarm {
        function: String,
        executors: Vec<Address>,
    },
}

/// A decision: the action and the event that explains it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub event: MonitorEvent,
}

fn decision(
    now: Time,
    policy: &str,
    action: &str,
    reason: String,
    figures: serde_json::Value,
    what: Action,
) -> Decision {
    Decision {
        action: what,
        event: MonitorEvent {
            at_ms: now.as_millis(),
            policy: policy.to_string(),
            action: action.to_string(),
            reason,
            figures: figures.to_string(),
        },
    }
}

/// Since when a condition has held without a break.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sustained {
    since: Option<Time>,
}

impl Sustained {
    /// Records whether the condition holds at `now`; returns for how long
    /// it has held (`None` if it does not hold).
    pub fn update(&mut self, now: Time, holds: bool) -> Option<Duration> {
        if !holds {
            self.since = None;
            return None;
        }
        let since = *self.since.get_or_insert(now);
        Some(now.saturating_since(since))
    }

    pub fn reset(&mut self) {
        self.since = None;
    }
}

/// The figures of one tier over the last period.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TierFigures {
    /// Nodes running (or asked for, if more).
    pub nodes: u32,
    /// Processes that reported: storage threads, executors.
    pub reporting: u32,
    /// Average and highest busy fraction, thousandths.
    pub busy_avg: u16,
    pub busy_max: u16,
    /// Storage: bytes held over all threads (every replica counted).
    pub bytes: u64,
    /// Compute: calls waiting in the schedulers' queues.
    pub queued: u32,
    /// Storage with a memory budget: the memory tier's bytes over the
    /// budget, and the share of reads and writes since the last reports
    /// that found their key on disk only; thousandths, 0 without budgets.
    pub memory_tier_permille: u16,
    pub disk_reads_permille: u16,
}

/// What one tier's policy remembers.
#[derive(Clone, Debug, Default)]
pub struct TierState {
    high: Sustained,
    low: Sustained,
    last_change: Option<Time>,
    /// The node count of the last evaluation: a change of it (a node this
    /// policy asked for joining, or one added or removed by hand) starts a
    /// grace period too.
    last_nodes: Option<u32>,
    /// Since when the tier is below `min_nodes`.
    below: Sustained,
    /// When the tier was last raised to `min_nodes`.
    last_floor: Option<Time>,
}

/// How long a tier must stay below `min_nodes` before the monitor raises
/// it: a cluster starting up (nodes still joining) is not below its floor.
pub const BELOW_MINIMUM_FOR: Duration = Duration::from_secs(2);

impl TierState {
    /// Records a change of the tier made at `now` (by this policy or asked
    /// by hand), which starts a grace period.
    pub fn changed(&mut self, now: Time) {
        self.last_change = Some(now);
        self.high.reset();
        self.low.reset();
    }
}

/// KVS or executor elasticity: one node more when the tier has stayed over
/// its high mark for `sustain`, one fewer when under its low mark for
/// `sustain_low`, within `min_nodes..=max_nodes`, nothing during `grace`
/// after a change.
pub fn tier(
    kind: NodeKind,
    p: &TierPolicy,
    state: &mut TierState,
    f: &TierFigures,
    now: Time,
) -> Option<Decision> {
    if !p.enabled || f.reporting == 0 || f.nodes == 0 {
        state.high.reset();
        state.low.reset();
        return None;
    }
    if state
        .last_nodes
        .replace(f.nodes)
        .is_some_and(|n| n != f.nodes)
    {
        state.changed(now);
    }
    let memory = if kind == NodeKind::Storage {
        let capacity = p.node_capacity_bytes.saturating_mul(u64::from(f.nodes));
        (f.bytes.saturating_mul(1000) / capacity.max(1)).min(1000) as u16
    } else {
        0
    };
    let busy_high = f.busy_avg >= p.busy_high;
    let memory_high = kind == NodeKind::Storage && memory >= p.memory_high;
    let queue_high = f.queued > 0;
    // The memory tier is full and reads keep missing it: another node's
    // memory would hold what is now read from disk.
    let pressure = kind == NodeKind::Storage
        && f.memory_tier_permille >= p.memory_high
        && f.disk_reads_permille >= p.disk_reads_high;
    let high = busy_high || memory_high || queue_high || pressure;
    let low = f.busy_avg <= p.busy_low
        && memory <= p.memory_low
        && f.memory_tier_permille <= p.memory_low
        && f.queued == 0;
    let high_for = state.high.update(now, high);
    let low_for = state.low.update(now, low);
    let below_for = state.below.update(now, f.nodes < p.min_nodes);
    if below_for.is_some_and(|d| d >= BELOW_MINIMUM_FOR)
        && state
            .last_floor
            .is_none_or(|t| now.saturating_since(t) >= p.grace)
    {
        // A node died (or was removed by hand): never below the floor,
        // whatever the grace period, and no load needed to say so. Asked
        // again at most once a grace period while the tier stays below.
        state.last_floor = Some(now);
        state.changed(now);
        let policy = match kind {
            NodeKind::Storage => "storage",
            _ => "compute",
        };
        return Some(decision(
            now,
            policy,
            "below-minimum",
            format!(
                "{} {kind} nodes, below min_nodes {}: back to {}",
                f.nodes, p.min_nodes, p.min_nodes
            ),
            json!({ "nodes": f.nodes, "min_nodes": p.min_nodes }),
            Action::Scale {
                kind,
                replicas: p.min_nodes,
            },
        ));
    }
    if state
        .last_change
        .is_some_and(|t| now.saturating_since(t) < p.grace)
    {
        return None;
    }
    let figures = json!({
        "nodes": f.nodes,
        "reporting": f.reporting,
        "busy_avg_permille": f.busy_avg,
        "busy_max_permille": f.busy_max,
        "busy_high": p.busy_high,
        "busy_low": p.busy_low,
        "bytes": f.bytes,
        "memory_permille": memory,
        "queued": f.queued,
    });
    let policy = match kind {
        NodeKind::Storage => "storage",
        _ => "compute",
    };
    if let Some(held) = high_for.filter(|d| *d >= p.sustain) {
        if f.nodes >= p.max_nodes {
            return None;
        }
        let why = if busy_high {
            format!("average busy {}‰ ≥ {}‰", f.busy_avg, p.busy_high)
        } else if memory_high {
            format!("memory {}‰ of capacity ≥ {}‰", memory, p.memory_high)
        } else if pressure {
            format!(
                "memory tier {}‰ of its budget ≥ {}‰ and {}‰ of reads from disk ≥ {}‰",
                f.memory_tier_permille, p.memory_high, f.disk_reads_permille, p.disk_reads_high
            )
        } else {
            format!("{} calls queued at the schedulers", f.queued)
        };
        state.changed(now);
        return Some(decision(
            now,
            policy,
            "add-node",
            format!(
                "{why} for {:.1} s: {} → {} {kind} nodes",
                held.as_secs_f64(),
                f.nodes,
                f.nodes + 1
            ),
            figures,
            Action::Scale {
                kind,
                replicas: f.nodes + 1,
            },
        ));
    }
    if let Some(held) = low_for.filter(|d| *d >= p.sustain_low) {
        if f.nodes <= p.min_nodes {
            return None;
        }
        state.changed(now);
        return Some(decision(
            now,
            policy,
            "remove-node",
            format!(
                "average busy {}‰ ≤ {}‰ for {:.1} s: {} → {} {kind} nodes",
                f.busy_avg,
                p.busy_low,
                held.as_secs_f64(),
                f.nodes,
                f.nodes - 1
            ),
            figures,
            Action::Scale {
                kind,
                replicas: f.nodes - 1,
            },
        ));
    }
    None
}

/// The per-key access figures of one period, summed over storage threads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyFigures {
    /// Gets and puts over all threads.
    pub accesses: u64,
    /// Keys held over all threads (every replica counted).
    pub keys: u64,
    /// The epoch the figures cover.
    pub epoch: Duration,
    /// The hottest keys' access counts, summed over the threads that
    /// reported them (lower bounds).
    pub hot: BTreeMap<Key, u64>,
}

impl KeyFigures {
    /// Sums the reports of one period.
    pub fn from_reports<'a>(reports: impl IntoIterator<Item = &'a StorageReport>) -> Self {
        let mut f = KeyFigures::default();
        for r in reports {
            f.accesses += r.accesses;
            f.keys += r.keys;
            f.epoch = f.epoch.max(Duration::from_millis(u64::from(r.epoch_ms)));
            for (k, n) in &r.hot_keys {
                *f.hot.entry(k.clone()).or_default() += u64::from(*n);
            }
        }
        f
    }

    /// Mean accesses per key held.
    pub fn mean(&self) -> f64 {
        self.accesses as f64 / self.keys.max(1) as f64
    }

    fn per_second(&self, count: u64) -> f64 {
        count as f64 / self.epoch.as_secs_f64().max(0.001)
    }
}

/// What the hot-key policy remembers of a key it raised.
#[derive(Clone, Debug, Default)]
pub struct RaisedKey {
    pub factor: Option<ReplicationFactor>,
    cool: Sustained,
}

/// Hot-key replication: raises the factor of keys read far above the mean,
/// and removes the override of keys it raised once they have cooled.
/// `factor_of` is a key's current factor (its override, else the default).
pub fn hot_keys(
    p: &HotKeyPolicy,
    raised: &mut BTreeMap<Key, RaisedKey>,
    f: &KeyFigures,
    factor_of: impl Fn(&str) -> ReplicationFactor,
    now: Time,
) -> Vec<Decision> {
    let mut out = Vec::new();
    if !p.enabled || f.epoch.is_zero() {
        return out;
    }
    let mean = f.mean();
    let figures = |key: &str, count: u64| {
        json!({
            "key": key,
            "accesses": count,
            "per_second": f.per_second(count).round(),
            "mean_per_key": mean,
            "multiple": (count as f64 / mean.max(f64::MIN_POSITIVE)).round(),
            "total_accesses": f.accesses,
            "keys": f.keys,
        })
    };
    for (key, &count) in &f.hot {
        if key.starts_with(REPLICATION_PREFIX) || raised.contains_key(key) {
            continue;
        }
        let hot = count as f64 >= f64::from(p.multiple) * mean
            && f.per_second(count) >= f64::from(p.min_per_second);
        let current = factor_of(key);
        let target = p.replication;
        if !hot || (current.global >= target.global && current.local >= target.local) {
            continue;
        }
        if raised.len() >= p.max_keys {
            break;
        }
        raised.insert(
            key.clone(),
            RaisedKey {
                factor: Some(target),
                cool: Sustained::default(),
            },
        );
        out.push(decision(
            now,
            "hot-key",
            "raise-replication",
            format!(
                "{key}: {count} accesses in {:.1} s, {:.0}x the mean per key: \
                 replication {}/{} → {}/{} (global/local)",
                f.epoch.as_secs_f64(),
                count as f64 / mean.max(f64::MIN_POSITIVE),
                current.global,
                current.local,
                target.global,
                target.local
            ),
            figures(key, count),
            Action::SetReplication {
                key: key.clone(),
                factor: target,
            },
        ));
    }
    let mut cooled = Vec::new();
    for (key, state) in raised.iter_mut() {
        let count = f.hot.get(key).copied().unwrap_or(0);
        let warm = count as f64 >= f64::from(p.multiple) / 2.0 * mean
            && f.per_second(count) >= f64::from(p.min_per_second) / 2.0;
        if let Some(held) = state.cool.update(now, !warm) {
            if held >= p.cool_after {
                cooled.push(key.clone());
                out.push(decision(
                    now,
                    "hot-key",
                    "lower-replication",
                    format!(
                        "{key}: {count} accesses in {:.1} s, below {}x the mean for {:.1} s: \
                         back to the default replication",
                        f.epoch.as_secs_f64(),
                        p.multiple / 2,
                        held.as_secs_f64()
                    ),
                    figures(key, count),
                    Action::ResetReplication { key: key.clone() },
                ));
            }
        }
    }
    for key in cooled {
        raised.remove(&key);
    }
    out
}

/// One executor as the hot-function policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutorFigures {
    pub address: Address,
    pub warm: Vec<String>,
}

/// Hot functions: a function completing at least `min_per_second` calls a
/// second (`rates`, summed over executors) is preloaded on every executor
/// not yet warm with it, at most once per `grace` per function.
pub fn hot_functions(
    p: &HotFunctionPolicy,
    last_spread: &mut BTreeMap<String, Time>,
    rates: &BTreeMap<String, f64>,
    executors: &[ExecutorFigures],
    now: Time,
) -> Vec<Decision> {
    let mut out = Vec::new();
    if !p.enabled {
        return out;
    }
    for (function, &rate) in rates {
        if rate < f64::from(p.min_per_second) {
            continue;
        }
        if last_spread
            .get(function)
            .is_some_and(|t| now.saturating_since(*t) < p.grace)
        {
            continue;
        }
        let (warm, cold): (Vec<&ExecutorFigures>, Vec<&ExecutorFigures>) = executors
            .iter()
            .partition(|e| e.warm.iter().any(|w| w == function));
        if cold.is_empty() {
            continue;
        }
        last_spread.insert(function.clone(), now);
        let targets: Vec<Address> = cold.iter().map(|e| e.address.clone()).collect();
        out.push(decision(
            now,
            "hot-function",
            "prewarm",
            format!(
                "{function}: {rate:.0} calls/s ≥ {}: warm on {} of {} executors, loading it on {} more",
                p.min_per_second,
                warm.len(),
                executors.len(),
                targets.len()
            ),
            json!({
                "function": function,
                "calls_per_second": rate.round(),
                "warm": warm.len(),
                "executors": executors.len(),
                "targets": targets.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            }),
            Action::Prewarm {
                function: function.clone(),
                executors: targets,
            },
        ));
    }
    last_spread.retain(|_, t| now.saturating_since(*t) < p.grace);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Time {
        Time::from_micros(s * 1_000_000)
    }

    fn figures(nodes: u32, busy: u16) -> TierFigures {
        TierFigures {
            nodes,
            reporting: nodes * 2,
            busy_avg: busy,
            busy_max: busy,
            ..TierFigures::default()
        }
    }

    fn policy() -> TierPolicy {
        TierPolicy {
            sustain: Duration::from_secs(3),
            sustain_low: Duration::from_secs(10),
            grace: Duration::from_secs(20),
            ..TierPolicy::default()
        }
    }

    #[test]
    fn a_full_memory_tier_that_reads_keep_missing_adds_a_storage_node() {
        let p = policy();
        let pressed = |tier: u16, disk: u16| TierFigures {
            memory_tier_permille: tier,
            disk_reads_permille: disk,
            ..figures(2, 100)
        };
        // Full, but reads find their keys in memory: no node.
        let mut s = TierState::default();
        for t in 0..10 {
            assert_eq!(
                tier(NodeKind::Storage, &p, &mut s, &pressed(950, 20), secs(t)),
                None
            );
        }
        // Reads missing it, but room left: no node either.
        let mut s = TierState::default();
        for t in 0..10 {
            assert_eq!(
                tier(NodeKind::Storage, &p, &mut s, &pressed(500, 600), secs(t)),
                None
            );
        }
        // Both, held for `sustain`: one node more, saying why.
        let mut s = TierState::default();
        assert_eq!(
            tier(NodeKind::Storage, &p, &mut s, &pressed(950, 300), secs(0)),
            None
        );
        let d = tier(NodeKind::Storage, &p, &mut s, &pressed(950, 300), secs(3)).expect("added");
        assert_eq!(
            d.action,
            Action::Scale {
                kind: NodeKind::Storage,
                replicas: 3
            }
        );
        assert!(
            d.event.reason.contains("memory tier 950‰") && d.event.reason.contains("300‰ of reads"),
            "{}",
            d.event.reason
        );
        // Executors have no memory tier.
        let mut s = TierState::default();
        for t in 0..10 {
            assert_eq!(
                tier(NodeKind::Compute, &p, &mut s, &pressed(950, 300), secs(t)),
                None
            );
        }
    }

    #[test]
    fn a_node_is_added_only_after_the_high_mark_holds_for_sustain() {
        let p = policy();
        let mut s = TierState::default();
        let busy = figures(1, 900);
        assert_eq!(tier(NodeKind::Storage, &p, &mut s, &busy, secs(0)), None);
        assert_eq!(tier(NodeKind::Storage, &p, &mut s, &busy, secs(2)), None);
        // A dip restarts the count.
        assert_eq!(
            tier(NodeKind::Storage, &p, &mut s, &figures(1, 500), secs(3)),
            None
        );
        assert_eq!(tier(NodeKind::Storage, &p, &mut s, &busy, secs(4)), None);
        let d = tier(NodeKind::Storage, &p, &mut s, &busy, secs(7)).expect("added");
        assert_eq!(
            d.action,
            Action::Scale {
                kind: NodeKind::Storage,
                replicas: 2
            }
        );
        assert_eq!(
            (d.event.policy.as_str(), d.event.action.as_str()),
            ("storage", "add-node")
        );
        assert!(d.event.reason.contains("900‰ ≥ 700‰"), "{}", d.event.reason);
        let fig: serde_json::Value = serde_json::from_str(&d.event.figures).unwrap();
        assert_eq!(fig["busy_avg_permille"], 900);
        assert_eq!(d.event.at_ms, 7000);
    }

    #[test]
    fn grace_stops_flapping_and_bounds_hold() {
        let p = policy();
        let mut s = TierState::default();
        let busy = figures(2, 950);
        tier(NodeKind::Compute, &p, &mut s, &busy, secs(0));
        assert!(tier(NodeKind::Compute, &p, &mut s, &busy, secs(3)).is_some());
        // Within grace: nothing, however busy or idle.
        for t in 4..23 {
            assert_eq!(
                tier(NodeKind::Compute, &p, &mut s, &busy, secs(t)),
                None,
                "t={t}"
            );
        }
        assert!(tier(NodeKind::Compute, &p, &mut s, &busy, secs(23)).is_some());
        // At max_nodes: never more.
        let mut s = TierState::default();
        let full = figures(p.max_nodes, 1000);
        for t in 0..60 {
            assert_eq!(tier(NodeKind::Compute, &p, &mut s, &full, secs(t)), None);
        }
    }

    #[test]
    fn an_idle_tier_shrinks_to_min_nodes_and_not_below() {
        let p = policy();
        let mut s = TierState::default();
        let idle = figures(2, 20);
        assert_eq!(tier(NodeKind::Storage, &p, &mut s, &idle, secs(0)), None);
        assert_eq!(tier(NodeKind::Storage, &p, &mut s, &idle, secs(9)), None);
        let d = tier(NodeKind::Storage, &p, &mut s, &idle, secs(10)).expect("removed");
        assert_eq!(
            d.action,
            Action::Scale {
                kind: NodeKind::Storage,
                replicas: 1
            }
        );
        let one = figures(1, 0);
        for t in 11..100 {
            assert_eq!(tier(NodeKind::Storage, &p, &mut s, &one, secs(t)), None);
        }
    }

    #[test]
    fn a_tier_below_its_minimum_is_raised_at_once_whatever_its_load() {
        let p = TierPolicy {
            min_nodes: 3,
            max_nodes: 5,
            ..policy()
        };
        let mut s = TierState::default();
        for t in 0..30 {
            assert_eq!(
                tier(NodeKind::Storage, &p, &mut s, &figures(3, 400), secs(t)),
                None
            );
        }
        // A node dies: two seconds below the floor and the monitor asks for
        // it, with no load sustained and despite the grace period the
        // change starts.
        assert_eq!(
            tier(NodeKind::Storage, &p, &mut s, &figures(2, 400), secs(30)),
            None
        );
        let d = tier(NodeKind::Storage, &p, &mut s, &figures(2, 400), secs(32)).expect("raised");
        assert_eq!(d.event.action, "below-minimum");
        assert_eq!(
            d.action,
            Action::Scale {
                kind: NodeKind::Storage,
                replicas: 3
            }
        );
        // Still below: asked again only after a grace period.
        assert_eq!(
            tier(NodeKind::Storage, &p, &mut s, &figures(2, 400), secs(33)),
            None
        );
        let again = tier(
            NodeKind::Storage,
            &p,
            &mut s,
            &figures(2, 400),
            secs(32) + p.grace,
        );
        assert_eq!(again.expect("asked again").event.action, "below-minimum");
    }

    #[test]
    fn a_node_added_by_hand_gets_a_grace_period_before_it_can_be_removed() {
        let p = policy();
        let mut s = TierState::default();
        // Idle at min_nodes for a long time: nothing to remove.
        for t in 0..60 {
            assert_eq!(
                tier(NodeKind::Compute, &p, &mut s, &figures(1, 0), secs(t)),
                None
            );
        }
        // `squall scale compute 2` by hand: not removed during the grace
        // period its arrival starts (20 s), then removed as the tier has
        // stayed under its low mark meanwhile.
        for t in 60..80 {
            assert_eq!(
                tier(NodeKind::Compute, &p, &mut s, &figures(2, 0), secs(t)),
                None,
                "t={t}"
            );
        }
        let d = tier(NodeKind::Compute, &p, &mut s, &figures(2, 0), secs(80)).expect("removed");
        assert_eq!(d.event.action, "remove-node");
    }

    #[test]
    fn storage_memory_and_compute_queue_count_as_high() {
        let p = TierPolicy {
            sustain: Duration::ZERO,
            node_capacity_bytes: 1000,
            ..policy()
        };
        let full = TierFigures {
            bytes: 900,
            ..figures(1, 0)
        };
        let d = tier(
            NodeKind::Storage,
            &p,
            &mut TierState::default(),
            &full,
            secs(1),
        )
        .unwrap();
        assert!(
            d.event.reason.starts_with("memory 900‰"),
            "{}",
            d.event.reason
        );
        let queued = TierFigures {
            queued: 40,
            ..figures(1, 300)
        };
        let d = tier(
            NodeKind::Compute,
            &p,
            &mut TierState::default(),
            &queued,
            secs(1),
        )
        .unwrap();
        assert!(
            d.event.reason.starts_with("40 calls queued"),
            "{}",
            d.event.reason
        );
        assert_eq!(d.event.policy, "compute");
    }

    fn report(thread: u32, accesses: u64, keys: u64, hot: &[(&str, u32)]) -> StorageReport {
        StorageReport {
            thread,
            epoch_ms: 1000,
            accesses,
            keys,
            hot_keys: hot.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            ..StorageReport::default()
        }
    }

    const DEFAULT: ReplicationFactor = ReplicationFactor {
        global: 1,
        local: 1,
    };

    #[test]
    fn a_hot_key_is_raised_once_and_lowered_after_it_cools() {
        let p = HotKeyPolicy {
            cool_after: Duration::from_secs(5),
            ..HotKeyPolicy::default()
        };
        let mut raised = BTreeMap::new();
        // 1000 keys, 20k accesses: mean 20; "hot" has 8000, "warm" 100.
        let reports = [
            report(0, 12_000, 500, &[("hot", 5000), ("warm", 100)]),
            report(1, 8_000, 500, &[("hot", 3000)]),
        ];
        let f = KeyFigures::from_reports(&reports);
        assert_eq!(f.hot["hot"], 8000);
        let d = hot_keys(&p, &mut raised, &f, |_| DEFAULT, secs(1));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            d[0].action,
            Action::SetReplication {
                key: "hot".into(),
                factor: p.replication
            }
        );
        assert!(
            d[0].event.reason.contains("400x the mean"),
            "{}",
            d[0].event.reason
        );
        // Still hot: nothing new.
        assert!(hot_keys(&p, &mut raised, &f, |_| p.replication, secs(2)).is_empty());
        // Cool for less than cool_after: kept; then lowered once.
        let cold = KeyFigures::from_reports(&[report(0, 20_000, 1000, &[("other", 30)])]);
        for t in 3..8 {
            assert!(hot_keys(&p, &mut raised, &cold, |_| p.replication, secs(t)).is_empty());
        }
        let d = hot_keys(&p, &mut raised, &cold, |_| p.replication, secs(8));
        assert_eq!(d[0].action, Action::ResetReplication { key: "hot".into() });
        assert!(raised.is_empty());
    }

    #[test]
    fn slow_or_already_replicated_or_metadata_keys_are_left_alone() {
        let p = HotKeyPolicy::default();
        let mut raised = BTreeMap::new();
        // Far above the mean but only 50 a second.
        let slow = KeyFigures::from_reports(&[report(0, 60, 1000, &[("k", 50)])]);
        assert!(hot_keys(&p, &mut raised, &slow, |_| DEFAULT, secs(1)).is_empty());
        let meta = format!("{REPLICATION_PREFIX}k");
        let f = KeyFigures::from_reports(&[report(
            0,
            20_000,
            1000,
            &[(meta.as_str(), 9000), ("k", 9000)],
        )]);
        assert!(hot_keys(&p, &mut raised, &f, |_| p.replication, secs(1)).is_empty());
        assert!(raised.is_empty());
    }

    #[test]
    fn a_hot_function_is_prewarmed_on_cold_executors_once_per_grace() {
        let p = HotFunctionPolicy {
            grace: Duration::from_secs(10),
            ..HotFunctionPolicy::default()
        };
        let e = |a: &str, warm: &[&str]| ExecutorFigures {
            address: Address::from(a),
            warm: warm.iter().map(|s| s.to_string()).collect(),
        };
        let executors = [e("e1", &["f"]), e("e2", &[]), e("e3", &["g"])];
        let rates = BTreeMap::from([("f".to_string(), 400.0), ("g".to_string(), 3.0)]);
        let mut last = BTreeMap::new();
        let d = hot_functions(&p, &mut last, &rates, &executors, secs(1));
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].action,
            Action::Prewarm {
                function: "f".into(),
                executors: vec![Address::from("e2"), Address::from("e3")]
            }
        );
        assert!(hot_functions(&p, &mut last, &rates, &executors, secs(5)).is_empty());
        assert_eq!(
            hot_functions(&p, &mut last, &rates, &executors, secs(12)).len(),
            1
        );
        let all_warm = [e("e1", &["f"]), e("e2", &["f"])];
        assert!(hot_functions(&p, &mut BTreeMap::new(), &rates, &all_warm, secs(30)).is_empty());
    }
}
