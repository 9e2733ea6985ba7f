"""`Future`: the pending result of a call, and waiting on many.

A `Future` is a `concurrent.futures.Future`: ``result()``, ``done()``,
``add_done_callback()``, ``cancel()`` and ``exception()`` behave as the
standard library's, `concurrent.futures.wait` and ``as_completed`` accept
it, and ``await future`` works in asyncio without blocking the event loop.
Results are collected by one completion thread per client, which also fails
a call with `CallTimeoutError` once no answer came before its deadline.

Passed at the top level of another call's (or DAG function's) arguments, a
pending future is not waited for here: the call goes out at once, and the
executor that runs it waits for the future's result, which this client's
completion thread puts into the KVS under a key of its own as soon as it
arrives (and deletes once the calls that took it are done). A future
already done is passed by value.

Pure Python: the executor unpickles `FailedArgument` without the native
extension.
"""

from __future__ import annotations

import concurrent.futures as _cf
import heapq
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from .errors import CallError, CallTimeoutError, call_error

if TYPE_CHECKING:
    from . import _native

__all__ = ["Future", "CallFuture", "wait", "as_completed", "gather", "FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED"]

FIRST_COMPLETED = _cf.FIRST_COMPLETED
FIRST_EXCEPTION = _cf.FIRST_EXCEPTION
ALL_COMPLETED = _cf.ALL_COMPLETED

# How long after a call's own deadline the client still waits for the
# scheduler's answer (a timeout error, usually) before giving up itself.
GRACE_S = 2.0

#: How long cancel() waits for the scheduler's answer.
CANCEL_WAIT_S = 2.0

#: Where a future's result is put for the calls that took it as an argument.
EXPORT_PREFIX = "squall-futures/"


class FailedArgument:
    """What an executor finds under a future's key when the call behind
    the future failed: the call taking it fails with the same error."""

    __slots__ = ("what", "error")

    def __init__(self, what: str, error: CallError) -> None:
        self.what = what
        self.error = error

    def __reduce__(self):
        return (FailedArgument, (self.what, self.error))


class CallFuture(_cf.Future):
    """What every call's future is: a `concurrent.futures.Future` whose
    ``result`` and ``exception`` raise `CallTimeoutError` (a
    `TimeoutError`) when no result came within `timeout`, plus ``get``,
    ``logs``, ``trace``, ``call_id`` and ``await``. `Future` (a cluster's)
    and the local test mode's future are ones."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self._what = what
        self._output: List[Tuple[str, str]] = []
        self._trace: Optional[Dict[str, Any]] = None

    def result(self, timeout: Optional[float] = None) -> Any:
        try:
            return super().result(timeout)
        except _cf.TimeoutError:
            if self.done():  # the call's own error: a CallTimeoutError
                raise
            raise self._pending(timeout) from None

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        try:
            return super().exception(timeout)
        except _cf.TimeoutError:
            if self.done():
                raise
            raise self._pending(timeout) from None

    def _pending(self, timeout: Optional[float]) -> CallTimeoutError:
        return CallTimeoutError(
            f"{self._what}: no result within {timeout} s (still pending)", type_name="Timeout"
        )

    def trace(self, timeout: Optional[float] = None) -> Optional[Dict[str, Any]]:
        """Where the call spent its time, once done, if it was made with
        ``trace=True`` (else ``None``): a dict with ``queued_ms`` (waiting
        in the scheduler's queue for a free executor), ``arrived`` (when
        the scheduler got it, seconds since the epoch) and ``steps``, one
        dict per function: ``function``, ``executor``, ``placed`` (why the
        scheduler chose that executor), ``waited_ms`` (in the executor's
        queue, code fetch included), ``ran_ms``, ``reads``, ``cache_hits``
        (reads the node's cache answered from what it held),
        ``kept_reads`` (reads of `Reference` arguments the executor's kept
        values answered), ``bytes_read`` and ``done`` (``False`` for a
        function that never ran: an upstream one failed)."""
        try:
            self.exception(timeout)
        except _cf.CancelledError:
            return None
        return self._trace

    def get(self, timeout: Optional[float] = None) -> Any:
        """The call's result: the same as ``result(timeout)``."""
        return self.result(timeout)

    def logs(self, timeout: Optional[float] = None) -> str:
        """What the call's functions printed to stdout and stderr
        (``logging`` records included), once the call is done (waiting up
        to `timeout` as ``result`` does, without raising its error). A DAG's
        functions' output comes in the order they finished, each line
        prefixed with ``[function]``."""
        try:
            self.exception(timeout)
        except _cf.CancelledError:
            return ""
        return format_output(self._output)

    def __await__(self):
        import asyncio

        return asyncio.wrap_future(self).__await__()


class Future(CallFuture):
    """The pending result of `Client.call_async` or `Client.call_dag_async`.

    A `concurrent.futures.Future` (see the module's documentation), plus
    ``get()`` (the same as ``result()``), ``logs()``, ``trace()`` and
    ``await``.

    ``result(timeout)`` raises the call's error (a `CallError` subclass:
    `RemoteError` with the remote traceback, `CallTimeoutError`, ...), or
    `CallTimeoutError` (a `TimeoutError`) if no result came within
    `timeout` seconds; the future stays pending then.
    """

    def __init__(self, completions: "_Completions", seq: int, deadline: float, what: str) -> None:
        super().__init__(what)
        self._completions = completions
        self._seq = seq
        self._deadline = deadline
        # The key this future's result is exported under, once passed to
        # another call; and how many calls took it.
        self._export_key: Optional[str] = None
        self._consumers = 0
        # Futures this call took as arguments (their keys are deleted once
        # this one is done).
        self._inputs: List["Future"] = []
        # Set (under the completions' lock) when the result is being
        # completed: no export starts after it.
        self._settling = False

    @property
    def call_id(self) -> str:
        """The call's id, ``CALLER-SEQ`` (as ``squall logs --call`` takes
        it, and as executors tag what the call prints in their logs)."""
        return f"{self._completions.writer:016x}-{self._seq}"

    def cancel(self) -> bool:
        """Drops the call if it has not started (it still waits in its
        scheduler's queue) and returns ``True``; returns ``False`` if it
        runs or has finished (its result still comes)."""
        if self.done():
            return self.cancelled()
        if not self._completions.cancel(self._seq):
            return False
        return super().cancel()

    def __reduce__(self):
        raise TypeError(
            f"a squall.Future ({self._what}) can be passed to another call only as a "
            "top-level argument (client.call(f, fut), not inside a list or dict): "
            "pass fut.result() to send its value"
        )

    def _argument(self) -> Tuple[Any, bool]:
        """What this future becomes as another call's argument, and whether
        it was exported: a `Reference` to the key its result will be put
        under while its result has not arrived, else its value, or its
        error as a `FailedArgument` the executor raises."""
        from .reference import Reference

        key = self._completions.export(self)
        if key is None:
            error = self.exception()
            if error is not None:
                # Failed already: the call taking it fails on its executor
                # as it does when the failure comes later, under the key.
                return FailedArgument(self._what, error), False
            return self.result(), False
        return Reference(key), True

    def __repr__(self) -> str:
        if self.cancelled():
            state = "cancelled"
        elif self.done():
            state = "failed" if super().exception(0) is not None else "done"
        else:
            state = "pending"
        return f"<squall.Future {self._what} {state}>"


class _Completions:
    """Completes one client's futures: a thread that collects arrived
    results from the native client, runs while futures are pending, and
    fails those past their deadline."""

    def __init__(self, native: "_native.Client") -> None:
        self._native = native
        self._lock = threading.Lock()
        self._pending: Dict[int, Future] = {}
        # Results collected before their future was watched (the call is
        # sent, then its future made: a fast result can come between).
        self._early: Dict[int, Any] = {}
        self._deadlines: List[Tuple[float, int]] = []
        self._thread: Optional[threading.Thread] = None
        self.writer = native.writer

    def watch(self, future: Future) -> None:
        with self._lock:
            early = self._early.pop(future._seq, None)
            if early is None:
                self._pending[future._seq] = future
                heapq.heappush(self._deadlines, (future._deadline + GRACE_S, future._seq))
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=_run, args=(weakref.ref(self),), name="squall-futures", daemon=True
                    )
                    self._thread.start()
        if early is not None:
            self._complete(future, early)

    def cancel(self, seq: int) -> bool:
        native = self._native
        if native is None:
            return False
        if native.cancel(seq, CANCEL_WAIT_S) is not True:
            return False
        with self._lock:
            self._pending.pop(seq, None)
        return True

    def export(self, future: Future) -> Optional[str]:
        """The key `future`'s result will be put under, or ``None`` once its
        result is being completed (the caller takes the value instead).
        Decided under the lock `_complete` decides whether to put it
        under."""
        with self._lock:
            if future._settling:
                return None
            if future._export_key is None:
                future._export_key = f"{EXPORT_PREFIX}{self.writer:016x}/{future._seq}"
            future._consumers += 1
            return future._export_key

    def _step(self, wait_s: float) -> bool:
        """Collects what arrived within `wait_s`; False once nothing is
        pending (the thread ends; the next watch starts another)."""
        native = self._native
        if native is None:
            return False
        arrived = native.next_done(wait_s)
        for seq, outcome in arrived:
            with self._lock:
                future = self._pending.pop(seq, None)
                if future is None:
                    self._early[seq] = outcome
            if future is not None:
                self._complete(future, outcome)
        now = time.monotonic()
        late: List[Future] = []
        with self._lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                _, seq = heapq.heappop(self._deadlines)
                future = self._pending.pop(seq, None)
                if future is not None:
                    late.append(future)
        for future in late:
            native.forget(future._seq)
            error = CallTimeoutError(
                f"{future._what}: no answer before the call's deadline", type_name="Timeout"
            )
            self._complete(future, None, error)
        with self._lock:
            if self._pending:
                return True
            self._deadlines.clear()
            self._thread = None
            return False

    def next_wait(self) -> float:
        with self._lock:
            if not self._deadlines:
                return 0.5
            return min(0.5, max(0.0, self._deadlines[0][0] - time.monotonic()))

    def _complete(self, future: Future, outcome: Any, error: Optional[BaseException] = None) -> None:
        import cloudpickle

        data = None
        if outcome is not None:
            future._output, future._trace = outcome[-2], outcome[-1]
        if error is None and outcome[0] == "value":
            data = outcome[1]
            try:
                value = cloudpickle.loads(data)
            except BaseException as e:  # a result this client cannot unpickle
                error = call_error("BadArguments", type(e).__name__, f"{future._what}: {e}")
        elif error is None:
            _, kind, type_name, message, traceback, function, output, _ = outcome
            error = call_error(kind, type_name, message, traceback, function)
            error.logs = format_output(output)
        with self._lock:
            future._settling = True
            export = future._export_key is not None and future._consumers > 0
        if export:  # (no call waits for it any more: nothing to put)
            self._export_result(future, data, error)
        for taken in future._inputs:
            self._release(taken)
        future._inputs = []
        if future.cancelled():
            return
        try:
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)
        except _cf.InvalidStateError:
            pass

    def _export_result(self, future: Future, data: Optional[bytes], error: Optional[BaseException]) -> None:
        import cloudpickle

        from .lattices import Lww

        if error is not None:
            data = cloudpickle.dumps(FailedArgument(future._what, error))
        try:
            self._native.put(future._export_key, Lww(data))
        except Exception:
            # The calls waiting on it fail with a timeout, which says so.
            pass

    def _release(self, taken: Future) -> None:
        with self._lock:
            taken._consumers -= 1
            last = taken._consumers == 0 and taken.done()
        if last and taken._export_key is not None:
            try:
                self._native.delete(taken._export_key, 1)
            except Exception:
                pass

    def close(self) -> None:
        self._native = None  # type: ignore[assignment]


def _run(completions_ref: "weakref.ref[_Completions]") -> None:
    while True:
        completions = completions_ref()
        if completions is None:
            return
        wait_s = completions.next_wait()
        try:
            more = completions._step(wait_s)
        except Exception:
            more = completions._native is not None
        del completions
        if not more:
            return


def format_output(output: List[Tuple[str, str]]) -> str:
    """A call's output as ``Future.logs`` gives it: one function's text as
    it is; several functions' each line prefixed with ``[function]``."""
    if len(output) == 1:
        return output[0][1]
    lines = []
    for function, text in output:
        lines.extend(f"[{function}] {line}" for line in text.splitlines(keepends=True))
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
    return "".join(lines)


def wait(
    futures: Iterable[_cf.Future], timeout: Optional[float] = None, return_when: str = ALL_COMPLETED
) -> "_cf._base.DoneAndNotDoneFutures":
    """`concurrent.futures.wait`: ``(done, not_done)`` sets once
    `return_when` (`FIRST_COMPLETED`, `FIRST_EXCEPTION`, `ALL_COMPLETED`)
    holds or `timeout` seconds passed."""
    return _cf.wait(list(futures), timeout, return_when)


def as_completed(futures: Iterable[_cf.Future], timeout: Optional[float] = None) -> Iterator[_cf.Future]:
    """`concurrent.futures.as_completed`: the futures as they finish."""
    return _cf.as_completed(list(futures), timeout)


def gather(futures: Iterable[_cf.Future], timeout: Optional[float] = None) -> List[Any]:
    """The results of `futures`, in their order, waiting at most `timeout`
    seconds in all; raises the first failed call's error (in their order)
    or `CallTimeoutError` (a `TimeoutError`) once `timeout` has passed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    results = []
    for f in futures:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            results.append(f.result(left))
        except _cf.TimeoutError:
            if f.done():
                raise
            raise CallTimeoutError(
                f"no result within {timeout} s ({len(results)} of the calls had theirs)",
                type_name="Timeout",
            ) from None
    return results
