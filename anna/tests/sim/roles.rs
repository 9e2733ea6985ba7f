//! The toy roles the simulator's tests drive, and the gossip scenario.

use anna::protocol::{Address, Message, RequestId};
use anna::role::{Input, Outbox, PingResponder, Role};
use anna::sim::{Sim, SimConfig};
use anna::time::Time;
use rand::Rng;
use std::collections::BTreeMap;
use std::time::Duration;

pub fn addr(name: &str) -> Address {
    Address::from(name)
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn ping(id: u64, reply_to: &Address) -> Message {
    Message::Ping {
        id: RequestId(id),
        reply_to: reply_to.clone(),
    }
}

/// Pings its peer on every tick (up to `remaining` times), answers pings,
/// counts pongs. Its first tick is asked for at time zero, long past.
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    pub me: Address,
    pub peer: Address,
    pub every: Duration,
    pub next: Option<Time>,
    pub remaining: u64,
    pub sent: u64,
    pub answered: u64,
    pub pongs: u64,
}

impl Peer {
    pub fn new(me: &Address, peer: &Address, every: Duration, pings: u64) -> Self {
        Peer {
            me: me.clone(),
            peer: peer.clone(),
            every,
            next: (pings > 0).then_some(Time(0)),
            remaining: pings,
            sent: 0,
            answered: 0,
            pongs: 0,
        }
    }
}

impl Role for Peer {
    fn step(&mut self, now: Time, input: Input, out: &mut Outbox) {
        match input {
            Input::Tick => {
                out.send(self.peer.clone(), ping(self.sent, &self.me));
                self.sent += 1;
                self.remaining -= 1;
                self.next = (self.remaining > 0).then(|| now + self.every);
            }
            Input::Message(Message::Ping { id, reply_to }) => {
                self.answered += 1;
                out.send(reply_to, Message::Pong { id, boot: 0 });
            }
            Input::Message(Message::Pong { .. }) => self.pongs += 1,
            Input::Message(_) => {}
        }
    }

    fn next_tick(&self) -> Option<Time> {
        self.next
    }
}

/// Several kinds of role in one simulation, as the module docs suggest.
#[derive(Debug)]
pub enum Node {
    Peer(Peer),
    Responder(PingResponder),
    /// Records when each message arrived.
    Recorder(Vec<(Time, Message)>),
}

impl Role for Node {
    fn step(&mut self, now: Time, input: Input, out: &mut Outbox) {
        match self {
            Node::Peer(p) => p.step(now, input, out),
            Node::Responder(r) => r.step(now, input, out),
            Node::Recorder(log) => {
                if let Input::Message(msg) = input {
                    log.push((now, msg));
                }
            }
        }
    }

    fn next_tick(&self) -> Option<Time> {
        match self {
            Node::Peer(p) => p.next_tick(),
            Node::Responder(r) => r.next_tick(),
            Node::Recorder(_) => None,
        }
    }
}

/// Replicas of a grow-only set (a `u64` of bits) gossiping push-pull: each
/// tick sends its set to the next peer round-robin in a ping, which the
/// peer merges and answers with its own set in a pong.
#[derive(Clone, Debug, PartialEq)]
pub struct Gossiper {
    pub me: Address,
    pub peers: Vec<Address>,
    pub next: Time,
    pub turn: usize,
    pub known: u64,
}

pub const GOSSIP_EVERY: Duration = Duration::from_millis(20);

impl Gossiper {
    pub fn new(me: &Address, all: &[Address]) -> Self {
        Gossiper {
            me: me.clone(),
            peers: all.iter().filter(|a| *a != me).cloned().collect(),
            next: Time(0),
            turn: 0,
            known: 0,
        }
    }
}

impl Role for Gossiper {
    fn step(&mut self, now: Time, input: Input, out: &mut Outbox) {
        match input {
            Input::Tick => {
                let to = self.peers[self.turn % self.peers.len()].clone();
                self.turn += 1;
                out.send(to, ping(self.known, &self.me));
                self.next = now + GOSSIP_EVERY;
            }
            Input::Message(Message::Ping { id, reply_to }) => {
                self.known |= id.0;
                out.send(
                    reply_to,
                    Message::Pong {
                        id: RequestId(self.known),
                        boot: 0,
                    },
                );
            }
            Input::Message(Message::Pong { id, .. }) => self.known |= id.0,
            Input::Message(_) => {}
        }
    }

    fn next_tick(&self) -> Option<Time> {
        Some(self.next)
    }
}

/// While `spinning`, asks for a tick at time zero forever (without the
/// spin guard, virtual time would never move past its first tick);
/// otherwise ticks every 10 ms like a well-behaved role.
#[derive(Debug, Default)]
pub struct Spinner {
    pub spinning: bool,
    pub ticks: BTreeMap<Time, u32>,
}

impl Role for Spinner {
    fn step(&mut self, now: Time, _input: Input, _out: &mut Outbox) {
        *self.ticks.entry(now).or_default() += 1;
    }

    fn next_tick(&self) -> Option<Time> {
        match self.ticks.last_key_value() {
            Some((last, _)) if !self.spinning => Some(*last + Duration::from_millis(10)),
            _ => Some(Time(0)),
        }
    }
}

/// What a gossip run ended with.
#[derive(Debug, PartialEq)]
pub struct Outcome {
    pub converged: bool,
    /// Bits written at a replica that did not crash afterwards: no replica
    /// may lack them.
    pub durable: u64,
    pub states: BTreeMap<Address, u64>,
    pub digest: u64,
}

/// Five replicas; 500 ms of writes, partitions and crash-restarts over a
/// lossy, duplicating, reordering network; then a healed, lossless network
/// for up to 2 s, until every replica holds the same set.
pub fn gossip_run(seed: u64) -> (Outcome, Sim<Gossiper>) {
    let nodes: Vec<Address> = (0..5).map(|i| addr(&format!("n{i}"))).collect();
    let mut sim: Sim<Gossiper> = SimConfig::new(seed)
        .drop_rate(0.3)
        .duplicate_rate(0.1)
        .latency(ms(1), ms(30))
        .build()
        .unwrap();
    for n in &nodes {
        sim.add(n.clone(), Gossiper::new(n, &nodes));
    }
    let mut written = [0u64; 5];
    for bit in 0..10 {
        let i = sim.rng().random_range(0..nodes.len());
        if let Some(node) = sim.role_mut(&nodes[i]) {
            node.known |= 1 << bit;
            written[i] |= 1 << bit;
        }
        let (x, y) = (sim.rng().random_range(0..5), sim.rng().random_range(0..5));
        match sim.rng().random_range(0..10) {
            0..3 => sim.partition(&nodes[x], &nodes[y]),
            3 => sim.heal(),
            4 => {
                sim.crash(&nodes[x]);
                written[x] = 0;
            }
            _ => {}
        }
        sim.run_for(ms(50));
        for n in &nodes {
            if sim.is_crashed(n) {
                sim.add(n.clone(), Gossiper::new(n, &nodes));
            }
        }
    }
    sim.heal();
    let quiet = sim.network().lossless();
    sim.set_network(quiet).unwrap();
    let durable = written.iter().fold(0, |acc, w| acc | w);
    let converged = sim.run_until(
        |sim| {
            let mut sets = sim.roles().map(|(_, g)| g.known);
            let first = sets.next().unwrap_or(0);
            first & durable == durable && sets.all(|s| s == first)
        },
        Duration::from_secs(2),
    );
    let outcome = Outcome {
        converged,
        durable,
        states: sim.roles().map(|(a, g)| (a.clone(), g.known)).collect(),
        digest: sim.trace_digest(),
    };
    (outcome, sim)
}
