"""The library a function sees while it runs on an executor.

Use it inside a registered function::

    from squall import user

    def f(x):
        user.put("seen", x)
        peer = user.executor_of("g")
        user.send(peer, b"hello")
        sender, data = user.recv(timeout=1.0)

Reads and writes go to the node's cache (``squall._native.DirectKvs``) with
the same values as the client's ``get``/``put``; ``send``/``recv`` carry
bytes between the executors of running functions. Outside an executor
every function raises ``RuntimeError``.

A read of a key the caller wrote (before the call) sees at least that
write: the call carries the caller's session, and the cache waits for the
version. A function's writes are made as the invocation's writer, the same
for every attempt of the call, so a retried call's counter increments and
set additions merge into the first attempt's instead of adding to them.
"""

#: The longest one read or write through the cache may take.
KVS_TIMEOUT_S = 1.0

_stores = {}


def _executor():
    try:
        import _squall_executor
    except ImportError:
        raise RuntimeError(
            "squall.user works only inside a function running on an executor"
        ) from None
    return _squall_executor


def _store():
    executor = _executor()
    cache = executor.cache_address()
    store = _stores.get(cache)
    if store is None:
        from squall import _native

        store = _native.DirectKvs(cache, KVS_TIMEOUT_S)
        _stores[cache] = store
    store.set_writer(executor.writer())
    return store


def version(key):
    """The version of ``key`` the caller wrote before this call (encoded),
    or None: reads of ``key`` see at least it."""
    return _executor().version(key)


#: `_pinned`'s answer for a key no upstream function of the call read.
_NOT_PINNED = object()


def _pinned(key, raw=False):
    """Under repeatable read, the value an upstream function of the call
    read of ``key`` (None if it was absent), else ``_NOT_PINNED``."""
    data = _executor().pinned(key)
    if data is None:
        return _NOT_PINNED
    if not data:
        return None
    from squall import _native

    return _native.decode_lattice(data, raw)


def get(key, raw=False):
    """The value of ``key`` read through the node's cache (None if absent),
    at least the version the caller (or an upstream function) wrote before.
    Under ``consistency="repeatable_read"`` every function of the call sees
    the version of ``key`` the call's first read of it got."""
    executor = _executor()
    store = _store()
    if executor.consistency() == "repeatable_read":
        pinned = _pinned(key, raw)
        if pinned is not _NOT_PINNED:
            return pinned
        return store.get(key, raw, version(key), True)
    return store.get(key, raw, version(key))


def put(key, value, ack=None):
    """Writes ``value`` under ``key`` through the node's cache, acknowledged
    at ``ack``: ``"one"`` (the first replica, the default), a number of
    replicas, or ``"all"``."""
    _store().put(key, value, ack)
    _written(key)


def delete(key, ack=None):
    """Deletes ``key`` through the node's cache (acknowledged by every
    replica unless ``ack`` says otherwise)."""
    _store().delete(key, ack)
    _written(key)


def _take_effects():
    """The writes acknowledged and the states pinned since the last take,
    for the executor to report to the caller and downstream functions:
    ``(written, pinned)``, each ``[(key, encoded state)]``."""
    written, pinned = [], []
    for store in _stores.values():
        written.extend(store.take_written())
        pinned.extend(store.take_pinned())
    return written, pinned


def _written(key):
    # A later call on this executor reads the key anew, not the referenced
    # value the executor kept from before this write.
    import sys

    runtime = sys.modules.get("_squall_runtime")
    if runtime is not None:
        runtime.invalidate([key])


def send(executor_id, data):
    """Sends ``data`` (bytes) to the executor ``executor_id``; its running
    function reads it with :func:`recv`. Delivery is best effort."""
    _executor().send(str(executor_id), bytes(data))


def recv(timeout=None):
    """The next message ``(from_executor_id, data)`` sent to this executor,
    waiting at most ``timeout`` seconds (and never past the call's
    deadline); raises ``TimeoutError`` if none arrives."""
    got = _executor().recv(timeout)
    if got is None:
        raise TimeoutError(f"no message arrived within {timeout} s")
    return got


def executor_id():
    """This executor's id: the address other functions ``send`` to."""
    return _executor().executor_id()


def executor_of(name):
    """The executor running function ``name`` in the current DAG call, or
    None if the call has no such function."""
    return _executor().executor_of(name)


def cache_address():
    """The address of the node's cache."""
    return _executor().cache_address()


def __getattr__(name):
    if name == "id":
        return executor_id()
    raise AttributeError(f"module 'squall.user' has no attribute {name!r}")
