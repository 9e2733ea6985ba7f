//! A blocking Redis connection: RESP2 over one `TcpStream` with
//! `TCP_NODELAY`, the only file of the Redis backend that touches a socket.

use super::resp::{self, Reply, RespError};
use crate::backend::{BackendError, KvBackend, Result};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The input buffer's starting size; it doubles when a reply outgrows it.
const READ_CHUNK: usize = 16 * 1024;

/// One connection to a Redis server.
pub struct RedisConnection {
    stream: TcpStream,
    timeout: Duration,
    /// Bytes read but not yet parsed are `input[start..end]`.
    input: Vec<u8>,
    start: usize,
    end: usize,
    output: Vec<u8>,
}

impl RedisConnection {
    /// Connects to `addr`; every later read and write fails after
    /// `timeout`.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(RedisConnection {
            stream,
            timeout,
            input: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            output: Vec::new(),
        })
    }

    /// `PING`: succeeds if the server answers `PONG`.
    pub fn ping(&mut self) -> Result<()> {
        match self.request(&[b"PING"])? {
            Reply::Simple(s) if s == "PONG" => Ok(()),
            other => Err(unexpected("PING", other)),
        }
    }

    /// Sends one command and reads its reply.
    pub fn request(&mut self, args: &[&[u8]]) -> Result<Reply> {
        self.output.clear();
        resp::encode_command(args, &mut self.output);
        self.flush()?;
        self.read_reply()
    }

    fn flush(&mut self) -> Result<()> {
        let result = self.stream.write_all(&self.output);
        self.output.clear();
        result.map_err(|e| self.io_error(e))
    }

    fn read_reply(&mut self) -> Result<Reply> {
        loop {
            match resp::parse(&self.input[self.start..self.end]) {
                Ok((reply, used)) => {
                    self.start += used;
                    if self.start == self.end {
                        (self.start, self.end) = (0, 0);
                    }
                    return Ok(reply);
                }
                Err(RespError::Invalid(why)) => return Err(BackendError::Protocol(why)),
                Err(RespError::Incomplete) => self.fill()?,
            }
        }
    }

    /// Reads whatever the socket has (at least one byte) after the unparsed
    /// input, moving that to the front and growing the buffer as needed.
    fn fill(&mut self) -> Result<()> {
        if self.start > 0 {
            self.input.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.input.len() {
            self.input.resize(self.input.len() * 2, 0);
        }
        match self.stream.read(&mut self.input[self.end..]) {
            Ok(0) => Err(BackendError::Io(ErrorKind::UnexpectedEof.into())),
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(self.io_error(e)),
        }
    }

    fn io_error(&self, e: std::io::Error) -> BackendError {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => BackendError::Timeout(self.timeout),
            _ => BackendError::Io(e),
        }
    }
}

impl KvBackend for RedisConnection {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.request(&[b"GET", key.as_bytes()])? {
            Reply::Bulk(value) => Ok(value),
            Reply::Error(e) => Err(BackendError::Server(e)),
            other => Err(unexpected("GET", other)),
        }
    }

    fn put(&mut self, key: &str, value: &[u8]) -> Result<()> {
        check_set(self.request(&[b"SET", key.as_bytes(), value])?)
    }

    /// Pipelines every `GET`, then reads every reply: Redis pipelined.
    fn get_many(&mut self, keys: &[&str]) -> Result<usize> {
        self.output.clear();
        for key in keys {
            resp::encode_command(&[b"GET", key.as_bytes()], &mut self.output);
        }
        self.flush()?;
        let mut missing = 0;
        self.read_replies(keys.len(), |reply| match reply {
            Reply::Bulk(value) => {
                missing += usize::from(value.is_none());
                Ok(())
            }
            Reply::Error(e) => Err(BackendError::Server(e)),
            other => Err(unexpected("GET", other)),
        })?;
        Ok(missing)
    }

    fn put_many(&mut self, items: &[(&str, &[u8])]) -> Result<()> {
        self.put_batch(items)
    }

    /// Pipelines every `SET`, then reads every reply, so a batch costs one
    /// round trip.
    fn put_batch(&mut self, items: &[(&str, &[u8])]) -> Result<()> {
        self.output.clear();
        for (key, value) in items {
            resp::encode_command(&[b"SET", key.as_bytes(), value], &mut self.output);
        }
        self.flush()?;
        self.read_replies(items.len(), check_set)
    }
}

impl RedisConnection {
    /// Reads `n` pipelined replies, each through `check`. All are read
    /// even after an error, keeping the connection in step; the first
    /// error is returned.
    fn read_replies(&mut self, n: usize, mut check: impl FnMut(Reply) -> Result<()>) -> Result<()> {
        let mut first_error = None;
        for _ in 0..n {
            if let Err(e) = self.read_reply().and_then(&mut check) {
                if matches!(e, BackendError::Server(_) | BackendError::Protocol(_)) {
                    first_error.get_or_insert(e);
                } else {
                    return Err(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn check_set(reply: Reply) -> Result<()> {
    match reply {
        Reply::Simple(s) if s == "OK" => Ok(()),
        Reply::Error(e) => Err(BackendError::Server(e)),
        other => Err(unexpected("SET", other)),
    }
}

fn unexpected(command: &str, reply: Reply) -> BackendError {
    let mut shown = format!("{reply:?}");
    if shown.len() > 80 {
        let cut = (0..=80)
            .rev()
            .find(|&i| shown.is_char_boundary(i))
            .unwrap_or(0);
        shown.truncate(cut);
        shown.push('…');
    }
    BackendError::Protocol(format!("unexpected reply to {command}: {shown}"))
}
