//! The native half of the `squall` Python package (PyO3 + maturin).
//!
//! # Layout
//!
//! Nothing yet. The Python client arrives with the functions issue; until
//! then this crate builds and exports nothing.
