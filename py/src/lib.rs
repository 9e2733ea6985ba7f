//! # squall-py — Python values in and out of the KVS
//!
//! What both Python-facing binaries need, compiled into each: the client
//! module `squall._native` (client-py) and the executor, whose functions
//! read and write through their node's cache.
//!
//! - [`values`]: the one conversion between Python objects and
//!   [`anna::lattice::LatticeValue`]s, and the [`values::Writer`] whose
//!   clock and counter totals a write needs.
//! - [`store`]: [`Store`], get, put and delete of Python values against
//!   any [`Kvs`] endpoint (the routed [`squall_transport::Client`], or one
//!   [`squall_transport::Endpoint`]), the network part with the GIL
//!   released.
//! - [`errors`]: a KVS failure as the exception of `squall.errors` a
//!   Python caller catches.
//! - [`memory`]: [`MemoryKvs`], a store in one process's memory that
//!   merges as a storage node does (the local test mode's).
//!
//! The wrapper classes and exceptions are pure Python (`squall.lattices`,
//! `squall.errors`), imported by name, so two compiled copies of this crate
//! in one process (the executor and the client module it may load) agree.

pub mod errors;
pub mod memory;
pub mod store;
pub mod values;

pub use errors::KvsFailure;
pub use memory::MemoryKvs;
pub use store::{lock, parse_ack, Kvs, Store};
