//! Load generators and side-by-side comparisons with peers (Redis, Ray,
//! Dask), run on the same machine in the same invocation.
//!
//! # Layout
//!
//! Nothing yet: the KVS benchmark against Redis arrives with the KVS issue,
//! and figures go to `benches/RESULTS.md` with the command that produced
//! them. Until then `squall ping` measures the messaging floor.
