"""The exceptions of the `squall` package: one tree rooted at `SquallError`.

Pure Python, importable without the native extension (the executor raises
and catches these too). Some classes also subclass a built-in
(`TimeoutError`, `TypeError`, `LookupError`, `ValueError`) so that a plain
``except TimeoutError`` works as one expects.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "SquallError",
    "ClusterNotFoundError",
    "KvsError",
    "KvsTimeoutError",
    "TypeMismatchError",
    "CallError",
    "RemoteError",
    "UnknownFunctionError",
    "UnknownDagError",
    "BadArgumentsError",
    "BadFunctionError",
    "CallTimeoutError",
    "ExecutorDiedError",
    "OverloadedError",
    "TooLargeError",
    "UnavailableError",
    "RefusedError",
    "AccessDeniedError",
    "CallAccessDeniedError",
    "InvalidModuleError",
]


class SquallError(Exception):
    """The root of every error this package raises."""


class ClusterNotFoundError(SquallError, FileNotFoundError):
    """No cluster record (``cluster.json``) where `squall.connect` looked."""


class KvsError(SquallError):
    """A key-value store operation failed (no live node, replicas that did
    not acknowledge in time, a socket error)."""


class KvsTimeoutError(KvsError, TimeoutError):
    """No replica (or router, or cache) answered a KVS operation in time."""


class TypeMismatchError(KvsError, TypeError):
    """A put of another lattice type than the key holds; the server refused
    it and the stored value is unchanged. ``str(e)`` is the server's
    message, e.g. ``type mismatch: stored value is counter, incoming value
    is lww``."""


class RefusedError(KvsError, ValueError):
    """The cluster's ``[limits]`` refused a write: a value larger than
    ``max_value_bytes``, or a last-writer-wins timestamp further ahead of the
    node's clock than ``max_clock_skew``. Nothing was stored; the message
    names the size (or the skew) and the limit."""


class AccessDeniedError(KvsError, PermissionError):
    """This client's key lacks the right the operation needs: ``read``,
    ``write``, or ``register`` for functions and DAGs (``[security.clients]``
    in the cluster's ``squall.toml``); the message names the right."""


class CallError(SquallError):
    """A function or DAG call failed. Every call failure is a subclass.

    Attributes:
        type_name: the remote exception's type name (``ZeroDivisionError``),
            or a short name of the failure for other kinds.
        message: the error's message.
        traceback: the remote traceback text; empty where there is none.
        function: the name of the function that failed, if one did.
        logs: what the call's functions printed before it failed (see
            `Future.logs`); empty where nothing was printed.
    """

    def __init__(
        self,
        message: str = "",
        *,
        type_name: str = "",
        traceback: str = "",
        function: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.type_name = type_name or type(self).__name__
        self.traceback = traceback
        self.function = function
        self.logs = ""

    def __str__(self) -> str:
        where = f" in function `{self.function}`" if self.function else ""
        text = f"{self.type_name}{where}: {self.message}"
        if self.traceback:
            text += "\n\nRemote traceback:\n" + self.traceback.rstrip("\n")
        return text

    def __reduce__(self):
        return (
            _rebuild_call_error,
            (type(self), self.message, self.type_name, self.traceback, self.function),
        )


def _rebuild_call_error(cls, message, type_name, traceback, function):
    return cls(message, type_name=type_name, traceback=traceback, function=function)


class RemoteError(CallError):
    """The function raised. ``type_name`` is the remote exception's type
    (``ZeroDivisionError``), ``traceback`` its formatted traceback, and
    ``str(e)`` shows both."""


class UnknownFunctionError(CallError, LookupError):
    """No function is registered under the name."""


class UnknownDagError(CallError, LookupError):
    """No DAG is registered under the name."""


class BadArgumentsError(CallError, ValueError):
    """The arguments could not be decoded or do not fit the function."""


class BadFunctionError(CallError):
    """The stored function could not be loaded (a corrupt pickle, say)."""


class CallTimeoutError(CallError, TimeoutError):
    """The call did not finish in time: the system said so, or no answer
    reached this client before its own deadline."""


class ExecutorDiedError(CallError):
    """The executor running the call died and the call was not retried."""


class OverloadedError(CallError):
    """No executor could take the call and the scheduler's queue is full."""


class TooLargeError(CallError, ValueError):
    """An argument or the function's result is larger than the cluster's
    ``[limits] max_value_bytes``; refused at once where it was made. The
    message names the size and the limit."""


class UnavailableError(CallError, ConnectionError):
    """No scheduler answered this client for a few seconds (the message
    names them): the cluster is down, or this client cannot reach it. A call
    in flight at a scheduler that stops answering is sent again to another
    (so it may run twice); this is raised only when none answers."""


class CallAccessDeniedError(CallError, PermissionError):
    """This client's key lacks the ``call`` right (``[security.clients]``
    in the cluster's ``squall.toml``); the message names the right."""


# Wire names of `CallErrorKind` (anna/src/protocol/compute.rs) -> class.
_BY_KIND = {
    "Remote": RemoteError,
    "UnknownFunction": UnknownFunctionError,
    "UnknownDag": UnknownDagError,
    "BadArguments": BadArgumentsError,
    "BadFunction": BadFunctionError,
    "Timeout": CallTimeoutError,
    "ExecutorDied": ExecutorDiedError,
    "Overloaded": OverloadedError,
    "TooLarge": TooLargeError,
    "Unavailable": UnavailableError,
    "PermissionDenied": CallAccessDeniedError,
}


def call_error(
    kind: str,
    type_name: str,
    message: str,
    traceback: str = "",
    function: Optional[str] = None,
) -> CallError:
    """The exception for a `CallError` of `kind` (a `CallErrorKind` name)."""
    cls = _BY_KIND.get(kind, CallError)
    return cls(message, type_name=type_name, traceback=traceback, function=function)


class InvalidModuleError(SquallError, ValueError):
    """`Client.register_wasm` refused a module: not WAT or a WebAssembly
    binary, a WAT syntax error, a module the validator rejects, or one that
    does not follow the calling convention (the exports ``memory``,
    ``alloc`` and the function called, the ``squall`` host imports).
    ``str(e)`` gives the reason; nothing was registered."""
