//! The per-node cache of the compute tier: a lattice replica of the keys its
//! executors read, kept fresh by the KVS pushing updates of subscribed keys.
//!
//! # Layout
//!
//! Nothing yet. This crate is reserved for the functions issue; it builds and
//! exports nothing so that no other crate can depend on behaviour it lacks.
