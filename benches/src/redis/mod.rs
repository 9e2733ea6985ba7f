//! The Redis backend: the peer a user would pick instead of Squall's KVS.
//!
//! # Layout
//!
//! - [`resp`]: RESP2 encoding and a parser that never panics. Pure.
//! - [`client`]: [`RedisConnection`], one blocking `TcpStream` speaking it
//!   (`GET`, `SET`, `PING`, pipelined `SET`s for preloading).
//! - [`server`]: [`RedisServer`], a `redis-server` child process on a free
//!   loopback port, stopped by its `Drop`.

pub mod client;
pub mod resp;
pub mod server;

pub use client::RedisConnection;
pub use server::{Persistence, RedisServer};

use crate::backend::{BackendFactory, KvBackend, Result};
use std::net::SocketAddr;
use std::time::Duration;

/// How long a Redis request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections to one Redis server, which it may own.
pub struct RedisFactory {
    name: String,
    addr: SocketAddr,
    /// The server this factory started, stopped when the factory drops.
    server: Option<RedisServer>,
}

impl RedisFactory {
    /// Starts a private `redis-server` (`binary` is a path or a name on
    /// `PATH`) and connects to it; the server stops when the factory drops.
    pub fn start(binary: &str) -> Result<Self> {
        let server = RedisServer::start(binary)?;
        Ok(RedisFactory {
            name: "redis".to_string(),
            addr: server.addr(),
            server: Some(server),
        })
    }

    /// As [`RedisFactory::start`], the server keeping `persistence` in a
    /// fresh directory under the system temp dir; named `redis (aof
    /// always)` or `redis (aof everysec)` in tables (`redis` without
    /// persistence).
    pub fn start_with(binary: &str, persistence: Persistence) -> Result<Self> {
        let server = RedisServer::start_with(binary, persistence, None)?;
        Ok(RedisFactory {
            name: match persistence {
                Persistence::None => "redis".to_string(),
                p => format!("redis (aof {})", p.label()),
            },
            addr: server.addr(),
            server: Some(server),
        })
    }

    /// Connects to a server someone else runs.
    pub fn external(addr: SocketAddr) -> Self {
        RedisFactory {
            name: "redis".to_string(),
            addr,
            server: None,
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server process this factory started, if it started one.
    pub fn server(&self) -> Option<&RedisServer> {
        self.server.as_ref()
    }
}

impl BackendFactory for RedisFactory {
    fn name(&self) -> &str {
        &self.name
    }

    fn connect(&self) -> Result<Box<dyn KvBackend + Send>> {
        Ok(Box::new(RedisConnection::connect(
            self.addr,
            REQUEST_TIMEOUT,
        )?))
    }

    fn server_pids(&self) -> Vec<u32> {
        self.server.iter().map(RedisServer::pid).collect()
    }
}
