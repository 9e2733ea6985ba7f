//! The dashboard's data: what `squall monitor` serves as JSON at
//! `/api/cluster` (and inlines into the page at `/`), rendered each period
//! beside the `/metrics` text.
//!
//! One object: the storage nodes with their threads' last reports, the
//! executors and caches, calls in flight, per-function figures, the
//! history of both tiers' throughput and p99 ([`crate::history`]), and the
//! recent scaling decisions. The page (`cli/src/dashboard.html`) reads
//! only these fields.

use crate::monitor::Monitor;
use crate::totals;
use anna::time::Time;
use serde_json::{json, Value};

fn ms(micros: Option<u64>) -> Value {
    match micros {
        Some(u64::MAX) | None => Value::Null,
        Some(us) => json!(us as f64 / 1000.0),
    }
}

/// The dashboard's JSON at `now`.
pub fn render(m: &Monitor, now: Time) -> String {
    let status = m.status();
    let compute = &status.compute;
    let nodes: Vec<Value> = m
        .live_storage()
        .map(|(id, threads)| {
            let threads: Vec<Value> = threads
                .iter()
                .enumerate()
                .map(|(i, address)| {
                    let r = status.storage.iter().find(|r| r.from == *address);
                    json!({
                        "thread": i,
                        "address": address.as_str(),
                        "reporting": r.is_some(),
                        "busy": r.map_or(0.0, |r| f64::from(r.busy_permille) / 1000.0),
                        "keys": r.map_or(0, |r| r.keys),
                        "bytes": r.map_or(0, |r| r.bytes),
                        "ops": r.map_or(0.0, |r| r.accesses as f64
                            / (f64::from(r.epoch_ms.max(1)) / 1000.0)),
                    })
                })
                .collect();
            json!({ "id": id.0, "threads": threads })
        })
        .collect();
    let executors: Vec<Value> = compute
        .executors
        .iter()
        .map(|e| {
            json!({
                "executor": e.executor.as_str(),
                "node": e.node,
                "busy": f64::from(e.busy_permille) / 1000.0,
                "queue": e.queue,
                "calls": e.calls.iter().map(|(_, n)| n).sum::<u64>(),
                "failed": e.errors.iter().map(|(_, n)| n).sum::<u64>(),
                "warm": e.warm,
            })
        })
        .collect();
    let caches: Vec<Value> = compute
        .caches
        .iter()
        .map(|c| {
            let kvs = totals::kvs_latency([c]);
            json!({
                "node": c.node,
                "keys": c.keys.len(),
                "hits": c.hits,
                "misses": c.misses,
                "kvs_ops": kvs.count(),
                "kvs_p99_ms": ms(kvs.quantile_micros(0.99)),
            })
        })
        .collect();
    let functions: Vec<Value> = compute
        .calls
        .functions
        .iter()
        .map(|(name, h)| ("function", name, h))
        .chain(compute.calls.dags.iter().map(|(name, h)| ("dag", name, h)))
        .map(|(kind, name, h)| {
            json!({
                "kind": kind,
                "name": name,
                "rate": m.function_rates().get(name).copied().unwrap_or(0.0),
                "count": h.count(),
                "p50_ms": ms(h.quantile_micros(0.5)),
                "p99_ms": ms(h.quantile_micros(0.99)),
            })
        })
        .collect();
    let traces: Vec<Value> = compute
        .calls
        .traces
        .iter()
        .map(|t| {
            let steps: Vec<Value> = t
                .trace
                .steps
                .iter()
                .map(|s| {
                    json!({
                        "function": s.function,
                        "executor": s.executor.as_str(),
                        "placed": s.placed,
                        "waited_ms": s.waited_us as f64 / 1000.0,
                        "ran_ms": s.ran_us as f64 / 1000.0,
                        "reads": s.reads,
                        "cache_hits": s.cache_hits,
                        "kept_reads": s.kept_reads,
                        "bytes_read": s.bytes_read,
                        "done": s.done,
                    })
                })
                .collect();
            json!({
                "call": t.id.to_string(),
                "name": t.name,
                "failed": t.failed,
                "arrived_ms": t.trace.arrived_us / 1000,
                "queued_ms": t.trace.queued_us as f64 / 1000.0,
                "steps": steps,
            })
        })
        .collect();
    let events: Vec<Value> = status
        .events
        .iter()
        .rev()
        .take(20)
        .map(|e| {
            json!({
                "at_ms": e.at_ms,
                "policy": e.policy,
                "action": e.action,
                "reason": e.reason,
            })
        })
        .collect();
    let history: Vec<_> = m.history().samples().collect();
    let latest = history.last();
    json!({
        "at_ms": now.as_millis(),
        "period_ms": m.period().as_millis() as u64,
        "replicas": status.replicas,
        "storage": {
            "node_count": nodes.len(),
            "thread_count": nodes.iter().map(|n| n["threads"].as_array().map_or(0, Vec::len)).sum::<usize>(),
            "ops_per_second": m.kvs_ops_per_second(),
            "p99_ms": latest.and_then(|s| s.kvs_p99_ms),
            "nodes": nodes,
        },
        "compute": {
            "node_count": m.compute_nodes(),
            "executor_count": executors.len(),
            "calls_per_second": m.function_rates().values().fold(0.0, |a, r| a + r),
            "p99_ms": latest.and_then(|s| s.call_p99_ms),
            "in_flight": compute.in_flight,
            "queued": compute.queued,
            "executors": executors,
            "caches": caches,
            "functions": functions,
            "traces": traces,
            "errors": compute.calls.errors,
            "timeouts": compute.calls.timeouts,
            "redispatches": compute.calls.redispatches,
            "resends": compute.calls.resends,
        },
        "raised": status.raised,
        "history": history,
        "history_span_ms": crate::history::SPAN.as_millis() as u64,
        "events": events,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use crate::{Monitor, MonitorConfig, Outlets};
    use anna::histogram::Histogram;
    use anna::lattice::WriterId;
    use anna::protocol::compute::{
        CacheReport, CallId, CallTrace, ComputeStatus, ExecutorReport, TraceStep,
    };
    use anna::protocol::figures::{CallFigures, KvsFigures, TracedCall};
    use anna::protocol::{Address, Message};
    use anna::role::{Input, Outbox, Role};
    use anna::time::Time;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// One scheduler's status: `n` calls of `f` at 3 ms, one DAG call, a
    /// cache's gets, errors at the scheduler and at the executor.
    fn status(n: u64) -> ComputeStatus {
        let mut f = Histogram::default();
        for _ in 0..n {
            f.record(ms(3));
        }
        let mut dag = Histogram::default();
        dag.record(ms(40));
        let mut get = Histogram::default();
        get.record(Duration::from_micros(400));
        ComputeStatus {
            executors: vec![ExecutorReport {
                executor: Address::from("e1"),
                node: "c0".into(),
                calls: vec![("f".into(), n)],
                errors: vec![("Remote".into(), 2)],
                ..ExecutorReport::default()
            }],
            caches: vec![CacheReport {
                node: "c0".into(),
                kvs: Box::new(KvsFigures {
                    get,
                    retries: 5,
                    ..KvsFigures::default()
                }),
                ..CacheReport::default()
            }],
            in_flight: 3,
            queued: 1,
            calls: CallFigures {
                functions: vec![("f".into(), f)],
                dags: vec![("d".into(), dag)],
                errors: vec![("Timeout".into(), 1)],
                timeouts: 1,
                redispatches: 2,
                resends: 4,
                traces: vec![TracedCall {
                    id: CallId { caller: 1, seq: n },
                    name: "f".into(),
                    failed: false,
                    trace: CallTrace {
                        arrived_us: n,
                        queued_us: 0,
                        steps: vec![TraceStep {
                            function: "f".into(),
                            ran_us: 2_000,
                            cache_hits: 1,
                            reads: 1,
                            done: true,
                            ..TraceStep::default()
                        }],
                    },
                }],
                triggers: vec![anna::protocol::figures::TriggerFigures {
                    name: "t".into(),
                    function: "f".into(),
                    prefix: "in/".into(),
                    on: "put".into(),
                    runs: n,
                    failures: 1,
                    retries: 0,
                    backlog: 7,
                    dropped: 0,
                }],
            },
        }
    }

    #[test]
    fn metrics_and_dashboard_show_latency_errors_and_retries_of_both_tiers() {
        let mut m = Monitor::new(
            MonitorConfig::default(),
            Address::from("monitor"),
            vec![],
            vec![Address::from("scheduler")],
            Outlets {
                actuator: None,
                metrics: Some(Address::from("metrics")),
            },
            anna::client::ClientConfig::default(),
            WriterId(1),
        );
        let mut out = Outbox::default();
        let mut page = None;
        for (t, n) in [(0, 0), (1, 100), (2, 300)] {
            m.step(Time::from_micros(t * 1_000_000), Input::Tick, &mut out);
            for (_, msg) in out.drain() {
                match msg {
                    Message::ComputeStatusRequest { id, .. } => {
                        let status = status(n);
                        let reply = Message::ComputeStatusReply { id, status };
                        m.step(
                            Time::from_micros(t * 1_000_000),
                            Input::Message(reply),
                            &mut Outbox::default(),
                        );
                    }
                    Message::Metrics { text, dashboard } => page = Some((text, dashboard)),
                    _ => {}
                }
            }
        }
        let (text, dashboard) = page.expect("a metrics page");
        for line in [
            "squall_call_duration_seconds_bucket{function=\"f\",le=\"0.0025\"} 0",
            "squall_call_duration_seconds_bucket{function=\"f\",le=\"0.005\"} 100",
            "squall_call_duration_seconds_bucket{function=\"f\",le=\"+Inf\"} 100",
            "squall_call_duration_seconds_sum{function=\"f\"} 0.3",
            "squall_call_duration_seconds_count{function=\"f\"} 100",
            "squall_dag_call_duration_seconds_count{dag=\"d\"} 1",
            "squall_call_errors_total{source=\"scheduler\",kind=\"Timeout\"} 1",
            "squall_call_errors_total{source=\"executor\",kind=\"Remote\"} 2",
            "squall_call_timeouts_total 1",
            "squall_call_retries_total{reason=\"executor-died\"} 2",
            "squall_call_retries_total{reason=\"resend\"} 4",
            "squall_trigger_runs_total{trigger=\"t\",function=\"f\"} 100",
            "squall_trigger_backlog{trigger=\"t\",function=\"f\"} 7",
            "# TYPE squall_trigger_backlog gauge",
            "squall_kvs_op_duration_seconds_bucket{node=\"c0\",op=\"get\",le=\"0.0005\"} 1",
            "squall_kvs_op_duration_seconds_count{node=\"c0\",op=\"put\"} 0",
            "squall_kvs_op_retries_total{node=\"c0\"} 5",
            "# TYPE squall_call_duration_seconds histogram",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        let d: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
        let c = &d["compute"];
        assert_eq!(c["executor_count"], 1);
        assert_eq!(c["in_flight"], 3);
        assert_eq!(c["calls_per_second"], 100.0, "{c}");
        // The period's calls: 100 more of f at 3 ms (p99 in the 5 ms bucket).
        assert_eq!(c["p99_ms"], 5.0, "{c}");
        assert_eq!(c["functions"][0]["name"], "f");
        assert_eq!(c["traces"][0]["name"], "f");
        assert_eq!(c["traces"][0]["steps"][0]["ran_ms"], 2.0);
        assert_eq!(c["traces"][0]["steps"][0]["cache_hits"], 1);
        assert_eq!(c["caches"][0]["kvs_p99_ms"], 0.5);
        let history = d["history"].as_array().unwrap();
        assert_eq!(history.len(), 3);
        assert_eq!(history[2]["calls"], 100.0);
    }
}
