//! End-to-end tests of WebAssembly functions on a real executor (the
//! harness of `common`): modules written in WAT, called with pickled Python
//! arguments, mixed with Python functions in DAGs, reading and writing keys
//! through the harness's fake cache.

mod common;

use anna::protocol::compute::{CallErrorKind, FunctionCode, Runtime, ValueKind};
use anna::protocol::Message;
use common::{error, pickle, pickle_functions, unpickle, value, Harness};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const PYTHON: &str = r#"
def inc(x):
    return x + 1

def tenfold(y):
    return y * 10

def fetch(key):
    from squall import user
    return user.get(key)

def stash(key, value):
    from squall import user
    user.put(key, value)
"#;

const IMPORTS: &str = r#"
  (import "squall" "get" (func $get (param i32 i32) (result i64)))
  (import "squall" "put" (func $put (param i32 i32 i32 i32) (result i32)))
  (import "squall" "send" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "squall" "recv" (func $recv (param i32) (result i64)))
  (import "squall" "id" (func $id (result i64)))
"#;

/// One page of memory, a bump allocator that grows it, and `$pack`.
const PRELUDE: &str = r#"
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $len)))
    (block $ok
      (br_if $ok (i32.le_u (global.get $next) (i32.mul (memory.size) (i32.const 65536))))
      (drop (memory.grow (i32.add (i32.const 1) (i32.shr_u
        (i32.sub (global.get $next) (i32.mul (memory.size) (i32.const 65536)))
        (i32.const 16))))))
    (local.get $p))
  (func $pack (param $p i32) (param $l i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32))
            (i64.extend_i32_u (local.get $l))))
"#;

/// The first argument of the block at `$ptr`: `(ptr + 8, len at ptr + 4)`.
const FIRST_ARG: &str =
    "(i32.add (local.get $ptr) (i32.const 8)) (i32.load offset=4 (local.get $ptr))";

fn module(body: &str) -> Vec<u8> {
    wat::parse_str(format!("(module {IMPORTS} {PRELUDE} {body})")).expect("valid WAT")
}

fn run(body: &str) -> String {
    format!("(func (export \"run\") (param $ptr i32) (param $len i32) (result i64) {body})")
}

fn wasm(code: Vec<u8>, result: ValueKind) -> FunctionCode {
    FunctionCode {
        runtime: Runtime::Wasm,
        code,
        is_class: false,
        export: String::new(),
        result,
    }
}

/// The WebAssembly functions of the tests, and the Python ones.
fn registered() -> HashMap<String, FunctionCode> {
    let (mut functions, _) = pickle_functions(PYTHON, &["inc", "tenfold", "fetch", "stash"], &[]);
    // Two 8-byte ints at block offsets 8 and 20.
    let add = run("(local $r i32)
        (local.set $r (call $alloc (i32.const 8)))
        (i64.store (local.get $r) (i64.add (i64.load offset=8 (local.get $ptr))
                                           (i64.load offset=20 (local.get $ptr))))
        (call $pack (local.get $r) (i32.const 8))");
    let echo = run(&format!("(call $pack {FIRST_ARG})"));
    let putter = run(&format!(
        "(local $r i32)
        (local.set $r (call $alloc (i32.const 8)))
        (i64.store (local.get $r) (i64.extend_i32_s
            (call $put (i32.const 16) (i32.const 1) {FIRST_ARG})))
        (call $pack (local.get $r) (i32.const 8))"
    ));
    let getter = run(&format!(
        "(local $v i64)
        (local.set $v (call $get {FIRST_ARG}))
        (if (result i64) (i64.eq (local.get $v) (i64.const -1))
          (then (call $pack (i32.const 32) (i32.const 7)))
          (else (local.get $v)))"
    ));
    let talk = run("(local $me i64)
        (local.set $me (call $id))
        (drop (call $send (i32.wrap_i64 (i64.shr_u (local.get $me) (i64.const 32)))
                          (i32.wrap_i64 (local.get $me)) (i32.const 48) (i32.const 4)))
        (call $recv (i32.const 2000))");
    let data =
        r#"(data (i32.const 16) "w") (data (i32.const 32) "missing") (data (i32.const 48) "ping")"#;
    let wasm_functions = [
        ("add", add, ValueKind::Int),
        ("echo", echo.clone(), ValueKind::Bytes),
        ("echo_str", echo.clone(), ValueKind::Str),
        ("echo_float", echo, ValueKind::Float),
        (
            "spin",
            run("(loop $l (br $l)) (i64.const 0)"),
            ValueKind::Bytes,
        ),
        (
            "hungry",
            run(
                "(if (i32.eq (memory.grow (i32.const 2000)) (i32.const -1)) (then unreachable))
                 (i64.const 0)",
            ),
            ValueKind::Bytes,
        ),
        ("trap", run("unreachable"), ValueKind::Bytes),
        ("putter", format!("{putter} {data}"), ValueKind::Int),
        ("getter", format!("{getter} {data}"), ValueKind::Bytes),
        ("talk", format!("{talk} {data}"), ValueKind::Bytes),
    ];
    for (name, body, kind) in wasm_functions {
        functions.insert(name.to_string(), wasm(module(&body), kind));
    }
    functions.insert(
        "garbage".into(),
        wasm(b"\0asm not really".to_vec(), ValueKind::Bytes),
    );
    let no_alloc = wat::parse_str(format!(
        "(module (memory (export \"memory\") 1) {})",
        run("(i64.const 0)")
    ));
    functions.insert("no_alloc".into(), wasm(no_alloc.unwrap(), ValueKind::Bytes));
    let foreign = format!(
        "(module (import \"env\" \"nope\" (func)) {PRELUDE} {})",
        run("(i64.const 0)")
    );
    functions.insert(
        "foreign".into(),
        wasm(wat::parse_str(foreign).unwrap(), ValueKind::Bytes),
    );
    functions
}

#[test]
fn a_wasm_function_adds_two_python_ints() {
    let mut h = Harness::start(registered(), vec![]);
    assert_eq!(value(h.call("add", "((2, 40), {})", 10_000)), "42");
    assert_eq!(value(h.call("add", "((-5, 2), {})", 10_000)), "-3");
}

#[test]
fn arguments_and_results_convert_by_type_and_kind() {
    let mut h = Harness::start(registered(), vec![]);
    assert_eq!(
        value(h.call("echo", "((b'hello',), {})", 10_000)),
        "b'hello'"
    );
    assert_eq!(
        value(h.call("echo", "((bytearray(b'ab'),), {})", 10_000)),
        "b'ab'"
    );
    assert_eq!(
        value(h.call("echo_str", "(('h\\u00e9llo',), {})", 10_000)),
        "'héllo'"
    );
    assert_eq!(value(h.call("echo_float", "((2.5,), {})", 10_000)), "2.5");
    assert_eq!(
        value(h.call("echo", "((7,), {})", 10_000)),
        "b'\\x07\\x00\\x00\\x00\\x00\\x00\\x00\\x00'"
    );
    assert_eq!(value(h.call("echo", "((True,), {})", 10_000)), "b'\\x01'");

    let e = error(h.call("echo", "((None,), {})", 10_000));
    assert_eq!(e.kind, CallErrorKind::BadArguments, "{e:?}");
    assert!(e.message.contains("NoneType"), "{e:?}");
    let e = error(h.call("echo", "((2**70,), {})", 10_000));
    assert_eq!(e.kind, CallErrorKind::BadArguments, "{e:?}");
    let e = error(h.call("echo", "((), {'x': 1})", 10_000));
    assert_eq!(e.kind, CallErrorKind::BadArguments, "{e:?}");
    assert!(e.message.contains("keyword"), "{e:?}");
    let e = error(h.call("echo_str", "((b'\\xff',), {})", 10_000));
    assert_eq!(
        (e.kind, e.type_name.as_str()),
        (CallErrorKind::Remote, "UnicodeDecodeError")
    );
    let e = error(h.call("echo_float", "((b'abc',), {})", 10_000));
    assert_eq!(e.kind, CallErrorKind::Remote, "{e:?}");
    assert!(e.message.contains("8 bytes"), "{e:?}");
}

#[test]
fn a_reference_argument_is_resolved_then_converted() {
    let mut h = Harness::start(registered(), vec![]);
    h.put_bytes("k", pickle("41"));
    let args = "((__import__('squall.reference').reference.Reference('k'), 1), {})";
    assert_eq!(value(h.call("add", args, 10_000)), "42");
}

#[test]
fn a_runaway_loop_is_stopped_at_its_deadline_and_the_next_call_is_served() {
    let mut h = Harness::start(registered(), vec![]);
    let started = Instant::now();
    let e = error(h.call("spin", "((), {})", 700));
    let took = started.elapsed();
    assert_eq!(e.kind, CallErrorKind::Timeout, "{e:?}");
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(value(h.call("add", "((20, 22), {})", 10_000)), "42");
}

#[test]
fn growing_memory_beyond_the_cap_fails_with_an_error_about_memory() {
    let mut h = Harness::start(registered(), vec![]);
    let e = error(h.call("hungry", "((), {})", 10_000));
    assert_eq!(
        (e.kind, e.type_name.as_str()),
        (CallErrorKind::Remote, "Trap"),
        "{e:?}"
    );
    assert!(
        e.message.contains("memory") && e.message.contains("wasm_memory_bytes"),
        "{e:?}"
    );
    assert_eq!(value(h.call("echo", "((b'ok',), {})", 10_000)), "b'ok'");
}

#[test]
fn a_trap_is_a_remote_error_with_the_trap_message_and_a_backtrace() {
    let mut h = Harness::start(registered(), vec![]);
    let e = error(h.call("trap", "((), {})", 10_000));
    assert_eq!(
        (e.kind, e.type_name.as_str()),
        (CallErrorKind::Remote, "Trap"),
        "{e:?}"
    );
    assert!(e.message.contains("unreachable"), "{e:?}");
    assert!(e.traceback.contains("wasm backtrace"), "{e:?}");
    assert_eq!(e.function.as_deref(), Some("trap"));
}

#[test]
fn a_module_that_cannot_serve_calls_is_a_bad_function() {
    let mut h = Harness::start(registered(), vec![]);
    for (name, says) in [
        ("garbage", "valid"),
        ("no_alloc", "alloc"),
        ("foreign", "nope"),
    ] {
        let e = error(h.call(name, "((), {})", 10_000));
        assert_eq!(e.kind, CallErrorKind::BadFunction, "{name}: {e:?}");
        assert!(e.message.contains(says), "{name}: {e:?}");
    }
}

#[test]
fn host_put_is_read_by_python_and_python_put_is_read_by_the_host() {
    let mut h = Harness::start(registered(), vec![]);
    assert_eq!(value(h.call("putter", "((b'hello',), {})", 10_000)), "0");
    let stored = h.stored_bytes("w").expect("the put reached the cache");
    assert_eq!(
        unpickle(&stored),
        "b'hello'",
        "stored as a Python bytes object"
    );
    assert_eq!(value(h.call("fetch", "(('w',), {})", 10_000)), "b'hello'");

    assert_eq!(value(h.call("stash", "(('n', 41), {})", 10_000)), "None");
    assert_eq!(
        value(h.call("getter", "(('n',), {})", 10_000)),
        "b')\\x00\\x00\\x00\\x00\\x00\\x00\\x00'"
    );
    h.put_bytes("raw", b"xyz".to_vec());
    assert_eq!(value(h.call("getter", "(('raw',), {})", 10_000)), "b'xyz'");
    assert_eq!(
        value(h.call("getter", "(('absent',), {})", 10_000)),
        "b'missing'"
    );
}

#[test]
fn host_send_and_recv_reach_the_executors_mailbox() {
    let mut h = Harness::start(registered(), vec![]);
    assert_eq!(value(h.call("talk", "((), {})", 10_000)), "b'ping'");
}

/// Runs `first(args)` then `second(upstream, args2)` as a DAG; the result.
fn chain(h: &mut Harness, first: (&str, &str), second: (&str, &str)) -> String {
    let plan = h.plan(
        vec![
            (first.0, pickle(first.1), vec![], vec![1]),
            (second.0, pickle(second.1), vec![0], vec![]),
        ],
        10_000,
    );
    h.invoke(&plan, 0);
    let id = plan.id;
    let outcome = h
        .wait_for(Duration::from_secs(20), |m| match m {
            Message::CallResult(r) if r.id == id => Some(r.outcome.clone()),
            _ => None,
        })
        .expect("a result");
    value(outcome)
}

#[test]
fn a_dag_mixes_wasm_and_python_functions_in_both_orders() {
    let mut h = Harness::start(registered(), vec![]);
    // Python inc(5) = 6, then WebAssembly add(6, 100).
    assert_eq!(
        chain(&mut h, ("inc", "((5,), {})"), ("add", "((100,), {})")),
        "106"
    );
    // WebAssembly add(2, 3) = 5, then Python tenfold(5).
    assert_eq!(
        chain(&mut h, ("add", "((2, 3), {})"), ("tenfold", "((), {})")),
        "50"
    );
}
