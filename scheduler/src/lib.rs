//! The scheduler of the compute tier: places each call, and each function of
//! a DAG, on the executor whose cache already holds the call's data.
//!
//! # Layout
//!
//! Nothing yet. This crate is reserved for the functions issue; it builds and
//! exports nothing so that no other crate can depend on behaviour it lacks.
