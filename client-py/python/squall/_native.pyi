"""Type stubs of `squall._native`, the private native module (Rust, PyO3).

Users call `squall.connect()` and the `squall.Client` it returns; the
executor's user library uses `DirectKvs` and `send_user_message`.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union, overload

FUNCTIONS_KEY: str
"""The KVS set of every registered function name."""
DAGS_KEY: str
TRIGGERS_KEY: str
"""The KVS set of every registered DAG name."""

TRAFFIC_PARTS: int
"""Parts of a million that traffic split weights count in."""

class Client:
    """The native half of `squall.Client`: the KVS through `routers`, calls
    through `schedulers`. Answers come to free ports of `bind_host`."""

    def __init__(
        self,
        routers: Sequence[str],
        schedulers: Sequence[str],
        timeout_s: float = 5.0,
        bind_host: str = "127.0.0.1",
    ) -> None: ...
    @property
    def writer(self) -> int:
        """This client's writer id, also the caller id of its calls."""
    @property
    def reply_address(self) -> str:
        """Where call results come."""
    @property
    def schedulers(self) -> List[str]:
        """The schedulers calls go to."""
    def get(self, key: str, raw: bool = False) -> Any:
        """The key's value (as `squall.Client.get`), or None."""
    def get_readonly(self, key: str) -> Any:
        """The key's value as `get(key, readonly=True)` reads it: large
        buffers (a NumPy array's memory) where they lie, read-only."""
    def exists(self, key: str) -> bool:
        """Whether the key holds a value."""
    def put(self, key: str, value: Any, ack: Union[str, int, None] = None) -> None:
        """Merges `value` into the key (as `squall.Client.put`)."""
    def delete(self, key: str, ack: Union[str, int, None] = None) -> None:
        """Deletes the key."""
    def call(
        self, function: str, payload: bytes, refs: Sequence[str], timeout_ms: int, consistency: str
    ) -> int:
        """Sends a call; returns its sequence number."""
    def call_dag(
        self,
        dag: str,
        args: Sequence[Tuple[str, bytes, Sequence[str]]],
        timeout_ms: int,
        consistency: str,
    ) -> int:
        """Sends a DAG call; returns its sequence number."""
    def dag_changed(self, name: str) -> None:
        """Tells every scheduler that DAG `name` changed."""
    def wait(self, seq: int, timeout_s: Optional[float] = None) -> Optional[Tuple[Any, ...]]:
        """Waits (GIL released) for call `seq`: None if no result came in
        time, else ("value", bytes) or ("error", kind, type_name, message,
        traceback, function)."""
    def done(self, seq: int) -> bool:
        """Whether call `seq`'s result has arrived."""
    def forget(self, seq: int) -> None:
        """Stops waiting for call `seq`."""

class DirectKvs:
    """get/put/delete against ONE endpoint (a node's cache, or a storage
    thread for the keys it owns), each a plain request/response bounded by
    `timeout_s`; values convert as `Client`'s. For tests and fault
    campaigns. One writer: keep one per process."""

    def __init__(self, address: str, timeout_s: float = 5.0, bind_host: str = "127.0.0.1") -> None: ...
    @property
    def target(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def writer(self) -> int: ...
    def get(self, key: str, raw: bool = False) -> Any: ...
    def put(self, key: str, value: Any, ack: Union[str, int, None] = None) -> None: ...
    def delete(self, key: str, ack: Union[str, int, None] = None) -> None: ...

def send_user_message(to_address: str, from_address: str, payload: bytes) -> None:
    """Sends a `UserMessage` to the executor at `to_address` (never blocks)."""

def encode_function(
    code: bytes, is_class: bool, runtime: str = "python", export: str = "", result: str = "bytes"
) -> bytes:
    """A `FunctionCode` record for a function key. `runtime` is "python" or
    "wasm"; `result` ("bytes", "str", "int", "float") is how a WebAssembly
    function's result bytes become a Python value."""

@overload
def decode_function(data: bytes) -> Optional[Tuple[str, bytes, bool, str]]: ...
@overload
def decode_function(
    data: bytes, with_result: bool
) -> Optional[Tuple[str, bytes, bool, str, str]]: ...
def decode_function(data: bytes, with_result: bool = False) -> Optional[Tuple[Any, ...]]:
    """(runtime, code, is_class, export), plus the result kind with
    `with_result=True`, or None if not a record."""

def wasm_module(module: bytes, export: str = "run") -> bytes:
    """`module` (a WebAssembly binary or WAT text) as a validated binary
    that follows the calling convention with entry point `export`.
    Raises ValueError with the reason otherwise."""

def encode_dag(name: str, functions: Sequence[str], connections: Sequence[Tuple[str, str]]) -> bytes:
    """A `Dag` record for a DAG key."""

def decode_dag(data: bytes) -> Optional[Tuple[str, List[str], List[Tuple[str, str]]]]:
    """(name, functions, connections), or None if not a record."""

def encode_traffic(versions: Sequence[Tuple[int, int]]) -> bytes:
    """A `Traffic` record (``(version, parts of TRAFFIC_PARTS)``) for a
    traffic key."""

def decode_traffic(data: bytes) -> Optional[List[Tuple[int, int]]]:
    """The ``(version, parts)`` of a `Traffic` record, or None if not one."""

def traffic_pick(versions: Sequence[Tuple[int, int]], caller: int, seq: int) -> Optional[int]:
    """The version the split sends call ``(caller, seq)`` to (the
    scheduler's pick), or None: the current version."""

def traffic_key(name: str) -> str:
    """The KVS key of function `name`'s traffic split."""

def encode_lattice(value: Any) -> bytes:
    """The wire encoding of the `LatticeValue` a put of `value` merges."""

def decode_lattice(data: bytes, raw: bool = False) -> Any:
    """A wire-encoded `LatticeValue` as the Python object `get` returns."""

def function_key(name: str) -> str:
    """The KVS key of function `name`."""

def dag_key(name: str) -> str:
    """The KVS key of DAG `name`."""

def trigger_key(name: str) -> str:
    """The KVS key of trigger `name`'s registration."""

def encode_trigger(name: str, function: str, prefix: str, on: str) -> bytes:
    """A `TriggerSpec` record for a trigger key; `on` is "put" or "delete"."""

def decode_trigger(data: bytes) -> Optional[Tuple[str, str, str, str]]:
    """(name, function, prefix, on), or None if not a record."""

def looks_pickled(data: bytes) -> bool:
    """Whether last-writer-wins bytes are a pickle (read back as the object
    they pickle) rather than raw bytes: the rule `get` applies."""

def loads_readonly(data: Any) -> Tuple[Any, int]:
    """``pickle.loads(data)`` with the large buffers the writer marked read
    where they lie in `data` (a `bytes` or a stored value's buffer),
    read-only; returns ``(object, bytes it shares with data)``."""
    ...
