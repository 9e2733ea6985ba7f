//! [`CallLatency`]: the scheduler's latency histograms per function and per
//! DAG, and its error counts by kind, reported to the monitor in every
//! `ComputeStatus` (as [`CallFigures`]).
//!
//! Recording a call costs a map lookup by name and two additions: the
//! scheduler is one state machine on one thread, so no atomics or locks;
//! a name's histogram is allocated once, when the name is first seen, and
//! at most [`MAX_NAMES`] names are kept apart (the rest share
//! [`OTHER`]), so the state stays bounded whatever callers name.

use crate::stats::SchedulerStats;
use anna::histogram::Histogram;
use anna::protocol::compute::{CallErrorKind, Plan};
use anna::protocol::figures::{CallFigures, TracedCall, RECENT_TRACES};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Functions (and DAGs) kept apart; calls of any further name count under
/// [`OTHER`].
pub(crate) const MAX_NAMES: usize = 1000;

/// The name every name past [`MAX_NAMES`] counts under.
pub(crate) const OTHER: &str = "(other)";

#[derive(Debug, Default)]
pub(crate) struct CallLatency {
    functions: BTreeMap<String, Histogram>,
    dags: BTreeMap<String, Histogram>,
    /// Calls failed by the scheduler itself, by kind (a handful of kinds:
    /// a vector searched in place).
    errors: Vec<(CallErrorKind, u64)>,
    /// Repeated `Call`/`CallDag` of a call in flight.
    pub resends: u64,
    /// The latest traced calls that ended, newest first.
    traces: VecDeque<TracedCall>,
}

fn histogram<'a>(map: &'a mut BTreeMap<String, Histogram>, name: &str) -> &'a mut Histogram {
    let name = if map.contains_key(name) || map.len() < MAX_NAMES {
        name
    } else {
        OTHER
    };
    if !map.contains_key(name) {
        map.insert(name.to_string(), Histogram::default());
    }
    map.get_mut(name).expect("inserted above")
}

impl CallLatency {
    /// A call of `plan` finished (its last sink's `CallDone`, or a failed
    /// one) `took` after its dispatch.
    pub fn finished(&mut self, plan: &Plan, took: Duration) {
        match (&plan.dag, plan.functions.as_slice()) {
            (Some(dag), _) => histogram(&mut self.dags, dag).record(took),
            (None, [f]) => histogram(&mut self.functions, &f.name).record(took),
            (None, _) => {}
        }
    }

    /// A traced call ended (its executor sent its trace).
    pub fn traced(&mut self, call: TracedCall) {
        self.traces.push_front(call);
        self.traces.truncate(RECENT_TRACES);
    }

    /// The scheduler failed a call itself with `kind`.
    pub fn failed(&mut self, kind: CallErrorKind) {
        match self.errors.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => self.errors.push((kind, 1)),
        }
    }

    /// What the monitor is told, with the counters of `stats`.
    pub fn figures(&self, stats: &SchedulerStats) -> CallFigures {
        let named =
            |m: &BTreeMap<String, Histogram>| m.iter().map(|(k, h)| (k.clone(), *h)).collect();
        CallFigures {
            functions: named(&self.functions),
            dags: named(&self.dags),
            errors: self
                .errors
                .iter()
                .map(|(k, n)| (format!("{k:?}"), *n))
                .collect(),
            timeouts: stats.timeouts,
            redispatches: stats.retries,
            resends: self.resends,
            traces: self.traces.iter().cloned().collect(),
            triggers: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_past_the_cap_share_one_histogram() {
        let mut m = BTreeMap::new();
        for i in 0..MAX_NAMES + 5 {
            histogram(&mut m, &format!("f{i}")).record(Duration::from_millis(1));
        }
        assert_eq!(m.len(), MAX_NAMES + 1);
        assert_eq!(m[OTHER].count(), 5);
        // A name already kept is still counted under its own name.
        histogram(&mut m, "f0").record(Duration::from_millis(1));
        assert_eq!(m["f0"].count(), 2);
    }
}
