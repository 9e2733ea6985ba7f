"""The local test mode: the `squall.Client` API in one process, no cluster.

    import squall.testing

    def test_square():
        client = squall.testing.local()          # or squall.connect("local://")
        client.register(lambda x: x * x, name="square")
        assert client.call("square", 7) == 49

What is the same as on a cluster:

- **Values.** The store is `squall._native.LocalKvs`: the client's own
  conversion of Python objects to lattices over a store in memory that
  merges as a storage node does (`KeyState`: every lattice type, type
  mismatches as `TypeMismatchError`, deletes, counters' baselines).
- **Functions and their arguments** are stored as on a cluster (the same
  `FunctionCode` and `Dag` records under the same keys) and cloudpickled
  the same way both ways, so a function that only works because it shares
  objects with its caller fails here too; `Reference` arguments and
  pending futures are resolved before the function runs.
- **Errors**: the same classes (`RemoteError` with the traceback,
  `UnknownFunctionError`, `UnknownDagError`, `CallTimeoutError`, ...).
- **`squall.user`** inside a function reads and writes this store;
  ``executor_id()`` is ``"local"``.
- Futures (`Future.result`, ``logs``, ``await``, `squall.gather`), DAGs
  (upstream results first, in the order of their connections), named
  instances (state in the store, one call at a time), what a function
  prints (``Future.logs()``), coroutine functions (``async def``, run to
  their end on an event loop of the call's own; ``squall.user.aget``,
  ``aput`` and ``adelete`` work).
- **Triggers** (`register_trigger`): a put or delete of a matching key,
  from the client or inside a function, runs the trigger's function with
  a `squall.Event`, on the pool like a call; `wait_triggers()` waits for
  those started so far. Unlike a cluster, every put fires (a cluster fires
  only a put that changed the value) and the registration counts at once.

What is not: calls run on a pool of threads of this process (`executors`,
default 2) without a deadline that stops them (a call past its timeout
fails at the caller, its thread runs on); consistency levels are moot (one
store); no WebAssembly runtime (`register_wasm` validates and stores the
module, and its calls fail with `BadFunctionError`); ``user.send`` /
``recv`` are not available. Tests that need those need a cluster.

The same API tests run against this mode and a real cluster
(client-py/tests/test_local.py), so the two stay alike.

For tests that do start a cluster, `free_base_port` finds a
``squall up --base-port`` whose ports are free.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as _cf
import inspect
import io
import itertools
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import cloudpickle

from . import _native
from .client import (
    Dag,
    Function,
    Instance,
    _check_consistency,
    _check_dag,
    _check_name,
    _delete_function,
    _function_record,
    _get,
    _list_triggers,
    _list_versions,
    _clear_traffic,
    _rollback,
    _set_traffic,
    _split,
    _store_trigger,
    _store_version,
    _traffic,
    _versioned,
    _index_entry,
    _listed,
    _wasm_record,
)
from .errors import (
    BadFunctionError,
    CallTimeoutError,
    RemoteError,
    UnknownDagError,
    UnknownFunctionError,
    call_error,
)
from .events import Event, Timestamp, Trigger
from .futures import CallFuture, FailedArgument, format_output
from .lattices import Lww
from .reference import Reference, freeze

__all__ = ["local", "LocalClient", "LocalFuture", "free_base_port"]


def free_base_port(ports: int = 600, low: int = 20000, high: int = 60000) -> int:
    """A base port for ``squall up --base-port`` (which puts its processes
    at fixed offsets from it): a port P in `low`..`high` such that P to
    P + `ports` are all free on loopback now. Bases are tried at random (so
    that tests running side by side seldom meet); `RuntimeError` if 50
    tries found none."""
    import random
    import socket

    for _ in range(50):
        base = random.randrange(low, high - ports)
        socks = []
        try:
            for port in range(base, base + ports):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {ports} free ports in a row found between {low} and {high}")


def local(executors: int = 2, call_timeout: float = 60.0, consistency: str = "lww") -> "LocalClient":
    """A `LocalClient`: the client API over a store in this process's
    memory, functions run on `executors` threads of this process."""
    return LocalClient(executors, call_timeout, consistency)


class LocalFuture(CallFuture):
    """A local call's future: what a cluster's `squall.Future` is (a
    `concurrent.futures.Future` with ``get``, ``logs``, ``trace`` (always
    ``None``: local calls are not traced), ``call_id``, ``await``)."""

    def __init__(self, what: str, call_id: str) -> None:
        super().__init__(what)
        self._call_id = call_id

    @property
    def call_id(self) -> str:
        return self._call_id

    def __reduce__(self):
        # Pickled into another local call's arguments: found again by id
        # in this process (a future is no value; it is resolved there).
        _FUTURES[id(self)] = self
        return (_future_by_id, (id(self),))


#: Local futures passed as arguments, until the call taking them unpickles
#: them.
_FUTURES: Dict[int, "LocalFuture"] = {}


def _future_by_id(key: int) -> "LocalFuture":
    return _FUTURES.pop(key)


# -- what a running function sees -------------------------------------------

from .user import _local as _running


class _LocalExecutor:
    """`squall.user`'s backend inside a local call (the executor's
    `_squall_executor` on a cluster)."""

    def __init__(self, kvs: "_native.LocalKvs", peers: Mapping[str, str]) -> None:
        self._kvs = kvs
        self._peers = peers

    def get(self, key: str, raw: bool = False) -> Any:
        return self._kvs.get(key, raw)

    def put(self, key: str, value: Any, ack: Any = None) -> None:
        self._kvs.put(key, value, ack)

    def delete(self, key: str, ack: Any = None) -> None:
        self._kvs.delete(key, ack)

    def version(self, key: str) -> None:
        return None

    def executor_id(self) -> str:
        return "local"

    def executor_of(self, name: str) -> Optional[str]:
        return "local" if name in self._peers else None

    def cache_address(self) -> str:
        return "local"

    def send(self, to: str, data: bytes) -> None:
        raise RuntimeError("squall.user.send needs a cluster: the local test mode has no executors")

    def recv(self, timeout: Optional[float] = None) -> None:
        raise RuntimeError("squall.user.recv needs a cluster: the local test mode has no executors")


class _TriggeringKvs:
    """The local store, recording changes of keys for triggers as a
    storage thread does: every write through it (the client's, and
    functions' through `squall.user`) fires the matching triggers."""

    def __init__(self, kvs: "_native.LocalKvs", client: "LocalClient") -> None:
        self._kvs = kvs
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kvs, name)

    def put(self, key: str, value: Any, ack: Any = None) -> None:
        self._kvs.put(key, value, ack)
        self._client._changed(key, "put")

    def put_many(self, entries: Sequence[Tuple[str, Any]]) -> None:
        self._kvs.put_many(entries)
        for key, _ in entries:
            self._client._changed(key, "put")

    def delete(self, key: str, ack: Any = None) -> None:
        held = self._kvs.exists(key)
        self._kvs.delete(key, ack)
        if held:
            self._client._changed(key, "delete")


def current_executor() -> Optional[_LocalExecutor]:
    """The local call running on this thread's `squall.user` backend, if any."""
    return getattr(_running, "executor", None)


class _Capture(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` while local calls run: what a call's
    thread writes is kept for it, and passed on to the real stream."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        parts = getattr(_running, "output", None)
        if parts is not None:
            parts.append(text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()


_capture_lock = threading.Lock()


def _install_capture() -> None:
    with _capture_lock:
        if not isinstance(sys.stdout, _Capture):
            sys.stdout = _Capture(sys.stdout)
        if not isinstance(sys.stderr, _Capture):
            sys.stderr = _Capture(sys.stderr)


class _CallFailed(Exception):
    """Carries a `CallError` out of one function of a local call."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _remote_error(exc: BaseException, function: str) -> RemoteError:
    """A function's exception as its caller gets it from an executor."""
    tb = exc.__traceback__
    # Drop this module's frames: the traceback starts in the function.
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return RemoteError(str(exc), type_name=type(exc).__name__, traceback=text, function=function)


class LocalClient:
    """The `squall.Client` API in one process (see the module's
    documentation). Create one with `squall.testing.local()`."""

    def __init__(self, executors: int = 2, call_timeout: float = 60.0, consistency: str = "lww") -> None:
        if executors < 1:
            raise ValueError(f"executors must be at least 1, not {executors}")
        self._kvs = _TriggeringKvs(_native.LocalKvs(), self)
        self._triggers: Optional[List[Trigger]] = None
        self._trigger_runs: List[LocalFuture] = []
        self._stamps = itertools.count()
        self._pool = _cf.ThreadPoolExecutor(max_workers=executors, thread_name_prefix="squall-local")
        self._call_timeout = call_timeout
        self._consistency = _check_consistency(consistency)
        self._seq = itertools.count(1)
        self._instance_locks: Dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        _install_capture()

    # -- the key-value store --------------------------------------------

    def get(self, key: str, raw: bool = False, readonly: bool = False) -> Any:
        return _get(self._kvs, key, raw, readonly)

    def put(self, key: str, value: Any, ack: Union[str, int] = "one") -> None:
        self._kvs.put(key, value, ack)

    def delete(self, key: str, ack: Union[str, int] = "all") -> None:
        self._kvs.delete(key, ack)

    def exists(self, key: str) -> bool:
        return self._kvs.exists(key)

    def get_many(self, keys: Iterable[str], raw: bool = False) -> Dict[str, Any]:
        keys = list(dict.fromkeys(keys))
        return dict(zip(keys, self._kvs.get_many(keys, raw)))

    def put_many(self, entries: Union[Mapping[str, Any], Iterable[Tuple[str, Any]]]) -> None:
        pairs = list(entries.items() if isinstance(entries, Mapping) else entries)
        self._kvs.put_many(pairs)

    # -- functions ----------------------------------------------------------

    def register(
        self,
        fn_or_class: Callable[..., Any],
        name: Optional[str] = None,
        init_args: Sequence[Any] = (),
        init_kwargs: Optional[Mapping[str, Any]] = None,
    ) -> Function:
        name, record = _function_record(fn_or_class, name, init_args, init_kwargs)
        return self._store_function(name, record)

    def register_wasm(self, module: Any, name: str, export: str = "run", result: str = "bytes") -> Function:
        name, record = _wasm_record(module, name, export, result)
        return self._store_function(name, record)

    def _store_function(self, name: str, record: bytes) -> Function:
        _store_version(self._kvs, name, record)
        self._kvs.put(_native.FUNCTIONS_KEY, _index_entry(name))
        return Function(name, self)  # type: ignore[arg-type]

    def delete_function(self, name: str) -> None:
        _delete_function(self._kvs, str(name))

    def list_versions(self, name: str) -> List[Dict[str, Any]]:
        return _list_versions(self._kvs, str(name))

    def rollback(self, name: str) -> int:
        return _rollback(self._kvs, str(name))

    def set_traffic(self, name: str, weights: Mapping[int, float]) -> None:
        _set_traffic(self._kvs, str(name), weights)

    def clear_traffic(self, name: str) -> None:
        _clear_traffic(self._kvs, str(name))

    def traffic(self, name: str) -> Dict[int, float]:
        return _traffic(self._kvs, str(name))

    def list_functions(self) -> List[str]:
        return _listed(self._kvs, _native.FUNCTIONS_KEY, _native.function_key)

    # -- triggers -------------------------------------------------------------

    def register_trigger(
        self,
        function: Union[str, Callable[..., Any]],
        key_prefix: str = "",
        on: str = "put",
        name: Optional[str] = None,
    ) -> Trigger:
        if callable(function) and not isinstance(function, str):
            function = self.register(function)
        trigger = _store_trigger(self._kvs, str(function), key_prefix, on, name)
        self._triggers = None
        return trigger

    def delete_trigger(self, name: str) -> None:
        self._kvs.delete(_native.trigger_key(str(name)))
        self._triggers = None

    def list_triggers(self) -> List[Trigger]:
        return _list_triggers(self._kvs)

    def wait_triggers(self, timeout: Optional[float] = None) -> None:
        """Waits until the trigger runs started so far (and those they
        start) have ended; raises `TimeoutError` after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._trigger_runs:
            run = self._trigger_runs.pop(0)
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            _cf.wait([run], timeout=left)
            if not run.done():
                self._trigger_runs.insert(0, run)
                raise TimeoutError("trigger runs still going")

    def _changed(self, key: str, kind: str) -> None:
        if key.startswith(_native.TRIGGERS_KEY) or key.startswith(_native.trigger_key("")):
            self._triggers = None
        if self._triggers is None:
            self._triggers = _list_triggers(self._kvs._kvs) if self._kvs.exists(_native.TRIGGERS_KEY) else []
        for t in self._triggers:
            if t.on != kind or not key.startswith(t.key_prefix):
                continue
            if key.startswith("__squall/") and not t.key_prefix.startswith("__squall/"):
                continue
            stamp = Timestamp(int(time.time() * 1000), next(self._stamps), 0)
            value = self._kvs.get(key) if kind == "put" else None
            payload = _payload((Event(key, kind, stamp, t.name, value),), {})
            run = self._submit(
                f"trigger `{t.name}`", None, lambda out, f=t.function, p=payload: self._run_one(f, p, out)
            )
            self._trigger_runs.append(run)

    def instance(
        self, cls: str, name: str, init_args: Sequence[Any] = (), init_kwargs: Optional[Mapping[str, Any]] = None
    ) -> Instance:
        name = _check_name(name, "instance")
        init = (tuple(init_args), dict(init_kwargs or {})) if (init_args or init_kwargs) else None
        return Instance(self, _check_name(str(cls), "class"), name, init)  # type: ignore[arg-type]

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
        return self.call_async(
            name, *args, timeout=timeout, consistency=consistency, version=version, **kwargs
        ).result()

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
    ) -> LocalFuture:
        if consistency is not None:
            _check_consistency(consistency)
        seq = next(self._seq)
        # A plain name goes through its split as the scheduler's does (the
        # local calls' caller is 0, as their ids say).
        name = _split(self._kvs, _versioned(name, version), 0, seq)
        payload = _payload(args, kwargs)
        return self._submit(
            f"call of `{name}`", timeout, lambda out: self._run_one(name, payload, out), seq=seq
        )

    def _call_instance(self, cls: str, name: str, method: str, init: Any, args: Sequence[Any], kwargs: Mapping[str, Any], timeout: Optional[float]) -> LocalFuture:
        payload = _payload(args, kwargs)
        key = _native.instance_key(cls, name)
        return self._submit(
            f"call of `{cls}[{name}].{method}`",
            timeout,
            lambda out: self._run_instance(cls, key, method, init, payload, out),
        )

    # -- DAGs -------------------------------------------------------------

    def register_dag(self, name: str, functions: Sequence[str], connections: Iterable[Tuple[str, str]]) -> Dag:
        name = _check_name(name, "DAG")
        functions = [str(f) for f in functions]
        connections = [tuple(str(f) for f in c) for c in connections]
        _check_dag(functions, connections)
        for f in functions:
            if not self._kvs.exists(_native.function_key(f)):
                raise UnknownFunctionError(
                    f"DAG `{name}`: function `{f}` is not registered", type_name="UnknownFunction", function=f
                )
        self._kvs.put(_native.dag_key(name), Lww(_native.encode_dag(name, functions, connections)))
        self._kvs.put(_native.DAGS_KEY, _index_entry(name))
        return Dag(name, self)  # type: ignore[arg-type]

    def delete_dag(self, name: str) -> None:
        self._kvs.delete(_native.dag_key(name))

    def list_dags(self) -> List[str]:
        return _listed(self._kvs, _native.DAGS_KEY, _native.dag_key)

    def call_dag(self, name: str, args: Optional[Mapping[str, Sequence[Any]]] = None, timeout: Optional[float] = None, consistency: Optional[str] = None) -> Any:
        return self.call_dag_async(name, args, timeout, consistency).result()

    def call_dag_async(
        self,
        name: str,
        args: Optional[Mapping[str, Sequence[Any]]] = None,
        timeout: Optional[float] = None,
        consistency: Optional[str] = None,
        trace: bool = False,
    ) -> LocalFuture:
        if consistency is not None:
            _check_consistency(consistency)
        name = str(name)
        payloads = {}
        for function, fn_args in (args or {}).items():
            if not isinstance(fn_args, (tuple, list)):
                raise TypeError(
                    f"arguments of `{function}` must be a tuple or list, not {type(fn_args).__name__}"
                )
            payloads[str(function)] = _payload(fn_args, {})
        return self._submit(f"call of DAG `{name}`", timeout, lambda out: self._run_dag(name, payloads, out))

    # -- running calls ------------------------------------------------------

    def _submit(
        self, what: str, timeout: Optional[float], run: Callable[[list], Any], seq: Optional[int] = None
    ) -> LocalFuture:
        seconds = self._call_timeout if timeout is None else timeout
        if not seconds > 0:
            raise ValueError(f"timeout must be positive, not {seconds}")
        future = LocalFuture(what, f"{0:016x}-{next(self._seq) if seq is None else seq}")
        deadline = time.monotonic() + seconds

        def job() -> None:
            try:
                value = run(future._output)
            except _CallFailed as failed:
                failed.error.logs = format_output(future._output)
                _settle(future, error=failed.error)
            except BaseException as e:  # a bug of this module: say so
                _settle(future, error=e)
            else:
                if time.monotonic() > deadline:
                    error = CallTimeoutError(f"{what} did not finish before the call's deadline", type_name="Timeout")
                    _settle(future, error=error)
                else:
                    _settle(future, value=value)

        self._pool.submit(job)
        timer = threading.Timer(seconds, lambda: _settle(future, error=CallTimeoutError(
            f"{what}: no answer before the call's deadline", type_name="Timeout")))
        timer.daemon = True
        timer.start()
        future.add_done_callback(lambda _: timer.cancel())
        return future

    def _code(self, name: str) -> Tuple[Any, bool]:
        """Function `name` as stored: the unpickled object and whether it
        is a class."""
        record = self._kvs.get(_native.function_key(name), True)
        if record is None:
            raise _CallFailed(UnknownFunctionError(
                f"no function `{name}` is registered", type_name="UnknownFunction", function=name))
        decoded = _native.decode_function(record.value)
        if decoded is None:
            raise _CallFailed(BadFunctionError(
                f"`{name}`: the stored record is not a function", type_name="BadFunction", function=name))
        runtime, code, is_class, _ = decoded
        if runtime != "python":
            raise _CallFailed(BadFunctionError(
                f"`{name}` is a WebAssembly function: the local test mode runs Python only; "
                "test it on a cluster", type_name="BadFunction", function=name))
        try:
            return cloudpickle.loads(code), is_class
        except BaseException as e:
            raise _CallFailed(call_error("BadFunction", type(e).__name__, str(e), "", name)) from None

    def _invoke(self, name: str, fn: Callable[..., Any], inputs: List[Any], payload: bytes, out: list) -> bytes:
        """Runs `fn` as an executor would: arguments unpickled and
        resolved, output captured, the result pickled."""
        args, kwargs = self._arguments(name, payload)
        _install_capture()  # (again: a test runner may have swapped the streams)
        _running.executor = _LocalExecutor(self._kvs, {})
        _running.output = parts = []
        try:
            result = fn(*inputs, *args, **kwargs)
            if inspect.isawaitable(result):
                # A coroutine function: run to its end on an event loop of
                # this call's own (the executor's is shared by its calls).
                result = asyncio.run(_awaited(result))
            data = cloudpickle.dumps(result)
        except _CallFailed:
            raise
        except BaseException as e:
            raise _CallFailed(_remote_error(e, name)) from None
        finally:
            _running.executor = None
            _running.output = None
            if parts:
                out.append((name, "".join(parts)))
        return data

    def _arguments(self, name: str, payload: bytes) -> Tuple[tuple, dict]:
        try:
            args, kwargs = cloudpickle.loads(payload)
        except BaseException as e:
            raise _CallFailed(call_error("BadArguments", type(e).__name__, str(e), "", name)) from None

        def resolve(x: Any) -> Any:
            if isinstance(x, LocalFuture):
                try:
                    return cloudpickle.loads(cloudpickle.dumps(x.result()))
                except BaseException as e:
                    raise _CallFailed(RemoteError(
                        f"an argument failed: {x._what}: {getattr(e, 'message', e)}",
                        type_name=getattr(e, "type_name", type(e).__name__),
                        traceback=getattr(e, "traceback", ""), function=name)) from None
            if isinstance(x, Reference):
                value = self._kvs.get(x.key)
                if value is None:
                    raise _CallFailed(CallTimeoutError(
                        f"reference {x.key!r} does not exist (a cluster would wait for it until the "
                        "call's deadline)", type_name="Timeout", function=name))
                if x.readonly:
                    freeze(value)
                return value
            if isinstance(x, FailedArgument):
                raise _CallFailed(x.error)
            return x

        return tuple(resolve(a) for a in args), {k: resolve(v) for k, v in kwargs.items()}

    def _instantiate(self, name: str, obj: Any, is_class: bool) -> Callable[..., Any]:
        if not is_class:
            if not callable(obj):
                raise _CallFailed(BadFunctionError(f"{name!r} is not callable", type_name="TypeError", function=name))
            return obj
        try:
            instance = obj()
        except BaseException as e:
            raise _CallFailed(_remote_error(e, name)) from None
        fn = instance if callable(instance) else getattr(instance, "run", None)
        if not callable(fn):
            raise _CallFailed(BadFunctionError(
                f"class {type(instance).__name__} of {name!r} has neither __call__ nor run "
                "(call methods of its named instances: client.instance(...))",
                type_name="TypeError", function=name))
        return fn

    def _run_one(self, name: str, payload: bytes, out: list) -> Any:
        obj, is_class = self._code(name)
        fn = self._instantiate(name, obj, is_class)
        return cloudpickle.loads(self._invoke(name, fn, [], payload, out))

    def _run_instance(self, cls: str, key: str, method: str, init: Any, payload: bytes, out: list) -> Any:
        obj, is_class = self._code(cls)
        if not is_class:
            raise _CallFailed(BadFunctionError(
                f"{cls!r} is not a class: it has no named instances", type_name="TypeError", function=cls))
        if not isinstance(method, str) or method.startswith("_"):
            raise _CallFailed(call_error("BadArguments", "AttributeError",
                                         f"instance of {cls!r} has no public method {method!r}", "", cls))
        with self._locks_lock:
            lock = self._instance_locks.setdefault(key, threading.Lock())
        with lock:  # one call of an instance at a time
            stored = self._kvs.get(key, True)
            base = getattr(obj, "func", obj)
            try:
                if stored is None:
                    made = base(*init[0], **init[1]) if init is not None else obj()
                else:
                    made = base.__new__(base)
                    state = cloudpickle.loads(stored.value)["state"]
                    setstate = getattr(made, "__setstate__", None)
                    if callable(setstate):
                        setstate(state)
                    else:
                        made.__dict__.update(state)
            except BaseException as e:
                raise _CallFailed(_remote_error(e, cls)) from None
            bound = getattr(made, method, None)
            if not callable(bound):
                raise _CallFailed(call_error("BadArguments", "AttributeError",
                                             f"instance of {cls!r} has no public method {method!r}", "", cls))
            result = cloudpickle.loads(self._invoke(cls, bound, [], payload, out))
            getstate = getattr(made, "__getstate__", None)
            state = getstate() if callable(getstate) else made.__dict__
            self._kvs.put(key, Lww(cloudpickle.dumps({"state": state, "done": []})))
            return result

    def _run_dag(self, name: str, payloads: Mapping[str, bytes], out: list) -> Any:
        record = self._kvs.get(_native.dag_key(name), True)
        parts = None if record is None else _native.decode_dag(record.value)
        if parts is None:
            raise _CallFailed(UnknownDagError(f"no DAG `{name}` is registered", type_name="UnknownDag"))
        _, functions, connections = parts
        for f in payloads:
            if f not in functions:
                raise _CallFailed(call_error(
                    "BadArguments", "BadArguments", f"DAG `{name}` has no function `{f}`", "", f))
        upstream: Dict[str, List[str]] = {f: [] for f in functions}
        downstream: Dict[str, List[str]] = {f: [] for f in functions}
        for up, down in connections:
            upstream[down].append(up)
            downstream[up].append(down)
        results: Dict[str, bytes] = {}
        empty = cloudpickle.dumps(((), {}))
        pending = list(functions)
        while pending:
            f = next(f for f in pending if all(u in results for u in upstream[f]))
            pending.remove(f)
            obj, is_class = self._code(f)
            fn = self._instantiate(f, obj, is_class)
            inputs = [cloudpickle.loads(results[u]) for u in upstream[f]]
            results[f] = self._invoke(f, fn, inputs, payloads.get(f, empty), out)
        [sink] = [f for f in functions if not downstream[f]]
        return cloudpickle.loads(results[sink])

    # -- misc ---------------------------------------------------------------

    @property
    def id(self) -> int:
        return self._kvs.writer

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "LocalClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<squall.testing.LocalClient>"


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _payload(args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
    """A call's arguments pickled as a cluster call's are (a local future
    among the top-level ones stands for itself: it is resolved in this
    process before the function runs)."""
    for a in (*args, *kwargs.values()):
        if isinstance(a, _cf.Future) and not isinstance(a, LocalFuture):
            raise TypeError("a future of another client cannot be passed to a local call")
    return cloudpickle.dumps((tuple(args), dict(kwargs)))


def _settle(future: LocalFuture, value: Any = None, error: Optional[BaseException] = None) -> None:
    try:
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)
    except _cf.InvalidStateError:
        pass  # settled already (a timeout, then the late result)
