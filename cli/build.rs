//! The `squall` binary embeds CPython (its `executor` subcommand): link it
//! with an rpath to the `libpython` PyO3 built against, so it does not
//! silently load another library of the same soname (see ARCHITECTURE.md,
//! "Embedding CPython"). A build script's link
//! arguments apply only to its own package's binaries, so the executor
//! crate's own build script does not cover this one.

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
