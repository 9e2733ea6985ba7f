//! Figures of many roles added up: the schedulers' call figures into one,
//! and the histograms the dashboard plots per tier.

use anna::histogram::Histogram;
use anna::protocol::compute::CacheReport;
use anna::protocol::figures::{CallFigures, RECENT_TRACES};

/// Adds `(name, value)` pairs of `from` into `into`, by name.
fn add_named<T: Clone>(into: &mut Vec<(String, T)>, from: &[(String, T)], add: fn(&mut T, &T)) {
    for (name, v) in from {
        match into.iter_mut().find(|(n, _)| n == name) {
            Some((_, mine)) => add(mine, v),
            None => into.push((name.clone(), v.clone())),
        }
    }
}

/// Adds one scheduler's call figures into `into` (histograms and counts
/// by name; counters summed).
pub fn add_calls(into: &mut CallFigures, from: &CallFigures) {
    add_named(&mut into.functions, &from.functions, Histogram::add);
    add_named(&mut into.dags, &from.dags, Histogram::add);
    add_named(&mut into.errors, &from.errors, |a, b| *a += b);
    into.timeouts += from.timeouts;
    into.redispatches += from.redispatches;
    into.resends += from.resends;
    // The latest traced calls of every scheduler, newest first.
    into.traces.extend(from.traces.iter().cloned());
    into.traces
        .sort_by_key(|t| std::cmp::Reverse(t.trace.arrived_us));
    into.traces.truncate(RECENT_TRACES);
    // Runs are counted by the scheduler that ran them; every scheduler
    // hears every storage thread's backlog, so those are the same figure
    // seen twice, not two figures.
    for t in &from.triggers {
        match into.triggers.iter_mut().find(|m| m.name == t.name) {
            Some(mine) => {
                mine.runs += t.runs;
                mine.failures += t.failures;
                mine.retries += t.retries;
                mine.backlog = mine.backlog.max(t.backlog);
                mine.dropped = mine.dropped.max(t.dropped);
            }
            None => into.triggers.push(t.clone()),
        }
    }
}

/// Every function's and DAG's latency, as one histogram.
pub fn call_latency(calls: &CallFigures) -> Histogram {
    let mut all = Histogram::default();
    for (_, h) in calls.functions.iter().chain(&calls.dags) {
        all.add(h);
    }
    all
}

/// Every KVS operation the caches made, as one histogram.
pub fn kvs_latency<'a>(caches: impl IntoIterator<Item = &'a CacheReport>) -> Histogram {
    let mut all = Histogram::default();
    for c in caches {
        for h in [&c.kvs.get, &c.kvs.put, &c.kvs.delete] {
            all.add(h);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn schedulers_figures_add_up_by_name() {
        let mut h = Histogram::default();
        h.record(Duration::from_millis(3));
        let one = CallFigures {
            functions: vec![("f".into(), h)],
            errors: vec![("Timeout".into(), 2)],
            timeouts: 2,
            ..CallFigures::default()
        };
        let two = CallFigures {
            functions: vec![("f".into(), h), ("g".into(), h)],
            errors: vec![("Overloaded".into(), 1), ("Timeout".into(), 1)],
            timeouts: 1,
            resends: 4,
            ..CallFigures::default()
        };
        let mut all = CallFigures::default();
        add_calls(&mut all, &one);
        add_calls(&mut all, &two);
        assert_eq!(all.functions[0].1.count(), 2);
        assert_eq!(all.functions[1].0, "g");
        assert_eq!(
            all.errors,
            [("Timeout".to_string(), 3), ("Overloaded".to_string(), 1)]
        );
        assert_eq!((all.timeouts, all.resends), (3, 4));
        assert_eq!(call_latency(&all).count(), 3);
    }
}
