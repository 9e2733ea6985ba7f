//! The monitor: collects statistics from both tiers and scales each on its
//! own through a provider (local processes or Kubernetes).
//!
//! # Layout
//!
//! Nothing yet. This crate is reserved for the monitor issue; it builds and
//! exports nothing so that no other crate can depend on behaviour it lacks.
