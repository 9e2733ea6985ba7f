//! The direct path: clients' requests to storage threads over plain TCP,
//! answered on the connection they came on.
//!
//! A request over ZeroMQ crosses four threads (the client's, its ZeroMQ
//! I/O thread, the server's I/O thread, the worker) and a reply the same
//! four back. On the direct path a client thread writes its sealed frame to
//! a TCP connection the worker thread itself polls (beside its ZeroMQ
//! socket, in the same wait), and the worker writes the answer back on that
//! connection: two threads, as a request to Redis crosses.
//!
//! Frames are the protocol's sealed frames, each after its length (a `u32`,
//! little endian); they are opened, checked and counted by the worker's own
//! [`Receiver`] (its keys, its replay guard, its counters), so a frame is
//! trusted on this path exactly as much as on the other. Only a client's
//! requests to a storage thread may come this way
//! ([`Message::direct_reply_to`]); anything else is counted as malformed and
//! dropped, and a connection that sends a length beyond the receiver's
//! largest frame is closed.
//!
//! Inside the worker's process a request taken on a connection carries the
//! address `direct://<slot>.<generation>` of that connection instead of the
//! reply address it was sent with: whatever the role answers there goes
//! back on it, and to nobody else (a client cannot have another's answers
//! sent to its connection). A connection closed is forgotten with its
//! generation: late answers for it are dropped, and the client retries.
//!
//! Nodes learn where each thread serves this from the cluster state
//! ([`anna::ids::NodeInfo::direct`]); everything else (gossip, the compute
//! tier, the routers) stays on ZeroMQ.

use crate::socket::{Receiver, Sender, TransportError};
use anna::lattice::lww::in_frame;
use anna::protocol::{Address, Message};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The scheme of the reply addresses that name a direct connection inside
/// the process that took its requests.
pub const SCHEME: &str = "direct://";
/// How many connections one worker thread keeps; more are refused (closed
/// at once) and counted.
pub const MAX_CONNECTIONS: usize = 4096;
/// How many answer bytes a connection may have waiting for a client that
/// does not read them before it is closed.
pub const MAX_UNSENT: usize = 256 << 20;
/// How long an endpoint that could not be reached, or whose connection
/// failed, is left alone (its requests go over ZeroMQ meanwhile).
pub const UNREACHABLE_FOR: Duration = Duration::from_secs(2);
/// The largest sealing buffer a direct endpoint keeps between answers.
const KEPT_FRAME: usize = 1 << 20;
/// The most requests taken from connections and waiting for the role.
pub const MAX_TAKEN: usize = 1024;
/// How much a read takes from a connection at a time.
const READ_CHUNK: usize = 64 << 10;

const LISTENER: Token = Token(usize::MAX);

/// The `host:port` of a `tcp://host:port` address (`*` as port 0).
pub fn socket_addr(address: &Address) -> io::Result<SocketAddr> {
    let rest = address.as_str().strip_prefix("tcp://").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a direct endpoint is tcp://host:port, not {address}"),
        )
    })?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("no port in {address}"))
    })?;
    let port = if port == "*" { "0" } else { port };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port.parse::<u16>().map_err(io::Error::other)?)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{address} resolves to nothing"),
            )
        })
}

/// Frames arriving on a stream: bytes read, cut at the lengths. Reads go
/// into the buffer's spare capacity: a large frame's room is reserved
/// once, never zeroed.
#[derive(Default)]
struct FrameReader {
    /// The bytes read and not yet taken (from `at`).
    buf: Vec<u8>,
    /// Where the next frame's length starts.
    at: usize,
    /// The length the frame at `at` needs in all, once known.
    want: usize,
}

/// Why a connection ends.
enum Ended {
    /// The peer closed it, or it failed.
    Closed(io::Error),
    /// The peer announced a frame larger than this end accepts.
    Oversized(usize),
}

impl FrameReader {
    /// Reads what the stream `fd` has, until a read comes back short (the
    /// stream's queue is empty then: any later byte is a new readiness) or
    /// would block. `Err` when the stream ended.
    fn fill(&mut self, fd: RawFd) -> Result<(), Ended> {
        loop {
            self.make_room();
            let spare = self.buf.spare_capacity_mut();
            let room = spare.len();
            // SAFETY: read(2) writes at most `room` bytes into the spare
            // capacity, which this buffer owns, and reports how many.
            let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), room) };
            match usize::try_from(n) {
                Ok(0) => return Err(Ended::Closed(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => {
                    // SAFETY: the `n` bytes after the old length were
                    // written by the read just above.
                    unsafe { self.buf.set_len(self.buf.len() + n) };
                    if n < room {
                        return Ok(());
                    }
                }
                Err(_) => {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::WouldBlock => return Ok(()),
                        io::ErrorKind::Interrupted => {}
                        _ => return Err(Ended::Closed(e)),
                    }
                }
            }
        }
    }

    /// Reads what the stream `fd` has and opens every whole frame with
    /// `receiver` (a client's end: answers), to the end of `out`. An
    /// error: the stream is done (what arrived before is in `out`).
    fn receive(
        &mut self,
        fd: RawFd,
        receiver: &mut Receiver,
        out: &mut VecDeque<Message>,
    ) -> io::Result<()> {
        let max = crate::socket::max_message_bytes();
        let mut ended = self.fill(fd).err();
        loop {
            match self.next_frame(max) {
                Ok(Some(frame)) => receiver.open_other(frame, out),
                Ok(None) => break,
                Err(e) => {
                    ended = Some(e);
                    break;
                }
            }
        }
        match ended {
            None => Ok(()),
            Some(Ended::Closed(e)) => Err(e),
            Some(Ended::Oversized(len)) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("an answer of {len} bytes announced (at most {max})"),
            )),
        }
    }

    /// Forgets the frames taken once none is left, moves the unread bytes
    /// to the front when the room behind them runs short, and reserves
    /// room for the frame being read.
    fn make_room(&mut self) {
        if self.at > 0 && self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        }
        let room = self.buf.capacity() - self.buf.len();
        if room >= READ_CHUNK / 2 && self.buf.capacity() >= self.at + self.want {
            return;
        }
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        let needed = (self.buf.len() + READ_CHUNK).max(self.want);
        self.buf.reserve(needed - self.buf.len());
    }

    /// The next whole frame read, if any; a length beyond `max` ends the
    /// stream. A large frame that ends the bytes read is handed over with
    /// the buffer, not copied (its large values stay slices of it).
    fn next_frame(&mut self, max: usize) -> Result<Option<DirectFrame<'_>>, Ended> {
        if self.at > 0 && self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        }
        let Some(prefix) = self.buf.get(self.at..self.at + 4) else {
            self.want = 0;
            return Ok(None);
        };
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len > max {
            return Err(Ended::Oversized(len));
        }
        let start = self.at + 4;
        if self.buf.len() < start + len {
            self.want = 4 + len;
            return Ok(None);
        }
        self.want = 0;
        if len >= in_frame::MIN_SLICED && start + len == self.buf.len() {
            self.at = 0;
            let buf = std::mem::take(&mut self.buf);
            return Ok(Some(DirectFrame::Owned(Window {
                buf,
                range: start..start + len,
            })));
        }
        self.at = start + len;
        Ok(Some(DirectFrame::Borrowed(
            &mut self.buf[start..start + len],
        )))
    }
}

/// A frame read from a direct connection: in the reader's buffer, or the
/// buffer itself when a large frame ended what was read.
pub enum DirectFrame<'a> {
    Borrowed(&'a mut [u8]),
    Owned(Window),
}

/// A part of a buffer, owned: a large frame handed over with the buffer
/// it was read into.
pub struct Window {
    buf: Vec<u8>,
    range: std::ops::Range<usize>,
}

impl AsRef<[u8]> for Window {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

impl AsMut<[u8]> for Window {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.range.clone()]
    }
}

/// Frames leaving on a stream: written at once as far as the stream takes
/// them, the rest kept until it is writable again.
#[derive(Default)]
struct FrameWriter {
    unsent: Vec<u8>,
    at: usize,
}

impl FrameWriter {
    /// Writes `frame` after its length, after what is still unsent. What
    /// the stream does not take at once waits; `frame`'s buffer itself
    /// when nothing else waited (a large answer is not copied to wait).
    fn send(&mut self, stream: &mut impl Write, frame: &mut Vec<u8>) -> io::Result<()> {
        let len = u32::try_from(frame.len()).map_err(io::Error::other)?;
        let prefix = len.to_le_bytes();
        if self.pending() {
            self.unsent.extend_from_slice(&prefix);
            self.unsent.extend_from_slice(frame);
        } else {
            let written = loop {
                // (A Rust binary and CPython both ignore SIGPIPE, which
                // writev(2) to a reset connection would raise.)
                match stream.write_vectored(&[IoSlice::new(&prefix), IoSlice::new(frame)]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break 0,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            if written == 4 + frame.len() {
                return Ok(());
            }
            self.unsent.clear();
            if written >= 4 {
                std::mem::swap(&mut self.unsent, frame);
                self.at = written - 4;
            } else {
                self.unsent.extend_from_slice(&prefix[written..]);
                self.unsent.extend_from_slice(frame);
                self.at = 0;
            }
        }
        if self.unsent.len() - self.at > MAX_UNSENT {
            return Err(io::Error::other("the peer does not read its answers"));
        }
        self.flush(stream)
    }

    /// Writes what is unsent, as far as the stream takes it.
    fn flush(&mut self, stream: &mut impl Write) -> io::Result<()> {
        while self.at < self.unsent.len() {
            match stream.write(&self.unsent[self.at..]) {
                Ok(n) => self.at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.at = 0;
        if self.unsent.capacity() > KEPT_FRAME {
            self.unsent = Vec::new();
        } else {
            self.unsent.clear();
        }
        Ok(())
    }

    fn pending(&self) -> bool {
        self.at < self.unsent.len()
    }
}

/// One client's connection to a worker thread.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    /// `direct://<slot>.<generation>`: what its requests carry as their
    /// reply address inside the process.
    reply_to: Address,
    reader: FrameReader,
    writer: FrameWriter,
    /// In the server's `ready` queue.
    queued: bool,
}

/// A worker thread's direct endpoint: the listening socket, the clients'
/// connections, and the requests taken from them, for its driver
/// ([`crate::ZmqDriver::serve_direct`]).
pub struct DirectServer {
    poll: Poll,
    events: Events,
    listener: TcpListener,
    address: Address,
    slots: Vec<Option<Connection>>,
    free: Vec<usize>,
    generation: u64,
    /// Requests taken and not yet handed to the role.
    taken: VecDeque<Message>,
    /// Connections with bytes to take, in turn.
    ready: VecDeque<usize>,
    opened: VecDeque<Message>,
    frame: Vec<u8>,
    refused_connections: u64,
    /// Requests taken, in all.
    requests: u64,
}

impl DirectServer {
    /// Listens at `address` (`tcp://host:port`; port `*` picks a free one,
    /// which [`DirectServer::address`] then names).
    pub fn bind(address: &Address) -> io::Result<Self> {
        let at = socket_addr(address)?;
        let mut listener = TcpListener::bind(at)?;
        let bound = listener.local_addr()?;
        let host = address
            .as_str()
            .strip_prefix("tcp://")
            .and_then(|r| r.rsplit_once(':'))
            .map_or_else(|| bound.ip().to_string(), |(h, _)| h.to_string());
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(DirectServer {
            poll,
            events: Events::with_capacity(256),
            listener,
            address: Address(format!("tcp://{host}:{}", bound.port())),
            slots: Vec::new(),
            free: Vec::new(),
            generation: 0,
            taken: VecDeque::new(),
            ready: VecDeque::new(),
            opened: VecDeque::new(),
            frame: Vec::new(),
            refused_connections: 0,
            requests: 0,
        })
    }

    /// Where clients connect.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// A descriptor readable whenever a connection has something to take
    /// up, for the driver's wait.
    pub fn fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }

    /// How many clients are connected.
    pub fn connections(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// How many requests have been taken, in all.
    pub fn taken(&self) -> u64 {
        self.requests
    }

    /// Whether requests taken are waiting for the role, or connections
    /// have bytes to take once it has room.
    pub fn has_work(&self) -> bool {
        !self.taken.is_empty() || !self.ready.is_empty()
    }

    /// The next request taken, its reply address naming its connection.
    pub fn next_request(&mut self) -> Option<Message> {
        self.taken.pop_front()
    }

    /// Takes up what the connections have: new clients, requests (opened
    /// and checked by `receiver`), answers that can now leave. Never waits.
    ///
    /// At most [`MAX_TAKEN`] requests wait for the role: past that, a
    /// connection's bytes stay in its socket (its client's sends then wait,
    /// as on a full ZeroMQ queue), and the connection is remembered as
    /// ready, to be read once the role has taken up what waits.
    pub fn take_up(&mut self, receiver: &mut Receiver) {
        self.poll_ready();
        while self.taken.len() < MAX_TAKEN {
            let Some(slot) = self.ready.pop_front() else {
                break;
            };
            if self.read(slot, receiver) {
                self.ready.push_back(slot);
            } else if let Some(Some(conn)) = self.slots.get_mut(slot) {
                conn.queued = false;
            }
        }
    }

    /// Takes the readiness the descriptor reports: new clients accepted,
    /// answers waiting written, readable connections queued in `ready`.
    fn poll_ready(&mut self) {
        match self.poll.poll(&mut self.events, Some(Duration::ZERO)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(e) => {
                warn!(address = %self.address, error = %e, "direct endpoint: poll failed");
                return;
            }
        }
        // The events are taken out while they are handled (no copy of
        // them allocated per wake-up) and put back for the next poll.
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for event in events.iter() {
            let (token, readable, writable) = (
                event.token(),
                event.is_readable() || event.is_read_closed(),
                event.is_writable(),
            );
            if token == LISTENER {
                self.accept();
                continue;
            }
            if writable {
                self.flush(token.0);
            }
            if let Some(Some(conn)) = self.slots.get_mut(token.0).filter(|_| readable) {
                if !conn.queued {
                    conn.queued = true;
                    self.ready.push_back(token.0);
                }
            }
        }
        self.events = events;
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    if self.connections() >= MAX_CONNECTIONS {
                        self.refused_connections += 1;
                        if self.refused_connections.is_power_of_two() {
                            warn!(address = %self.address, %peer, max = MAX_CONNECTIONS,
                                  n = self.refused_connections, "direct endpoint: too many connections; closed");
                        }
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let slot = self.free.pop().unwrap_or_else(|| {
                        self.slots.push(None);
                        self.slots.len() - 1
                    });
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, Token(slot), interest)
                    {
                        warn!(address = %self.address, error = %e, "direct endpoint: cannot watch a connection");
                        self.free.push(slot);
                        continue;
                    }
                    self.generation += 1;
                    debug!(address = %self.address, %peer, slot, "direct connection opened");
                    self.slots[slot] = Some(Connection {
                        stream,
                        peer,
                        reply_to: Address(format!("{SCHEME}{slot}.{}", self.generation)),
                        reader: FrameReader::default(),
                        writer: FrameWriter::default(),
                        queued: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors, say: the rest wait in the backlog.
                    warn!(address = %self.address, error = %e, "direct endpoint: accept failed");
                    return;
                }
            }
        }
    }

    /// Takes the requests connection `slot` has, reading its socket only
    /// once the frames already read are taken. `true`: it may have more,
    /// left for when the role has room.
    fn read(&mut self, slot: usize, receiver: &mut Receiver) -> bool {
        let max = crate::socket::max_message_bytes();
        let Some(Some(conn)) = self.slots.get_mut(slot) else {
            return false;
        };
        let mut ended = None;
        let mut filled = false;
        // Frames read before an end are taken all the same.
        loop {
            if self.taken.len() >= MAX_TAKEN {
                return true;
            }
            let frame = match conn.reader.next_frame(max) {
                Ok(Some(frame)) => frame,
                Ok(None) if !filled && ended.is_none() => {
                    filled = true;
                    ended = conn.reader.fill(conn.stream.as_raw_fd()).err();
                    continue;
                }
                Ok(None) => break,
                Err(e) => {
                    ended = Some(e);
                    break;
                }
            };
            receiver.open_other(frame, &mut self.opened);
            for mut msg in self.opened.drain(..) {
                match msg.direct_reply_to() {
                    Some(reply_to) => {
                        *reply_to = conn.reply_to.clone();
                        self.requests += 1;
                        self.taken.push_back(msg);
                    }
                    None => receiver.count_malformed(&format_args!(
                        "a {} on a direct connection, which takes clients' requests only",
                        msg.kind()
                    )),
                }
            }
        }
        match ended {
            None => {}
            Some(Ended::Closed(e)) => {
                debug!(address = %self.address, peer = %conn.peer, error = %e, "direct connection closed");
                self.close(slot);
            }
            Some(Ended::Oversized(len)) => {
                receiver.count_malformed(&format_args!(
                    "a frame of {len} bytes announced (at most {max}); connection closed"
                ));
                self.close(slot);
            }
        }
        false
    }

    fn flush(&mut self, slot: usize) {
        let Some(Some(conn)) = self.slots.get_mut(slot) else {
            return;
        };
        if let Err(e) = conn.writer.flush(&mut conn.stream) {
            debug!(address = %self.address, peer = %conn.peer, error = %e, "direct connection failed");
            self.close(slot);
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(mut conn) = self.slots.get_mut(slot).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.free.push(slot);
        }
    }

    /// Whether `to` names a connection of a direct endpoint.
    pub fn names_connection(to: &Address) -> bool {
        to.as_str().starts_with(SCHEME)
    }

    /// Sends `msg` on the connection `to` names, sealed by `sender`. An
    /// answer for a connection that has closed since is dropped (its
    /// client retries), and so is one that cannot be sealed.
    pub fn send(
        &mut self,
        to: &Address,
        msg: &Message,
        sender: &mut Sender,
    ) -> Result<(), TransportError> {
        let slot = (to.as_str().strip_prefix(SCHEME))
            .and_then(|name| name.split_once('.'))
            .and_then(|(s, _)| s.parse::<usize>().ok());
        let conn = slot.and_then(|s| self.slots.get_mut(s)?.as_mut().map(|c| (s, c)));
        let Some((slot, conn)) = conn.filter(|(_, c)| c.reply_to == *to) else {
            return Err(TransportError::Gone {
                address: to.clone(),
            });
        };
        sender.seal(to, msg, &mut self.frame)?;
        let sent = conn.writer.send(&mut conn.stream, &mut self.frame);
        if self.frame.capacity() > KEPT_FRAME {
            // A large answer's buffer is not kept for the small ones.
            self.frame = Vec::new();
        }
        if let Err(e) = sent {
            debug!(address = %self.address, peer = %conn.peer, error = %e, "direct connection failed");
            self.close(slot);
            return Err(TransportError::Gone {
                address: to.clone(),
            });
        }
        Ok(())
    }
}

impl Drop for DirectServer {
    fn drop(&mut self) {
        if self.connections() > 0 {
            info!(address = %self.address, connections = self.connections(), "direct endpoint closed");
        }
    }
}

/// A client's connection to one worker thread's direct endpoint.
pub struct DirectLink {
    stream: std::net::TcpStream,
    address: Address,
    reader: FrameReader,
    writer: FrameWriter,
    /// The longest wait to connect, and for a full connection to take a
    /// request.
    timeout: Duration,
}

impl DirectLink {
    /// Connects to `address` (a thread's direct endpoint), waiting at most
    /// `timeout` (as long as a send waits, later, for a full connection to
    /// take a request: a client's attempt timeout).
    pub fn connect(address: &Address, timeout: Duration) -> io::Result<Self> {
        let stream = std::net::TcpStream::connect_timeout(&socket_addr(address)?, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(DirectLink {
            stream,
            address: address.clone(),
            reader: FrameReader::default(),
            writer: FrameWriter::default(),
            timeout,
        })
    }

    /// The endpoint connected to.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The descriptor to wait on for answers.
    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Sends one sealed frame; waits (at most the link's timeout) only
    /// while the connection's buffers are full. An error: the link is
    /// done.
    pub fn send(&mut self, frame: &mut Vec<u8>) -> io::Result<()> {
        self.writer.send(&mut self.stream, frame)?;
        let until = std::time::Instant::now() + self.timeout;
        while self.writer.pending() {
            let Some(left) = until.checked_duration_since(std::time::Instant::now()) else {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the storage thread takes no more requests",
                ));
            };
            let mut items = [zmq::PollItem::from_fd(self.fd(), zmq::POLLOUT)];
            let millis = i64::try_from(left.as_millis().max(1)).unwrap_or(i64::MAX);
            let _ = zmq::poll(&mut items, millis);
            self.writer.flush(&mut self.stream)?;
        }
        Ok(())
    }

    /// Reads the answers that have arrived, opened and checked by
    /// `receiver`, to the end of `out`. An error: the link is done (what
    /// arrived before is in `out`).
    pub fn receive(
        &mut self,
        receiver: &mut Receiver,
        out: &mut VecDeque<Message>,
    ) -> io::Result<()> {
        self.reader.receive(self.stream.as_raw_fd(), receiver, out)
    }
}

/// Whether `msg` may go over a direct connection: a KVS request, or a
/// batch of them.
pub fn is_request(msg: &Message) -> bool {
    match msg {
        Message::KvsRequest(_) => true,
        Message::Batch(messages) => messages.iter().all(|m| matches!(m, Message::KvsRequest(_))),
        _ => false,
    }
}

/// A driven role's own connections to storage threads' direct endpoints
/// (a cache's, a scheduler's: roles with a KVS client), for its driver.
/// Nothing here waits: a connection is made without waiting for it, a
/// request waits in its buffer until the connection takes it, answers are
/// read when the driver's poll says so. A connection that fails is
/// dropped (its requests time out and are retried, as lost messages are),
/// and its endpoint left alone for a while: requests for it go over
/// ZeroMQ meanwhile.
pub struct DirectLinks {
    poll: Poll,
    events: Events,
    links: Vec<Option<Link>>,
    unreachable: HashMap<Address, Instant>,
    frame: Vec<u8>,
}

struct Link {
    endpoint: Address,
    stream: TcpStream,
    reader: FrameReader,
    writer: FrameWriter,
}

impl DirectLinks {
    /// No connection yet.
    pub fn new() -> io::Result<Self> {
        Ok(DirectLinks {
            poll: Poll::new()?,
            events: Events::with_capacity(64),
            links: Vec::new(),
            unreachable: HashMap::new(),
            frame: Vec::new(),
        })
    }

    /// A descriptor readable whenever a connection has something to take
    /// up, for the driver's wait.
    pub fn fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }

    /// Sends `msg` (addressed to thread `to`) to `endpoint`, sealed by
    /// `sender`, connecting first if need be. `false`: not sent (the
    /// endpoint is left alone for now, or cannot be reached): send it over
    /// ZeroMQ.
    pub fn send(
        &mut self,
        endpoint: &Address,
        to: &Address,
        msg: &Message,
        sender: &mut Sender,
    ) -> bool {
        let slot = match self
            .links
            .iter()
            .position(|l| l.as_ref().is_some_and(|l| l.endpoint == *endpoint))
        {
            Some(slot) => slot,
            None => match self.connect(endpoint) {
                Some(slot) => slot,
                None => return false,
            },
        };
        if sender.seal(to, msg, &mut self.frame).is_err() {
            // Too large for a frame: ZeroMQ's path says so.
            return false;
        }
        let Some(link) = self.links[slot].as_mut() else {
            return false;
        };
        match link.writer.send(&mut link.stream, &mut self.frame) {
            Ok(()) => true,
            Err(e) => {
                self.drop_link(slot, &e);
                false
            }
        }
    }

    fn connect(&mut self, endpoint: &Address) -> Option<usize> {
        if (self.unreachable.get(endpoint)).is_some_and(|until| Instant::now() < *until) {
            return None;
        }
        let connected = socket_addr(endpoint).and_then(TcpStream::connect);
        let mut stream = match connected {
            Ok(stream) => stream,
            Err(e) => {
                debug!(%endpoint, error = %e, "direct endpoint unreachable; using ZeroMQ");
                self.unreachable
                    .insert(endpoint.clone(), Instant::now() + UNREACHABLE_FOR);
                return None;
            }
        };
        let _ = stream.set_nodelay(true);
        let slot = self
            .links
            .iter()
            .position(Option::is_none)
            .unwrap_or_else(|| {
                self.links.push(None);
                self.links.len() - 1
            });
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(slot), interest)
        {
            debug!(%endpoint, error = %e, "cannot watch a direct connection; using ZeroMQ");
            return None;
        }
        self.unreachable.remove(endpoint);
        self.links[slot] = Some(Link {
            endpoint: endpoint.clone(),
            stream,
            reader: FrameReader::default(),
            writer: FrameWriter::default(),
        });
        Some(slot)
    }

    fn drop_link(&mut self, slot: usize, error: &dyn std::fmt::Display) {
        if let Some(mut link) = self.links.get_mut(slot).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut link.stream);
            debug!(endpoint = %link.endpoint, %error, "direct connection lost; using ZeroMQ for a while");
            self.unreachable
                .insert(link.endpoint, Instant::now() + UNREACHABLE_FOR);
        }
    }

    /// Takes up what the connections have: requests waiting written as
    /// far as they take them, answers (opened and checked by `receiver`)
    /// put at the end of `out`. Never waits.
    pub fn take_up(&mut self, receiver: &mut Receiver, out: &mut VecDeque<Message>) {
        match self.poll.poll(&mut self.events, Some(Duration::ZERO)) {
            Ok(()) => {}
            Err(e) => {
                debug!(error = %e, "direct connections: poll failed");
                return;
            }
        }
        // As in `DirectServer::poll_ready`: the events taken out while
        // they are handled, put back for the next poll.
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for event in events.iter() {
            let (slot, readable, writable) = (
                event.token().0,
                event.is_readable() || event.is_read_closed() || event.is_error(),
                event.is_writable(),
            );
            let Some(link) = self.links.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            let mut failed: Option<io::Error> = None;
            if writable {
                failed = link.writer.flush(&mut link.stream).err();
            }
            if readable && failed.is_none() {
                let fd = link.stream.as_raw_fd();
                failed = link.reader.receive(fd, receiver, out).err();
            }
            if let Some(e) = failed.or_else(|| link.stream.take_error().ok().flatten()) {
                self.drop_link(slot, &e);
            }
        }
        self.events = events;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn frame(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Frames of every size, written while the other end reads as it can,
    /// come out whole and in order: split across reads, several in one
    /// read, a large one handed over with its buffer or copied out of it.
    #[test]
    fn frames_cross_whole_and_in_order_whatever_the_stream_takes_at_once() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let sizes = [10, 300_000, 5, 70_000, 0, 1 << 20, 3];
        let sent: Vec<Vec<u8>> = (sizes.iter().enumerate())
            .map(|(i, &n)| frame(n, i as u8))
            .collect();
        let mut writer = FrameWriter::default();
        let mut reader = FrameReader::default();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut owned = 0;
        let mut next = 0;
        for _ in 0..100_000 {
            if next < sent.len() && !writer.pending() {
                let mut buf = sent[next].clone();
                writer.send(&mut a, &mut buf).unwrap();
                next += 1;
            }
            writer.flush(&mut a).unwrap();
            match reader.fill(b.as_raw_fd()) {
                Ok(()) => {}
                Err(Ended::Closed(e)) => panic!("closed: {e}"),
                Err(Ended::Oversized(n)) => panic!("oversized {n}"),
            }
            while let Some(f) = reader.next_frame(64 << 20).ok().flatten() {
                match f {
                    DirectFrame::Borrowed(f) => got.push(f.to_vec()),
                    DirectFrame::Owned(w) => {
                        owned += 1;
                        got.push(w.as_ref().to_vec());
                    }
                }
            }
            if got.len() == sent.len() {
                break;
            }
        }
        assert_eq!(got.len(), sent.len());
        for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
            assert!(g == s, "frame {i} ({} bytes) changed", s.len());
        }
        assert!(
            owned >= 1,
            "a large frame ending the bytes read is handed over"
        );
    }

    #[test]
    fn a_length_beyond_the_limit_ends_the_stream() {
        let mut reader = FrameReader {
            buf: 1000u32.to_le_bytes().to_vec(),
            ..FrameReader::default()
        };
        assert!(matches!(
            reader.next_frame(999),
            Err(Ended::Oversized(1000))
        ));
    }
}
