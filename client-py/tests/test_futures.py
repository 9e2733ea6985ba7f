"""Futures, handles and batches, end to end on the session cluster (three
storage nodes, two compute nodes of two executors):

- `squall.Future` is a `concurrent.futures.Future`: ``result``, ``done``,
  callbacks, `concurrent.futures.wait`/``as_completed``, ``await`` in
  asyncio without blocking the loop, `squall.gather`, and ``cancel`` of a
  call still queued at its scheduler;
- a pending future passed to another call (or DAG) is waited for on the
  executor: the call is sent at once, and its key is gone afterwards;
- `register` returns a callable handle; classes take init arguments;
- `get_many` / `put_many`.
"""

from __future__ import annotations

import asyncio
import contextlib
import concurrent.futures
import threading
import time

import pytest

import squall
from squall.futures import EXPORT_PREFIX

from conftest import eventually


def slow_square(x, seconds=0.3):
    time.sleep(seconds)
    return x * x


def add(a, b):
    return a + b


def boom(x):
    raise ValueError(f"no {x}")


def first(xs):
    return xs[0]


class Scaler:
    def __init__(self, factor, offset=0):
        self.factor = factor
        self.offset = offset

    def __call__(self, x):
        return x * self.factor + self.offset


@contextlib.contextmanager
def gil_contention():
    """Two threads holding the GIL while the block runs, so the client's
    completion thread runs at any point of the caller's."""
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(range(1000))

    spinners = [threading.Thread(target=spin) for _ in range(2)]
    for t in spinners:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in spinners:
            t.join()


@pytest.fixture(scope="module")
def fns(compute, client):
    return {
        "slow": client.register(slow_square, name="fut_slow_square"),
        "add": client.register(add, name="fut_add"),
        "boom": client.register(boom, name="fut_boom"),
    }


def test_a_future_is_a_concurrent_future_with_result_done_and_callbacks(client, fns):
    fut = client.call_async(fns["slow"], 7, 0.2)
    assert isinstance(fut, concurrent.futures.Future)
    assert not fut.done()
    seen = []
    called = threading.Event()
    fut.add_done_callback(lambda f: (seen.append(f.result()), called.set()))
    assert fut.result(timeout=10) == 49
    assert fut.done() and not fut.cancelled()
    assert called.wait(5) and seen == [49]
    # A callback added after completion runs at once.
    late = []
    fut.add_done_callback(lambda f: late.append(f.result()))
    assert late == [49]
    assert fut.get() == 49 and fut.exception() is None


def test_a_result_not_yet_there_is_a_timeout_error_and_the_future_stays_pending(client, fns):
    fut = client.call_async(fns["slow"], 3, 0.5)
    with pytest.raises(squall.CallTimeoutError) as info:
        fut.result(timeout=0.05)
    assert isinstance(info.value, TimeoutError)
    assert "still pending" in str(info.value)
    assert fut.result(timeout=10) == 9


def test_errors_come_through_result_exception_and_wait(client, fns):
    fut = client.call_async(fns["boom"], "way")
    done, not_done = concurrent.futures.wait([fut], timeout=10)
    assert done == {fut} and not not_done
    error = fut.exception()
    assert isinstance(error, squall.RemoteError)
    assert error.type_name == "ValueError" and "no way" in str(error)
    with pytest.raises(squall.RemoteError):
        fut.result()


def test_wait_and_as_completed_take_many_futures(client, fns):
    futures = [client.call_async(fns["slow"], i, 0.05 * (4 - i)) for i in range(4)]
    order = [f.result() for f in concurrent.futures.as_completed(futures, timeout=20)]
    assert sorted(order) == [0, 1, 4, 9]
    done, pending = squall.wait(futures, timeout=10)
    assert len(done) == 4 and not pending
    assert squall.gather(futures, timeout=10) == [0, 1, 4, 9]
    first_done, _ = squall.wait(
        [client.call_async(fns["slow"], 5, 0.05), client.call_async(fns["slow"], 6, 2.0)],
        timeout=10,
        return_when=squall.FIRST_COMPLETED,
    )
    assert [f.result() for f in first_done] == [25]


def test_bursts_of_fast_calls_all_complete(client, fns):
    # A result can arrive before its future is made (the call is sent
    # first; other threads holding the GIL widen the gap): none may be lost.
    with gil_contention():
        for burst in range(10):
            futures = [client.call_async(fns["add"], burst, i) for i in range(50)]
            assert squall.gather(futures, timeout=15) == [burst + i for i in range(50)]


def test_gather_raises_the_first_error_in_order(client, fns):
    futures = [client.call_async(fns["add"], 1, 2), client.call_async(fns["boom"], "x")]
    with pytest.raises(squall.RemoteError):
        squall.gather(futures, timeout=10)


def test_futures_are_awaitable_without_blocking_the_event_loop(client, fns):
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        results = await asyncio.gather(
            client.call_async(fns["slow"], 2, 0.3), client.call_async(fns["slow"], 3, 0.3)
        )
        task.cancel()
        return results, ticks

    started = time.monotonic()
    results, ticks = asyncio.run(main())
    assert results == [4, 9]
    # The loop ran its ticker while the calls were out (a blocking await
    # would have let it tick at most once).
    assert ticks >= 10, (ticks, time.monotonic() - started)


def test_a_pending_future_is_passed_on_without_waiting_and_resolved_at_the_executor(client, fns):
    slow = client.call_async(fns["slow"], 6, 1.0)
    started = time.monotonic()
    total = client.call_async(fns["add"], slow, 100)
    sent_after = time.monotonic() - started
    assert sent_after < 0.5, f"passing a pending future blocked the caller {sent_after:.3f} s"
    assert not slow.done()
    assert total.result(timeout=20) == 136
    key = slow._export_key
    assert key is not None and key.startswith(EXPORT_PREFIX)
    # Its key is deleted once the call that took it is done.
    assert eventually(lambda: client.exists(key), want=False, timeout=5) is False
    # A future already done goes by value: no key.
    assert client.call(fns["add"], slow, 1) == 37


def test_futures_passed_on_as_they_complete_are_never_lost(client, fns):
    # A future passed to a call just as its result arrives: either its
    # value goes along, or its result is put where the executor waits.
    with gil_contention():
        outers = []
        for i in range(150):
            inner = client.call_async(fns["add"], i, 0)
            time.sleep(0.0005 * (i % 5))
            outers.append(client.call_async(fns["add"], inner, 1, timeout=10))
        assert squall.gather(outers, timeout=60) == [i + 1 for i in range(150)]


def test_a_failed_future_fails_the_call_that_took_it(client, fns):
    failed = client.call_async(fns["boom"], "upstream")
    downstream = client.call_async(fns["add"], failed, 1)
    with pytest.raises(squall.RemoteError) as info:
        downstream.result(timeout=20)
    assert "no upstream" in str(info.value)
    assert info.value.type_name == "ValueError"


def test_a_future_that_already_failed_fails_the_call_that_took_it_too(client, fns):
    failed = client.call_async(fns["boom"], "upstream")
    assert isinstance(failed.exception(timeout=20), squall.RemoteError)
    # Not raised here: the call is made, and fails on its executor as it
    # does when the failure comes after it.
    downstream = client.call_async(fns["add"], failed, 1)
    with pytest.raises(squall.RemoteError) as info:
        downstream.result(timeout=20)
    assert "an argument failed" in str(info.value) and "no upstream" in str(info.value)
    assert info.value.type_name == "ValueError"
    with pytest.raises(squall.RemoteError, match="no upstream"):
        client.call(fns["add"], failed, 1)


def test_a_future_feeds_a_dag(client, fns):
    client.register(first, name="fut_first")
    dag = client.register_dag("fut_dag", ["fut_first", "fut_add"], [("fut_first", "fut_add")])
    upstream = client.call_async(fns["slow"], 4, 0.3)
    # fut_add(fut_first([5]), upstream) = 5 + 16
    assert dag({"fut_first": [[5]], "fut_add": [upstream]}) == 21
    fut = dag.call_async({"fut_first": [[1]], "fut_add": [client.call_async(fns["slow"], 2, 0.2)]})
    assert fut.result(timeout=20) == 5


def test_a_future_nested_in_a_list_is_refused_with_a_clear_error(client, fns):
    fut = client.call_async(fns["slow"], 1, 0.01)
    with pytest.raises(TypeError, match="top-level argument"):
        client.call_async(fns["add"], [fut], [1])
    fut.result(timeout=10)


def test_cancel_drops_a_queued_call_and_not_a_running_one(cluster, client, fns):
    # Alone on an idle cluster, this one starts at once.
    started = client.call_async(fns["slow"], 7, 1.5)
    time.sleep(0.5)
    # Twelve more on four executors: each has some queued behind its
    # running call, and so does the last one sent.
    busy = [client.call_async(fns["slow"], i, 0.4) for i in range(12)]
    queued = client.call_async(fns["slow"], 99, 0.01)
    assert queued.cancel() is True
    assert queued.cancelled() and queued.done()
    with pytest.raises(concurrent.futures.CancelledError):
        queued.result()
    assert started.cancel() is False
    assert started.result(timeout=30) == 49 and not started.cancelled()
    assert squall.gather(busy, timeout=30) == [i * i for i in range(12)]
    # Done: nothing to cancel.
    assert started.cancel() is False


def test_register_returns_a_handle_usable_by_name_and_as_a_call(client, fns):
    handle = client.register(add, name="fut_handle_add")
    assert isinstance(handle, str) and handle == "fut_handle_add"
    assert handle(2, 3) == 5
    assert handle.call_async(4, 5).result(timeout=10) == 9
    assert client.call("fut_handle_add", 1, 1) == 2
    assert "fut_handle_add" in client.list_functions()
    # Passed to a function, a handle is its name.
    assert client.call(fns["add"], handle, "!") == "fut_handle_add!"


def test_a_class_takes_init_arguments(client, compute):
    scale = client.register(Scaler, name="fut_scaler", init_args=(3,), init_kwargs={"offset": 1})
    assert scale(5) == 16
    with pytest.raises(TypeError, match="for a class"):
        client.register(add, name="fut_bad_init", init_args=(1,))


def test_get_many_and_put_many(client, key):
    keys = [f"{key}-{i}" for i in range(20)]
    client.put_many({k: {"i": i} for i, k in enumerate(keys)})
    got = client.get_many(keys + [f"{key}-missing"])
    assert got == {**{k: {"i": i} for i, k in enumerate(keys)}, f"{key}-missing": None}
    counters = [f"{key}-c{i}" for i in range(3)]
    client.put_many([(c, squall.Counter(i + 1)) for i, c in enumerate(counters)])
    client.put_many([(c, squall.Counter(10)) for c in counters])
    assert list(client.get_many(counters).values()) == [11, 12, 13]
    with pytest.raises(squall.TypeMismatchError):
        client.put_many([(counters[0], "not a counter")])
