//! Raw protocol questions to one socket, bypassing the client: what cluster
//! a process sees, where the router places keys, what one replica holds,
//! a storage thread's statistics and the monitor's status.

use anna::cluster::ClusterState;
use anna::protocol::monitor::{MonitorStatus, StorageReport};
use anna::protocol::seal::Sealer;
use anna::protocol::{
    Ack, Address, Key, KeyOp, KeyResult, KvsRequest, Message, RequestId, RouteRequest,
};
use squall_transport::{Receiver, Sender};
use std::time::{Duration, Instant};

/// Keys per route or read request, so no frame grows large.
const BATCH: usize = 256;

/// A reply socket and a sender, for one thread of a test.
pub struct Probe {
    rx: Receiver,
    tx: Sender,
    next: u64,
    _ctx: zmq::Context,
}

fn reply_id(msg: &Message) -> Option<RequestId> {
    match msg {
        Message::StatusReply { id, .. } => Some(*id),
        Message::RouteResponse(r) => Some(r.id),
        Message::KvsResponse(r) => Some(r.id),
        Message::Pong { id, .. } => Some(*id),
        Message::StorageReport { id, .. } => Some(*id),
        Message::MonitorStatusReply { id, .. } => Some(*id),
        _ => None,
    }
}

impl Probe {
    /// A probe receiving on a free loopback port.
    pub fn new() -> Probe {
        let ctx = zmq::Context::new();
        let rx = Receiver::bind(&ctx, &Address::from("tcp://127.0.0.1:*")).expect("binding");
        Probe {
            tx: Sender::new(&ctx),
            rx,
            next: 0,
            _ctx: ctx,
        }
    }

    /// Sends raw bytes to `to` (queued; never blocks).
    pub fn send_raw(&mut self, to: &Address, bytes: &[u8]) {
        self.tx.send_raw(to, bytes).expect("queueing raw bytes");
    }

    /// Sends the message `make` builds and waits for the reply with its id.
    fn ask(
        &mut self,
        to: &Address,
        timeout: Duration,
        make: impl FnOnce(RequestId, Address) -> Message,
    ) -> Option<Message> {
        self.ask_as(None, to, timeout, make)
    }

    /// [`Probe::ask`] with the message sealed by `sealer` (another
    /// identity than this process's) when one is given.
    pub fn ask_as(
        &mut self,
        sealer: Option<&mut Sealer>,
        to: &Address,
        timeout: Duration,
        make: impl FnOnce(RequestId, Address) -> Message,
    ) -> Option<Message> {
        self.next += 1;
        let id = RequestId(self.next);
        let msg = make(id, self.rx.address().clone());
        match sealer {
            None => self.tx.send(to, &msg).ok()?,
            Some(sealer) => {
                let mut frame = Vec::new();
                sealer
                    .seal_into(&msg, squall_transport::security::unix_secs(), &mut frame)
                    .expect("sealing");
                self.send_raw(to, &frame);
            }
        }
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv(Some(left)) {
                Ok(Some(reply)) if reply_id(&reply) == Some(id) => return Some(reply),
                Ok(_) => {}
                Err(e) => panic!("probe socket failed: {e}"),
            }
        }
        None
    }

    /// The cluster state `to` (a router or a storage thread) sees.
    pub fn status(&mut self, to: &Address, timeout: Duration) -> Option<ClusterState> {
        self.status_and_counters(to, timeout).map(|(c, _)| c)
    }

    /// The counter named `name` (`malformed`, `gets`, ...) that `to` reports.
    pub fn counter(&mut self, to: &Address, name: &str) -> Option<u64> {
        let (_, counters) = self.status_and_counters(to, Duration::from_secs(2))?;
        counters
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    fn status_and_counters(
        &mut self,
        to: &Address,
        timeout: Duration,
    ) -> Option<(ClusterState, Vec<(String, u64)>)> {
        match self.ask(to, timeout, |id, reply_to| Message::StatusRequest {
            id,
            reply_to,
        })? {
            Message::StatusReply {
                cluster, counters, ..
            } => Some((cluster, counters)),
            _ => None,
        }
    }

    /// Whether `to` answers a ping within `timeout`.
    pub fn ping(&mut self, to: &Address, timeout: Duration) -> bool {
        self.ask(to, timeout, |id, reply_to| Message::Ping { id, reply_to })
            .is_some()
    }

    /// The statistics of the storage thread `at`.
    pub fn stats(&mut self, at: &Address, timeout: Duration) -> Option<StorageReport> {
        match self.ask(at, timeout, |id, reply_to| Message::StatsRequest {
            id,
            reply_to,
        })? {
            Message::StorageReport { report, .. } => Some(report),
            _ => None,
        }
    }

    /// What the monitor at `to` gathered and decided.
    pub fn monitor(&mut self, to: &Address, timeout: Duration) -> Option<MonitorStatus> {
        let reply = self.ask(to, timeout, |id, reply_to| Message::MonitorStatusRequest {
            id,
            reply_to,
        })?;
        match reply {
            Message::MonitorStatusReply { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The owner threads the router at `router` gives each of `keys`.
    pub fn owners(&mut self, router: &Address, keys: &[Key]) -> Option<Vec<(Key, Vec<Address>)>> {
        let mut all = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH) {
            let reply = self.ask(router, Duration::from_secs(1), |id, reply_to| {
                Message::RouteRequest(RouteRequest {
                    id,
                    reply_to,
                    keys: chunk.to_vec(),
                })
            })?;
            match reply {
                Message::RouteResponse(r) => all.extend(r.placements),
                _ => return None,
            }
        }
        Some(all)
    }

    /// Sends `ops` to the one storage thread `at`, bypassing every client
    /// check, and returns its results.
    pub fn request_at(&mut self, at: &Address, ops: Vec<KeyOp>) -> Option<Vec<KeyResult>> {
        let reply = self.ask(at, Duration::from_secs(5), |id, reply_to| {
            Message::KvsRequest(KvsRequest {
                id,
                reply_to,
                ops,
                ack: Ack::FirstReplica,
                shared_memory: None,
            })
        })?;
        match reply {
            Message::KvsResponse(r) => Some(r.results),
            _ => None,
        }
    }

    /// Reads `keys` at the one storage thread `at`: one result per key, in
    /// order (`NotMine` where it does not own the key).
    pub fn read_at(&mut self, at: &Address, keys: &[Key]) -> Option<Vec<KeyResult>> {
        let mut all = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH) {
            let reply = self.ask(at, Duration::from_secs(2), |id, reply_to| {
                Message::KvsRequest(KvsRequest {
                    id,
                    reply_to,
                    ops: chunk
                        .iter()
                        .map(|k| KeyOp::Get { key: k.clone() })
                        .collect(),
                    ack: Ack::FirstReplica,
                    shared_memory: None,
                })
            })?;
            match reply {
                Message::KvsResponse(r) => all.extend(r.results),
                _ => return None,
            }
        }
        Some(all)
    }
}
