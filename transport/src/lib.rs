//! # squall-transport — Squall's roles on real sockets and real time
//!
//! `anna` is the pure core: lattices, the protocol, rings, the cluster
//! state, every role as a state machine, the simulator. It has no socket
//! and reads no clock (its `Cargo.toml` has no `zmq`, and
//! `anna/tests/layers.rs` checks its sources). This crate is the layer on
//! top that touches the world:
//!
//! - [`socket`]: ZeroMQ PUSH/PULL sockets carrying protocol messages
//!   ([`Receiver`], [`Sender`], with `ZMQ_MAXMSGSIZE`), and
//!   [`ZmqDriver`], the real-time driver of every role (the executor's
//!   too, woken by its worker thread).
//! - [`client`]: [`Client`], the KVS client over ZeroMQ with blocking
//!   calls, around `anna::client::ClientCore`.
//! - [`calls`]: [`calls::Calls`], function and DAG calls to schedulers
//!   and their results, with failover between schedulers: the Python
//!   client's and the HTTP gateway's.
//! - [`endpoint`]: [`Endpoint`], plain request/response against one KVS
//!   endpoint (a node's cache: an executor's route to it).
//! - [`direct`]: clients' requests to storage threads over plain TCP,
//!   polled by the worker thread itself and answered on their connection
//!   ([`direct::DirectServer`], [`direct::DirectLink`]).
//! - [`clock`]: the wall clock and fresh ids, for drivers to hand to roles.
//! - [`security`]: the process's frame security (keys, sealing) that every
//!   socket uses.
//! - [`heap`]: the allocator's thresholds for large values.
//! - [`shared`]: large values a node's cache answers in shared memory,
//!   mapped by its executors.

pub mod calls;
pub mod client;
pub mod clock;
pub mod direct;
pub mod endpoint;
pub mod heap;
pub mod security;
pub mod shared;
pub mod socket;

pub use client::Client;
pub use endpoint::Endpoint;
pub use socket::*;
