//! ZeroMQ plumbing: PUSH/PULL sockets that carry protocol messages, and the
//! real-time driver of one role.
//!
//! Every component binds one PULL socket ([`Receiver`]) and pushes to others'
//! PULL sockets through a [`Sender`], which keeps one PUSH socket per peer.
//! Messages are one-way and carry their reply-to address, so nobody holds a
//! connection open waiting for an answer. Addresses are `tcp://`, `ipc://`
//! or `inproc://` endpoints; a `tcp://host:*` address binds a free port,
//! which [`Receiver::address`] then names.
//!
//! Sends never block: a peer whose queue is full (or who has been gone long
//! enough to fill it) loses the message and the sender counts it; the
//! protocol above tolerates loss (clients retry, gossip repeats). Frames that
//! do not decode are counted and dropped; they never reach a role or end a
//! thread.
//!
//! Every frame is sealed and opened with the process's
//! [`crate::security`]: a frame that fails authentication is counted
//! (`unauthenticated`) and dropped; a client's message its key has no right
//! to send is counted (`refused`) and answered with the right it lacks
//! ([`Receiver::take_refusal`]), never handed to the role.

use crate::clock;
use crate::direct::{DirectFrame, DirectLinks, DirectServer};
use anna::lattice::lww::in_frame;
use anna::protocol::seal::{OpenError, Opener, Principal, Sealer, Security};
use anna::protocol::{self, Address, EncodeError, Message};
use anna::role::{Driver, Input, Outbox, Role, Step};
use anna::time::Time;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// How many messages a peer's PUSH socket queues before sends to it drop.
pub const SEND_QUEUE: i32 = 10_000;
/// How long a closing socket keeps trying to deliver what it queued.
pub const LINGER: Duration = Duration::from_millis(200);
/// How many peers a [`Sender`] keeps a socket to; the least recently used
/// is closed beyond that.
pub const MAX_PEERS: usize = 1024;
/// A peer socket unused this long is closed: a departed client's address
/// would otherwise be reconnected to for as long as the process lives.
pub const PEER_IDLE: Duration = Duration::from_secs(30);
/// The longest a PUSH socket waits between reconnection attempts to a peer
/// that is gone (ZeroMQ backs off exponentially from 100 ms up to this).
pub const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// How many queued messages a driver hands its role per step, so ticks are
/// not starved under load.
pub const DELIVERY_BATCH: usize = 256;
/// How many delivered messages a driver takes up before it sends what the
/// role queued for them (and at the end of a batch): sent together,
/// ZeroMQ's I/O thread writes them in one go instead of waking for each,
/// while an answer waits for at most this many other messages.
pub const FLUSH_EVERY: usize = 16;
/// The most messages a driver puts in one [`Message::Batch`].
pub const MAX_BATCH: usize = 64;

/// A transport failure. Malformed input is not one: it is counted.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The address could not be bound (in use, bad syntax, no permission).
    #[error("cannot bind {address}: {source}")]
    Bind {
        address: Address,
        source: zmq::Error,
    },
    /// The address could not be connected to (bad syntax).
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: Address,
        source: zmq::Error,
    },
    /// The peer's queue is full; the message was dropped.
    #[error("send queue to {address} is full; message dropped")]
    QueueFull { address: Address },
    /// The message could not be encoded (too large).
    #[error("cannot send to {address}: {source}")]
    Encode {
        address: Address,
        source: EncodeError,
    },
    /// The direct connection an answer was for has closed.
    #[error("the direct connection {address} has closed; message dropped")]
    Gone { address: Address },
    /// Any other socket error.
    #[error("socket error: {0}")]
    Socket(#[from] zmq::Error),
}

pub use anna::role::TransportStats;

/// The largest frame a receiving socket of this process accepts
/// (`ZMQ_MAXMSGSIZE`): the codec's ceiling unless the process set its
/// `[limits] max_message_bytes` with [`set_max_message_bytes`].
static MAX_MESSAGE_BYTES: AtomicUsize = AtomicUsize::new(protocol::MAX_FRAME_BYTES);

/// The largest frame this process accepts (see
/// [`set_max_message_bytes`]).
pub fn max_message_bytes() -> usize {
    MAX_MESSAGE_BYTES.load(Ordering::Relaxed)
}

/// Sets the largest frame every socket this process binds from now on
/// accepts (at most the codec's ceiling): what a process does with its
/// `[limits] max_message_bytes` before it binds anything.
pub fn set_max_message_bytes(bytes: usize) {
    MAX_MESSAGE_BYTES.store(bytes.min(protocol::MAX_FRAME_BYTES), Ordering::Relaxed);
}

/// A bound PULL socket that yields decoded messages.
pub struct Receiver {
    socket: zmq::Socket,
    address: Address,
    frame: zmq::Message,
    opener: Opener,
    /// The messages of a [`Message::Batch`] received and not yet taken.
    batched: VecDeque<Message>,
    /// Answers to refused client requests, for the driver to send.
    refusals: Vec<(Address, Message)>,
    stats: TransportStats,
}

/// How many refusal answers a receiver keeps for its driver to send; more
/// are dropped (still counted as refused).
const MAX_REFUSALS: usize = 1024;

impl Receiver {
    /// Binds `address`. With a `tcp://host:*` address a free port is chosen;
    /// [`Receiver::address`] names it.
    pub fn bind(ctx: &zmq::Context, address: &Address) -> Result<Self, TransportError> {
        Self::bind_secured(ctx, address, &crate::security::security())
    }

    /// Like [`Receiver::bind`], opening frames with `security` instead of
    /// the process's.
    pub fn bind_secured(
        ctx: &zmq::Context,
        address: &Address,
        security: &Security,
    ) -> Result<Self, TransportError> {
        let bind_err = |source| TransportError::Bind {
            address: address.clone(),
            source,
        };
        let socket = ctx.socket(zmq::PULL).map_err(bind_err)?;
        socket.set_linger(0).map_err(bind_err)?;
        // Larger frames are refused by ZeroMQ before they are buffered
        // (the sender's connection is dropped).
        socket
            .set_maxmsgsize(MAX_MESSAGE_BYTES.load(Ordering::Relaxed) as i64)
            .map_err(bind_err)?;
        socket.bind(address.as_str()).map_err(bind_err)?;
        let bound = match socket.get_last_endpoint().map_err(bind_err)? {
            Ok(endpoint) if !endpoint.is_empty() => Address(endpoint),
            _ => address.clone(),
        };
        Ok(Receiver {
            socket,
            address: bound,
            frame: zmq::Message::new(),
            opener: Opener::new(security),
            batched: VecDeque::new(),
            refusals: Vec::new(),
            stats: TransportStats::default(),
        })
    }

    /// The address peers send to.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Binds a further endpoint to the same socket (a cache takes its
    /// executors' messages over `ipc://` and the KVS's over `tcp://`);
    /// messages from every endpoint arrive in one queue. Returns the bound
    /// endpoint (a `tcp://host:*` address names its port).
    /// [`Receiver::address`] stays the first one.
    pub fn bind_also(&mut self, address: &Address) -> Result<Address, TransportError> {
        let bind_err = |source| TransportError::Bind {
            address: address.clone(),
            source,
        };
        self.socket.bind(address.as_str()).map_err(bind_err)?;
        Ok(match self.socket.get_last_endpoint().map_err(bind_err)? {
            Ok(endpoint) if !endpoint.is_empty() => Address(endpoint),
            _ => address.clone(),
        })
    }

    /// What this receiver has counted.
    pub fn stats(&self) -> TransportStats {
        self.stats
    }

    /// The socket's readiness to read, for a wait on it beside other
    /// things.
    pub fn poll_item(&self) -> zmq::PollItem<'_> {
        self.socket.as_poll_item(zmq::POLLIN)
    }

    /// The next message, waiting at most `timeout` (forever if `None`).
    /// Malformed frames are counted and skipped within the same wait.
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Option<Message>, TransportError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(msg) = self.try_recv()? {
                return Ok(Some(msg));
            }
            let wait = match deadline {
                None => -1,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => poll_millis(left),
                    _ => return Ok(None),
                },
            };
            let mut items = [self.socket.as_poll_item(zmq::POLLIN)];
            zmq::poll(&mut items, wait)?;
        }
    }

    /// Opens the frame just received. A large one is handed over to the
    /// message instead of being reused: its large last-writer-wins value
    /// is then a slice of the frame, not a copy
    /// (`anna::lattice::lww::in_frame`).
    fn open_frame(&mut self) -> Result<(Message, Principal), OpenError> {
        if self.frame.len() < in_frame::MIN_SLICED {
            let now = crate::security::unix_secs();
            return self.opener.open(&mut self.frame, now);
        }
        let frame = std::mem::replace(&mut self.frame, zmq::Message::new());
        open_owned(&mut self.opener, Frame(frame))
    }

    /// The next message if one is already queued (the messages of a batch
    /// one by one, in order). Malformed frames in front of it are counted
    /// and skipped.
    pub fn try_recv(&mut self) -> Result<Option<Message>, TransportError> {
        loop {
            if let Some(msg) = self.batched.pop_front() {
                self.stats.received += 1;
                return Ok(Some(msg));
            }
            match self.socket.recv(&mut self.frame, zmq::DONTWAIT) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            let opened = self.open_frame();
            if let Some(msg) = self.admit(opened) {
                self.stats.received += 1;
                return Ok(Some(msg));
            }
        }
    }

    /// Opens a frame that came another way than this receiver's socket (a
    /// direct connection), with this receiver's keys and replay guard, and
    /// puts its messages (a batch's one by one, in order) at the end of
    /// `out`; what it drops is counted and logged as for its own frames.
    pub fn open_other(&mut self, frame: DirectFrame<'_>, out: &mut VecDeque<Message>) {
        let opened = match frame {
            DirectFrame::Borrowed(frame) if frame.len() < in_frame::MIN_SLICED => {
                self.opener.open(frame, crate::security::unix_secs())
            }
            DirectFrame::Borrowed(frame) => open_owned(&mut self.opener, frame.to_vec()),
            DirectFrame::Owned(frame) => open_owned(&mut self.opener, frame),
        };
        let before = self.batched.len();
        if let Some(msg) = self.admit(opened) {
            self.stats.received += 1;
            out.push_back(msg);
        }
        let added = self.batched.len() - before;
        self.stats.received += added as u64;
        out.extend(self.batched.drain(before..));
    }

    /// Checks, counts and logs an opened frame: its message if it is one
    /// a role may take; a batch's messages queued in `batched`; nothing
    /// for a frame dropped or refused (a refusal's answer is kept for
    /// [`Receiver::take_refusal`]).
    fn admit(&mut self, opened: Result<(Message, Principal), OpenError>) -> Option<Message> {
        match opened {
            Ok((Message::Batch(messages), _)) if messages.iter().any(|m| !m.batchable()) => {
                self.stats.malformed += 1;
                let n = self.stats.malformed;
                // (A batch inside a batch does not even decode.)
                let why = "a batch holding a node's own message";
                log_dropped(
                    &self.address,
                    "malformed",
                    n,
                    &why,
                    "dropped malformed frame",
                );
            }
            Ok((msg, principal)) => match principal.missing_right(&msg) {
                // Every message of a batch was checked: they come out
                // one by one, in order.
                Ok(()) => match msg {
                    Message::Batch(messages) => self.batched.extend(messages),
                    msg => return Some(msg),
                },
                Err(why) => {
                    self.stats.refused += 1;
                    let n = self.stats.refused;
                    log_dropped(
                        &self.address,
                        "refused",
                        n,
                        &why,
                        "refused a client's message",
                    );
                    if self.refusals.len() < MAX_REFUSALS {
                        self.refusals.extend(msg.refusal(&why));
                    }
                }
            },
            Err(e) if e.is_authentication() => {
                self.stats.unauthenticated += 1;
                let n = self.stats.unauthenticated;
                log_dropped(
                    &self.address,
                    "unauthenticated",
                    n,
                    &e,
                    "dropped unauthenticated frame",
                );
            }
            Err(e) => self.count_malformed(&e),
        }
        None
    }

    /// Counts and logs a frame dropped as malformed.
    pub fn count_malformed(&mut self, error: &dyn std::fmt::Display) {
        self.stats.malformed += 1;
        let n = self.stats.malformed;
        log_dropped(
            &self.address,
            "malformed",
            n,
            error,
            "dropped malformed frame",
        );
    }

    /// The next answer to a refused client request, for the driver to
    /// send: the caller learns which right its key lacks.
    pub fn take_refusal(&mut self) -> Option<(Address, Message)> {
        self.refusals.pop()
    }
}

/// Logs a dropped frame: a warning at the 1st, 2nd, 4th, 8th, ... of its
/// kind, the rest at debug, so a flood cannot fill the log.
fn log_dropped(
    address: &Address,
    counter: &'static str,
    n: u64,
    error: &dyn std::fmt::Display,
    what: &str,
) {
    if n.is_power_of_two() {
        warn!(%address, counter, n, %error, "{what}");
    } else {
        debug!(%address, counter, n, %error, "{what}");
    }
}

/// Opens a large frame the decoded message may keep slices of: its large
/// last-writer-wins values are parts of `frame`, not copies.
fn open_owned<F>(opener: &mut Opener, mut frame: F) -> Result<(Message, Principal), OpenError>
where
    F: AsRef<[u8]> + AsMut<[u8]> + Send + Sync + 'static,
{
    let now = crate::security::unix_secs();
    let (body, principal) = opener.authenticate(frame.as_mut(), now)?;
    let frame = Bytes::from_owner(frame);
    let msg = in_frame::decode(&frame, || anna::protocol::decode_body(&frame[body]))?;
    Ok((msg, principal))
}

struct Peer {
    socket: zmq::Socket,
    last_used: Instant,
}

/// PUSH sockets to peers, connected on first use and kept for reuse.
pub struct Sender {
    ctx: zmq::Context,
    peers: HashMap<Address, Peer>,
    sealer: Sealer,
    buf: Vec<u8>,
    next_sweep: Instant,
    stats: TransportStats,
}

impl Sender {
    /// A sender with no connections yet.
    pub fn new(ctx: &zmq::Context) -> Self {
        Self::secured(ctx, &crate::security::security())
    }

    /// A sender sealing with `security` instead of the process's.
    pub fn secured(ctx: &zmq::Context, security: &Security) -> Self {
        Sender {
            ctx: ctx.clone(),
            peers: HashMap::new(),
            sealer: Sealer::new(security, crate::security::sender_id()),
            buf: Vec::new(),
            next_sweep: Instant::now() + PEER_IDLE,
            stats: TransportStats::default(),
        }
    }

    /// What this sender has counted.
    pub fn stats(&self) -> TransportStats {
        self.stats
    }

    /// Queues `msg` for `to` without blocking.
    pub fn send(&mut self, to: &Address, msg: &Message) -> Result<(), TransportError> {
        let now = crate::security::unix_secs();
        if let Err(source) = self.sealer.seal_into(msg, now, &mut self.buf) {
            self.stats.dropped += 1;
            return Err(TransportError::Encode {
                address: to.clone(),
                source,
            });
        }
        self.send_frame(to)
    }

    /// Seals `msg` for `to` into `frame` (replacing its contents), for a
    /// frame that leaves another way than this sender's sockets (a direct
    /// connection): one sealer, so one sequence of counters, for both.
    pub fn seal(
        &mut self,
        to: &Address,
        msg: &Message,
        frame: &mut Vec<u8>,
    ) -> Result<(), TransportError> {
        let now = crate::security::unix_secs();
        self.sealer.seal_into(msg, now, frame).map_err(|source| {
            self.stats.dropped += 1;
            TransportError::Encode {
                address: to.clone(),
                source,
            }
        })?;
        self.stats.sent += 1;
        Ok(())
    }

    /// Queues raw bytes for `to`: for tests that speak garbage on purpose.
    pub fn send_raw(&mut self, to: &Address, bytes: &[u8]) -> Result<(), TransportError> {
        self.buf.clear();
        self.buf.extend_from_slice(bytes);
        self.send_frame(to)
    }

    fn send_frame(&mut self, to: &Address) -> Result<(), TransportError> {
        let now = Instant::now();
        if now >= self.next_sweep {
            self.next_sweep = now + PEER_IDLE;
            self.peers
                .retain(|_, p| now.saturating_duration_since(p.last_used) < PEER_IDLE);
        }
        if !self.peers.contains_key(to) {
            let socket = self.connect(to)?;
            self.peers.insert(
                to.clone(),
                Peer {
                    socket,
                    last_used: now,
                },
            );
        }
        let Some(peer) = self.peers.get_mut(to) else {
            unreachable!("peer inserted above");
        };
        peer.last_used = now;
        match peer.socket.send(&self.buf[..], zmq::DONTWAIT) {
            Ok(()) => {
                self.stats.sent += 1;
                Ok(())
            }
            Err(zmq::Error::EAGAIN) => {
                self.stats.dropped += 1;
                Err(TransportError::QueueFull {
                    address: to.clone(),
                })
            }
            Err(e) => {
                self.stats.dropped += 1;
                Err(e.into())
            }
        }
    }

    fn connect(&mut self, to: &Address) -> Result<zmq::Socket, TransportError> {
        if self.peers.len() >= MAX_PEERS {
            self.evict_least_recently_used();
        }
        let connect_err = |source| TransportError::Connect {
            address: to.clone(),
            source,
        };
        let socket = self.ctx.socket(zmq::PUSH).map_err(connect_err)?;
        socket
            .set_linger(LINGER.as_millis() as i32)
            .map_err(connect_err)?;
        socket.set_sndhwm(SEND_QUEUE).map_err(connect_err)?;
        socket
            .set_reconnect_ivl_max(RECONNECT_MAX.as_millis() as i32)
            .map_err(connect_err)?;
        socket.connect(to.as_str()).map_err(connect_err)?;
        Ok(socket)
    }

    fn evict_least_recently_used(&mut self) {
        let oldest = self
            .peers
            .iter()
            .min_by_key(|(_, p)| p.last_used)
            .map(|(a, _)| a.clone());
        if let Some(address) = oldest {
            self.peers.remove(&address);
        }
    }
}

/// ZeroMQ's poll timeout in whole milliseconds, rounded up so a wait for a
/// sub-millisecond deadline sleeps instead of spinning.
fn poll_millis(d: Duration) -> i64 {
    i64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(i64::MAX)
}

/// Waits at most `wait` until one of `sockets` (three at most) or of the
/// descriptors `fds` can be read; which can, in order: the sockets' in
/// the first three places (the missing ones false), then the
/// descriptors'. A signal cutting the wait short is no error: nothing is
/// ready.
fn poll_readable<const N: usize>(
    sockets: [&zmq::Socket; N],
    fds: [Option<std::os::fd::RawFd>; 2],
    wait: Duration,
) -> Result<[bool; 5], zmq::Error> {
    // Where each descriptor sits among the items, after the sockets.
    let mut at = [usize::MAX; 2];
    let mut used = N;
    for (i, fd) in fds.iter().enumerate() {
        if fd.is_some() {
            at[i] = used;
            used += 1;
        }
    }
    let mut items: [zmq::PollItem; 5] = std::array::from_fn(|i| match sockets.get(i) {
        Some(s) => s.as_poll_item(zmq::POLLIN),
        None => {
            let fd = (0..2).find(|&k| at[k] == i).and_then(|k| fds[k]);
            zmq::PollItem::from_fd(fd.unwrap_or(-1), zmq::POLLIN)
        }
    });
    match zmq::poll(&mut items[..used], poll_millis(wait)) {
        Ok(_) | Err(zmq::Error::EINTR) => {}
        Err(e) => return Err(e),
    }
    let mut readable = [false; 5];
    for (r, item) in readable.iter_mut().zip(&items[..N]) {
        *r = item.is_readable();
    }
    for (k, &i) in at.iter().enumerate() {
        readable[3 + k] = i != usize::MAX && items[i].is_readable();
    }
    Ok(readable)
}

/// Stops a [`ZmqDriver`] from any thread.
#[derive(Clone)]
pub struct Shutdown {
    ctx: zmq::Context,
    endpoint: String,
}

impl Shutdown {
    /// Asks the driver to stop; it returns [`Step::Stopped`] from its current
    /// or next step.
    pub fn stop(&self) -> Result<(), TransportError> {
        let socket = self.ctx.socket(zmq::PUSH)?;
        socket.set_linger(LINGER.as_millis() as i32)?;
        socket.connect(&self.endpoint)?;
        socket.send(&[][..], 0)?;
        Ok(())
    }
}

/// Drives one role from its own PULL socket in real time: blocks until a
/// message arrives, the role's next tick is due, or shutdown is asked; never
/// polls with a zero timeout, so an idle role costs no CPU.
///
/// It also measures how long it is busy ([`TransportStats::busy_us`]): one
/// pair of clock reads around each delivered batch or tick, from the poll
/// returning ready through the role's steps and the sends, never the time
/// blocked in the poll.
///
/// A role with work arriving from outside its socket (the executor's,
/// whose worker thread finishes calls) has the driver also wait on a
/// wake-up socket ([`ZmqDriver::wake_on`]); a process that must say
/// goodbye when it stops has the driver send it ([`ZmqDriver::act`]),
/// through a context it can wait on ([`ZmqDriver::send_through`]).
pub struct ZmqDriver<R: Role> {
    role: R,
    receiver: Receiver,
    sender: Sender,
    control: zmq::Socket,
    wake: Option<zmq::Socket>,
    /// Clients' requests straight over TCP, where the role serves them
    /// ([`ZmqDriver::serve_direct`]).
    direct: Option<crate::direct::DirectServer>,
    /// The role's own connections to storage threads' direct endpoints,
    /// made on its first request for one ([`Role::direct_endpoint`]).
    links: Option<DirectLinks>,
    /// Answers read from `links`, not yet handed to the role.
    answers: VecDeque<Message>,
    shutdown: Shutdown,
    outbox: Outbox,
    /// The frames of a flush: their address, the seal of the messages
    /// that may join them (`None`: none may), their messages
    /// ([`ZmqDriver::flush`]). Kept to reuse the list's memory.
    groups: Vec<(Address, Option<bool>, Vec<Message>)>,
    stopped: bool,
    reported: TransportStats,
    /// Nanoseconds busy, cumulative; kept in nanoseconds so that short
    /// batches are not rounded away.
    busy_ns: u64,
}

impl<R: Role> ZmqDriver<R> {
    /// Binds `address` for `role`.
    pub fn bind(ctx: &zmq::Context, address: &Address, role: R) -> Result<Self, TransportError> {
        Self::bind_with(ctx, address, |_| role)
    }

    /// Binds `address` for the role `make` builds knowing the address
    /// bound, for a role whose identity it is (a `tcp://host:*` address
    /// picks its port).
    pub fn bind_with(
        ctx: &zmq::Context,
        address: &Address,
        make: impl FnOnce(&Address) -> R,
    ) -> Result<Self, TransportError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let receiver = Receiver::bind(ctx, address)?;
        let endpoint = format!(
            "inproc://squall-driver-control-{}",
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let control = ctx.socket(zmq::PULL)?;
        control.set_linger(0)?;
        control.bind(&endpoint)?;
        Ok(ZmqDriver {
            role: make(receiver.address()),
            receiver,
            sender: Sender::new(ctx),
            control,
            wake: None,
            direct: None,
            links: None,
            answers: VecDeque::new(),
            shutdown: Shutdown {
                ctx: ctx.clone(),
                endpoint,
            },
            outbox: Outbox::default(),
            groups: Vec::new(),
            stopped: false,
            reported: TransportStats::default(),
            busy_ns: 0,
        })
    }

    /// The address the role receives at.
    pub fn address(&self) -> &Address {
        self.receiver.address()
    }

    /// Binds a further endpoint for the role: see [`Receiver::bind_also`].
    pub fn bind_also(&mut self, address: &Address) -> Result<Address, TransportError> {
        self.receiver.bind_also(address)
    }

    /// Also waits on `wake`, a PULL socket other threads of the process push
    /// (empty) frames to: when it fires the driver reads every frame queued
    /// and hands the role an [`Input::Tick`], due or not, so the role takes
    /// up at once what those threads left for it (through a channel of its
    /// own). A role woken this way checks its own deadlines on a tick.
    pub fn wake_on(&mut self, wake: zmq::Socket) {
        self.wake = Some(wake);
    }

    /// Also takes clients' requests on `server`'s connections, polled in
    /// the same wait as the role's socket, and sends what the role answers
    /// to them back on their connection ([`crate::direct`]).
    pub fn serve_direct(&mut self, server: crate::direct::DirectServer) {
        self.direct = Some(server);
    }

    /// The direct endpoint served, if any.
    pub fn direct(&self) -> Option<&crate::direct::DirectServer> {
        self.direct.as_ref()
    }

    /// Sends through sockets of `ctx` from now on. Dropping a context waits
    /// until the frames its sockets queued have left (up to [`LINGER`]),
    /// unless another thread still holds a socket of it: a process that
    /// must not exit before its last frames leave, while such a thread
    /// (one stuck in a user's function, say) holds a socket of the driver's
    /// context, sends through a context of its own and drops it last.
    pub fn send_through(&mut self, ctx: &zmq::Context) {
        self.sender = Sender::new(ctx);
    }

    /// Lets the caller act on the role between steps, at the driver's
    /// time (a goodbye when the process is told to stop), and sends what
    /// it queued.
    pub fn act(&mut self, f: impl FnOnce(&mut R, Time, &mut Outbox)) {
        f(&mut self.role, clock::now(), &mut self.outbox);
        self.flush();
    }

    /// A handle that stops this driver from another thread.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The role.
    pub fn role(&self) -> &R {
        &self.role
    }

    /// The role, to change between steps.
    pub fn role_mut(&mut self) -> &mut R {
        &mut self.role
    }

    /// The role, after the driver is done.
    pub fn into_role(self) -> R {
        self.role
    }

    /// Receive and send counters together, and the time spent busy.
    pub fn stats(&self) -> TransportStats {
        let (r, s) = (self.receiver.stats(), self.sender.stats());
        TransportStats {
            received: r.received,
            malformed: r.malformed,
            unauthenticated: r.unauthenticated,
            refused: r.refused,
            sent: s.sent,
            dropped: s.dropped,
            busy_us: self.busy_ns / 1000,
            direct: self.direct.as_ref().map_or(0, DirectServer::taken),
        }
    }

    /// Adds the time since `started` to the time spent busy.
    fn count_busy(&mut self, started: Instant) {
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.busy_ns = self.busy_ns.saturating_add(ns);
    }

    /// Sends what the role queued. Messages for one address go in one
    /// frame ([`Message::Batch`], in their order) when there are several
    /// and they are sealed alike: one seal, one ZeroMQ message and one
    /// wake-up of the receiver instead of one each.
    fn flush(&mut self) {
        if self.outbox.len() < 2 {
            let mut outbox = std::mem::take(&mut self.outbox);
            for (to, msg) in outbox.drain() {
                self.send(&to, msg);
            }
            self.outbox = outbox;
            return;
        }
        let mut groups = std::mem::take(&mut self.groups);
        for (to, msg) in self.outbox.drain() {
            // A message joins the last frame for its address if that one
            // is open to it (so none overtakes another for that address).
            let seal = msg.batchable().then(|| msg.may_reach_clients());
            let last = groups.iter_mut().rev().find(|(t, _, _)| *t == to);
            match last {
                Some((_, open, g)) if seal.is_some() && *open == seal && g.len() < MAX_BATCH => {
                    g.push(msg)
                }
                _ => groups.push((to, seal, vec![msg])),
            }
        }
        for (to, _, mut messages) in groups.drain(..) {
            let msg = match messages.len() {
                1 => messages.pop().expect("one message"),
                _ => Message::Batch(messages),
            };
            self.send(&to, msg);
        }
        self.groups = groups;
    }

    /// Sends one frame; a batch too large for a frame goes message by
    /// message.
    fn send(&mut self, to: &Address, msg: Message) {
        if crate::direct::is_request(&msg) && self.send_direct(to, &msg) {
            return;
        }
        let sent = match &mut self.direct {
            Some(direct) if DirectServer::names_connection(to) => {
                direct.send(to, &msg, &mut self.sender)
            }
            _ => self.sender.send(to, &msg),
        };
        match (sent, msg) {
            (Err(TransportError::Encode { .. }), Message::Batch(messages)) => {
                for msg in messages {
                    self.send(to, msg);
                }
            }
            (Err(error @ TransportError::Encode { .. }), msg) => {
                warn!(%to, kind = msg.kind(), %error, "message not sent")
            }
            (Err(error), msg) => debug!(%to, kind = msg.kind(), %error, "message not sent"),
            (Ok(()), _) => {}
        }
    }

    /// Sends a KVS request to its thread's direct endpoint, if the role
    /// names one; `false`: send it over ZeroMQ.
    fn send_direct(&mut self, to: &Address, msg: &Message) -> bool {
        let Some(endpoint) = self.role.direct_endpoint(to) else {
            return false;
        };
        if self.links.is_none() {
            match DirectLinks::new() {
                Ok(links) => self.links = Some(links),
                Err(error) => {
                    warn!(%error, "cannot wait on direct connections; requests go over ZeroMQ");
                    return false;
                }
            }
        }
        let Some(links) = self.links.as_mut() else {
            return false;
        };
        links.send(endpoint, to, msg, &mut self.sender)
    }

    /// Hands the role up to [`DELIVERY_BATCH`] messages `next` takes,
    /// sending what it queued every [`FLUSH_EVERY`] and at the end;
    /// whether any was handed.
    fn deliver(&mut self, mut next: impl FnMut(&mut Self) -> Option<Message>) -> bool {
        let mut delivered = false;
        for n in 1..=DELIVERY_BATCH {
            let Some(msg) = next(self) else {
                break;
            };
            self.handle(Input::Message(msg));
            delivered = true;
            if n % FLUSH_EVERY == 0 {
                self.flush();
            }
        }
        self.flush();
        delivered
    }

    /// Answers the client requests the receiver refused.
    fn send_refusals(&mut self) {
        while let Some((to, refusal)) = self.receiver.take_refusal() {
            if let Err(error) = self.sender.send(&to, &refusal) {
                debug!(%to, %error, "refusal not sent");
            }
        }
    }

    /// Steps the role with `input`; what it queued is sent by the next
    /// [`ZmqDriver::flush`].
    fn handle(&mut self, input: Input) {
        let stats = self.stats();
        if stats != self.reported {
            self.reported = stats;
            self.role.observe_transport(stats);
        }
        self.role.step(clock::now(), input, &mut self.outbox);
    }
}

impl<R: Role> Driver for ZmqDriver<R> {
    type Error = TransportError;

    fn now(&self) -> Time {
        clock::now()
    }

    fn step(&mut self, max_wait: Duration) -> Result<Step, TransportError> {
        if self.stopped {
            return Ok(Step::Stopped);
        }
        let now = clock::now();
        let mut wait = max_wait;
        if let Some(due) = self.role.next_tick() {
            if due <= now {
                let started = Instant::now();
                self.handle(Input::Tick);
                self.flush();
                self.count_busy(started);
                return Ok(Step::Ticked);
            }
            wait = wait.min(due.saturating_since(now));
        }
        if self.direct.as_ref().is_some_and(DirectServer::has_work) || !self.answers.is_empty() {
            wait = Duration::ZERO;
        }
        let (control, inbox) = (&self.control, &self.receiver.socket);
        let fds = [
            self.direct.as_ref().map(DirectServer::fd),
            self.links.as_ref().map(DirectLinks::fd),
        ];
        let [stop, ready, woken, connections, answered] = match &self.wake {
            Some(wake) => poll_readable([control, inbox, wake], fds, wait)?,
            None => poll_readable([control, inbox], fds, wait)?,
        };
        if stop {
            self.stopped = true;
            return Ok(Step::Stopped);
        }
        let mut ticked = false;
        if let Some(wake) = self.wake.as_ref().filter(|_| woken) {
            let mut frame = zmq::Message::new();
            while wake.recv(&mut frame, zmq::DONTWAIT).is_ok() {}
            let started = Instant::now();
            self.handle(Input::Tick);
            self.flush();
            self.count_busy(started);
            ticked = true;
        }
        let mut delivered = false;
        if ready {
            let started = Instant::now();
            for n in 1..=DELIVERY_BATCH {
                match self.receiver.try_recv()? {
                    Some(msg) => {
                        self.handle(Input::Message(msg));
                        delivered = true;
                    }
                    None => break,
                }
                if n % FLUSH_EVERY == 0 {
                    self.flush();
                }
            }
            self.flush();
            self.send_refusals();
            self.count_busy(started);
        }
        if answered || !self.answers.is_empty() {
            let started = Instant::now();
            if let Some(links) = self.links.as_mut().filter(|_| answered) {
                links.take_up(&mut self.receiver, &mut self.answers);
            }
            delivered |= self.deliver(|d| d.answers.pop_front());
            self.count_busy(started);
        }
        if connections || self.direct.as_ref().is_some_and(DirectServer::has_work) {
            let started = Instant::now();
            if let Some(direct) = self.direct.as_mut() {
                direct.take_up(&mut self.receiver);
            }
            delivered |= self.deliver(|d| d.direct.as_mut().and_then(DirectServer::next_request));
            self.send_refusals();
            self.count_busy(started);
        }
        Ok(if delivered {
            Step::Delivered
        } else if ticked {
            Step::Ticked
        } else {
            Step::Idle
        })
    }
}

/// A received frame, owned by the values decoded out of it.
struct Frame(zmq::Message);

// SAFETY: the frame is owned by this value alone and only read from here
// on; a ZeroMQ message's memory may be read and released from any thread
// (`zmq_msg_close` is not tied to the thread that received it).
unsafe impl Send for Frame {}
unsafe impl Sync for Frame {}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsMut<[u8]> for Frame {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}
