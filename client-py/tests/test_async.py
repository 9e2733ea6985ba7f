"""Coroutine functions (`async def`): many calls that await share one
executor process, bounded by `[executor] max_async_calls`; `squall.user`'s
awaitables; errors, deadlines and output per call as for plain functions.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

import squall
from squall import user

from conftest import own_cluster


def unique(name):
    return f"{name}_{random.getrandbits(32):08x}"


async def nap(seconds, tag=None):
    await asyncio.sleep(seconds)
    return tag


async def counted_nap(seconds):
    """Sleeps, and returns how many calls of it were awaiting at once in
    this process at most so far."""
    g = globals()
    g["_awaiting"] = g.get("_awaiting", 0) + 1
    g["_most"] = max(g.get("_most", 0), g["_awaiting"])
    try:
        await asyncio.sleep(seconds)
    finally:
        g["_awaiting"] -= 1
    return g["_most"]


async def copy_key(source, target):
    value = await user.aget(source)
    await user.aput(target, {"copied": value})
    await user.adelete(source)
    return (value, await user.aget(source), user.get(target))


async def fails_after_awaiting(x):
    await asyncio.sleep(0.01)
    return 1 / x


async def loud(i):
    print(f"start {i}")
    await asyncio.sleep(0.2)
    print(f"end {i}")
    return i


async def add_one(x):
    await asyncio.sleep(0.01)
    return x + 1


def double(x):
    return 2 * x


class AsyncModel:
    def __init__(self):
        self.scale = 3

    async def __call__(self, x):
        await asyncio.sleep(0.01)
        return x * self.scale


@pytest.fixture(scope="module")
def fns(compute):
    names = {}
    for fn in (nap, copy_key, fails_after_awaiting, loud, add_one, double, AsyncModel):
        names[fn.__name__] = compute.register(fn, name=unique(f"async_{fn.__name__}"))
    return names


def test_calls_that_await_run_at_once_on_an_executor(compute, fns):
    # Warm every executor first: the first call of a function on an
    # executor fetches and loads its code.
    [f.result(timeout=30) for f in [fns["nap"].call_async(0.01, i) for i in range(8)]]
    n, seconds = 40, 0.5
    started = time.monotonic()
    futures = [fns["nap"].call_async(seconds, i, timeout=30) for i in range(n)]
    assert [f.result(timeout=30) for f in futures] == list(range(n))
    took = time.monotonic() - started
    # One at a time on four executors would take n * seconds / 4 = 5 s; a
    # slow machine still finishes well inside half of it.
    assert took < n * seconds / 4 / 2, took


def test_user_aget_aput_adelete_read_and_write_through_the_cache(compute, fns, key):
    compute.put(key, [1, 2])
    value, after_delete, copied = fns["copy_key"](key, key + "/copy")
    assert value == [1, 2]
    assert after_delete is None
    assert copied == {"copied": [1, 2]}
    # The caller's session has the function's writes.
    assert compute.get(key + "/copy") == {"copied": [1, 2]}
    assert compute.get(key) is None


def test_an_exception_in_a_coroutine_is_a_remote_error_with_its_traceback(compute, fns):
    with pytest.raises(squall.RemoteError) as e:
        fns["fails_after_awaiting"](0)
    err = e.value
    assert err.type_name == "ZeroDivisionError"
    assert "division by zero" in err.message
    assert "fails_after_awaiting" in err.traceback and "1 / x" in err.traceback
    assert "_awaited" not in err.traceback, "the runtime's own frame is left out"


def test_a_coroutine_past_its_deadline_times_out_and_the_executor_serves_on(compute, fns):
    started = time.monotonic()
    with pytest.raises(squall.CallTimeoutError) as e:
        fns["nap"](5.0, timeout=1.0)
    assert time.monotonic() - started < 4.0
    # The executor cancelled it (the caller did not just stop waiting).
    assert "did not finish before the call's deadline" in str(e.value)
    futures = [fns["nap"].call_async(0.01, i, timeout=20) for i in range(8)]
    assert [f.result(timeout=20) for f in futures] == list(range(8))


def test_what_concurrent_coroutines_print_stays_with_each_call(compute, fns):
    futures = [fns["loud"].call_async(i, timeout=30) for i in range(20)]
    assert [f.result(timeout=30) for f in futures] == list(range(20))
    for i, f in enumerate(futures):
        assert f.logs().splitlines() == [f"start {i}", f"end {i}"], (i, f.logs())


def test_a_coroutine_function_runs_in_a_dag_beside_a_plain_one(compute, fns):
    dag = compute.register_dag(
        unique("async_dag"),
        [fns["add_one"], fns["double"]],
        [(fns["add_one"], fns["double"])],
    )
    assert compute.call_dag(dag, {fns["add_one"]: (4,)}) == 10
    back = compute.register_dag(
        unique("async_dag"),
        [fns["double"], fns["add_one"]],
        [(fns["double"], fns["add_one"])],
    )
    assert compute.call_dag(back, {fns["double"]: (4,)}) == 9


def test_a_class_with_an_async_call_method_runs_as_a_coroutine(compute, fns):
    futures = [fns["AsyncModel"].call_async(i, timeout=30) for i in range(10)]
    assert [f.result(timeout=30) for f in futures] == [3 * i for i in range(10)]


LIMITED = """\
[monitor.storage]
enabled = false

[monitor.compute]
enabled = false

[executor]
max_async_calls = 2
"""


def test_beyond_max_async_calls_coroutines_wait_and_all_complete():
    up = ("--nodes", "1", "--threads", "1", "--compute-nodes", "1", "--executors", "1")
    with own_cluster("squall-async-", LIMITED, *up) as (_, client):
        name = client.register(counted_nap, name="counted_nap")
        client.call(name, 0.01, timeout=30)  # loaded, known as a coroutine function
        started = time.monotonic()
        futures = [client.call_async(name, 0.4, timeout=60) for _ in range(8)]
        most = [f.result(timeout=60) for f in futures]
        took = time.monotonic() - started
        assert max(most) == 2, most
        # Two at a time: four rounds of 0.4 s at least.
        assert took >= 4 * 0.4 - 0.05, took
