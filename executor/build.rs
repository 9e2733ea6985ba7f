//! Links the embedded CPython with an rpath to the library PyO3 built
//! against, so the binary does not silently load another `libpython` of the
//! same soname (see ARCHITECTURE.md, "Embedding CPython").

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
