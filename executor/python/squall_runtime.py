"""The executor's Python side.

The executor compiles this file into its binary and loads it as module
``_squall_runtime`` in its embedded interpreter; it is not meant to be
imported by clients. The executor calls, from its worker thread:

- ``setup(venv_roots, extra_paths) -> dict``: adds the first virtualenv's
  ``lib/pythonX.Y/site-packages`` and every extra directory with
  ``site.addsitedir``, checks that ``cloudpickle`` imports, and describes
  the interpreter for the executor's log.
- ``load(code, is_class, name) -> ("ok", callable) | error``: unpickles a
  registered function; a class is instantiated once and its ``__call__``
  (else ``run``) serves the calls.
- ``invoke(fn, payload, upstream, deadline, name, call) -> ("ok", bytes) |
  error``: unpickles ``(args, kwargs)``, replaces top-level ``Reference``
  arguments with the referenced values (read through the executor's route
  to the node's cache, ``_squall_executor.get``, waiting for a missing key
  until ``deadline``, seconds since the epoch), calls ``fn(*upstream,
  *args, **kwargs)`` and pickles the result. What the call prints (stdout,
  stderr, ``logging`` through them) goes to the executor's log, each line
  tagged ``[call CALLER-SEQ NAME]``, and is kept for the caller.
- ``is_coroutine_function(fn) -> bool``: whether calls of a loaded
  callable are coroutines (``async def``, also a callable instance's
  ``__call__`` or the function a ``functools.partial`` wraps).
- ``start(call, fn, payload, upstream, deadline, name, call_id) ->
  ("ok", None) | error``: a call of a coroutine function. Its arguments
  are made ready as ``invoke`` does, on the worker thread; then it runs as
  a task on the runtime's event loop (a thread of its own, started at the
  first such call), cancelled at ``deadline``, and ends by calling
  ``call.finish(outcome, output, kept, kept_bytes)`` (``call`` is the
  executor's ``_squall_executor.AsyncCall``). Its task's context holds
  ``call`` in ``_squall_executor.current_call`` (how ``squall.user``
  finds the call) and its own output capture.
- ``take_output() -> str``: what the last call printed (at most
  ``MAX_OUTPUT_CHARS``), which travels back with its result.
- ``configure(max_value_bytes)``: bounds the executor's cache of referenced
  values.
- ``invalidate(keys)``: drops those keys from it (the node's cache pushed a
  change of them, or a function on this executor wrote them).

For WebAssembly functions (``executor/src/runtime/wasm.rs`` documents the
calling convention) the executor calls, with the current call's context set:

- ``wasm_args(payload, upstream, deadline) -> ("ok", [bytes]) |
  error``: the upstream results then the positional arguments (resolving
  ``Reference`` arguments as ``invoke`` does), each converted to bytes by
  :func:`wasm_bytes`; keyword arguments are refused.
- ``wasm_result(data, kind) -> ("ok", pickled) | error``: the bytes a
  function returned, as the Python value its registered result kind
  (``"Bytes"``, ``"Str"``, ``"Int"``, ``"Float"``) names, cloudpickled.

A WebAssembly function's host imports ``squall.get`` and ``squall.put`` do
not come here: they take the executor's route to the cache in Rust.

Referenced last-writer-wins values are kept between calls as the bytes
read, where they lie (``_squall_executor.get_reference`` gives them as a
buffer over the cache's file or the frame: no copy into a Python
``bytes``; least recently used out beyond ``max_value_bytes``) and decoded
afresh for every call, so a function that mutates its argument cannot
change what the next call sees. A ``Reference(key, readonly=True)`` is
resolved to a read-only value instead (NumPy arrays with ``writeable``
off, also inside tuples): decoded once per kept version and the same
object handed to every such call, counted in ``max_value_bytes`` beside
its bytes; a value with mutable parts (lists, dicts, arrays of Python
objects) is decoded afresh as before. The executor subscribes at the node's
cache to every key it keeps and calls ``invalidate`` when one changes.

An error is ``("error", kind, type_name, message, traceback)`` where kind
is ``Remote``, ``BadArguments``, ``BadFunction`` or ``Timeout``. At the
call's deadline the executor raises :class:`CallTimeout` in the worker
thread; it derives from ``BaseException`` so that a function's
``except Exception`` does not swallow it.
"""

import contextvars
import functools
import inspect
import os
import pickle
import site
import struct
import sys
import threading
from collections import OrderedDict
import time
import traceback

#: How long to wait before reading a missing referenced key again.
REFERENCE_POLL_S = 0.005
#: A missing reference gives up this long before the call's deadline, so
#: the caller learns which key was missing rather than a bare timeout.
REFERENCE_MARGIN_S = 0.05


class CallTimeout(BaseException):
    """Raised in a function by the executor at its call's deadline."""


def _timed_out(name):
    """The outcome of a call of `name` stopped at its deadline."""
    return ("error", "Timeout", "Timeout", f"{name} did not finish before the call's deadline", "")


#: What a call may print and log that travels back to its caller; beyond
#: it the output is cut (the executor's log still has all of it).
MAX_OUTPUT_CHARS = 64 * 1024


class _Output:
    """Stands in for ``sys.stdout`` or ``sys.stderr``: what is written goes
    to the executor's own stream (its log), each line tagged with the
    running call (``[call CALLER.SEQ FUNCTION]``), and is kept for the call's
    caller. A coroutine's capture is in its task's context; threads a plain
    function starts are captured with it (the worker runs one plain call at
    a time)."""

    def __init__(self, stream):
        self._stream = stream
        self._at_line_start = True

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        capture = _current_capture()
        if capture is None or not text:
            return self._stream.write(text)
        capture.keep(text)
        tagged = []
        for line in text.splitlines(keepends=True):
            if self._at_line_start:
                tagged.append(capture.tag)
            tagged.append(line)
            self._at_line_start = line.endswith("\n")
        self._stream.write("".join(tagged))
        return len(text)

    def flush(self):
        self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


class _Capture:
    """The output of the running call."""

    def __init__(self, call, name):
        self.tag = f"[call {call} {name}] "
        self.parts = []
        self.size = 0
        self.cut = False
        # Reference reads kept values answered (no read through the cache).
        self.kept = 0
        self.kept_bytes = 0

    def keep(self, text):
        if self.size >= MAX_OUTPUT_CHARS:
            self.cut = True
            return
        text = text[: MAX_OUTPUT_CHARS - self.size]
        self.parts.append(text)
        self.size += len(text)

    def text(self):
        out = "".join(self.parts)
        if self.cut:
            out += f"\n[output cut at {MAX_OUTPUT_CHARS} characters; the executor's log has all of it]\n"
        return out


_capture = None
#: A coroutine's capture, in its task's context.
_task_capture = contextvars.ContextVar("squall_capture", default=None)
#: The event loop's thread (``None`` until the first coroutine call).
_loop_thread = None
_loop = None


def _current_capture():
    """The capture of the call running here: a coroutine's, else (outside
    the event loop's thread) the plain call's."""
    capture = _task_capture.get()
    if capture is not None:
        return capture
    if _loop_thread is not None and threading.current_thread() is _loop_thread:
        return None
    return _capture


def _install_output():
    if not isinstance(sys.stdout, _Output):
        sys.stdout = _Output(sys.stdout)
    if not isinstance(sys.stderr, _Output):
        sys.stderr = _Output(sys.stderr)


def take_output():
    """Ends the capture of the last call and returns ``(output, kept,
    kept_bytes)``: what it printed (empty if nothing), and how many of its
    ``Reference`` reads kept values answered, with their bytes."""
    global _capture
    capture, _capture = _capture, None
    if capture is None:
        return ("", 0, 0)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    return (capture.text(), capture.kept, capture.kept_bytes)


def setup(venv_roots, extra_paths):
    version = sys.version_info
    before = list(sys.path)
    used = []
    for root in venv_roots:
        packages = os.path.join(
            root, "lib", f"python{version.major}.{version.minor}", "site-packages"
        )
        if os.path.isdir(packages):
            site.addsitedir(packages)
            used.append(packages)
            break
    for path in extra_paths:
        site.addsitedir(path)
        used.append(path)
    # addsitedir appends; the virtualenv's packages must win over the base
    # interpreter's own site-packages, as they do in the venv's python.
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before
    try:
        import cloudpickle
    except ImportError as e:
        raise ImportError(
            f"cloudpickle is not importable in the embedded Python "
            f"{sys.version.split()[0]} (prefix {sys.prefix}; paths added: "
            f"{used or 'none'}). Create the virtualenv (make setup), set "
            f"VIRTUAL_ENV, or give its site-packages as python_path."
        ) from e
    _install_output()
    return {
        "version": sys.version.split()[0],
        "prefix": sys.prefix,
        "paths": used,
        "cloudpickle": cloudpickle.__file__,
    }


def _error(kind, exc, skip_frames=1):
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None:
            tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return ("error", kind, type(exc).__name__, str(exc), text)


#: The file name cloudpickle gives every code object it pickles by value.
_DYNAMIC_CODE = "<dynamic-code>"
#: Source lines registered per file name, merged across the functions of
#: one file (each registers its own lines, the rest blank).
_sources = {}


def _register_source(obj):
    """Makes tracebacks through `obj` (a function or class just unpickled)
    name the user's file and show its lines: the client recorded
    ``(filename, source)`` on it as ``__squall_source__``
    (``squall._source.attach``). The function's code objects (a class's
    methods') are renamed from ``<dynamic-code>`` to that file, and the
    source, if any, is registered with ``linecache`` under it. Without the
    attribute nothing changes."""
    try:
        found = getattr(obj, "__squall_source__", None)
    except Exception:
        return
    if not (isinstance(found, tuple) and len(found) == 2 and isinstance(found[0], str)):
        return
    filename, source = found
    if isinstance(source, str):
        import linecache

        lines = _sources.setdefault(filename, [])
        for i, line in enumerate(source.splitlines(keepends=True)):
            if i >= len(lines):
                lines.append(line)
            elif line.strip():
                lines[i] = line
        # No modification time: linecache.checkcache keeps the entry.
        linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)
    functions = [obj]
    # A class's methods, or a callable instance's class's.
    cls = obj if isinstance(obj, type) else None
    if cls is None and not hasattr(obj, "__code__"):
        cls = type(obj)
    if cls is not None:
        for member in vars(cls).values():
            member = getattr(member, "__func__", member)
            if isinstance(member, property):
                functions.extend(f for f in (member.fget, member.fset, member.fdel) if f)
            else:
                functions.append(member)
    for fn in functions:
        code = getattr(fn, "__code__", None)
        if code is not None and code.co_filename == _DYNAMIC_CODE:
            try:
                fn.__code__ = _renamed(code, filename)
            except (AttributeError, TypeError, ValueError):
                pass


def _renamed(code, filename):
    """`code` and the code objects nested in it, with file name `filename`."""
    consts = tuple(
        _renamed(c, filename) if isinstance(c, type(code)) and c.co_filename == _DYNAMIC_CODE else c
        for c in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=consts)


def load(code, is_class, name):
    import cloudpickle

    try:
        obj = cloudpickle.loads(code)
    except CallTimeout:
        raise
    except BaseException as e:
        return _error("BadFunction", e)
    _register_source(getattr(obj, "func", obj) if is_class else obj)
    if is_class:
        _classes[name] = obj
        try:
            instance = obj()
        except CallTimeout:
            raise
        except TypeError as e:
            # A class whose __init__ takes arguments still serves named
            # instances (each made with its own); a plain call fails so.
            return ("ok", _Unmade(_error("Remote", e)))
        except BaseException as e:
            return _error("Remote", e)
        if callable(instance):
            return ("ok", instance)
        run = getattr(instance, "run", None)
        if callable(run):
            return ("ok", run)
        # Still a class for named instances; a plain call fails so.
        return (
            "ok",
            _Unmade(
                (
                    "error",
                    "BadFunction",
                    "TypeError",
                    f"class {type(instance).__name__} of {name!r} has neither __call__ nor run "
                    "(call methods of its named instances: client.instance(...))",
                    "",
                )
            ),
        )
    if not callable(obj):
        return ("error", "BadFunction", "TypeError", f"{name!r} is not callable", "")
    return ("ok", obj)


#: Registered classes by name, as unpickled (a class, or a
#: ``functools.partial`` of one with its init arguments): named instances
#: are made from them.
_classes = {}

#: Named instances this executor holds: state key -> (the state bytes they
#: were last written as, the instance). Bounded; the least recently used
#: is read from the KVS again when called.
_instances = OrderedDict()
MAX_INSTANCES = 1024
#: The latest calls of an instance whose results its stored state keeps,
#: so that a call retried after its executor died (at-least-once: the same
#: call id) answers its first result instead of changing the state twice.
INSTANCE_CALLS_KEPT = 8


class _Unmade:
    """A class that could not be instantiated without arguments: calling
    it (a plain call) fails with the error its ``__init__`` raised."""

    def __init__(self, failed):
        self.failed = failed

    def __call__(self, *args, **kwargs):
        raise _Failed(self.failed)


class _Failed(Exception):
    """Carries an error tuple out of a call."""

    def __init__(self, failed):
        super().__init__(failed[3])
        self.failed = failed


def _instance_state(obj):
    getstate = getattr(obj, "__getstate__", None)
    return getstate() if callable(getstate) else obj.__dict__


def _instance_from(cls, state):
    base = getattr(cls, "func", cls)
    obj = base.__new__(base)
    setstate = getattr(obj, "__setstate__", None)
    if callable(setstate):
        setstate(state)
    else:
        obj.__dict__.update(state)
    return obj


def _invoke_instance(name, key, payload, upstream, deadline, call):
    """Calls a method of the named instance whose state is under `key`:
    the arguments are ``(method, init, *args)``, `init` the
    ``(init_args, init_kwargs)`` that make the instance if it has no state
    yet (else ``None``: the class's registered ones). The state is read
    (kept in memory while nobody else wrote it), the method called, and
    the new state written back, acknowledged by a replica."""
    import cloudpickle
    import _squall_executor
    from squall.lattices import Lww

    cls = _classes.get(name)
    if cls is None:
        return ("error", "BadFunction", "TypeError", f"{name!r} is not a class: it has no named instances", "")
    prepared = _arguments(payload, upstream, deadline)
    if prepared[0] != "ok":
        return prepared
    inputs, args, kwargs = prepared[1]
    if len(args) < 2 or not isinstance(args[0], str):
        return (
            "error",
            "BadArguments",
            "TypeError",
            "an instance call's arguments are (method, init, *args)",
            "",
        )
    method, init, args = args[0], args[1], args[2:]
    try:
        try:
            stored = _squall_executor.get(key, True)
        except Exception as e:
            if not _missing(e):
                raise
            stored = None
        data = getattr(stored, "value", None)
        kept = _instances.get(key)
        done = []
        if data is None:
            if init is not None:
                init_args, init_kwargs = init
                obj = getattr(cls, "func", cls)(*init_args, **init_kwargs)
            else:
                obj = cls()
        elif kept is not None and kept[0] == data:
            obj, done = kept[1], kept[2]
            _instances.move_to_end(key)
        else:
            record = cloudpickle.loads(data)
            obj = _instance_from(cls, record["state"])
            done = list(record.get("done", []))
        for earlier, result in done:
            if call and earlier == call:
                return ("ok", result)  # a retry of a call already applied
        bound = getattr(obj, method, None)
        if method.startswith("_") or not callable(bound):
            return (
                "error",
                "BadArguments",
                "AttributeError",
                f"instance of {name!r} has no public method {method!r}",
                "",
            )
        result = _dumps(bound(*inputs, *args, **kwargs))
        done = (done + [(call, result)])[-INSTANCE_CALLS_KEPT:]
        state = cloudpickle.dumps({"state": _instance_state(obj), "done": done})
        _squall_executor.put(key, Lww(state), "one")
        _instances[key] = (state, obj, done)
        _instances.move_to_end(key)
        while len(_instances) > MAX_INSTANCES:
            _instances.popitem(last=False)
        return ("ok", result)
    except CallTimeout:
        _instances.pop(key, None)
        return _timed_out(f"{name}.{method}")
    except BaseException as e:
        # The instance in memory may be half changed: read it again.
        _instances.pop(key, None)
        return _error("Remote", e)


def _is_reference(value):
    return type(value).__name__ == "Reference" and hasattr(value, "key")


class _ReferenceTimeout(Exception):
    pass


class _FailedArgument(Exception):
    """A `squall.Future` argument whose call failed: this call fails with
    its error."""

    def __init__(self, failed):
        super().__init__(failed.what)
        self.failed = failed


def _missing(exc):
    return isinstance(exc, KeyError) or "NotFound" in type(exc).__name__


#: Referenced last-writer-wins values kept between calls: key -> `_Kept`,
#: least recently used first; at most `_value_budget` bytes.
_values = OrderedDict()
_value_bytes = 0
_value_budget = 256 << 20
#: Reads of a `Reference` a kept value answered.
_kept_hits = 0


class _Kept:
    """A kept value: its bytes as stored, their timestamp, and, once a
    ``Reference(key, readonly=True)`` decoded it into something that can
    be shared read-only, that object (`_UNSHARED` until then); `size`
    counts both."""

    __slots__ = ("data", "timestamp", "shared", "size")

    def __init__(self, data, timestamp):
        self.data = data
        self.timestamp = timestamp
        self.shared = _UNSHARED
        self.size = len(data)


_UNSHARED = object()


def configure(max_value_bytes):
    global _value_budget
    _value_budget = max_value_bytes
    _trim()


def invalidate(keys):
    for key in keys:
        _forget(key)


def value_cache():
    """(keys, bytes, reads answered) of the kept values, for tests and the
    executor's log."""
    return len(_values), _value_bytes, _kept_hits


def _forget(key):
    global _value_bytes
    kept = _values.pop(key, None)
    if kept is not None:
        _value_bytes -= kept.size


def _trim():
    global _value_bytes
    while _values and _value_bytes > _value_budget:
        _, kept = _values.popitem(last=False)
        _value_bytes -= kept.size


def _remember(key, data, timestamp):
    global _value_bytes
    _forget(key)
    if len(data) > _value_budget:
        return None
    kept = _values[key] = _Kept(data, timestamp)
    _value_bytes += kept.size
    _trim()
    return kept


def _pickled(data):
    """Whether stored last-writer-wins bytes (a `bytes`, or a stored
    value's buffer read where it lies) are a pickle."""
    from squall import _native

    if isinstance(data, bytes):
        return _native.looks_pickled(data)
    # The rule reads a pickle's first two bytes and its last.
    view = memoryview(data)
    return len(view) >= 3 and _native.looks_pickled(bytes(view[:2]) + bytes(view[-1:]))


def _decode(data):
    """Stored last-writer-wins bytes as the function sees them: unpickled,
    or as `bytes`."""
    if _pickled(data):
        import cloudpickle

        return cloudpickle.loads(data)
    return data if isinstance(data, bytes) else bytes(memoryview(data))


def _decode_readonly(data):
    """`(value, bytes it shares with data)`: `data` decoded as `_decode`
    does and frozen (`squall.reference.freeze`), the large buffers the
    writer marked (a NumPy array's memory) left where they lie; the
    value's size if it may be shared between calls, else None."""
    from squall.reference import freeze

    if not _pickled(data):
        value, in_place = _decode(data), 0
    else:
        from squall import _native

        value, in_place = _native.loads_readonly(data)
    return value, in_place, freeze(value)


def _shared(key, kept):
    """The kept value of `key` as one read-only object every
    ``readonly=True`` reference to this version gets: decoded and frozen
    the first time, counted in the budget if it can be shared."""
    global _value_bytes
    if kept.shared is not _UNSHARED:
        return kept.shared
    value, in_place, size = _decode_readonly(kept.data)
    if size is not None and _values.get(key) is kept:
        kept.shared = value
        # Arrays over the kept bytes cost nothing more.
        extra = 0 if value is kept.data else max(size - in_place, 0)
        kept.size += extra
        _value_bytes += extra
        _trim()
    return value


def _read_reference(key, deadline, readonly=False):
    import _squall_executor

    global _kept_hits
    # Kept values serve plain reads only (not a level that pins what it
    # reads), and a key the caller (or an upstream function) wrote only if
    # the kept value is at least that write.
    plain = _squall_executor.consistency() == "lww"
    kept = _values.get(key) if plain else None
    if kept is not None and _squall_executor.kept_fresh(key, kept.timestamp):
        _values.move_to_end(key)
        _kept_hits += 1
        capture = _current_capture()
        if capture is not None:
            capture.kept += 1
            capture.kept_bytes += len(kept.data)
        return _shared(key, kept) if readonly else _decode(kept.data)
    value = _read_stored(lambda: _squall_executor.get_reference(key), key, deadline)
    return _plain(value, remember=key if plain else None, readonly=readonly)


def _plain(value, remember=None, readonly=False):
    """A reference's value (`_squall_executor.get_reference`) as the
    function sees it: last-writer-wins bytes, which come as `(buffer,
    timestamp)`, unpickled (kept under `remember`, if given; read-only and
    shared if `readonly`), other lattices as they are."""
    if type(value) is not tuple:
        return value
    data, timestamp = value
    kept = None
    if remember is not None:
        kept = _remember(remember, data, tuple(timestamp))
    if not readonly:
        return _decode(data)
    if kept is not None:
        return _shared(remember, kept)
    return _decode_readonly(data)[0]


def _read_stored(read, key, deadline):
    start = time.time()
    while True:
        try:
            value = read()
            if value is not None:
                return value
        except Exception as e:
            if not _missing(e):
                raise
        if time.time() + REFERENCE_POLL_S >= deadline - REFERENCE_MARGIN_S:
            raise _ReferenceTimeout(
                f"reference {key!r} did not appear within {time.time() - start:.3f} s"
            )
        time.sleep(REFERENCE_POLL_S)


def _is_failed(value):
    """Whether `value` is a failed call's `FailedArgument`: what a future
    that failed becomes, passed by value or read under its key."""
    return type(value).__name__ == "FailedArgument" and hasattr(value, "error")


def _special(value):
    return _is_reference(value) or _is_failed(value)


def _resolve(args, kwargs, deadline):
    if not any(map(_special, args)) and not any(map(_special, kwargs.values())):
        return args, kwargs
    memo = {}

    def value(x):
        if _is_failed(x):
            raise _FailedArgument(x)
        if not _is_reference(x):
            return x
        readonly = bool(getattr(x, "readonly", False))
        if (x.key, readonly) not in memo:
            memo[x.key, readonly] = _read_reference(x.key, deadline, readonly)
        found = memo[x.key, readonly]
        if _is_failed(found):
            raise _FailedArgument(found)
        return found

    return tuple(value(a) for a in args), {k: value(v) for k, v in kwargs.items()}


def _arguments(payload, upstream, deadline, keywords=True):
    """``("ok", (inputs, args, kwargs))``: the upstream results and the
    caller's arguments unpickled, references resolved; or an error tuple.
    ``keywords=False`` refuses keyword arguments."""
    import cloudpickle

    try:
        if payload:
            args, kwargs = cloudpickle.loads(payload)
            args, kwargs = tuple(args), dict(kwargs)
        else:
            args, kwargs = (), {}
        inputs = [cloudpickle.loads(u) for u in upstream]
    except CallTimeout:
        raise
    except BaseException as e:
        return _error("BadArguments", e)
    if kwargs and not keywords:
        return (
            "error",
            "BadArguments",
            "TypeError",
            f"a WebAssembly function takes no keyword arguments "
            f"(got {', '.join(sorted(kwargs))})",
            "",
        )
    try:
        args, kwargs = _resolve(args, kwargs, deadline)
    except CallTimeout:
        raise
    except _ReferenceTimeout as e:
        return ("error", "Timeout", "Timeout", str(e), "")
    except _FailedArgument as e:
        error = e.failed.error
        return (
            "error",
            "Remote",
            getattr(error, "type_name", "") or type(error).__name__,
            f"an argument failed: {e.failed.what}: {getattr(error, 'message', error)}",
            getattr(error, "traceback", ""),
        )
    except BaseException as e:
        return _error("Remote", e)
    return ("ok", (inputs, args, kwargs))


def invoke(fn, payload, upstream, deadline, name, call="", instance=None):
    """Runs one call (see the module's documentation), capturing what it
    prints until `take_output`. (The capture is closed there, not here:
    this runs under the executor's memory cap, which may have just
    refused an allocation.) `instance`: the state key of the named
    instance whose method is called."""
    global _capture
    _capture = _Capture(call, name)
    if instance is not None:
        return _invoke_instance(name, instance, payload, upstream, deadline, call)
    return _invoke(fn, payload, upstream, deadline, name)


def _invoke(fn, payload, upstream, deadline, name):
    prepared = _arguments(payload, upstream, deadline)
    if prepared[0] != "ok":
        return prepared
    inputs, args, kwargs = prepared[1]
    try:
        result = fn(*inputs, *args, **kwargs)
    except CallTimeout:
        return _timed_out(name)
    except _Failed as e:
        return e.failed
    except BaseException as e:
        return _error("Remote", e)
    try:
        return ("ok", _dumps(result))
    except CallTimeout:
        raise
    except BaseException as e:
        return _error("Remote", e)


# Results of these types are pickled by the standard pickler, at a fifth
# of cloudpickle's cost (nothing in them needs pickling by value).
_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})


def _dumps(value):
    """A result's pickle, as the caller loads it."""
    if type(value) in _PLAIN:
        return pickle.dumps(value, protocol=5)
    import cloudpickle

    return cloudpickle.dumps(value)


def wasm_bytes(value):
    """``value`` as a WebAssembly function receives it: bytes-like objects
    as they are, ``str`` as UTF-8, ``bool`` as one byte 0/1, ``int`` as 8
    bytes little-endian two's complement, ``float`` as 8 bytes little-endian
    IEEE 754. Raises ``TypeError`` for any other type and ``OverflowError``
    for an ``int`` outside 64 bits."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bool):
        return b"\x01" if value else b"\x00"
    if isinstance(value, int):
        try:
            return value.to_bytes(8, "little", signed=True)
        except OverflowError:
            raise OverflowError(
                f"int {value} does not fit in 64 bits for a WebAssembly function"
            ) from None
    if isinstance(value, float):
        return struct.pack("<d", value)
    raise TypeError(
        f"a WebAssembly function takes bytes, str, int, float or bool, "
        f"not {type(value).__name__}"
    )


def wasm_args(payload, upstream, deadline):
    prepared = _arguments(payload, upstream, deadline, keywords=False)
    if prepared[0] != "ok":
        return prepared
    inputs, args, _ = prepared[1]
    out = []
    for i, value in enumerate([*inputs, *args]):
        try:
            out.append(wasm_bytes(value))
        except (TypeError, OverflowError, UnicodeError) as e:
            return ("error", "BadArguments", type(e).__name__, f"argument {i}: {e}", "")
    return ("ok", out)


def wasm_result(data, kind):
    import cloudpickle

    data = bytes(data)
    if kind == "Str":
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError as e:
            return ("error", "Remote", "UnicodeDecodeError", f"a Str result: {e}", "")
    elif kind in ("Int", "Float"):
        if len(data) != 8:
            return (
                "error",
                "Remote",
                "ValueError",
                f"an {kind} result must be 8 bytes, got {len(data)}",
                "",
            )
        if kind == "Int":
            value = int.from_bytes(data, "little", signed=True)
        else:
            (value,) = struct.unpack("<d", data)
    else:
        value = data
    return ("ok", cloudpickle.dumps(value))



def is_coroutine_function(fn):
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isroutine(fn) or isinstance(fn, (type, _Unmade)):
        return False
    return inspect.iscoroutinefunction(getattr(type(fn), "__call__", None))


#: Threads the event loop hands ``squall.user.aget``/``aput``/``adelete``
#: requests to (each blocks on the node's cache).
AWAIT_THREADS = 16


def _event_loop():
    """The runtime's event loop, started in its own thread at first use."""
    global _loop, _loop_thread
    if _loop is None:
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        loop = asyncio.new_event_loop()
        loop.set_default_executor(
            ThreadPoolExecutor(AWAIT_THREADS, thread_name_prefix="squall-await")
        )
        thread = threading.Thread(
            target=loop.run_forever, name="squall-event-loop", daemon=True
        )
        _loop, _loop_thread = loop, thread
        thread.start()
    return _loop


def _enter(call, capture):
    import _squall_executor

    _squall_executor.current_call.set(call)
    _task_capture.set(capture)


def start(call, fn, payload, upstream, deadline, name, call_id=""):
    capture = _Capture(call_id, name)
    context = contextvars.copy_context()
    context.run(_enter, call, capture)
    prepared = context.run(_arguments, payload, upstream, deadline)
    if prepared[0] != "ok":
        return prepared
    loop = _event_loop()
    task = _finished(call, capture, fn, prepared[1], deadline, name)
    loop.call_soon_threadsafe(loop.create_task, task, context=context)
    return ("ok", None)


async def _finished(call, capture, fn, prepared, deadline, name):
    try:
        outcome = await _awaited(fn, prepared, deadline, name)
    except BaseException as e:
        outcome = _error("Remote", e)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    call.finish(outcome, capture.text(), capture.kept, capture.kept_bytes)


async def _awaited(fn, prepared, deadline, name):
    """The outcome of a coroutine call, as ``_invoke`` gives a plain one's;
    at ``deadline`` the coroutine is cancelled and the call times out."""
    import asyncio
    import cloudpickle

    inputs, args, kwargs = prepared
    try:
        result = fn(*inputs, *args, **kwargs)
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - time.time()))
            if not done:
                task.cancel()
                return _timed_out(name)
            result = task.result()
    except _Failed as e:
        return e.failed
    except BaseException as e:
        return _error("Remote", e)
    try:
        return ("ok", cloudpickle.dumps(result))
    except BaseException as e:
        return _error("Remote", e)
