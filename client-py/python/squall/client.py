"""`Client` and `Future`: the KVS, functions and DAGs of one cluster.

This module imports the native extension; `squall.connect` imports it on
first use.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import cloudpickle

from . import _native, _source
from .errors import InvalidModuleError, SquallError
from .errors import CallTimeoutError, ClusterNotFoundError, UnknownFunctionError, call_error
from .futures import GRACE_S, Future, _Completions, format_output
from .lattices import Lww, Set
from .events import Trigger
from .reference import Reference, freeze

__all__ = ["Client", "Future", "Function", "Dag", "Instance"]

_SCHEMES = ("tcp://", "ipc://", "inproc://")


def _addresses(record: Mapping[str, Any], field: str) -> List[str]:
    out: List[str] = []
    for process in record.get(field) or []:
        out.extend(process.get("addresses") or [])
    return out


def _state_dir(address: Optional[str]) -> Path:
    if address is not None:
        return Path(address)
    return Path(os.environ.get("SQUALL_STATE_DIR") or ".squall")


_TRUE = ("1", "true", "yes", "on")


def _key_file(
    address: Optional[str],
    record: Optional[dict],
    key_file: Optional[str],
    insecure: Optional[bool],
) -> Optional[Path]:
    """The key this client seals its frames with; ``None`` for open frames
    (a cluster started with ``--insecure``, or ``insecure=True``).

    Looked for in order: `key_file`, ``$SQUALL_KEY_FILE``, then the state
    directory's ``keys/client.key`` (what ``squall up`` writes) and
    ``keys/cluster.key``.
    """
    if insecure is None:
        insecure = os.environ.get("SQUALL_INSECURE", "").lower() in _TRUE
    launch = (record or {}).get("launch") or {}
    if insecure or (key_file is None and launch.get("insecure")):
        return None
    given = key_file or os.environ.get("SQUALL_KEY_FILE")
    if given:
        return Path(given)
    keys = _state_dir(address if record is not None else None) / "keys"
    for name in ("client.key", "cluster.key"):
        if (keys / name).exists():
            return keys / name
    raise SquallError(
        f"no client key in {keys} (`squall up` writes keys/client.key there): pass "
        "key_file=PATH or set $SQUALL_KEY_FILE, or insecure=True for a cluster run "
        "with --insecure"
    )


# Argument types pickled as they are, by the standard pickler.
_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})


def _pickle_args(
    args: Sequence[Any], kwargs: Mapping[str, Any]
) -> Tuple[bytes, List[str], List[Future]]:
    """The call payload ``cloudpickle.dumps((args, kwargs))``, the keys of
    the top-level `Reference` arguments, and the pending futures among the
    top-level arguments (each passed as a `Reference` to the key its result
    goes to; a done one by value)."""
    if all(type(a) in _PLAIN for a in args) and all(type(v) in _PLAIN for v in kwargs.values()):
        # The common case of a tiny call, at a fifth of cloudpickle's cost
        # (nothing here needs pickling by value; the executor loads both).
        return pickle.dumps((tuple(args), dict(kwargs)), protocol=5), [], []
    inputs: List[Future] = []

    def plain(a: Any) -> Any:
        if not isinstance(a, Future):
            return a
        value, exported = a._argument()
        if exported:
            inputs.append(a)
        return value

    args = tuple(plain(a) for a in args)
    kwargs = {k: plain(v) for k, v in kwargs.items()}
    refs = [a.key for a in list(args) + list(kwargs.values()) if isinstance(a, Reference)]
    return cloudpickle.dumps((args, kwargs)), list(dict.fromkeys(refs)), inputs


def _dumps_by_value(obj: Any, origin: Any = None) -> bytes:
    """cloudpickle `obj`, with its own module (or `origin`'s) pickled by
    value, so the executors need not be able to import it (a test file, a
    script)."""
    module = sys.modules.get(getattr(origin or obj, "__module__", "") or "")
    by_value = module is not None and module.__name__ not in ("__main__", "builtins")
    if by_value:
        try:
            cloudpickle.register_pickle_by_value(module)
        except ValueError:
            by_value = False
    try:
        return cloudpickle.dumps(obj)
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(module)


_RESULT_KINDS = ("bytes", "str", "int", "float")


def _module_bytes(module: Any) -> bytes:
    """The bytes of a module given as bytes, WAT text or a file path."""
    if isinstance(module, (bytes, bytearray, memoryview)):
        return bytes(module)
    if isinstance(module, str) and module.lstrip().startswith("("):
        return module.encode("utf-8")
    if isinstance(module, (str, os.PathLike)):
        return Path(module).read_bytes()
    raise TypeError(
        "module must be bytes (a .wasm binary or WAT text), WAT text as str, or the path "
        f"of a .wasm or .wat file, not {type(module).__name__}"
    )


def _index_entry(name: str) -> Set:
    """The element of `name` in the index sets (`FUNCTIONS_KEY`,
    `DAGS_KEY`): its UTF-8 bytes, as every version has stored it, so
    older clients list it too (a ``str`` element would be stored marked as
    text, see `squall.lattices`)."""
    return Set([name.encode("utf-8")])


def _check_name(name: Any, what: str) -> str:
    """`name` if it can name a function or DAG: a non-empty string."""
    if not isinstance(name, str):
        raise TypeError(f"{what} name must be a str, not {type(name).__name__}")
    if not name.strip():
        raise ValueError(f"{what} name must not be empty")
    return name


def _timeout_ms(seconds: float) -> int:
    if not seconds > 0:
        raise ValueError(f"timeout must be positive, not {seconds}")
    return min(int(math.ceil(seconds * 1000)), 2**32 - 1)


def _pending_futures(args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
    return any(isinstance(a, Future) and not a.done() for a in (*args, *kwargs.values()))


def _collect(native: "_native.Client", seq: int, deadline: float, what: str) -> Any:
    """Waits for call `seq` (sent unwatched) until its deadline and returns
    its result, or raises its error."""
    left = deadline + GRACE_S - time.monotonic()
    got = native.wait(seq, max(left, 0.0))
    if got is None:
        native.forget(seq)
        raise CallTimeoutError(f"{what}: no answer before the call's deadline", type_name="Timeout")
    if got[0] == "value":
        return cloudpickle.loads(got[1])
    _, kind, type_name, message, traceback, function, output, _ = got
    error = call_error(kind, type_name, message, traceback, function)
    error.logs = format_output(output)
    raise error


def _function_record(
    fn_or_class: Callable[..., Any],
    name: Optional[str],
    init_args: Sequence[Any],
    init_kwargs: Optional[Mapping[str, Any]],
) -> Tuple[str, bytes]:
    """The name and the stored `FunctionCode` record of a Python function
    or class registered as `Client.register` describes (raising its
    errors); what every client stores under the function's key."""
    if not callable(fn_or_class):
        raise TypeError(
            "register takes a function or a class, not "
            f"{type(fn_or_class).__name__} {fn_or_class!r:.60}"
        )
    if name is None:
        name = getattr(fn_or_class, "__name__", None)
        if not isinstance(name, str) or not name or name == "<lambda>":
            raise ValueError("give a name= for a function without a usable __name__")
    name = _check_name(name, "function")
    if "@" in name:
        raise ValueError(f"a function name has no `@` (NAME@N calls version N): {name!r}")
    is_class = inspect.isclass(fn_or_class)
    if (init_args or init_kwargs) and not is_class:
        raise TypeError(f"init_args and init_kwargs are for a class; `{name}` is not one")
    registered = fn_or_class
    if init_args or init_kwargs:
        # The executor makes the instance by calling what it unpickles.
        registered = functools.partial(fn_or_class, *init_args, **(init_kwargs or {}))
    code = _dumps_by_value(_source.attach(registered), origin=fn_or_class)
    return name, _native.encode_function(code, is_class)


def _wasm_record(module: Any, name: str, export: str, result: str) -> Tuple[str, bytes]:
    """The name and the stored record of a WebAssembly function registered
    as `Client.register_wasm` describes (raising its errors)."""
    name = _check_name(name, "function")
    if "@" in name:
        raise ValueError(f"a function name has no `@` (NAME@N calls version N): {name!r}")
    if result not in _RESULT_KINDS:
        raise ValueError(
            f"unknown result kind {result!r}; expected one of {', '.join(_RESULT_KINDS)}"
        )
    source = _module_bytes(module)
    try:
        binary = _native.wasm_module(source, export)
    except ValueError as e:
        raise InvalidModuleError(f"function `{name}`: {e}") from None
    return name, _native.encode_function(binary, False, "wasm", export, result)


#: Where a function's versions are listed: ``{"current": n, "versions":
#: [(n, registered_at), ...]}``, pickled. Version n's code is under
#: ``function_key(f"{name}@{n}")``, the current one's under
#: ``function_key(name)`` too.
VERSIONS_PREFIX = "__squall/versions/"

#: Versions kept per function (older ones are deleted as new ones come).
KEEP_VERSIONS = 10


def _versioned(name: str, version: Optional[int]) -> str:
    """The name calls of `name` at `version` use (``NAME@N``)."""
    if version is None:
        return str(name)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"a version is a positive int, not {version!r}")
    return f"{name}@{version}"


def _store_version(store: Any, name: str, record: bytes, keep: int = KEEP_VERSIONS) -> int:
    """Stores `record` as function `name`'s next version and as its
    current code, drops versions beyond the latest `keep`; returns the
    version. (Two clients registering one name at once may both read the
    same index; the later write of it wins.)"""
    index = store.get(VERSIONS_PREFIX + name) or {"current": 0, "versions": []}
    version = max((v for v, _ in index["versions"]), default=0) + 1
    store.put(_native.function_key(f"{name}@{version}"), Lww(record))
    store.put(_native.function_key(name), Lww(record))
    versions = index["versions"] + [(version, time.time())]
    for old, _ in versions[:-keep]:
        store.delete(_native.function_key(f"{name}@{old}"))
    store.put(VERSIONS_PREFIX + name, {"current": version, "versions": versions[-keep:]})
    _clear_traffic(store, name)
    return version


def _list_versions(store: Any, name: str) -> List[Dict[str, Any]]:
    index = store.get(VERSIONS_PREFIX + name) or {"current": 0, "versions": []}
    return [
        {"version": v, "registered_at": at, "current": v == index["current"]}
        for v, at in index["versions"]
    ]


def _rollback(store: Any, name: str) -> int:
    """Makes the version before the current one current again; returns it."""
    index = store.get(VERSIONS_PREFIX + name)
    earlier = [v for v, _ in (index or {}).get("versions", []) if v < (index or {}).get("current", 0)]
    if not earlier:
        raise ValueError(f"function `{name}` has no version before its current one to roll back to")
    version = max(earlier)
    record = store.get(_native.function_key(f"{name}@{version}"), True)
    if record is None:
        raise ValueError(f"version {version} of `{name}` is no longer kept")
    store.put(_native.function_key(name), record)
    store.put(VERSIONS_PREFIX + name, {"current": version, "versions": index["versions"]})
    _clear_traffic(store, name)
    return version


def _set_traffic(store: Any, name: str, weights: Mapping[int, float]) -> None:
    """Stores function `name`'s split (a `Traffic` record under
    `traffic_key(name)`) after checking it; an empty one clears it."""
    name = _check_name(name, "function")
    if "@" in name:
        raise ValueError(f"a split is set on a function's plain name, not {name!r}")
    if not isinstance(weights, Mapping):
        raise TypeError(f"weights must be a mapping of version to weight, not {type(weights).__name__}")
    index = store.get(VERSIONS_PREFIX + name)
    if not index or not index.get("versions"):
        raise ValueError(f"function `{name}` is not registered")
    kept = sorted(v for v, _ in index["versions"])
    parts: List[Tuple[int, int]] = []
    total = 0.0
    for version, weight in weights.items():
        if isinstance(version, bool) or not isinstance(version, int) or version not in kept:
            raise ValueError(f"`{name}` has no version {version!r} (kept: {kept})")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
            raise ValueError(f"the weight of version {version} is a number in [0, 1], not {weight!r}")
        total += weight
        if round(weight * _native.TRAFFIC_PARTS) > 0:
            parts.append((version, round(weight * _native.TRAFFIC_PARTS)))
    if total > 1 + 1e-9:
        raise ValueError(f"the weights of a split add up to at most 1, not {total:g}")
    if not parts:
        return _clear_traffic(store, name)
    excess = sum(p for _, p in parts) - _native.TRAFFIC_PARTS
    if excess > 0:  # rounding of weights adding up to 1
        parts[-1] = (parts[-1][0], parts[-1][1] - excess)
    store.put(_native.traffic_key(name), Lww(_native.encode_traffic(parts)))


def _traffic(store: Any, name: str) -> Dict[int, float]:
    """Function `name`'s split: ``{version: weight}``, empty if none."""
    record = store.get(_native.traffic_key(str(name)), True)
    parts = None if record is None else _native.decode_traffic(record.value)
    return {v: p / _native.TRAFFIC_PARTS for v, p in parts or ()}


def _clear_traffic(store: Any, name: str) -> None:
    if store.exists(_native.traffic_key(name)):
        store.delete(_native.traffic_key(name))


def _split(store: Any, name: str, caller: int, seq: int) -> str:
    """The name call `(caller, seq)` of the plain name `name` runs, as the
    scheduler picks it: ``NAME@N`` if `name`'s split sends it to version
    N, else `name`."""
    if "@" in name:
        return name
    record = store.get(_native.traffic_key(name), True)
    parts = None if record is None else _native.decode_traffic(record.value)
    version = _native.traffic_pick(parts, caller, seq) if parts else None
    return name if version is None else f"{name}@{version}"


def _delete_function(store: Any, name: str) -> None:
    for v in _list_versions(store, name):
        store.delete(_native.function_key(f"{name}@{v['version']}"))
    store.delete(VERSIONS_PREFIX + name)
    _clear_traffic(store, name)
    store.delete(_native.function_key(name))


def _listed(store: Any, index: str, key_of: Callable[[str], str]) -> List[str]:
    """The names in the set `index` whose keys (`key_of(name)`) hold a
    value, sorted: the registered functions or DAGs."""
    names = store.get(index) or ()
    # A name stored as bytes (older clients, the shell) and as str is one.
    found = {n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names}
    return sorted(n for n in found if store.exists(key_of(n)))


def _store_trigger(store: Any, function: str, key_prefix: str, on: str, name: Optional[str]) -> Trigger:
    """Stores a trigger's registration in `store` (see
    `Client.register_trigger`)."""
    if on not in ("put", "delete"):
        raise ValueError(f'on must be "put" or "delete", not {on!r}')
    if not isinstance(key_prefix, str):
        raise TypeError(f"key_prefix must be a str, not {type(key_prefix).__name__}")
    if not store.exists(_native.function_key(function)):
        raise UnknownFunctionError(
            f"trigger on `{key_prefix}`: function `{function}` is not registered",
            type_name="UnknownFunction",
            function=function,
        )
    name = _check_name(f"{function}:{on}:{key_prefix}" if name is None else name, "trigger")
    record = _native.encode_trigger(name, function, key_prefix, on)
    store.put(_native.trigger_key(name), Lww(record))
    store.put(_native.TRIGGERS_KEY, _index_entry(name))
    return Trigger(name, function, key_prefix, on)


def _list_triggers(store: Any) -> List[Trigger]:
    """The triggers registered in `store`, sorted by name."""
    found = []
    for name in _listed(store, _native.TRIGGERS_KEY, _native.trigger_key):
        record = store.get(_native.trigger_key(name), True)
        parts = None if record is None else _native.decode_trigger(record.value)
        if parts is not None:
            found.append(Trigger(*parts))
    return found


class _Handle(str):
    """A registered function's or DAG's name (a `str`, usable wherever a
    name is) that calls it through its client. Pickled (passed to a
    function, say) it is its name."""

    _client: "Client"

    def __new__(cls, name: str, client: "Client") -> "_Handle":
        handle = super().__new__(cls, name)
        handle._client = client
        return handle

    @property
    def name(self) -> str:
        return str(self)

    def __reduce__(self):
        return (str, (str(self),))

    def __repr__(self) -> str:
        return f"<squall.{type(self).__name__} {str(self)!r}>"


class Function(_Handle):
    """A registered function (see `_Handle`). ``f(x)`` is
    ``client.call(f, x)``; ``f.call_async(x)`` is ``client.call_async(f,
    x)``; ``f.instance(name)`` is a named instance of a class."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._client.call(str(self), *args, **kwargs)

    def call_async(self, *args: Any, **kwargs: Any) -> Future:
        return self._client.call_async(str(self), *args, **kwargs)

    def instance(
        self, name: str, init_args: Sequence[Any] = (), init_kwargs: Optional[Mapping[str, Any]] = None
    ) -> "Instance":
        """The named instance `name` of this class: see `Client.instance`."""
        return self._client.instance(str(self), name, init_args, init_kwargs)


class Dag(_Handle):
    """A registered DAG (see `_Handle`). ``d(args)`` is
    ``client.call_dag(d, args)``; ``d.call_async(args)`` is
    ``client.call_dag_async(d, args)``."""

    def __call__(self, args: Optional[Mapping[str, Sequence[Any]]] = None, **options: Any) -> Any:
        return self._client.call_dag(str(self), args, **options)

    def call_async(self, args: Optional[Mapping[str, Sequence[Any]]] = None, **options: Any) -> Future:
        return self._client.call_dag_async(str(self), args, **options)


class Instance:
    """A named instance of a registered class, addressed by its name: its
    methods are called like local ones (``acct.deposit(10)``, or
    ``acct.call_async("deposit", 10)`` for a `Future`). Get one with
    `Client.instance` (or ``handle.instance(name)``).

    Every call of one instance goes to the one executor that holds it (the
    same for every scheduler while the executors stay the same), which runs
    them one at a time. Its state (its ``__dict__``, or what its
    ``__getstate__`` returns) lives in the KVS under `key`, written back
    after every call and acknowledged by a replica before the result
    returns: when its executor dies, the next call is placed on another,
    which reads the state from there. While the set of executors changes,
    two executors may briefly both serve an instance; its state is then
    the last written.
    """

    def __init__(self, client: "Client", cls: str, name: str, init: Optional[Tuple[tuple, dict]]) -> None:
        self._client = client
        self._cls = cls
        self._name = name
        self._init = init

    @property
    def name(self) -> str:
        return self._name

    @property
    def key(self) -> str:
        """The KVS key of its state."""
        return _native.instance_key(self._cls, self._name)

    def call(self, method: str, /, *args: Any, timeout: Optional[float] = None, **kwargs: Any) -> Any:
        """Calls `method` with `args` and `kwargs` and returns its result
        (errors as for `Client.call`)."""
        return self.call_async(method, *args, timeout=timeout, **kwargs).result()

    def call_async(
        self, method: str, /, *args: Any, timeout: Optional[float] = None, **kwargs: Any
    ) -> Future:
        """Like `call`, but returns a `Future` at once."""
        if not isinstance(method, str) or not method or method.startswith("_"):
            raise ValueError(f"a method name, not {method!r} (private methods cannot be called)")
        return self._client._call_instance(
            self._cls, self._name, method, self._init, args, kwargs, timeout
        )

    def state(self) -> Optional[Any]:
        """Its state as last written (``None`` before its first call)."""
        record = self._client.get(self.key)
        return None if record is None else record["state"]

    def delete(self) -> None:
        """Forgets its state: the next call makes it anew."""
        self._client.delete(self.key)

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)
        return functools.partial(self.call, method)

    def __repr__(self) -> str:
        return f"<squall.Instance {self._cls}[{self._name!r}]>"


def _get(kvs: Any, key: str, raw: bool, readonly: bool) -> Any:
    """`Client.get` against `kvs` (a cluster's or the local test mode's)."""
    if not readonly:
        return kvs.get(key, raw)
    if raw:
        raise ValueError("get: raw=True returns bytes; readonly applies to unpickled values")
    value = kvs.get_readonly(key)
    freeze(value)
    return value


class Client:
    """A connection to a Squall cluster; create one with `squall.connect`.

    Safe to share between threads. Values:

    - ``put(key, obj)`` of a plain Python object stores
      ``cloudpickle.dumps(obj)`` as last-writer-wins; ``get`` unpickles it.
    - Last-writer-wins bytes that are not a pickle (``squall kv put k
      hello``, or ``put(k, squall.Lww(b"hello"))``) come back as `bytes`.
    - Instances of the lattice classes (`squall.Set`, `Counter`, `Max`,
      `Min`, `OrderedSet`, `Map`, `Priority`, `VectorClock`,
      `SingleKeyCausal`, `MultiKeyCausal`) are merged as that lattice, and
      ``get`` returns the same class.
    """

    def __init__(
        self, native: "_native.Client", call_timeout: float, consistency: str = "lww"
    ) -> None:
        self._native = native
        self._call_timeout = call_timeout
        self._consistency = _check_consistency(consistency)
        self._completions = _Completions(native)

    @classmethod
    def _connect(
        cls,
        address: Union[str, Sequence[str], None],
        scheduler: Union[str, Sequence[str], None],
        timeout: float,
        call_timeout: float,
        bind_host: str,
        consistency: str = "lww",
        key_file: Optional[str] = None,
        insecure: Optional[bool] = None,
        encrypt: bool = False,
    ) -> "Client":
        record = None
        if address is not None and not isinstance(address, str):
            routers, schedulers = list(address), []
            bad = [a for a in routers if not isinstance(a, str) or not a.startswith(_SCHEMES)]
            if bad or not routers:
                raise ValueError(f"router addresses must be tcp:// addresses, got {bad or routers!r}")
        elif address is not None and address.startswith(_SCHEMES):
            routers, schedulers = [address], []
        else:
            path = _state_dir(address) / "cluster.json"
            try:
                record = json.loads(path.read_text())
            except FileNotFoundError:
                raise ClusterNotFoundError(
                    f"no local cluster recorded at {path} (start one with `squall up`)"
                ) from None
            routers, schedulers = _addresses(record, "routers"), _addresses(record, "schedulers")
        key = _key_file(address, record, key_file, insecure)
        _native.use_key(None if key is None else str(key), encrypt)
        if scheduler is not None:
            schedulers = [scheduler] if isinstance(scheduler, str) else list(scheduler)
        consistency = _check_consistency(consistency)
        native = _native.Client(routers, schedulers, float(timeout), bind_host)
        return cls(native, float(call_timeout), consistency)

    # -- the key-value store ------------------------------------------------

    def get(self, key: str, raw: bool = False, readonly: bool = False) -> Any:
        """The value of `key`, or ``None`` if it has none.

        With ``raw=True`` a last-writer-wins value is returned as
        `squall.Lww` (its bytes and timestamp) instead of being unpickled.

        With ``readonly=True`` NumPy arrays (also inside tuples) come back
        read-only, as a ``Reference(key, readonly=True)`` gives them to a
        function, and a large one (64 KiB or more, put by this client
        version) is not copied: it is a view of the value where the client
        read it (for a value of 1 MiB or more from a storage node on this
        machine, the node's file in shared memory). A write to it raises
        ``ValueError``; ``numpy.array(a)`` makes a writable copy.
        """
        return _get(self._native, key, raw, readonly)

    def put(self, key: str, value: Any, ack: Union[str, int] = "one") -> None:
        """Merges `value` into `key`: a plain object as pickled
        last-writer-wins, a lattice class instance as that lattice.

        `ack` is when the put returns: ``"one"`` once the first replica
        merged it (the default: fast; lost if that replica crashes before
        its next gossip, milliseconds later), an integer k once k replicas
        hold it, ``"all"`` once every live replica does, ``"durable"`` once
        the first replica has it on disk (synced: it survives a crash of
        every node; needs storage nodes with a data directory, else
        ``KvsError`` says why).

        This client's later reads of `key`, and every call it makes, see at
        least this write, whichever replica or cache serves them.

        Raises:
            TypeMismatchError: the key holds another lattice type.
            ValueError: an unknown acknowledgement level.
        """
        self._native.put(key, value, ack)

    def delete(self, key: str, ack: Union[str, int] = "all") -> None:
        """Deletes `key` (a later put starts afresh; a counter counts from
        zero again, whoever incremented it before). Acknowledged by every
        replica unless `ack` says otherwise (see `put`)."""
        self._native.delete(key, ack)

    def exists(self, key: str) -> bool:
        """Whether `key` holds a value."""
        return self._native.exists(key)

    def get_many(self, keys: Iterable[str], raw: bool = False) -> Dict[str, Any]:
        """The values of `keys` as a dict (``None`` for a key with none),
        read with one request per storage thread holding some of them
        rather than one per key. `raw` as for `get`.

        Raises:
            KvsError: a read failed (the first failure; see `get`).
        """
        keys = list(dict.fromkeys(keys))
        return dict(zip(keys, self._native.get_many(keys, raw)))

    def put_many(self, entries: Union[Mapping[str, Any], Iterable[Tuple[str, Any]]]) -> None:
        """Merges every ``key: value`` of `entries` (a mapping, or pairs) as
        `put` does, with one request per storage thread holding some of
        the keys, acknowledged as `put`'s default (``"one"``).

        Raises:
            TypeMismatchError, RefusedError, KvsError: a write failed (the
                first failure; the others were still made).
        """
        pairs = list(entries.items() if isinstance(entries, Mapping) else entries)
        self._native.put_many(pairs)

    # -- functions ----------------------------------------------------------

    def register(
        self,
        fn_or_class: Callable[..., Any],
        name: Optional[str] = None,
        init_args: Sequence[Any] = (),
        init_kwargs: Optional[Mapping[str, Any]] = None,
    ) -> Function:
        """Registers a function (or a class, instantiated once per executor
        as ``cls(*init_args, **init_kwargs)`` and called through
        ``__call__``, else ``run``) under `name` (default: its
        ``__name__``); registering a name again replaces it. Returns a
        `Function` handle: the name (a `str`), callable (``h(x)``,
        ``h.call_async(x)``).

        The object is cloudpickled with its own module by value, so the
        executors need not import that module; modules it imports must be
        installed where the executors run.

        Raises:
            TypeError: `fn_or_class` is not callable, or `name` is not a str.
            ValueError: `name` is empty, or not given for an object without
                a usable ``__name__`` (a lambda).
        """
        name, record = _function_record(fn_or_class, name, init_args, init_kwargs)
        _store_version(self._native, name, record)
        self._native.put(_native.FUNCTIONS_KEY, _index_entry(name))
        return Function(name, self)

    def register_wasm(
        self,
        module: Union[bytes, bytearray, str, "os.PathLike[str]"],
        name: str,
        export: str = "run",
        result: str = "bytes",
    ) -> Function:
        """Registers a WebAssembly function under `name`; registering a name
        again replaces it (a Python function too). Returns its `Function`
        handle.

        Args:
            module: the module: a binary (``bytes`` starting with
                ``\\0asm``), WAT text (``bytes``, or a ``str`` that starts
                with ``(``), or the path (``str`` or path-like) of a
                ``.wasm`` or ``.wat`` file. WAT is compiled here.
            name: the function's name, as for `call` and `register_dag`.
            export: the exported function to call, ``(i32, i32) -> i64``.
            result: how the bytes it returns become a Python value:
                ``"bytes"`` (as they are), ``"str"`` (UTF-8), ``"int"`` (8
                bytes, little-endian two's complement) or ``"float"`` (8
                bytes, little-endian IEEE 754).

        The module must export ``memory``, ``alloc: (i32) -> i32`` and
        `export`, and import nothing but the ``squall`` host functions: see
        client-py/README.md, "WebAssembly functions", for the calling
        convention. It is validated here with the features the executors'
        runtime (wasmtime) accepts; nothing is stored unless it passes.

        Raises:
            InvalidModuleError: (a `ValueError`) not WAT or a WebAssembly
                binary, a WAT syntax error, an invalid module, or one that
                does not follow the calling convention; the message says why.
            ValueError: an unknown `result` kind or an empty `name`.
            TypeError: a `name` that is not a str.
            FileNotFoundError: a path that does not exist.
        """
        name, record = _wasm_record(module, name, export, result)
        _store_version(self._native, name, record)
        self._native.put(_native.FUNCTIONS_KEY, _index_entry(name))
        return Function(name, self)

    def instance(
        self,
        cls: str,
        name: str,
        init_args: Sequence[Any] = (),
        init_kwargs: Optional[Mapping[str, Any]] = None,
    ) -> Instance:
        """The named instance `name` of the registered class `cls` (its
        name or handle): an `Instance`, whose methods are called like local
        ones. It is made, on its first call, as ``cls(*init_args,
        **init_kwargs)`` (none given: with the arguments the class was
        registered with); after that its state comes from the KVS, and
        these are not used. Nothing is sent until a method is called.

        Raises:
            TypeError, ValueError: `name` is not a non-empty str.
        """
        name = _check_name(name, "instance")
        init = None
        if init_args or init_kwargs:
            init = (tuple(init_args), dict(init_kwargs or {}))
        return Instance(self, _check_name(str(cls), "class"), name, init)

    def delete_function(self, name: str) -> None:
        """Unregisters function `name`, every version of it."""
        _delete_function(self._native, str(name))

    def list_versions(self, name: str) -> List[Dict[str, Any]]:
        """Function `name`'s kept versions, oldest first: ``{"version": n,
        "registered_at": seconds since the epoch, "current": bool}``. Each
        `register` of a name makes a new version (the latest 10 are kept);
        ``call(name, version=n)`` calls one, ``call(name)`` the current."""
        return _list_versions(self._native, str(name))

    def rollback(self, name: str) -> int:
        """Makes the version before function `name`'s current one current
        again (calls by name run it from then on); returns its number.

        Raises:
            ValueError: no earlier version is kept.
        """
        return _rollback(self._native, str(name))

    def set_traffic(self, name: str, weights: Mapping[int, float]) -> None:
        """Splits the calls of function `name` between its versions (a
        canary): version N gets the share ``weights[N]`` of the calls made
        by the plain name (``call(name)``, the gateway without
        ``"version"``); the rest run the current version. Which calls go
        where is a hash of each call's id, so over many calls the shares
        hold and a retried call runs the version its first attempt ran.
        ``{}`` ends the split (as `clear_traffic`). The schedulers read the
        split within their cache's lifetime (``dag_cache_ttl``, 10 s); this
        client's next calls already follow it. A call with ``version=N``
        and a DAG's functions are not split. A new `register` of the name
        and a `rollback` end the split.

        Raises:
            ValueError: a version that is not kept (see `list_versions`), a
                weight outside [0, 1], weights adding up to more than 1, or
                a function not registered.
            TypeError: `weights` is not a mapping.
        """
        _set_traffic(self._native, str(name), weights)

    def clear_traffic(self, name: str) -> None:
        """Ends function `name`'s split: every call by the plain name runs
        the current version."""
        _clear_traffic(self._native, str(name))

    def traffic(self, name: str) -> Dict[int, float]:
        """Function `name`'s split as `set_traffic` stored it: ``{version:
        weight}``; ``{}`` if calls all run the current version."""
        return _traffic(self._native, str(name))

    def list_functions(self) -> List[str]:
        """The names of the registered functions, sorted."""
        return _listed(self._native, _native.FUNCTIONS_KEY, _native.function_key)

    def call(
        self,
        name: str,
        /,
        *args: Any,
        timeout: Optional[float] = None,
        consistency: Optional[str] = None,
        version: Optional[int] = None,
        **kwargs: Any,
    ) -> Any:
        """Calls function `name` (its version `version`, if given: see
        `list_versions`) with `args` and `kwargs` and returns its
        result. Top-level `squall.Reference` arguments are resolved to their
        keys' values on the executor. `timeout` (seconds; default the
        client's ``call_timeout``) bounds the whole call.

        Every read the call makes (its code, `Reference` arguments,
        `squall.user.get`) sees at least what this client wrote before it.
        `consistency` (default: the client's, ``"lww"`` unless `connect`
        said otherwise) is ``"lww"`` (each read sees the key as it is at
        that moment) or ``"repeatable_read"`` (every function of the call
        reading a key sees the version the call's first read of it got; the
        version travels with a DAG call to its downstream functions) or
        ``"causal"`` (repeatable read, and the reads form a causal cut over
        `MultiKeyCausal` values: a value read makes later reads of the keys
        it depends on see at least those dependencies).
        Parameters named `timeout` or `consistency` cannot be passed to the
        function by keyword.

        Raises:
            RemoteError: the function raised; ``str(e)`` shows the remote
                traceback.
            UnknownFunctionError, BadArgumentsError, BadFunctionError,
            CallTimeoutError, ExecutorDiedError, OverloadedError: the call
                failed for that reason (all `CallError`, `SquallError`).
        """
        seconds = self._call_timeout if timeout is None else timeout
        level = self._level(consistency)
        name = _versioned(name, version)
        if _pending_futures(args, kwargs):
            # The futures it takes are released (their keys deleted) by the
            # completion thread: wait through it.
            return self._send_async(name, args, kwargs, seconds, level).result()
        payload, refs, _ = _pickle_args(args, kwargs)
        seq = self._native.call(str(name), payload, refs, _timeout_ms(seconds), level)
        return _collect(self._native, seq, time.monotonic() + seconds, f"call of `{name}`")

    def call_async(
        self,
        name: str,
        /,
        *args: Any,
        timeout: Optional[float] = None,
        consistency: Optional[str] = None,
        trace: bool = False,
        version: Optional[int] = None,
        **kwargs: Any,
    ) -> Future:
        """Like `call`, but returns a `Future` at once (see
        `squall.Future`). A pending `Future` among the top-level arguments
        is waited for on the executor, not here. With ``trace=True`` the
        result comes with where the call spent its time: see
        `Future.trace` (a parameter named `trace` cannot be passed to the
        function by keyword here)."""
        seconds = self._call_timeout if timeout is None else timeout
        return self._send_async(
            _versioned(name, version), args, kwargs, seconds, self._level(consistency), trace=trace
        )

    def _send_async(
        self,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        seconds: float,
        level: str,
        trace: bool = False,
    ) -> Future:
        payload, refs, inputs = _pickle_args(args, kwargs)
        seq = self._native.call(
            str(name), payload, refs, _timeout_ms(seconds), level, True, None, trace
        )
        return self._watch(seq, seconds, f"call of `{name}`", inputs)

    def _watch(self, seq: int, seconds: float, what: str, inputs: List[Future]) -> Future:
        future = Future(self._completions, seq, time.monotonic() + seconds, what)
        future._inputs = inputs
        self._completions.watch(future)
        return future

    # -- DAGs ---------------------------------------------------------------

    def register_dag(
        self, name: str, functions: Sequence[str], connections: Iterable[Tuple[str, str]]
    ) -> Dag:
        """Registers DAG `name` of registered `functions` and the edges
        `connections` ``[(upstream, downstream), ...]``; registering a name
        again replaces it. A function with several upstream functions gets
        their results, in the order their edges are listed, before its own
        arguments. The sink (the one function with no downstream) gives the
        DAG's result. Returns a `Dag` handle: the name (a `str`), callable
        (``d(args)``, ``d.call_async(args)``).

        Raises:
            UnknownFunctionError: a function is not registered.
            ValueError: an empty `name`, a duplicate function, an edge
                naming a function not listed, a cycle, or not exactly one
                sink.
            TypeError: a `name` that is not a str.
        """
        name = _check_name(name, "DAG")
        functions = [str(f) for f in functions]
        connections = [tuple(str(f) for f in c) for c in connections]
        _check_dag(functions, connections)
        for f in functions:
            if not self._native.exists(_native.function_key(f)):
                raise UnknownFunctionError(
                    f"DAG `{name}`: function `{f}` is not registered",
                    type_name="UnknownFunction",
                    function=f,
                )
        record = _native.encode_dag(name, functions, connections)
        self._native.put(_native.dag_key(name), Lww(record))
        self._native.put(_native.DAGS_KEY, _index_entry(name))
        self._dag_changed(name)
        return Dag(name, self)

    def _dag_changed(self, name: str) -> None:
        if self._native.schedulers:
            self._native.dag_changed(name)

    def delete_dag(self, name: str) -> None:
        """Unregisters DAG `name`."""
        self._native.delete(_native.dag_key(name))
        self._dag_changed(name)

    def list_dags(self) -> List[str]:
        """The names of the registered DAGs, sorted."""
        return _listed(self._native, _native.DAGS_KEY, _native.dag_key)

    # -- Triggers -------------------------------------------------------------

    def register_trigger(
        self,
        function: Union[str, Callable[..., Any]],
        key_prefix: str = "",
        on: str = "put",
        name: Optional[str] = None,
    ) -> Trigger:
        """Runs `function` once per change of a key starting with
        `key_prefix`: every put that changes its value (``on="put"``) or
        every delete of a key that held one (``on="delete"``). The function
        is called as ``function(event)`` with a `squall.Event` (``key``,
        ``value``, ``kind``, ``timestamp``). A function object is
        registered first (under its name); a name must be registered.

        Delivery is at least once: a change whose call failed for a reason
        of the cluster (a timeout, an executor that died) runs again, and
        the storage node that took the write keeps it until its call is
        answered, through a graceful stop (SIGTERM) of that node too. A
        duplicate carries the same ``event.timestamp``. A function that
        raises is not run again for that change (the error is logged and
        counted in ``squall_trigger_failures_total``). Keys under
        ``__squall/`` fire only a prefix that starts with it.

        `name` (default ``"<function>:<on>:<key_prefix>"``) names the
        trigger for `delete_trigger`; registering a name again replaces
        it. Schedulers pick a registration up within
        ``[scheduler] trigger_refresh`` (2 s): writes before then do not
        fire it. Returns the `Trigger`.

        Raises:
            UnknownFunctionError: `function` names no registered function.
            ValueError: `on` is neither ``"put"`` nor ``"delete"``, or an
                empty `name`.
        """
        if callable(function) and not isinstance(function, str):
            function = self.register(function)
        return _store_trigger(self._native, str(function), key_prefix, on, name)

    def delete_trigger(self, name: str) -> None:
        """Unregisters trigger `name` (schedulers stop within
        ``trigger_refresh``; changes already taken still run)."""
        self._native.delete(_native.trigger_key(str(name)))

    def list_triggers(self) -> List[Trigger]:
        """The registered triggers, sorted by name."""
        return _list_triggers(self._native)

    def call_dag(
        self,
        name: str,
        args: Optional[Mapping[str, Sequence[Any]]] = None,
        timeout: Optional[float] = None,
        consistency: Optional[str] = None,
    ) -> Any:
        """Calls DAG `name` and returns its sink's result. `args` maps a
        function name to its own positional arguments (a tuple or list),
        which come after its upstream results. `consistency` as for `call`.
        Errors as for `call`, plus `UnknownDagError`."""
        seconds = self._call_timeout if timeout is None else timeout
        level = self._level(consistency)
        wire, inputs = _dag_args(args)
        if inputs:
            return self._send_dag(name, wire, inputs, seconds, level).result()
        seq = self._native.call_dag(str(name), wire, _timeout_ms(seconds), level)
        return _collect(self._native, seq, time.monotonic() + seconds, f"call of DAG `{name}`")

    def call_dag_async(
        self,
        name: str,
        args: Optional[Mapping[str, Sequence[Any]]] = None,
        timeout: Optional[float] = None,
        consistency: Optional[str] = None,
        trace: bool = False,
    ) -> Future:
        """Like `call_dag`, but returns a `Future` at once. Pending futures
        among a function's arguments are waited for on the executor.
        `trace` as for `call_async`."""
        seconds = self._call_timeout if timeout is None else timeout
        wire, inputs = _dag_args(args)
        return self._send_dag(name, wire, inputs, seconds, self._level(consistency), trace)

    def _send_dag(
        self,
        name: str,
        wire: List[Any],
        inputs: List[Future],
        seconds: float,
        level: str,
        trace: bool = False,
    ) -> Future:
        seq = self._native.call_dag(str(name), wire, _timeout_ms(seconds), level, True, trace)
        return self._watch(seq, seconds, f"call of DAG `{name}`", inputs)

    # -- misc ---------------------------------------------------------------

    def _call_instance(
        self,
        cls: str,
        name: str,
        method: str,
        init: Optional[Tuple[tuple, dict]],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        timeout: Optional[float],
    ) -> Future:
        """Sends a call of `method` of instance `name` of class `cls` (see
        `Instance`)."""
        seconds = self._call_timeout if timeout is None else timeout
        payload, refs, inputs = _pickle_args((method, init, *args), kwargs)
        seq = self._native.call(
            cls, payload, refs, _timeout_ms(seconds), self._consistency, True, name
        )
        return self._watch(seq, seconds, f"call of `{cls}[{name}].{method}`", inputs)

    def _level(self, consistency: Optional[str]) -> str:
        return self._consistency if consistency is None else _check_consistency(consistency)

    @property
    def id(self) -> int:
        """This client's unique id (its writer id, and its calls' caller)."""
        return self._native.writer

    def close(self) -> None:
        """Releases the sockets (also done when the client is collected).
        Pending futures stay pending."""
        self._completions.close()
        self._native = None  # type: ignore[assignment]

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<squall.Client {self.id:016x}>" if self._native else "<squall.Client closed>"


def _dag_args(
    args: Optional[Mapping[str, Sequence[Any]]]
) -> Tuple[List[Tuple[str, bytes, List[str]]], List[Future]]:
    """A DAG call's arguments as the native client sends them, and the
    pending futures among them."""
    wire = []
    inputs: List[Future] = []
    for function, fn_args in (args or {}).items():
        if not isinstance(fn_args, (tuple, list)):
            raise TypeError(
                f"arguments of `{function}` must be a tuple or list, not {type(fn_args).__name__}"
            )
        payload, refs, taken = _pickle_args(fn_args, {})
        wire.append((function, payload, refs))
        inputs.extend(taken)
    return wire, inputs


def _check_dag(functions: List[str], connections: List[Tuple[str, ...]]) -> None:
    """Raises ValueError unless the DAG is well formed."""
    if not functions:
        raise ValueError("a DAG needs at least one function")
    seen = set()
    for f in functions:
        if f in seen:
            raise ValueError(f"function `{f}` is listed twice")
        seen.add(f)
    downstream: Dict[str, List[str]] = {f: [] for f in functions}
    indegree = {f: 0 for f in functions}
    for edge in connections:
        if len(edge) != 2:
            raise ValueError(f"connection {edge!r} is not an (upstream, downstream) pair")
        up, down = edge
        for f in (up, down):
            if f not in seen:
                raise ValueError(f"connection ({up!r}, {down!r}) names `{f}`, which is not listed")
        downstream[up].append(down)
        indegree[down] += 1
    ready = [f for f in functions if indegree[f] == 0]
    visited = 0
    while ready:
        f = ready.pop()
        visited += 1
        for d in downstream[f]:
            indegree[d] -= 1
            if indegree[d] == 0:
                ready.append(d)
    if visited != len(functions):
        cyclic = sorted(f for f in functions if indegree[f] > 0)
        raise ValueError(f"the connections form a cycle (through {', '.join(cyclic)})")
    sinks = [f for f in functions if not downstream[f]]
    if len(sinks) != 1:
        raise ValueError(
            f"a DAG needs exactly one sink (a function with no downstream); "
            f"found {len(sinks)}: {', '.join(sinks)}"
        )


#: The consistency levels a call may ask for (see `Client.call`).
CONSISTENCY_LEVELS = ("lww", "repeatable_read", "causal")


def _check_consistency(level: str) -> str:
    if level not in CONSISTENCY_LEVELS:
        raise ValueError(
            f"unknown consistency level {level!r}: use one of {', '.join(CONSISTENCY_LEVELS)}"
        )
    return level
