"""Executors that die in the middle of a call.

An executor killed with `kill -9`: the default delivery is at-least-once,
so the scheduler notices the executor has stopped reporting
(`scheduler.executor_timeout`, 1.5 s), plans the call again under the same
call id on a live executor, and the caller gets the result. With
`delivery = "at-most-once"` the caller gets `squall.ExecutorDiedError`
instead.

A function that crashes its interpreter (a segfault): its executor process
dies, its supervisor starts it again, and the scheduler, seeing a new
process at that address, treats the old one as dead. The caller gets
`ExecutorDiedError` (at-least-once retries once, and the retry crashes
too), and the executors serve calls again afterwards.

Each case runs its own cluster (two executors on one compute node).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

import squall
from conftest import Cluster, free_base_port, squall_bin, state_directory


def slow(x):
    """Records which executor runs it, then takes long enough to be killed."""
    import time as t

    from squall import user

    user.put("death/started", user.executor_id())
    t.sleep(3)
    return x * 2


def crash():
    """Crashes the interpreter running it, as a bug in C code would: a
    read of address 0."""
    import ctypes

    return ctypes.string_at(0)


def double(x):
    return 2 * x


@pytest.fixture(params=["at-least-once", "at-most-once"])
def dying(request):
    state_dir = state_directory("squall-death-")
    config = state_dir / "squall.toml"
    config.write_text(f'[scheduler]\ndelivery = "{request.param}"\n')
    c = Cluster(squall_bin(), state_dir)
    try:
        c.cli(
            "--config", str(config), "up", "--base-port", str(free_base_port()),
            "--nodes", "1", "--threads", "1", "--compute-nodes", "1", "--executors", "2",
        )
        client = squall.connect(str(state_dir), timeout=10.0)
        yield request.param, c, client
        client.close()
    finally:
        c.cli("down", check=False)
        shutil.rmtree(state_dir, ignore_errors=True)


def started_on(client, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        who = client.get("death/started")
        if who is not None:
            return who
        time.sleep(0.02)
    raise AssertionError("the call never started on an executor")


def test_a_call_on_an_executor_killed_mid_call(dying):
    delivery, cluster, client = dying
    client.register(slow)
    future = client.call_async("slow", 21, timeout=30)
    victim = started_on(client)
    pids = {
        address: p["pid"]
        for p in cluster.record["executors"]
        for address in p["addresses"]
    }
    assert victim in pids, f"{victim} is not a recorded executor: {pids}"
    os.kill(pids[victim], signal.SIGKILL)

    if delivery == "at-least-once":
        # Retried under the same call id on the surviving executor.
        assert future.get(timeout=30) == 42
        survivor = client.get("death/started")
        assert survivor != victim and survivor in pids
    else:
        with pytest.raises(squall.ExecutorDiedError) as e:
            future.get(timeout=30)
        assert victim in str(e.value)
    # Either way, the surviving executor serves the next call.
    assert client.call("slow", 1, timeout=30) == 2


def executors_seen(cluster):
    out = cluster.cli("status").stdout
    return sum(1 for line in out.splitlines() if line.split()[:1] == ["executor"]
               and "tcp://" in line.split()[1])


def test_a_function_that_crashes_its_executor(dying):
    _, cluster, client = dying
    client.register(crash)
    client.register(double)
    started = time.monotonic()
    with pytest.raises(squall.ExecutorDiedError) as e:
        client.call("crash", timeout=30)
    assert "crash" in str(e.value)
    assert time.monotonic() - started < 15
    # The supervisors started the crashed executors again: both serve.
    deadline = time.monotonic() + 15
    while executors_seen(cluster) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert executors_seen(cluster) == 2
    assert [client.call("double", i, timeout=30) for i in range(4)] == [0, 2, 4, 6]
    # The recorded (supervisor) processes never died.
    for p in cluster.record["executors"]:
        os.kill(p["pid"], 0)
