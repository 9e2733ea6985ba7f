"""The library a function sees while it runs on an executor.

Use it inside a registered function::

    from squall import user

    def f(x):
        user.put("seen", x)
        peer = user.executor_of("g")
        user.send(peer, b"hello")
        sender, data = user.recv(timeout=1.0)

Reads and writes go to the node's cache through the executor's route to it
(the one a WebAssembly function's ``squall.get``/``squall.put`` take too),
with the same values as the client's ``get``/``put``, each bounded by one
second; ``send``/``recv`` carry bytes between the executors of running
functions. Outside an executor every function raises ``RuntimeError``.

A function defined with ``async def`` runs as a coroutine on its executor's
event loop, so many calls that await share one process; inside it, await
:func:`aget`, :func:`aput` and :func:`adelete` (the same reads and writes,
run on a thread of the executor while the loop serves other calls)::

    async def f(key):
        value = await user.aget(key)
        await asyncio.sleep(0.1)
        await user.aput(key + ".seen", value)

The plain ``get``/``put``/``delete`` work inside a coroutine too, but hold
the event loop (every coroutine of the executor) until they return; so do
``recv`` and any other blocking call (``time.sleep``, a blocking HTTP
client).

A read of a key the caller wrote (before the call) sees at least that
write: the call carries the caller's session, and the cache waits for the
version. A function's writes are made as the invocation's writer, the same
for every attempt of the call, so a retried call's counter increments and
set additions merge into the first attempt's instead of adding to them.
"""


import threading

#: The backend of a function run by the local test mode
#: (`squall.testing`), per thread.
_local = threading.local()


def _executor():
    backend = getattr(_local, "executor", None)
    if backend is not None:
        return backend
    try:
        import _squall_executor
    except ImportError:
        raise RuntimeError(
            "squall.user works only inside a function running on an executor"
        ) from None
    return _squall_executor


def version(key):
    """The version of ``key`` the caller wrote before this call (encoded),
    or None: reads of ``key`` see at least it."""
    return _executor().version(key)


def get(key, raw=False):
    """The value of ``key`` read through the node's cache (None if absent),
    at least the version the caller (or an upstream function) wrote before.
    Under ``consistency="repeatable_read"`` every function of the call sees
    the version of ``key`` the call's first read of it got; under
    ``"causal"`` also, and a read of a key a value read before depends on
    sees at least that dependency. ``raw=True`` returns a last-writer-wins
    value as ``squall.Lww`` (its bytes and timestamp) instead of the object
    it pickles."""
    return _executor().get(key, raw)


def put(key, value, ack=None):
    """Writes ``value`` under ``key`` through the node's cache, acknowledged
    at ``ack``: ``"one"`` (the first replica, the default), a number of
    replicas, or ``"all"``. Under ``consistency="causal"`` a
    ``squall.MultiKeyCausal`` written with no dependencies depends on every
    causal value the call read."""
    _executor().put(key, value, ack)


def delete(key, ack=None):
    """Deletes ``key`` through the node's cache (acknowledged by every
    replica unless ``ack`` says otherwise)."""
    _executor().delete(key, ack)


async def aget(key, raw=False):
    """:func:`get` as an awaitable, for a coroutine function: the read runs
    on a thread of the executor while its event loop serves other calls."""
    return await _in_thread(_executor().get, key, raw)


async def aput(key, value, ack=None):
    """:func:`put` as an awaitable, for a coroutine function."""
    await _in_thread(_executor().put, key, value, ack)


async def adelete(key, ack=None):
    """:func:`delete` as an awaitable, for a coroutine function."""
    await _in_thread(_executor().delete, key, ack)


def _in_thread(fn, *args):
    # asyncio.to_thread carries the coroutine's context (which names its
    # call) to the thread.
    import asyncio

    return asyncio.to_thread(fn, *args)


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
