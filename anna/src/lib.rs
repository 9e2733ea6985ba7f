//! # anna — Squall's storage tier
//!
//! An Anna-style key-value store: every value is a lattice, every write is a
//! merge, replicas converge by gossip, and nothing on the data path
//! coordinates. This crate is the bottom of the workspace and its pure
//! core: no socket, no clock, no threads (`tests/layers.rs` checks it). The
//! ZeroMQ driver, sockets, the blocking client and the wall clock are the
//! `squall-transport` crate on top. The compute tier and the monitor talk
//! to the KVS only through its protocol and client.
//!
//! # Layout
//!
//! - [`client`]: the KVS client as a state machine
//!   ([`ClientCore`](client::ClientCore)).
//! - [`cluster`]: [`ClusterState`](cluster::ClusterState), membership and
//!   replication overrides as a lattice, and the [`Placement`](cluster::Placement)
//!   of keys on nodes and threads it implies.
//! - [`config`]: helpers shared by every role's settings, and the
//!   [`Limits`](config::Limits) every process enforces.
//! - [`histogram`]: [`Histogram`](histogram::Histogram), fixed log-spaced
//!   latency buckets every role records into and the monitor adds up.
//! - [`ids`]: keys, addresses, request ids and node identities: a leaf
//!   every other module names things with (the protocol and the cluster
//!   state depend on it, not on each other).
//! - [`kvs`]: the storage worker, one thread's shard as a state machine.
//! - [`lattice`]: the [`Lattice`](lattice::Lattice) trait, every lattice type,
//!   [`LatticeValue`](lattice::LatticeValue) (the wire enum) and the law
//!   checker. Pure data: no socket, clock or randomness.
//! - [`protocol`]: every message of the system, its versioned encoding and a
//!   decoder that returns an error, never panics, on any bytes. Pure data.
//! - [`ring`]: consistent hashing with virtual nodes (global and local
//!   rings) and the stable key hash.
//! - [`role`]: the state-machine shape of a node role
//!   ([`Role`](role::Role): message and time in, messages out) and the
//!   [`Driver`](role::Driver) trait its drivers implement.
//! - [`sim`]: [`Sim`](sim::Sim), the seeded deterministic simulator: many
//!   roles in one process, virtual time, a lossy, duplicating, reordering,
//!   partitionable network and crashes; a failing seed replays exactly.
//! - [`router`]: the routing tier: placements of keys, and membership.
//! - [`time`]: [`Time`](time::Time), the instant every handler is given.

pub mod client;
pub mod cluster;
pub mod config;
pub mod histogram;
pub mod ids;
pub mod kvs;
pub mod lattice;
pub mod protocol;
pub mod ring;
pub mod role;
pub mod router;
pub mod shared;
pub mod sim;
pub mod time;
