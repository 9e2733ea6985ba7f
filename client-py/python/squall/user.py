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


#: The levels at which a call's first read of a key is pinned.
_PINNING = ("repeatable_read", "causal")


def _pinned(key, store, raw=False):
    """The value an upstream function of the call read of ``key`` (None if
    it was absent), if it is still what this function may read; else
    ``_NOT_PINNED``."""
    data = _executor().pinned(key, store.required(key))
    if data is None:
        return _NOT_PINNED
    if not data:
        return None
    from squall import _native

    return _native.decode_lattice(data, raw)


def _read(key, raw=False):
    """One read of ``key`` at the call's consistency level (see `get`)."""
    executor = _executor()
    store = _store()
    level = executor.consistency()
    if level not in _PINNING:
        return store.get(key, raw, version(key))
    value = _pinned(key, store, raw)
    if value is _NOT_PINNED:
        value = store.get(key, raw, version(key), True)
    if level == "causal":
        # Every later read of a key this value depends on, here and
        # downstream, sees at least that dependency.
        for v in getattr(value, "versions", None) or ():
            for dep_key, clock in (getattr(v, "dependencies", None) or {}).items():
                store.require(dep_key, dict(clock))
    return value


def get(key, raw=False):
    """The value of ``key`` read through the node's cache (None if absent),
    at least the version the caller (or an upstream function) wrote before.
    Under ``consistency="repeatable_read"`` every function of the call sees
    the version of ``key`` the call's first read of it got; under
    ``"causal"`` also, and a read of a key a value read before depends on
    sees at least that dependency."""
    return _read(key, raw)


def put(key, value, ack=None):
    """Writes ``value`` under ``key`` through the node's cache, acknowledged
    at ``ack``: ``"one"`` (the first replica, the default), a number of
    replicas, or ``"all"``. Under ``consistency="causal"`` a
    ``squall.MultiKeyCausal`` written with no dependencies depends on every
    causal value the call read."""
    store = _store()
    if _executor().consistency() == "causal":
        value = _with_dependencies(key, store, value)
    store.put(key, value, ack)
    _written(key)


def _with_dependencies(key, store, value):
    from squall.lattices import MultiKeyCausal

    if not isinstance(value, MultiKeyCausal) or len(value.versions) != 1:
        return value
    version = value.versions[0]
    if version.dependencies:
        return value
    cut = {k: dict(c) for k, c in _executor().causal_cut().items()}
    for k, clock in store.causal_cut().items():
        mine = cut.setdefault(k, {})
        for writer, n in clock.items():
            mine[writer] = max(mine.get(writer, 0), n)
    cut.pop(key, None)
    return MultiKeyCausal(version.value, dependencies=cut, clock=version.clock)


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
