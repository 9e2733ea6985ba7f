//! [`Client`]: the KVS client over ZeroMQ, with blocking calls.
//!
//! It binds one reply socket, drives a [`ClientCore`] with the wall clock,
//! and waits for its operation's answer, retrying and timing out as the core
//! decides. One `Client` is one writer (its id breaks timestamp ties); use
//! one per thread.

use crate::clock;
use crate::direct::{DirectLink, UNREACHABLE_FOR};
use crate::socket::{Receiver, Sender, TransportError};
use anna::client::{ClientConfig, ClientCore, ClientError, Completion, OpId, OpOutput};
use anna::cluster::ReplicationFactor;
use anna::lattice::{KeyState, LatticeValue, Lww, Timestamp, WriterId};
use anna::protocol::seal::Security;
use anna::protocol::{Ack, Address, Key, Message, RequestId, Session};
use anna::role::Outbox;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

impl From<TransportError> for ClientError {
    fn from(e: TransportError) -> Self {
        ClientError::Transport(e.to_string())
    }
}

/// A blocking KVS client.
pub struct Client {
    core: ClientCore,
    rx: Receiver,
    tx: Sender,
    outbox: Outbox,
    finished: HashMap<OpId, Result<OpOutput, ClientError>>,
    /// Connections to storage threads' direct endpoints ([`crate::direct`]).
    links: Vec<DirectLink>,
    /// Direct endpoints that could not be reached, and until when requests
    /// for them go over ZeroMQ instead.
    unreachable: HashMap<Address, Instant>,
    /// Answers read from links and not yet handled.
    direct_in: VecDeque<Message>,
    frame: Vec<u8>,
    _ctx: zmq::Context,
}

impl Client {
    /// A client of the cluster whose routers are `routers`, receiving
    /// answers on a free loopback port.
    pub fn connect(routers: Vec<Address>, config: ClientConfig) -> Result<Self, ClientError> {
        Self::connect_from(&Address::from("tcp://127.0.0.1:*"), routers, config)
    }

    /// Like [`Client::connect`], receiving answers at `bind` (an address
    /// the storage nodes can reach).
    pub fn connect_from(
        bind: &Address,
        routers: Vec<Address>,
        config: ClientConfig,
    ) -> Result<Self, ClientError> {
        Self::connect_in(&zmq::Context::new(), bind, routers, config)
    }

    /// Like [`Client::connect_from`], with sockets of `ctx`: many clients
    /// of one process (one per thread) can share one ZeroMQ context, and so
    /// its I/O thread, instead of each waking its own.
    pub fn connect_in(
        ctx: &zmq::Context,
        bind: &Address,
        routers: Vec<Address>,
        config: ClientConfig,
    ) -> Result<Self, ClientError> {
        let security = crate::security::security();
        Self::connect_secured(ctx, bind, routers, config, &security)
    }

    /// Like [`Client::connect_in`], sealing with `security` instead of the
    /// process's (a benchmark comparing settings in one process).
    pub fn connect_secured(
        ctx: &zmq::Context,
        bind: &Address,
        routers: Vec<Address>,
        config: ClientConfig,
        security: &Security,
    ) -> Result<Self, ClientError> {
        if routers.is_empty() {
            return Err(ClientError::Transport(
                "no router address given".to_string(),
            ));
        }
        let ctx = ctx.clone();
        let rx = Receiver::bind_secured(&ctx, bind, security)?;
        let me = rx.address().clone();
        let writer = WriterId(clock::fresh_id(me.as_str()));
        let mut core = ClientCore::new(config, me, routers, writer);
        crate::shared::map_storage_files(&mut core);
        Ok(Client {
            core,
            tx: Sender::secured(&ctx, security),
            rx,
            outbox: Outbox::default(),
            finished: HashMap::new(),
            links: Vec::new(),
            unreachable: HashMap::new(),
            direct_in: VecDeque::new(),
            frame: Vec::new(),
            _ctx: ctx,
        })
    }

    /// The client's settings.
    pub fn config(&self) -> &ClientConfig {
        self.core.config()
    }

    /// What this client counted of its operations (latencies, retries,
    /// failures, reads answered in shared memory).
    pub fn figures(&self) -> &anna::protocol::figures::KvsFigures {
        self.core.figures()
    }

    /// The writer id this client stamps and counts as.
    pub fn writer(&self) -> WriterId {
        self.core.writer()
    }

    /// A fresh hybrid-logical-clock timestamp of this writer.
    pub fn timestamp(&mut self) -> Timestamp {
        self.core.timestamp(clock::now())
    }

    /// Reads `key`: its merged value, or `None`.
    pub fn get(&mut self, key: &str) -> Result<Option<LatticeValue>, ClientError> {
        let id = self
            .core
            .get(clock::now(), key.to_string(), &mut self.outbox);
        Ok(read_value(self.wait(id)?))
    }

    /// Merges `value` into `key`.
    pub fn put(&mut self, key: &str, value: LatticeValue) -> Result<(), ClientError> {
        let ack = self.core.config().put_ack;
        self.put_with(key, value, ack)
    }

    /// Merges `value` into `key`, acknowledged at `ack`.
    pub fn put_with(
        &mut self,
        key: &str,
        value: LatticeValue,
        ack: Ack,
    ) -> Result<(), ClientError> {
        let now = clock::now();
        let id = (self.core).put_with(now, key.to_string(), value, ack, &mut self.outbox);
        self.wait(id).map(|_| ())
    }

    /// The versions of this client's acknowledged writes, for a call to
    /// carry (see [`anna::protocol::session`]).
    pub fn session(&mut self) -> Session {
        self.core.session()
    }

    /// Records a write made on this client's behalf (by a function it
    /// called): its later reads see it.
    pub fn record_write(&mut self, key: &str, state: &KeyState) {
        self.core.record_write(key, state);
    }

    /// Reads several keys at once: one request per replica holding some of
    /// them (each answered with one response), values in the order of
    /// `keys`. Fails with the first key's error if any read fails.
    pub fn get_many(&mut self, keys: &[&str]) -> Result<Vec<Option<LatticeValue>>, ClientError> {
        let now = clock::now();
        let ids: Vec<OpId> = self.core.batch(&mut self.outbox, |core, out| {
            keys.iter()
                .map(|k| core.get(now, k.to_string(), out))
                .collect()
        });
        let mut values = Vec::with_capacity(ids.len());
        let mut first_error = None;
        for id in ids {
            match self.wait(id) {
                Ok(output) => values.push(read_value(output)),
                Err(e) => {
                    first_error.get_or_insert(e);
                    values.push(None);
                }
            }
        }
        first_error.map_or(Ok(values), Err)
    }

    /// Merges several values at once (see [`Client::get_many`]); fails with
    /// the first error if any write fails.
    pub fn put_many(&mut self, entries: Vec<(Key, LatticeValue)>) -> Result<(), ClientError> {
        let now = clock::now();
        let ids: Vec<OpId> = self.core.batch(&mut self.outbox, |core, out| {
            entries
                .into_iter()
                .map(|(k, v)| core.put(now, k, v, out))
                .collect()
        });
        let mut first_error = None;
        for id in ids {
            if let Err(e) = self.wait(id) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Writes `bytes` to `key` as last-writer-wins, stamped now.
    pub fn put_lww(&mut self, key: &str, bytes: Vec<u8>) -> Result<(), ClientError> {
        let at = self.timestamp();
        self.put(key, LatticeValue::Lww(Lww::new(at, bytes)))
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: &str) -> Result<(), ClientError> {
        let ack = self.core.config().delete_ack;
        self.delete_with(key, ack)
    }

    /// Deletes `key`, acknowledged at `ack`.
    pub fn delete_with(&mut self, key: &str, ack: Ack) -> Result<(), ClientError> {
        let now = clock::now();
        let at = self.core.timestamp(now);
        let id = (self.core).delete_at(now, key.to_string(), at, ack, &mut self.outbox);
        self.wait(id).map(|_| ())
    }

    /// Sets the replication factor of `key` (nodes, and threads per node;
    /// capped by what is live): writes the override to its metadata key in
    /// the KVS ([`anna::cluster::replication_key`]), whose owners announce
    /// it to the routers, and waits until a router shows it. Owners added
    /// by a higher factor receive the key by handoff.
    pub fn set_replication(
        &mut self,
        key: &str,
        factor: ReplicationFactor,
    ) -> Result<(), ClientError> {
        let at = self.timestamp();
        let meta = anna::cluster::replication_key(key);
        let value = LatticeValue::Lww(Lww::new(at, factor.to_bytes()));
        let routers = self.core.routers().to_vec();
        let deadline = Instant::now() + self.core.config().op_timeout;
        let mut asked = 0;
        loop {
            // Every write of the metadata key is announced again, so a
            // lost announcement is repaired by writing it again.
            self.put(&meta, value.clone())?;
            asked += 1;
            let ask = Message::StatusRequest {
                id: RequestId(u64::MAX - asked),
                reply_to: self.rx.address().clone(),
            };
            let router = &routers[asked as usize % routers.len()];
            self.tx.send(router, &ask)?;
            let until = Instant::now() + Duration::from_millis(200);
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                if let Some(Message::StatusReply { cluster, .. }) = self.rx.recv(Some(left))? {
                    if cluster.replication_override(key) == Some(factor) {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(ClientError::Timeout {
                    key: key.to_string(),
                    after: self.core.config().op_timeout,
                    tried: router.to_string(),
                });
            }
        }
    }

    /// Starts a read without waiting: for pipelined load. Collect with
    /// [`Client::wait_any`].
    pub fn start_get(&mut self, key: Key) -> OpId {
        self.core.get(clock::now(), key, &mut self.outbox)
    }

    /// Starts a put without waiting.
    pub fn start_put(&mut self, key: Key, value: LatticeValue) -> OpId {
        self.core.put(clock::now(), key, value, &mut self.outbox)
    }

    /// Waits for any started operation to finish.
    pub fn wait_any(&mut self) -> Result<Completion, ClientError> {
        if let Some(&id) = self.finished.keys().next() {
            let result = self
                .finished
                .remove(&id)
                .unwrap_or(Ok(OpOutput::Written { epoch: None }));
            return Ok((id, result));
        }
        loop {
            let done = self.pump()?;
            let mut done = done.into_iter();
            if let Some(first) = done.next() {
                self.finished.extend(done);
                return Ok(first);
            }
            if self.core.in_flight() == 0 {
                return Err(ClientError::Transport("no operation in flight".into()));
            }
        }
    }

    fn wait(&mut self, id: OpId) -> Result<OpOutput, ClientError> {
        loop {
            if let Some(result) = self.finished.remove(&id) {
                return result;
            }
            let done = self.pump()?;
            self.finished.extend(done);
        }
    }

    /// Sends what the core queued, then waits for one answer or the core's
    /// next deadline, and returns what that finished.
    fn pump(&mut self) -> Result<Vec<Completion>, ClientError> {
        let mut outbox = std::mem::take(&mut self.outbox);
        for (to, msg) in outbox.drain() {
            if self.send_direct(&to, &msg) {
                continue;
            }
            if let Err(e) = self.tx.send(&to, &msg) {
                tracing::debug!(%to, error = %e, "request not sent; the attempt will time out");
            }
        }
        self.outbox = outbox;
        let now = clock::now();
        let wait = self
            .core
            .next_tick()
            .map_or(Duration::from_secs(1), |t| t.saturating_since(now));
        let mut done = match self.recv(wait)? {
            Some(msg) => self.core.handle(clock::now(), msg, &mut self.outbox),
            None => Vec::new(),
        };
        // Retries and deadlines run even while unrelated messages keep
        // arriving.
        let now = clock::now();
        if self.core.next_tick().is_some_and(|t| t <= now) {
            done.extend(self.core.tick(now, &mut self.outbox));
        }
        Ok(done)
    }
}

impl Client {
    /// Sends `msg` on the direct link to `to`'s endpoint if the cluster
    /// state names one (connecting on first use); `false`: send it over
    /// ZeroMQ instead.
    fn send_direct(&mut self, to: &Address, msg: &Message) -> bool {
        if !matches!(msg, Message::KvsRequest(_)) {
            return false;
        }
        let Some(endpoint) = self.core.direct(to) else {
            return false;
        };
        let link = match self.links.iter().position(|l| l.address() == endpoint) {
            Some(i) => i,
            None => {
                if (self.unreachable.get(endpoint)).is_some_and(|until| Instant::now() < *until) {
                    return false;
                }
                let timeout = self.core.config().attempt_timeout;
                match DirectLink::connect(endpoint, timeout) {
                    Ok(link) => {
                        self.unreachable.remove(endpoint);
                        self.links.push(link);
                        self.links.len() - 1
                    }
                    Err(e) => {
                        tracing::debug!(%endpoint, error = %e, "direct endpoint unreachable; using ZeroMQ");
                        let until = Instant::now() + UNREACHABLE_FOR;
                        self.unreachable.insert(endpoint.clone(), until);
                        return false;
                    }
                }
            }
        };
        if let Err(e) = self.tx.seal(to, msg, &mut self.frame) {
            tracing::debug!(%to, error = %e, "request not sent; the attempt will time out");
            return true;
        }
        if let Err(e) = self.links[link].send(&mut self.frame) {
            // A node restarted since the link was made, say: one fresh
            // connection is tried at once, with the request sealed again
            // (the lost link may have kept the frame).
            let lost = self.links.swap_remove(link);
            tracing::debug!(endpoint = %lost.address(), error = %e, "direct link lost");
            if self.tx.seal(to, msg, &mut self.frame).is_err() {
                return true;
            }
            let frame = &mut self.frame;
            let fresh = DirectLink::connect(lost.address(), self.core.config().attempt_timeout)
                .and_then(|mut link| link.send(frame).map(|()| link));
            match fresh {
                Ok(link) => self.links.push(link),
                Err(e) => {
                    tracing::debug!(endpoint = %lost.address(), error = %e, "direct endpoint unreachable; using ZeroMQ");
                    let until = Instant::now() + UNREACHABLE_FOR;
                    self.unreachable.insert(lost.address().clone(), until);
                    return false;
                }
            }
        }
        true
    }

    /// The next answer, from the reply socket or a direct link, waiting at
    /// most `wait`.
    fn recv(&mut self, wait: Duration) -> Result<Option<Message>, ClientError> {
        if self.links.is_empty() {
            if let Some(msg) = self.direct_in.pop_front() {
                return Ok(Some(msg));
            }
            return Ok(self.rx.recv(Some(wait))?);
        }
        let deadline = Instant::now() + wait;
        loop {
            if let Some(msg) = self.direct_in.pop_front() {
                return Ok(Some(msg));
            }
            if let Some(msg) = self.rx.try_recv()? {
                return Ok(Some(msg));
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Ok(None);
            };
            let mut items: Vec<zmq::PollItem> = Vec::with_capacity(1 + self.links.len());
            items.push(self.rx.poll_item());
            items.extend(
                self.links
                    .iter()
                    .map(|l| zmq::PollItem::from_fd(l.fd(), zmq::POLLIN)),
            );
            let millis = i64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i64::MAX);
            match zmq::poll(&mut items, millis) {
                Ok(0) => return Ok(None),
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(TransportError::from(e).into()),
            }
            // The links ready, as bits, not a list allocated per wake-up
            // (a client talks to a few storage threads; one with more than
            // 64 links tries every one).
            let links = items.len() - 1;
            let ready = if links > 64 {
                u64::MAX
            } else {
                (items[1..].iter().enumerate()).fold(0u64, |bits, (i, item)| {
                    bits | (u64::from(item.is_readable()) << i)
                })
            };
            drop(items);
            for i in (0..links).rev() {
                if links <= 64 && ready & (1 << i) == 0 {
                    continue;
                }
                if let Err(e) = self.links[i].receive(&mut self.rx, &mut self.direct_in) {
                    let link = self.links.swap_remove(i);
                    tracing::debug!(endpoint = %link.address(), error = %e, "direct link lost");
                }
            }
        }
    }
}

/// The value a finished read gives.
fn read_value(output: OpOutput) -> Option<LatticeValue> {
    match output {
        OpOutput::Value(v) => v,
        OpOutput::State(s) => s.visible().map(|v| v.into_owned()),
        OpOutput::Written { .. } => None,
    }
}
