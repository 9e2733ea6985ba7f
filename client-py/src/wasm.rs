//! WebAssembly modules for `register_wasm`: WAT text to binary, and the
//! checks a module must pass before it is stored under a function key.
//!
//! The validator accepts the WebAssembly features the executor's wasmtime
//! 48 enables, as its `Config::features` computes them: WebAssembly 3.0
//! (`WASM3`: the 2.0 features plus tail calls, extended constants, function
//! references, multiple memories, relaxed SIMD and 64-bit memories) less
//! what the executor's build of wasmtime leaves out (its `gc` and
//! `threads` cargo features: GC types, exceptions, shared memories). On top
//! of validity the module must follow Squall's
//! calling convention (client-py/README.md, "WebAssembly functions"):
//!
//! - export `memory`, a 32-bit linear memory (not shared);
//! - export `alloc: (i32) -> i32`;
//! - export the function called (`run` by default): `(i32, i32) -> i64`;
//! - import nothing but the host functions of module `squall`, each with
//!   its own signature.

use wasmparser::types::EntityType;
use wasmparser::{Parser, ValType, Validator, WasmFeatures};

/// The host functions a module may import from module `squall`, with their
/// `(params, results)`.
const HOST_IMPORTS: &[(&str, &[ValType], &[ValType])] = &[
    ("get", &[ValType::I32, ValType::I32], &[ValType::I64]),
    (
        "put",
        &[ValType::I32, ValType::I32, ValType::I32, ValType::I32],
        &[ValType::I32],
    ),
    (
        "send",
        &[ValType::I32, ValType::I32, ValType::I32, ValType::I32],
        &[ValType::I32],
    ),
    ("recv", &[ValType::I32], &[ValType::I64]),
    ("id", &[], &[ValType::I64]),
];

/// The module `squall` imports come from.
pub const HOST_MODULE: &str = "squall";

/// The features the validator accepts: wasmtime 48's defaults, built as
/// the executor builds it (executor/Cargo.toml: without the `gc` and
/// `threads` cargo features, which turn these off).
pub fn features() -> WasmFeatures {
    let mut features = WasmFeatures::WASM3;
    features.set(WasmFeatures::GC_TYPES, false);
    features.set(WasmFeatures::EXCEPTIONS, false);
    features.set(WasmFeatures::THREADS, false);
    features
}

/// `module` as a WebAssembly binary: a binary as it is, WAT text compiled.
/// The error names the line and column of a WAT syntax error.
pub fn to_binary(module: &[u8]) -> Result<Vec<u8>, String> {
    if module.starts_with(b"\0asm") {
        return Ok(module.to_vec());
    }
    if std::str::from_utf8(module).is_err() {
        return Err(
            "not a WebAssembly module: neither a binary (it does not start with \
             the magic bytes \\0asm) nor WAT text (it is not UTF-8)"
                .to_string(),
        );
    }
    wat::parse_bytes(module)
        .map(|b| b.into_owned())
        .map_err(|e| format!("WAT syntax error: {e}"))
}

fn signature(params: &[ValType], results: &[ValType]) -> String {
    let list = |v: &[ValType]| {
        v.iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("({}) -> ({})", list(params), list(results))
}

/// Checks that `binary` is a valid module that follows the calling
/// convention with entry point `export`; the error says why not.
pub fn check(binary: &[u8], export: &str) -> Result<(), String> {
    if Parser::is_component(binary) {
        return Err("a WebAssembly component, not a core module: Squall runs core modules".into());
    }
    let mut validator = Validator::new_with_features(features());
    let types = validator
        .validate_all(binary)
        .map_err(|e| format!("invalid WebAssembly module: {e}"))?;
    let types = types.as_ref();
    let Some(exports) = types.core_exports() else {
        return Err("not a core WebAssembly module".into());
    };
    let exports: Vec<(&str, EntityType)> = exports.collect();
    let find = |name: &str| exports.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
    let func = |name: &str, params: &[ValType], results: &[ValType]| -> Result<(), String> {
        let wanted = signature(params, results);
        match find(name) {
            None => Err(format!(
                "the module does not export function `{name}`: {wanted}"
            )),
            Some(EntityType::Func(id)) | Some(EntityType::FuncExact(id)) => {
                let ty = types[id].unwrap_func();
                if ty.params() == params && ty.results() == results {
                    Ok(())
                } else {
                    Err(format!(
                        "export `{name}` has type {}; it must be {wanted}",
                        signature(ty.params(), ty.results())
                    ))
                }
            }
            Some(_) => Err(format!(
                "export `{name}` is not a function; it must be {wanted}"
            )),
        }
    };
    match find("memory") {
        None => return Err("the module does not export its linear memory as `memory`".into()),
        Some(EntityType::Memory(m)) => {
            if m.memory64 {
                return Err("memory `memory` is 64-bit; Squall passes 32-bit pointers".into());
            }
            if m.shared {
                return Err("memory `memory` is shared; it must be an ordinary memory".into());
            }
        }
        Some(_) => return Err("export `memory` is not a memory".into()),
    }
    func("alloc", &[ValType::I32], &[ValType::I32])?;
    if export.is_empty() {
        return Err("the export to call must be named".into());
    }
    func(export, &[ValType::I32, ValType::I32], &[ValType::I64])?;
    for import in types.core_imports().into_iter().flatten() {
        let (module, name, ty) = import;
        let host = HOST_IMPORTS.iter().find(|(n, _, _)| *n == name);
        let (Some((_, params, results)), true) = (host, module == HOST_MODULE) else {
            let known: Vec<&str> = HOST_IMPORTS.iter().map(|(n, _, _)| *n).collect();
            return Err(format!(
                "the module imports `{module}.{name}`; Squall provides only functions of \
                 module `{HOST_MODULE}`: {}",
                known.join(", ")
            ));
        };
        let wanted = signature(params, results);
        let EntityType::Func(id) = ty else {
            return Err(format!(
                "import `{module}.{name}` must be a function {wanted}"
            ));
        };
        let f = types[id].unwrap_func();
        if f.params() != *params || f.results() != *results {
            return Err(format!(
                "import `{module}.{name}` has type {}; it must be {wanted}",
                signature(f.params(), f.results())
            ));
        }
    }
    Ok(())
}
