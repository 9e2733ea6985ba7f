//! `zmq-floor`: the messaging floor, measured as if it were a backend.
//!
//! It is **not a key-value store**. Every `get` and `put` is one
//! [`Message::Ping`] / [`Message::Pong`] round trip over `tcp://127.0.0.1`
//! to an `anna` [`PingResponder`] driven by the same [`ZmqDriver`] every
//! Squall role uses, on one thread, as Redis serves on one. It stores
//! nothing and carries no value (a ping is ~40 bytes on the wire, a 100-byte
//! value would add little on loopback). Run under the same load generator,
//! its row is the least any Squall KVS request can cost: one ZeroMQ hop
//! there and one back, through the I/O threads of both ends, with protocol
//! encoding and decoding, and no storage work at all. A Squall KVS row
//! should be read against it as well as against Redis.
//!
//! The responder has its own ZeroMQ context (its own I/O thread), as a
//! server process would; the client connections share another, as the
//! threads of one client process would.

use crate::backend::{BackendError, BackendFactory, KvBackend, Result};
use anna::protocol::{Address, Message, RequestId};
use anna::role::{Driver, PingResponder};
use squall_transport::direct::{DirectLink, DirectServer};
use squall_transport::{Receiver, Sender, Shutdown, TransportError, ZmqDriver};
use std::collections::VecDeque;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a round trip may take before it counts as failed.
pub const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(5);

/// A ping responder on a thread of this process, and the context its
/// clients connect from. The responder stops when the factory drops.
pub struct ZmqFloorFactory {
    client_ctx: zmq::Context,
    server: Address,
    _responder: Responder,
}

/// A ping responder's driver running on a thread of its own, named
/// `name`; stopped and joined when this drops.
struct Responder {
    shutdown: Shutdown,
    thread: Option<JoinHandle<std::result::Result<u64, TransportError>>>,
}

impl Responder {
    fn spawn(mut driver: ZmqDriver<PingResponder>, name: &str) -> Result<Self> {
        let shutdown = driver.shutdown_handle();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                driver.run()?;
                Ok(driver.role().answered())
            })?;
        Ok(Responder {
            shutdown,
            thread: Some(thread),
        })
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if self.shutdown.stop().is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl ZmqFloorFactory {
    /// Starts the responder on a free loopback TCP port.
    pub fn start() -> Result<Self> {
        let server_ctx = zmq::Context::new();
        let driver = ZmqDriver::bind(
            &server_ctx,
            &Address::from("tcp://127.0.0.1:*"),
            PingResponder::default(),
        )
        .map_err(setup)?;
        let server = driver.address().clone();
        Ok(ZmqFloorFactory {
            client_ctx: zmq::Context::new(),
            server,
            _responder: Responder::spawn(driver, "zmq-floor-responder")?,
        })
    }

    /// The responder's address.
    pub fn address(&self) -> &Address {
        &self.server
    }
}

impl BackendFactory for ZmqFloorFactory {
    fn name(&self) -> &str {
        "zmq-floor"
    }

    fn connect(&self) -> Result<Box<dyn KvBackend + Send>> {
        let rx =
            Receiver::bind(&self.client_ctx, &Address::from("tcp://127.0.0.1:*")).map_err(setup)?;
        Ok(Box::new(Floor(ZmqFloorConnection {
            reply_to: rx.address().clone(),
            rx,
            tx: Sender::new(&self.client_ctx),
            server: self.server.clone(),
            next_id: 0,
        })))
    }
}

/// One client's reply socket and its sockets to the responder.
pub struct ZmqFloorConnection {
    rx: Receiver,
    tx: Sender,
    reply_to: Address,
    server: Address,
    next_id: u64,
}

impl RoundTrip for ZmqFloorConnection {
    fn round_trip(&mut self) -> Result<()> {
        self.next_id += 1;
        let id = RequestId(self.next_id);
        let started = Instant::now();
        let ping = Message::Ping {
            id,
            reply_to: self.reply_to.clone(),
        };
        self.tx.send(&self.server, &ping).map_err(transport)?;
        loop {
            let left = ROUND_TRIP_TIMEOUT.saturating_sub(started.elapsed());
            match self.rx.recv(Some(left)).map_err(transport)? {
                Some(Message::Pong { id: got, .. }) if got == id => return Ok(()),
                // A late answer to an earlier, timed-out ping.
                Some(_) => continue,
                None => return Err(BackendError::Timeout(ROUND_TRIP_TIMEOUT)),
            }
        }
    }
}

/// A floor connection: one answered round trip at a time.
pub trait RoundTrip {
    /// One ping, answered.
    fn round_trip(&mut self) -> Result<()>;
}

/// A floor connection as a backend: every operation is one round trip.
pub struct Floor<C>(pub C);

impl<C: RoundTrip + Send> KvBackend for Floor<C> {
    /// One round trip; answers an empty value (the floor stores nothing).
    fn get(&mut self, _key: &str) -> Result<Option<Vec<u8>>> {
        self.0.round_trip().map(|()| Some(Vec::new()))
    }

    /// One round trip; stores nothing.
    fn put(&mut self, _key: &str, _value: &[u8]) -> Result<()> {
        self.0.round_trip()
    }

    /// One round trip for the whole request.
    fn get_many(&mut self, _keys: &[&str]) -> Result<usize> {
        self.0.round_trip().map(|()| 0)
    }

    /// One round trip for the whole request.
    fn put_many(&mut self, _items: &[(&str, &[u8])]) -> Result<()> {
        self.0.round_trip()
    }

    /// One round trip for the whole batch: there is nothing to preload,
    /// only a check that the responder answers.
    fn put_batch(&mut self, _items: &[(&str, &[u8])]) -> Result<()> {
        self.0.round_trip()
    }
}

/// `tcp-floor`: the floor of the direct path, measured as if it were a
/// backend. As [`ZmqFloorFactory`], every request is one ping round trip
/// to a [`PingResponder`] on one thread of its own, here over the
/// responder's direct endpoint ([`squall_transport::direct`]): the client
/// thread writes its sealed frame to a TCP connection the responder's
/// thread polls, and reads the answer from it. What a Squall KVS request
/// over its direct endpoint costs beyond this row is the store's work.
pub struct TcpFloorFactory {
    client_ctx: zmq::Context,
    endpoint: Address,
    _responder: Responder,
}

impl TcpFloorFactory {
    /// Starts the responder with a direct endpoint on a free loopback port.
    pub fn start() -> Result<Self> {
        let server_ctx = zmq::Context::new();
        let mut driver = ZmqDriver::bind(
            &server_ctx,
            &Address::from("tcp://127.0.0.1:*"),
            PingResponder::default(),
        )
        .map_err(setup)?;
        let direct = DirectServer::bind(&Address::from("tcp://127.0.0.1:*"))
            .map_err(|e| BackendError::Setup(format!("tcp-floor: {e}")))?;
        let endpoint = direct.address().clone();
        driver.serve_direct(direct);
        Ok(TcpFloorFactory {
            client_ctx: zmq::Context::new(),
            endpoint,
            _responder: Responder::spawn(driver, "tcp-floor-responder")?,
        })
    }

    /// The responder's direct endpoint.
    pub fn address(&self) -> &Address {
        &self.endpoint
    }
}

impl BackendFactory for TcpFloorFactory {
    fn name(&self) -> &str {
        "tcp-floor"
    }

    fn connect(&self) -> Result<Box<dyn KvBackend + Send>> {
        // The receiver only opens the answers (its keys, its replay
        // guard); nothing is sent to its address.
        let rx =
            Receiver::bind(&self.client_ctx, &Address::from("tcp://127.0.0.1:*")).map_err(setup)?;
        let link = DirectLink::connect(&self.endpoint, ROUND_TRIP_TIMEOUT)
            .map_err(|e| BackendError::Setup(format!("tcp-floor: {e}")))?;
        Ok(Box::new(Floor(TcpFloorConnection {
            reply_to: rx.address().clone(),
            rx,
            tx: Sender::new(&self.client_ctx),
            link,
            frame: Vec::new(),
            answers: VecDeque::new(),
            next_id: 0,
        })))
    }
}

/// One client's connection to the responder's direct endpoint.
pub struct TcpFloorConnection {
    rx: Receiver,
    tx: Sender,
    link: DirectLink,
    reply_to: Address,
    frame: Vec<u8>,
    answers: VecDeque<Message>,
    next_id: u64,
}

impl RoundTrip for TcpFloorConnection {
    fn round_trip(&mut self) -> Result<()> {
        self.next_id += 1;
        let id = RequestId(self.next_id);
        let started = Instant::now();
        let ping = Message::Ping {
            id,
            reply_to: self.reply_to.clone(),
        };
        let to = self.link.address().clone();
        self.tx
            .seal(&to, &ping, &mut self.frame)
            .map_err(transport)?;
        self.link.send(&mut self.frame).map_err(BackendError::Io)?;
        loop {
            while let Some(msg) = self.answers.pop_front() {
                if matches!(msg, Message::Pong { id: got, .. } if got == id) {
                    return Ok(());
                }
            }
            let left = ROUND_TRIP_TIMEOUT.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(BackendError::Timeout(ROUND_TRIP_TIMEOUT));
            }
            let mut items = [zmq::PollItem::from_fd(self.link.fd(), zmq::POLLIN)];
            let millis = i64::try_from(left.as_millis().max(1)).unwrap_or(i64::MAX);
            zmq::poll(&mut items, millis).map_err(|e| transport(e.into()))?;
            self.link
                .receive(&mut self.rx, &mut self.answers)
                .map_err(BackendError::Io)?;
        }
    }
}

fn setup(e: TransportError) -> BackendError {
    BackendError::Setup(format!("zmq-floor: {e}"))
}

fn transport(e: TransportError) -> BackendError {
    BackendError::Io(std::io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_one_answered_round_trip_on_the_direct_path_too() {
        let factory = TcpFloorFactory::start().unwrap();
        assert!(factory.address().as_str().starts_with("tcp://127.0.0.1:"));
        let mut a = factory.connect().unwrap();
        let mut b = factory.connect().unwrap();
        for _ in 0..100 {
            assert_eq!(a.get("k").unwrap(), Some(Vec::new()));
            b.put("k", b"v").unwrap();
        }
        assert_eq!(a.get_many(&["k", "l"]).unwrap(), 0);
    }

    #[test]
    fn every_operation_is_one_answered_round_trip() {
        let factory = ZmqFloorFactory::start().unwrap();
        assert!(factory.address().as_str().starts_with("tcp://127.0.0.1:"));
        let mut a = factory.connect().unwrap();
        let mut b = factory.connect().unwrap();
        for _ in 0..100 {
            assert_eq!(a.get("k").unwrap(), Some(Vec::new()));
            b.put("k", b"v").unwrap();
        }
        a.put_batch(&[("k", b"v"), ("l", b"w")]).unwrap();
    }
}
