//! A storage node's graceful departure, as a state machine: what
//! `squall kvs` does on SIGTERM, and what the simulator drives in its
//! departure scenario, so both run this code.
//!
//! [`Departure`] is a [`Role`] at an address of its own (the node process's
//! inbox, not a worker's). It asks every thread of its node to hand its
//! keys to the owners they will have without the node
//! ([`Membership::Leave`]), asking again every [`DepartureConfig::ask_every`]
//! the threads that have not answered (a `Leave` or its `Left` may be lost);
//! once every thread answered [`Membership::Left`] it tells every router the
//! node departs ([`Membership::Depart`], with the incarnation the threads
//! reported) and lingers for [`DepartureConfig::linger`], while the threads
//! keep answering "not mine" so clients re-route, then it is
//! [finished](Departure::outcome). Past [`DepartureConfig::leave_timeout`] it
//! departs anyway with what was handed over ([`DepartureOutcome::TimedOut`]).
//! If no thread ever answered, it knows no incarnation to end and tells the
//! routers nothing: their failure detector will.
//!
//! The process then stops its workers: the departure role only speaks.

use crate::protocol::{Address, Membership, Message, NodeInfo};
use crate::role::{Input, Outbox, Role};
use crate::time::Time;
use std::collections::BTreeMap;
use std::time::Duration;

/// Settings of a departure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepartureConfig {
    /// How long the threads may take to hand their keys over before the
    /// node departs anyway (`[storage] leave_timeout`).
    pub leave_timeout: Duration,
    /// How often threads that have not answered are asked again.
    pub ask_every: Duration,
    /// How long after telling the routers the departure waits before it is
    /// finished, so the departure reaches everyone while the threads still
    /// answer "not mine".
    pub linger: Duration,
}

impl Default for DepartureConfig {
    /// A 30 s leave timeout, asking again every second, lingering 1 s.
    fn default() -> Self {
        DepartureConfig {
            leave_timeout: Duration::from_secs(30),
            ask_every: Duration::from_secs(1),
            linger: Duration::from_secs(1),
        }
    }
}

/// How a departure ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepartureOutcome {
    /// Every thread handed its keys over; the routers were told that this
    /// incarnation departs.
    HandedOver { incarnation: u64 },
    /// The leave timeout came first: `handed_over` threads had answered;
    /// the routers were told the incarnation departs if any thread reported
    /// it (`incarnation`).
    TimedOut {
        handed_over: usize,
        incarnation: Option<u64>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not started: the first step (a tick asked for at once) starts it.
    Idle,
    /// Waiting for every thread's `Left` since `started`; the threads were
    /// last asked at `asked`.
    Handing {
        started: Time,
        asked: Time,
    },
    /// Told the routers; finished at `until`.
    Lingering {
        until: Time,
        outcome: DepartureOutcome,
    },
    Finished(DepartureOutcome),
}

/// A node's graceful departure: see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Departure {
    node: NodeInfo,
    routers: Vec<Address>,
    me: Address,
    config: DepartureConfig,
    /// The threads that reported `Left`, with the incarnation they left.
    left: BTreeMap<u32, u64>,
    phase: Phase,
}

impl Departure {
    /// The departure of `node`, receiving its threads' answers at `me` and
    /// telling `routers`. It starts at its first step.
    pub fn new(
        node: NodeInfo,
        routers: Vec<Address>,
        me: Address,
        config: DepartureConfig,
    ) -> Self {
        Departure {
            node,
            routers,
            me,
            config,
            left: BTreeMap::new(),
            phase: Phase::Idle,
        }
    }

    /// The address the threads answer at.
    pub fn address(&self) -> &Address {
        &self.me
    }

    /// How many threads have handed their keys over.
    pub fn handed_over(&self) -> usize {
        self.left.len()
    }

    /// How it ended, once it has (lingering included).
    pub fn outcome(&self) -> Option<DepartureOutcome> {
        match self.phase {
            Phase::Finished(outcome) => Some(outcome),
            _ => None,
        }
    }

    /// Whether it is finished: the process may stop.
    pub fn finished(&self) -> bool {
        self.outcome().is_some()
    }

    fn ask(&self, out: &mut Outbox) {
        for (t, thread) in self.node.threads.iter().enumerate() {
            if !self.left.contains_key(&(t as u32)) {
                let leave = Membership::Leave {
                    node: self.node.id,
                    reply_to: self.me.clone(),
                };
                out.send(thread.clone(), Message::Membership(leave));
            }
        }
    }

    /// Tells the routers (if an incarnation is known) and lingers.
    fn depart(&mut self, now: Time, started: Time, timed_out: bool, out: &mut Outbox) {
        let incarnation = self.left.values().copied().find(|&i| i > 0);
        let ms = now.saturating_since(started).as_millis() as u64;
        let outcome = match (timed_out, incarnation) {
            (false, Some(incarnation)) => {
                tracing::info!(node = self.node.id.0, ms, "keys handed over");
                DepartureOutcome::HandedOver { incarnation }
            }
            _ => {
                tracing::warn!(
                    node = self.node.id.0,
                    handed_over = self.left.len(),
                    threads = self.node.threads.len(),
                    "leave timeout: departing anyway"
                );
                DepartureOutcome::TimedOut {
                    handed_over: self.left.len(),
                    incarnation,
                }
            }
        };
        let Some(incarnation) = incarnation else {
            self.phase = Phase::Finished(outcome);
            return;
        };
        for router in &self.routers {
            let depart = Membership::Depart {
                node: self.node.id,
                incarnation,
            };
            out.send(router.clone(), Message::Membership(depart));
        }
        self.phase = Phase::Lingering {
            until: now + self.config.linger,
            outcome,
        };
    }

    fn advance(&mut self, now: Time, out: &mut Outbox) {
        match self.phase {
            Phase::Idle => {
                tracing::info!(node = self.node.id.0, "handing keys over before departing");
                self.phase = Phase::Handing {
                    started: now,
                    asked: now,
                };
                self.ask(out);
                self.advance(now, out);
            }
            Phase::Handing { started, asked } => {
                if self.left.len() >= self.node.threads.len() {
                    self.depart(now, started, false, out);
                } else if now >= started + self.config.leave_timeout {
                    self.depart(now, started, true, out);
                } else if now >= asked + self.config.ask_every {
                    self.phase = Phase::Handing {
                        started,
                        asked: now,
                    };
                    self.ask(out);
                }
            }
            Phase::Lingering { until, outcome } if now >= until => {
                self.phase = Phase::Finished(outcome);
            }
            Phase::Lingering { .. } | Phase::Finished(_) => {}
        }
    }
}

impl Role for Departure {
    fn step(&mut self, now: Time, input: Input, out: &mut Outbox) {
        if let Input::Message(Message::Membership(Membership::Left {
            node,
            thread,
            incarnation,
        })) = input
        {
            let ours = node == self.node.id && (thread as usize) < self.node.threads.len();
            if ours && matches!(self.phase, Phase::Idle | Phase::Handing { .. }) {
                self.left.insert(thread, incarnation);
            }
        }
        self.advance(now, out);
    }

    fn next_tick(&self) -> Option<Time> {
        match self.phase {
            Phase::Idle => Some(Time(0)),
            Phase::Handing { started, asked } => {
                Some((asked + self.config.ask_every).min(started + self.config.leave_timeout))
            }
            Phase::Lingering { until, .. } => Some(until),
            Phase::Finished(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::NodeId;

    fn node() -> NodeInfo {
        NodeInfo {
            id: NodeId(3),
            boot: 1,
            direct: Vec::new(),
            threads: vec![Address::from("t0"), Address::from("t1")],
        }
    }

    fn departure() -> Departure {
        let config = DepartureConfig {
            leave_timeout: Duration::from_secs(10),
            ask_every: Duration::from_secs(1),
            linger: Duration::from_millis(500),
        };
        Departure::new(
            node(),
            vec![Address::from("r0"), Address::from("r1")],
            Address::from("me"),
            config,
        )
    }

    fn sent(out: &mut Outbox) -> Vec<(String, &'static str)> {
        out.drain()
            .map(|(to, msg)| (to.as_str().to_string(), msg.kind()))
            .collect()
    }

    fn left(thread: u32) -> Input {
        Input::Message(Message::Membership(Membership::Left {
            node: NodeId(3),
            thread,
            incarnation: 2,
        }))
    }

    fn at(ms: u64) -> Time {
        Time(1_000_000_000 + ms * 1000)
    }

    #[test]
    fn it_asks_every_thread_asks_again_those_silent_then_departs_and_lingers() {
        let mut d = departure();
        let mut out = Outbox::default();
        assert_eq!(d.next_tick(), Some(Time(0)), "starts at once");
        d.step(at(0), Input::Tick, &mut out);
        assert_eq!(sent(&mut out).len(), 2, "a Leave to each thread");
        d.step(at(100), left(0), &mut out);
        assert!(out.is_empty());
        assert_eq!(d.next_tick(), Some(at(1000)));
        d.step(at(1000), Input::Tick, &mut out);
        assert_eq!(
            sent(&mut out),
            vec![("t1".to_string(), "membership")],
            "only the silent thread is asked again"
        );
        d.step(at(1200), left(1), &mut out);
        let told: Vec<_> = out
            .drain()
            .map(|(to, msg)| (to.as_str().to_string(), msg))
            .collect();
        let depart = Message::Membership(Membership::Depart {
            node: NodeId(3),
            incarnation: 2,
        });
        assert_eq!(
            told,
            vec![
                ("r0".to_string(), depart.clone()),
                ("r1".to_string(), depart)
            ]
        );
        assert!(!d.finished(), "lingers");
        assert_eq!(d.next_tick(), Some(at(1700)));
        d.step(at(1700), Input::Tick, &mut out);
        assert_eq!(
            d.outcome(),
            Some(DepartureOutcome::HandedOver { incarnation: 2 })
        );
        assert_eq!(d.next_tick(), None);
    }

    #[test]
    fn past_the_leave_timeout_it_departs_with_what_was_handed_over() {
        let mut d = departure();
        let mut out = Outbox::default();
        d.step(at(0), Input::Tick, &mut out);
        d.step(at(5), left(1), &mut out);
        let mut now = at(0);
        while !d.finished() {
            now = d.next_tick().unwrap();
            assert!(now <= at(10_500), "ends by its timeout plus linger");
            d.step(now, Input::Tick, &mut out);
        }
        assert!(now >= at(10_000));
        assert_eq!(
            d.outcome(),
            Some(DepartureOutcome::TimedOut {
                handed_over: 1,
                incarnation: Some(2)
            })
        );
        let departs = out
            .drain()
            .filter(|(_, m)| matches!(m, Message::Membership(Membership::Depart { .. })))
            .count();
        assert_eq!(departs, 2);
    }

    #[test]
    fn with_no_thread_answering_it_tells_the_routers_nothing() {
        let mut d = departure();
        let mut out = Outbox::default();
        d.step(at(0), Input::Tick, &mut out);
        while !d.finished() {
            let now = d.next_tick().unwrap();
            d.step(now, Input::Tick, &mut out);
        }
        assert!(out
            .drain()
            .all(|(_, m)| matches!(m, Message::Membership(Membership::Leave { .. }))));
        assert_eq!(
            d.outcome(),
            Some(DepartureOutcome::TimedOut {
                handed_over: 0,
                incarnation: None
            })
        );
    }
}
