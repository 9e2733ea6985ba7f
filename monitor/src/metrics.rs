//! The monitor's figures in the Prometheus text exposition format (0.0.4),
//! served at `/metrics` by `squall monitor`.
//!
//! Gauges are the last period's figures; `_total` series are the
//! components' own cumulative counters (they restart at zero when the
//! component restarts, which Prometheus's `rate()` handles).

use crate::monitor::Monitor;
use anna::histogram::Histogram;
use anna::protocol::compute::ComputeStatus;
use anna::protocol::figures::TriggerFigures;
use std::fmt::Write;

/// Escapes a label value: backslash, double quote and newline.
fn label(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

struct Page(String);

impl Page {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// One histogram's `_bucket{le=...}` (cumulative, in seconds), `_sum`
    /// (seconds) and `_count` samples.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let bucket = format!("{name}_bucket");
        let buckets = h.cumulative().map(|(le, n)| (le.to_string(), n));
        for (le, n) in buckets.chain([("+Inf".to_string(), h.count())]) {
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, n as f64);
        }
        self.sample(&format!("{name}_sum"), labels, h.sum_micros as f64 / 1e6);
        self.sample(&format!("{name}_count"), labels, h.count() as f64);
    }
}

/// A metric family of triggers: name, type, help, and its value of one.
type TriggerFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&TriggerFigures) -> u64,
);

/// Every trigger's runs, failures, retries, backlog and dropped changes.
fn render_triggers(p: &mut Page, compute: &ComputeStatus) {
    let triggers = &compute.calls.triggers;
    let families: [TriggerFamily; 5] = [
        (
            "squall_trigger_runs_total",
            "counter",
            "Calls of a trigger's function that ran (raised or not).",
            |t| t.runs,
        ),
        (
            "squall_trigger_failures_total",
            "counter",
            "Calls of a trigger's function that raised.",
            |t| t.failures,
        ),
        (
            "squall_trigger_retries_total",
            "counter",
            "Calls of a trigger's function that failed for a reason of the cluster (timeout, executor death, overload); their changes are sent again.",
            |t| t.retries,
        ),
        (
            "squall_trigger_backlog",
            "gauge",
            "Changes the storage threads hold for a trigger, not yet done.",
            |t| t.backlog,
        ),
        (
            "squall_trigger_dropped_total",
            "counter",
            "Changes dropped because a storage thread's backlog for the trigger was full.",
            |t| t.dropped,
        ),
    ];
    for (name, kind, help, value) in families {
        p.family(name, kind, help);
        for t in triggers {
            let labels = [
                ("trigger", t.name.as_str()),
                ("function", t.function.as_str()),
            ];
            p.sample(name, &labels, value(t) as f64);
        }
    }
}

/// Latency histograms and error, timeout and retry counts of calls (from
/// the schedulers and executors) and of the caches' KVS operations.
fn render_latency(p: &mut Page, compute: &ComputeStatus) {
    let calls = &compute.calls;
    p.family(
        "squall_call_duration_seconds",
        "histogram",
        "Calls of one function, from the scheduler's dispatch to the executor's CallDone.",
    );
    for (f, h) in &calls.functions {
        p.histogram("squall_call_duration_seconds", &[("function", f)], h);
    }
    p.family(
        "squall_dag_call_duration_seconds",
        "histogram",
        "DAG calls, from the scheduler's dispatch to the CallDone of the last sink.",
    );
    for (d, h) in &calls.dags {
        p.histogram("squall_dag_call_duration_seconds", &[("dag", d)], h);
    }
    p.family(
        "squall_call_errors_total",
        "counter",
        "Failed calls by error kind: failed by the scheduler itself, or by an executor.",
    );
    for (kind, n) in &calls.errors {
        let labels = [("source", "scheduler"), ("kind", kind.as_str())];
        p.sample("squall_call_errors_total", &labels, *n as f64);
    }
    let mut by_kind: Vec<(&str, u64)> = Vec::new();
    for (kind, n) in compute.executors.iter().flat_map(|e| &e.errors) {
        match by_kind.iter_mut().find(|(k, _)| k == kind) {
            Some((_, total)) => *total += n,
            None => by_kind.push((kind, *n)),
        }
    }
    for (kind, n) in by_kind {
        let labels = [("source", "executor"), ("kind", kind)];
        p.sample("squall_call_errors_total", &labels, n as f64);
    }
    p.family(
        "squall_call_timeouts_total",
        "counter",
        "Calls the schedulers failed with Timeout (queued, waiting for a DAG, or in flight).",
    );
    p.sample("squall_call_timeouts_total", &[], calls.timeouts as f64);
    p.family(
        "squall_call_retries_total",
        "counter",
        "Calls dispatched again after an executor died, and callers' resends of a call in flight.",
    );
    let retries = [
        ("executor-died", calls.redispatches),
        ("resend", calls.resends),
    ];
    for (reason, n) in retries {
        p.sample("squall_call_retries_total", &[("reason", reason)], n as f64);
    }
    p.family(
        "squall_kvs_op_duration_seconds",
        "histogram",
        "A compute node's cache's KVS operations, from the first attempt to the answer, by kind.",
    );
    for c in &compute.caches {
        let ops = [
            ("get", &c.kvs.get),
            ("put", &c.kvs.put),
            ("delete", &c.kvs.delete),
        ];
        for (op, h) in ops {
            let labels = [("node", c.node.as_str()), ("op", op)];
            p.histogram("squall_kvs_op_duration_seconds", &labels, h);
        }
    }
    p.family(
        "squall_kvs_op_retries_total",
        "counter",
        "Attempts of a cache's KVS operations sent again (timeout, wrong owner, older version).",
    );
    for c in &compute.caches {
        let n = c.kvs.retries as f64;
        p.sample("squall_kvs_op_retries_total", &[("node", &c.node)], n);
    }
    p.family(
        "squall_kvs_op_failures_total",
        "counter",
        "A cache's KVS operations that failed: at their deadline (timeout) or otherwise (error).",
    );
    for c in &compute.caches {
        for (kind, n) in [("timeout", c.kvs.timeouts), ("error", c.kvs.errors)] {
            let labels = [("node", c.node.as_str()), ("kind", kind)];
            p.sample("squall_kvs_op_failures_total", &labels, n as f64);
        }
    }
}

/// The whole `/metrics` page.
pub fn render(m: &Monitor) -> String {
    let mut p = Page(String::new());
    let status = m.status();

    p.family(
        "squall_nodes",
        "gauge",
        "Nodes of each kind: desired by the monitor and observed.",
    );
    for (kind, desired, observed) in &status.replicas {
        p.sample(
            "squall_nodes",
            &[("kind", kind), ("state", "desired")],
            f64::from(*desired),
        );
        p.sample(
            "squall_nodes",
            &[("kind", kind), ("state", "observed")],
            f64::from(*observed),
        );
    }

    let storage = &status.storage;
    p.family(
        "squall_storage_busy_ratio",
        "gauge",
        "Fraction of the last epoch a storage thread spent handling messages.",
    );
    for r in storage {
        let (node, thread) = (r.node.0.to_string(), r.thread.to_string());
        p.sample(
            "squall_storage_busy_ratio",
            &[("node", &node), ("thread", &thread)],
            f64::from(r.busy_permille) / 1000.0,
        );
    }
    p.family(
        "squall_storage_keys",
        "gauge",
        "Keys held by a storage thread.",
    );
    for r in storage {
        let (node, thread) = (r.node.0.to_string(), r.thread.to_string());
        p.sample(
            "squall_storage_keys",
            &[("node", &node), ("thread", &thread)],
            r.keys as f64,
        );
    }
    p.family(
        "squall_storage_bytes",
        "gauge",
        "Approximate bytes held by a storage thread.",
    );
    for r in storage {
        let (node, thread) = (r.node.0.to_string(), r.thread.to_string());
        p.sample(
            "squall_storage_bytes",
            &[("node", &node), ("thread", &thread)],
            r.bytes as f64,
        );
    }
    p.family(
        "squall_storage_accesses_per_second",
        "gauge",
        "Gets, puts and deletes a second at a storage thread over its last epoch.",
    );
    for r in storage {
        let (node, thread) = (r.node.0.to_string(), r.thread.to_string());
        let secs = f64::from(r.epoch_ms.max(1)) / 1000.0;
        p.sample(
            "squall_storage_accesses_per_second",
            &[("node", &node), ("thread", &thread)],
            r.accesses as f64 / secs,
        );
    }

    // Tiers, for threads with a memory budget.
    let tiered: Vec<_> = storage.iter().filter(|r| r.memory_budget > 0).collect();
    p.family(
        "squall_storage_memory_tier_bytes",
        "gauge",
        "Bytes in a storage thread's memory tier (threads with a memory budget).",
    );
    for r in &tiered {
        let (node, thread) = (r.node.0.to_string(), r.thread.to_string());
        p.sample(
            "squall_storage_memory_tier_bytes",
            &[("node", &node), ("thread", &thread)],
            r.memory_bytes as f64,
        );
    }
    p.family(
        "squall_storage_memory_budget_bytes",
        "gauge",
        "The bytes a storage thread's memory tier may hold ([storage] memory_bytes / threads).",
    );
    for r in &tiered {
        let (node, thread) = (r.node.0.to_string(), r.thread.to_string());
        p.sample(
            "squall_storage_memory_budget_bytes",
            &[("node", &node), ("thread", &thread)],
            r.memory_budget as f64,
        );
    }
    p.family(
        "squall_storage_tier_keys",
        "gauge",
        "Keys of a storage thread by tier: in memory (and on disk), on disk only.",
    );
    for r in &tiered {
        let (node, thread) = (r.node.0.to_string(), r.thread.to_string());
        let memory = r.keys.saturating_sub(r.disk_keys);
        for (tier, keys) in [("memory", memory), ("disk", r.disk_keys)] {
            p.sample(
                "squall_storage_tier_keys",
                &[("node", &node), ("thread", &thread), ("tier", tier)],
                keys as f64,
            );
        }
    }
    p.family(
        "squall_storage_disk_tier_bytes",
        "gauge",
        "Bytes of a storage thread's keys on disk only.",
    );
    for r in &tiered {
        let (node, thread) = (r.node.0.to_string(), r.thread.to_string());
        p.sample(
            "squall_storage_disk_tier_bytes",
            &[("node", &node), ("thread", &thread)],
            r.disk_bytes as f64,
        );
    }
    p.family(
        "squall_storage_reads_per_second",
        "gauge",
        "Reads and writes a second at a storage thread since its previous report, by the tier that held the key.",
    );
    for r in &tiered {
        let (node, thread) = (r.node.0.to_string(), r.thread.to_string());
        let secs = m.period().as_secs_f64().max(0.001);
        for (tier, hits) in [("memory", r.memory_hits), ("disk", r.disk_hits)] {
            p.sample(
                "squall_storage_reads_per_second",
                &[("node", &node), ("thread", &thread), ("tier", tier)],
                hits as f64 / secs,
            );
        }
    }

    let compute = &status.compute;
    p.family(
        "squall_executor_busy_ratio",
        "gauge",
        "Fraction of its last report period an executor spent running functions.",
    );
    for e in &compute.executors {
        p.sample(
            "squall_executor_busy_ratio",
            &[("executor", e.executor.as_str()), ("node", &e.node)],
            f64::from(e.busy_permille) / 1000.0,
        );
    }
    p.family(
        "squall_executor_queue",
        "gauge",
        "Invocations waiting at an executor.",
    );
    for e in &compute.executors {
        p.sample(
            "squall_executor_queue",
            &[("executor", e.executor.as_str()), ("node", &e.node)],
            f64::from(e.queue),
        );
    }
    p.family(
        "squall_executor_calls_total",
        "counter",
        "Calls an executor completed, per function, since it started.",
    );
    for e in &compute.executors {
        for (f, n) in &e.calls {
            p.sample(
                "squall_executor_calls_total",
                &[("executor", e.executor.as_str()), ("function", f)],
                *n as f64,
            );
        }
    }
    p.family(
        "squall_function_calls_per_second",
        "gauge",
        "Calls completed a second per function over the last period, all executors.",
    );
    for (f, r) in m.function_rates() {
        p.sample("squall_function_calls_per_second", &[("function", f)], *r);
    }
    p.family(
        "squall_cache_hits_total",
        "counter",
        "Reads a compute node's cache answered itself.",
    );
    for c in &compute.caches {
        p.sample(
            "squall_cache_hits_total",
            &[("node", &c.node)],
            c.hits as f64,
        );
    }
    p.family(
        "squall_cache_misses_total",
        "counter",
        "Reads a compute node's cache had to send to the KVS.",
    );
    for c in &compute.caches {
        p.sample(
            "squall_cache_misses_total",
            &[("node", &c.node)],
            c.misses as f64,
        );
    }
    p.family(
        "squall_cache_hit_ratio",
        "gauge",
        "Hits over all reads of a cache since it started.",
    );
    for c in &compute.caches {
        let reads = (c.hits + c.misses).max(1) as f64;
        p.sample(
            "squall_cache_hit_ratio",
            &[("node", &c.node)],
            c.hits as f64 / reads,
        );
    }
    p.family(
        "squall_scheduler_calls",
        "gauge",
        "Calls at the schedulers: in flight and queued.",
    );
    p.sample(
        "squall_scheduler_calls",
        &[("state", "in_flight")],
        f64::from(compute.in_flight),
    );
    p.sample(
        "squall_scheduler_calls",
        &[("state", "queued")],
        f64::from(compute.queued),
    );
    render_latency(&mut p, compute);
    render_triggers(&mut p, compute);

    p.family(
        "squall_hot_keys_raised",
        "gauge",
        "Keys whose replication the monitor has raised.",
    );
    p.sample("squall_hot_keys_raised", &[], status.raised.len() as f64);
    p.family(
        "squall_monitor_decisions_total",
        "counter",
        "Decisions of the monitor, by policy and action.",
    );
    for ((policy, action), n) in m.decision_counts() {
        p.sample(
            "squall_monitor_decisions_total",
            &[("policy", policy), ("action", action)],
            *n as f64,
        );
    }
    p.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
