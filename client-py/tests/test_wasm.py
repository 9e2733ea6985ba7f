"""WebAssembly functions end to end: `register_wasm` (WAT text, binaries,
paths, invalid modules), calls, results of each kind, DAGs mixing WASM and
Python, limits (timeout, memory cap), traps, and the host `get`/`put`.

Registration only touches the KVS and runs on any cluster (the `client`
fixture); calls need the executors' WebAssembly runtime (`compute`).
The modules follow the calling convention of client-py/README.md,
"WebAssembly functions".
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest

import squall
from squall import _native

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "wasm"

# A bump allocator from 1024 up, growing memory as needed; each call runs in
# a fresh instance, and these modules never rewind it.
ALLOC = """
  (global $heap (mut i32) (i32.const 1024))
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (local.set $p (global.get $heap))
    (local.set $end (i32.and (i32.add (i32.add (local.get $p) (local.get $len)) (i32.const 7))
                             (i32.const -8)))
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then (if (i32.lt_s (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end)
                                                                   (local.get $have))
                                                           (i32.const 65535))
                                                  (i32.const 16)))
                          (i32.const 0))
              (then unreachable))))
    (global.set $heap (local.get $end))
    (local.get $p))
"""


def module(body: str, imports: str = "") -> str:
    """A module of the calling convention: `memory`, `alloc`, and `body`."""
    return f'(module {imports} (memory (export "memory") 1) {ALLOC} {body})'


# echo: the first argument's bytes, as they are (a pointer into the input).
ECHO = module(
    """
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (if (i32.eqz (i32.load (local.get $ptr))) (then unreachable))
    (i64.or (i64.shl (i64.extend_i32_u (i32.add (local.get $ptr) (i32.const 8))) (i64.const 32))
            (i64.extend_i32_u (i32.load offset=4 (local.get $ptr)))))
"""
)

# count: how many arguments came (upstream results and own), as an int.
COUNT = module(
    """
  (func (export "count") (param $ptr i32) (param $len i32) (result i64)
    (i64.store (i32.const 16) (i64.extend_i32_u (i32.load (local.get $ptr))))
    (i64.const 0x1000000008))
"""
)

SPIN = module(
    """
  (func (export "run") (param i32 i32) (result i64)
    (loop $forever (br $forever))
    (i64.const 0))
"""
)

# Grows memory 1 MiB at a time until refused, then traps.
GREEDY = module(
    """
  (func (export "run") (param i32 i32) (result i64)
    (loop $more
      (br_if $more (i32.ge_s (memory.grow (i32.const 16)) (i32.const 0))))
    unreachable)
"""
)

TRAP = module(
    """
  (func (export "run") (param i32 i32) (result i64)
    unreachable)
"""
)

# put(key = first argument, value = second argument); returns 0 as an int.
PUT = module(
    """
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $k i32) (local $klen i32) (local $v i32)
    (local.set $klen (i32.load offset=4 (local.get $ptr)))
    (local.set $k (i32.add (local.get $ptr) (i32.const 8)))
    (local.set $v (i32.add (local.get $k) (local.get $klen)))
    (i64.store (i32.const 16)
      (i64.extend_i32_s
        (call $put (local.get $k) (local.get $klen)
                   (i32.add (local.get $v) (i32.const 4)) (i32.load (local.get $v)))))
    (i64.const 0x1000000008))
""",
    imports='(import "squall" "put" (func $put (param i32 i32 i32 i32) (result i32)))',
)

# get(key = first argument): the value's bytes, or b"<none>" if absent.
GET = module(
    """
  (data (i32.const 32) "<none>")
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $got i64)
    (local.set $got (call $get (i32.add (local.get $ptr) (i32.const 8))
                               (i32.load offset=4 (local.get $ptr))))
    (if (result i64) (i64.eq (local.get $got) (i64.const -1))
      (then (i64.const 0x2000000006))
      (else (local.get $got))))
""",
    imports='(import "squall" "get" (func $get (param i32 i32) (result i64)))',
)


def py_square(x):
    return x * x


def py_increment(x):
    return x + 1


def unique(prefix: str) -> str:
    return f"{prefix}_{time.monotonic_ns() % 10**9}"



# -- registration (KVS only) ---------------------------------------------------


def test_register_wat_text_str_and_bytes(client):
    name = unique("wasm_echo")
    assert client.register_wasm(ECHO, name) == name
    assert name in client.list_functions()
    runtime, code, is_class, export, result = _native.decode_function(
        client.get(_native.function_key(name), raw=True).value, True
    )
    assert (runtime, is_class, export, result) == ("wasm", False, "run", "bytes")
    assert code.startswith(b"\0asm"), "WAT is stored compiled"
    # The old 4-tuple form still decodes.
    assert _native.decode_function(client.get(_native.function_key(name), raw=True).value)[0] == (
        "wasm"
    )

    other = unique("wasm_echo_bytes")
    client.register_wasm(ECHO.encode(), other, result="str")
    record = _native.decode_function(client.get(_native.function_key(other), raw=True).value, True)
    assert record[4] == "str"


def test_register_binary_and_paths(client, tmp_path):
    binary = _native.wasm_module(ECHO.encode())
    assert binary.startswith(b"\0asm")
    name = unique("wasm_bin")
    client.register_wasm(binary, name)
    stored = _native.decode_function(client.get(_native.function_key(name), raw=True).value)
    assert stored[1] == binary, "a binary is stored as it is"

    wat_file = tmp_path / "echo.wat"
    wat_file.write_text(ECHO)
    wasm_file = tmp_path / "echo.wasm"
    wasm_file.write_bytes(binary)
    for path in (wat_file, str(wat_file), wasm_file, str(wasm_file)):
        n = unique("wasm_path")
        client.register_wasm(path, n)
        assert n in client.list_functions()
    for example in ("square.wat", "increment.wat", "counter.wat"):
        client.register_wasm(EXAMPLES / example, unique("wasm_example"), result="int")


def test_register_export_and_result_kinds(client):
    name = unique("wasm_count")
    client.register_wasm(COUNT, name, export="count", result="int")
    record = _native.decode_function(client.get(_native.function_key(name), raw=True).value, True)
    assert record[3:] == ("count", "int")
    # The entry point must exist under the name given.
    with pytest.raises(squall.InvalidModuleError, match="`run`"):
        client.register_wasm(COUNT, unique("wasm_count_run"))
    with pytest.raises(ValueError, match="result kind"):
        client.register_wasm(COUNT, unique("wasm_kind"), export="count", result="pickle")


@pytest.mark.parametrize(
    "source, reason",
    [
        (b"\x00\x01garbage, not a module\xff\xfe", "neither a binary"),
        (b"\0asm\x01\x00\x00\x00\xffgarbage", "invalid WebAssembly module"),
        ('(module (memory (export "memory") 1) (func (export "run") (param i32 i32) '
         "(result i64) (i64.const 0)))", "`alloc`"),
        ('(module (func (export "alloc") (param i32) (result i32) (i32.const 0)) '
         '(func (export "run") (param i32 i32) (result i64) (i64.const 0)))', "memory"),
        (module('(func (export "run") (param i32) (result i64) (i64.const 0))'), "must be"),
        (module('(func (export "run") (param i32 i32) (result i64) (i64.const 0))',
                '(import "env" "abort" (func (param i32)))'), "env.abort"),
        (module('(func (export "run") (param i32 i32) (result i64) (i64.const 0))',
                '(import "squall" "get" (func (param i32) (result i64)))'), "squall.get"),
        (module('(func (export "run") (param i32 i32) (result i64) (i32.const 0))'),
         "invalid WebAssembly module"),
        ("(module (func (export \"run\") (param i32 i32) (result i64)\n  (i64.const 0)", "WAT"),
        ("(module (func $f (result i32) (i32.bogus)))", "WAT"),
    ],
    ids=[
        "garbage",
        "bad-binary",
        "no-alloc",
        "no-memory",
        "bad-signature",
        "foreign-import",
        "bad-host-import",
        "type-error",
        "unclosed",
        "unknown-instruction",
    ],
)
def test_invalid_modules_are_refused(client, source, reason):
    name = unique("wasm_bad")
    with pytest.raises(squall.InvalidModuleError) as info:
        client.register_wasm(source, name)
    assert isinstance(info.value, ValueError)
    assert reason in str(info.value), str(info.value)
    assert name in str(info.value)
    assert not client.exists(_native.function_key(name))
    assert name not in client.list_functions()


def test_wat_syntax_error_names_the_place(client):
    with pytest.raises(squall.InvalidModuleError) as info:
        client.register_wasm("(module\n  (func (export \"run\") (i64.frobnicate)))", unique("w"))
    message = str(info.value)
    assert "WAT syntax error" in message and "2:" in message, message


def test_register_wasm_bad_inputs(client, tmp_path):
    with pytest.raises(FileNotFoundError):
        client.register_wasm(tmp_path / "missing.wasm", unique("w"))
    with pytest.raises(TypeError):
        client.register_wasm(42, unique("w"))
    with pytest.raises(ValueError):
        client.register_wasm(ECHO, "")


# -- calls (the executors' WebAssembly runtime) ------------------------------


@pytest.fixture(scope="module")
def wasm(compute):
    """Registers the test modules once; maps a role to its name."""
    names = {
        "square": compute.register_wasm(EXAMPLES / "square.wat", unique("w_square"), result="int"),
        "increment": compute.register_wasm(
            EXAMPLES / "increment.wat", unique("w_increment"), result="int"
        ),
        "counter": compute.register_wasm(
            EXAMPLES / "counter.wat", unique("w_counter"), result="int"
        ),
        "echo": compute.register_wasm(ECHO, unique("w_echo")),
        "echo_str": compute.register_wasm(ECHO, unique("w_echo_str"), result="str"),
        "echo_float": compute.register_wasm(ECHO, unique("w_echo_float"), result="float"),
        "count": compute.register_wasm(COUNT, unique("w_count"), export="count", result="int"),
        "spin": compute.register_wasm(SPIN, unique("w_spin")),
        "greedy": compute.register_wasm(GREEDY, unique("w_greedy")),
        "trap": compute.register_wasm(TRAP, unique("w_trap")),
        "put": compute.register_wasm(PUT, unique("w_put"), result="int"),
        "get": compute.register_wasm(GET, unique("w_get")),
        "py_square": compute.register(py_square, name=unique("p_square")),
        "py_increment": compute.register(py_increment, name=unique("p_increment")),
    }
    return names


def test_call_square(compute, wasm):
    assert compute.call(wasm["square"], 7) == 49
    assert compute.call(wasm["square"], -3) == 9
    assert compute.call(wasm["increment"], 41) == 42
    assert compute.call(wasm["increment"], -1) == 0


def test_call_async_many(compute, wasm):
    futures = [compute.call_async(wasm["square"], i) for i in range(20)]
    assert [f.get(timeout=30) for f in futures] == [i * i for i in range(20)]


def test_bytes_echo_and_result_kinds(compute, wasm):
    assert compute.call(wasm["echo"], b"hello, wasm") == b"hello, wasm"
    assert compute.call(wasm["echo"], bytearray(b"\x00\xff\x01")) == b"\x00\xff\x01"
    assert compute.call(wasm["echo"], b"") == b""
    big = bytes(range(256)) * 4096  # 1 MiB: alloc grows the memory
    assert compute.call(wasm["echo"], big) == big
    assert compute.call(wasm["echo"], "héllo") == "héllo".encode()
    assert compute.call(wasm["echo_str"], "héllo, wörld") == "héllo, wörld"
    assert compute.call(wasm["echo"], 258) == (258).to_bytes(8, "little")
    assert compute.call(wasm["echo"], -2) == (-2).to_bytes(8, "little", signed=True)
    assert compute.call(wasm["echo"], True) == b"\x01"
    assert compute.call(wasm["echo_float"], 2.5) == 2.5
    assert compute.call(wasm["count"], 1, b"x", "y") == 3


def test_reference_argument(compute, wasm, key):
    compute.put(key, 12)
    assert compute.call(wasm["square"], squall.Reference(key)) == 144


def test_dag_wasm_to_wasm(compute, wasm):
    dag = unique("dag_ww")
    compute.register_dag(dag, [wasm["square"], wasm["increment"]],
                         [(wasm["square"], wasm["increment"])])
    assert compute.call_dag(dag, {wasm["square"]: [5]}) == 26


def test_dag_wasm_to_python(compute, wasm):
    dag = unique("dag_wp")
    compute.register_dag(dag, [wasm["square"], wasm["py_increment"]],
                         [(wasm["square"], wasm["py_increment"])])
    assert compute.call_dag(dag, {wasm["square"]: [6]}) == 37


def test_dag_python_to_wasm(compute, wasm):
    dag = unique("dag_pw")
    compute.register_dag(dag, [wasm["py_square"], wasm["increment"]],
                         [(wasm["py_square"], wasm["increment"])])
    assert compute.call_dag(dag, {wasm["py_square"]: [9]}) == 82


def test_dag_upstream_results_come_first(compute, wasm):
    dag = unique("dag_count")
    compute.register_dag(dag, [wasm["py_square"], wasm["count"]],
                         [(wasm["py_square"], wasm["count"])])
    # one upstream result and two own arguments
    assert compute.call_dag(dag, {wasm["py_square"]: [3], wasm["count"]: [b"a", b"b"]}) == 3


def test_runaway_loop_times_out_and_executors_keep_serving(compute, wasm):
    started = time.monotonic()
    with pytest.raises(squall.CallTimeoutError):
        compute.call(wasm["spin"], timeout=1)
    assert time.monotonic() - started < 10
    # Both executors still answer, WASM and Python alike.
    futures = [compute.call_async(wasm["square"], i) for i in range(8)]
    assert [f.get(timeout=20) for f in futures] == [i * i for i in range(8)]
    assert compute.call(wasm["py_increment"], 1, timeout=20) == 2


def test_memory_cap(compute, wasm):
    with pytest.raises(squall.RemoteError) as info:
        compute.call(wasm["greedy"], timeout=30)
    message = str(info.value).lower()
    assert "memory" in message or "trap" in message, message
    assert compute.call(wasm["square"], 4) == 16


def test_trap_is_a_remote_error(compute, wasm):
    with pytest.raises(squall.RemoteError) as info:
        compute.call(wasm["trap"])
    assert "unreachable" in str(info.value), str(info.value)
    assert compute.call(wasm["square"], 2) == 4


def test_wrong_argument_traps(compute, wasm):
    # square.wat wants one 8-byte argument; a str is a trap, not a crash.
    with pytest.raises(squall.RemoteError):
        compute.call(wasm["square"], "seven")


def test_host_put_is_visible_to_python(compute, wasm, key):
    assert compute.call(wasm["put"], key, b"from wasm") == 0
    assert compute.get(key) == b"from wasm"


def test_host_get_reads_python_values(compute, wasm, key):
    assert compute.call(wasm["get"], key) == b"<none>"
    compute.put(key, 41)
    assert compute.call(wasm["get"], key) == (41).to_bytes(8, "little")
    # A fresh key: the node's cache may still hold 41 for `key` a moment
    # (it learns of a change asynchronously).
    compute.put(key + "/str", "text")
    assert compute.call(wasm["get"], key + "/str") == b"text"
    compute.put(key + "/raw", squall.Lww(b"\x00raw"))
    assert compute.call(wasm["get"], key + "/raw") == b"\x00raw"
    # Read in Rust, without the embedded Python: every scalar pickle and
    # the integer lattices give the argument rules' bytes.
    compute.put(key + "/float", 1.5)
    assert compute.call(wasm["get"], key + "/float") == struct.pack("<d", 1.5)
    compute.put(key + "/bool", True)
    assert compute.call(wasm["get"], key + "/bool") == b"\x01"
    compute.put(key + "/big", -(10**12))
    assert compute.call(wasm["get"], key + "/big") == (-(10**12)).to_bytes(8, "little", signed=True)
    compute.put(key + "/long", "é" * 300)
    assert compute.call(wasm["get"], key + "/long") == ("é" * 300).encode()
    compute.put(key + "/n", squall.Counter(5))
    assert compute.call(wasm["get"], key + "/n") == (5).to_bytes(8, "little")
    compute.put(key + "/list", [1, 2])
    with pytest.raises(squall.RemoteError, match="pickled Python object of another type"):
        compute.call(wasm["get"], key + "/list")
    compute.put(key + "/set", squall.Set([b"a"]))
    with pytest.raises(squall.RemoteError, match="not a Set lattice"):
        compute.call(wasm["get"], key + "/set")


def test_counter_example(compute, wasm, key):
    compute.put(key, 41)  # a Python int: 8 bytes to `get`
    assert compute.call(wasm["counter"], key) == 42
    assert compute.get(key) == (42).to_bytes(8, "little")
    assert compute.call(wasm["counter"], key) == 43
    other = key + "/fresh"
    assert compute.call(wasm["counter"], other) == 1
