//! The executor of the compute tier: runs user functions (cloudpickled Python
//! through embedded CPython, or WebAssembly through wasmtime) next to the
//! node's cache.
//!
//! # Layout
//!
//! Nothing yet. This crate is reserved for the functions issue; it builds and
//! exports nothing so that no other crate can depend on behaviour it lacks.
