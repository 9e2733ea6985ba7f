//! Calls in flight: the plan of the current attempt, which of its
//! functions are done, and which functions of earlier attempts may still
//! be running on live executors.

use anna::protocol::compute::Plan;
use anna::protocol::Address;
use anna::time::Time;

/// One call in flight.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub plan: Plan,
    /// Per function of `plan`: its `CallDone` has arrived.
    pub done: Vec<bool>,
    /// Functions of earlier attempts still counted as outstanding on a live
    /// executor: `(attempt, function, executor)`. A stale `CallDone`
    /// releases its entry; the rest are released when the call ends.
    pub retired: Vec<(u32, u16, Address)>,
    /// When the call was first dispatched to an executor (kept across
    /// re-dispatches), for its latency.
    pub dispatched: Time,
}

impl InFlight {
    pub fn new(plan: Plan, retired: Vec<(u32, u16, Address)>, dispatched: Time) -> Self {
        let done = vec![false; plan.functions.len()];
        InFlight {
            plan,
            done,
            retired,
            dispatched,
        }
    }

    /// Every function with no downstream function has finished.
    pub fn sinks_done(&self) -> bool {
        self.plan
            .functions
            .iter()
            .zip(&self.done)
            .all(|(f, done)| *done || !f.downstream.is_empty())
    }

    /// The first unfinished function placed on `executor`.
    pub fn pending_on(&self, executor: &Address) -> Option<u16> {
        self.plan
            .functions
            .iter()
            .zip(&self.done)
            .position(|(f, done)| !done && f.executor == *executor)
            .map(|i| i as u16)
    }

    /// The unfinished functions of the current attempt, with their
    /// executors.
    pub fn unfinished(&self) -> impl Iterator<Item = (u16, &Address)> {
        self.plan
            .functions
            .iter()
            .zip(&self.done)
            .enumerate()
            .filter(|(_, (_, done))| !**done)
            .map(|(i, (f, _))| (i as u16, &f.executor))
    }

    /// When the call has failed with a timeout.
    pub fn deadline(&self) -> Time {
        deadline_time(self.plan.deadline_ms)
    }
}

/// A plan's wall-clock deadline (milliseconds) as a [`Time`].
pub(crate) fn deadline_time(deadline_ms: u64) -> Time {
    Time::from_micros(deadline_ms.saturating_mul(1000))
}
