"""Squall's Python client: functions, DAGs and lattice state on a Squall
cluster.

    import squall
    client = squall.connect()            # the local cluster of `squall up`
    client.put("greeting", {"hello": "world"})
    client.register(lambda x: x + 1, name="inc")
    client.call("inc", 41)               # -> 42

`import squall` loads no native code: `Reference`, the exception classes and
the lattice wrapper classes are pure Python, so processes without the
extension (the executor's interpreter before it loads it, a pickle reader)
can use them. The native module `squall._native` is imported by `connect`.
See client-py/README.md for the whole API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import errors, lattices
from .errors import (
    BadArgumentsError,
    BadFunctionError,
    AccessDeniedError,
    CallAccessDeniedError,
    CallError,
    CallTimeoutError,
    ClusterNotFoundError,
    ExecutorDiedError,
    InvalidModuleError,
    KvsError,
    KvsTimeoutError,
    OverloadedError,
    RefusedError,
    RemoteError,
    SquallError,
    TooLargeError,
    UnavailableError,
    TypeMismatchError,
    UnknownDagError,
    UnknownFunctionError,
)
from .lattices import (
    CausalVersion,
    Counter,
    Lww,
    Map,
    Max,
    Min,
    MultiKeyCausal,
    ORMap,
    ORSet,
    OrderedSet,
    Priority,
    Set,
    SingleKeyCausal,
    VectorClock,
)
from .futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, Future, as_completed, gather, wait
from .events import Event, Timestamp, Trigger
from .reference import Reference

if TYPE_CHECKING:
    from .client import Client, Dag, Function, Instance

__version__ = "0.1.0"


__all__ = [
    "connect",
    "Client",
    "Future",
    "Function",
    "Dag",
    "Instance",
    "Reference",
    "Event",
    "Timestamp",
    "Trigger",
    "wait",
    "as_completed",
    "gather",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "ALL_COMPLETED",
] + errors.__all__ + lattices.__all__


def connect(
    address: "str | list[str] | None" = None,
    scheduler: "str | list[str] | None" = None,
    timeout: float = 5.0,
    call_timeout: float = 60.0,
    bind_host: str = "127.0.0.1",
    consistency: str = "lww",
    key_file: "str | None" = None,
    insecure: "bool | None" = None,
    encrypt: bool = False,
) -> "Client":
    """Connects to a Squall cluster and returns a `Client`.

    Args:
        address: where the cluster is. ``None``: the local cluster of
            ``squall up``, recorded in ``$SQUALL_STATE_DIR/cluster.json``
            (default ``./.squall/cluster.json``). A path: that state
            directory. A ``tcp://host:port`` address: one router; a list of
            them: every router, tried in turn (give them all, so that losing
            one stops nothing). ``"local://"``: no cluster, the local test
            mode in this process (`squall.testing.local`).
        scheduler: scheduler address(es) for calls, used instead of those in
            the cluster record (a router address gives none, so pass this to
            make calls).
        timeout: seconds every KVS operation may take before
            `KvsTimeoutError`.
        call_timeout: seconds a call may take when ``call(..., timeout=)``
            is not given.
        bind_host: the host this client receives answers on (a free port of
            it); must be reachable from the cluster.
        consistency: the default consistency level of this client's calls
            (``"lww"``, ``"repeatable_read"`` or ``"causal"``; see
            `Client.call`).
        key_file: the client key this client authenticates with. ``None``:
            ``$SQUALL_KEY_FILE``, else the state directory's
            ``keys/client.key`` (written by ``squall up``). Every client made
            in a process from then on uses the last key given.
        insecure: send open frames, for a cluster run with ``--insecure``
            (``None``: ``$SQUALL_INSECURE``, or what the local cluster's
            record says).
        encrypt: encrypt this client's requests too (the cluster's answers
            are encrypted when its ``[security] encrypt`` is set).

    Raises:
        ClusterNotFoundError: no cluster record where one was looked for.
        SquallError: no key file where one was looked for.
        ValueError: an unknown consistency level.
    """
    if address == "local://":
        from . import testing

        return testing.local(call_timeout=call_timeout, consistency=consistency)  # type: ignore[return-value]
    from .client import Client

    return Client._connect(
        address,
        scheduler,
        timeout,
        call_timeout,
        bind_host,
        consistency,
        key_file=key_file,
        insecure=insecure,
        encrypt=encrypt,
    )


def __getattr__(name: str) -> Any:
    # `squall.Client` and the handles load the native module on first use.
    if name in ("Client", "Function", "Dag", "Instance"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'squall' has no attribute {name!r}")
