"""Failures that heal, on a cluster of its own: two routers, two
schedulers, three storage nodes, two compute nodes, and the monitor (its
policies off) restarting whatever dies.

`kill -9` of any role is repaired within seconds (the record shows a new
pid that runs), and meanwhile calls and KVS operations go on: a client
knows every router and scheduler and fails over. A client whose
schedulers never answer gets `UnavailableError` naming them within a few
seconds, not a timeout.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

import squall
from conftest import FAST_FAILURE, POLICIES_OFF, Cluster, own_cluster, running

CONFIG = FAST_FAILURE + POLICIES_OFF


@pytest.fixture(scope="module")
def healing():
    up = (
        "--nodes", "3", "--threads", "1", "--routers", "2", "--schedulers", "2",
        "--compute-nodes", "2", "--executors", "1",
    )
    with own_cluster("squall-repair-", CONFIG, *up) as cluster_and_client:
        yield cluster_and_client


def replaced(c: Cluster, part: str, index: int, old_pid: int, limit: float = 10.0) -> float:
    """Seconds until the record's `part[index]` runs under a new pid."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        p = c.record[part][index]
        if p["pid"] != old_pid and running(p["pid"]):
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"{part}[{index}] (pid {old_pid}) was not restarted within {limit} s\n{c.logs()}")


def double(x):
    return 2 * x


@pytest.mark.parametrize("part", ["schedulers", "routers", "nodes", "caches", "executors"])
def test_a_role_killed_with_sigkill_is_restarted_and_nothing_stops(healing, part):
    c, client = healing
    client.register(double)
    for i in range(20):
        client.put(f"repair/{part}/{i}", squall.Lww(str(i).encode()), ack=2)
    victim = c.record[part][0]
    os.kill(victim["pid"], signal.SIGKILL)
    # While it is down and coming back, calls and reads go on: a call in
    # flight at a dead scheduler is sent to the other one.
    deadline = time.monotonic() + 3.0
    n = 0
    while time.monotonic() < deadline:
        assert client.call("double", n, timeout=20.0) == 2 * n
        n += 1
    took = replaced(c, part, 0, victim["pid"])
    assert took < 10.0
    record = c.record[part][0]
    assert record.get("restarts", 0) >= 1, record
    for i in range(20):
        got = client.get(f"repair/{part}/{i}")
        assert got == str(i).encode(), (part, i, got)
    assert client.call("double", 21, timeout=20.0) == 42
    monitor_log = (c.state_dir / "logs" / "monitor.log").read_text()
    assert "died: started again" in monitor_log, monitor_log[-2000:]


def test_calls_go_on_while_a_scheduler_is_stalled(healing):
    c, client = healing
    client.register(double)
    stalled = c.record["schedulers"][0]["pid"]
    os.kill(stalled, signal.SIGSTOP)
    try:
        # Each call answers within a few seconds though every other one is
        # first sent to the stalled scheduler: the client stops hearing it
        # and sends the call again to the other.
        for n in range(10):
            started = time.monotonic()
            assert client.call("double", n, timeout=30.0) == 2 * n
            assert time.monotonic() - started < 5.0
    finally:
        os.kill(stalled, signal.SIGCONT)
    assert client.call("double", 5, timeout=20.0) == 10


def test_a_client_no_scheduler_answers_gets_unavailable_naming_them_within_seconds(healing):
    c, _ = healing
    dead = ["tcp://127.0.0.1:9", "tcp://127.0.0.1:11"]
    client = squall.connect(str(c.state_dir), scheduler=dead, timeout=5.0)
    try:
        client.register(double)
        started = time.monotonic()
        with pytest.raises(squall.UnavailableError) as info:
            client.call("double", 1, timeout=60.0)
        took = time.monotonic() - started
        assert took < 6.0, took
        assert all(a in str(info.value) for a in dead), str(info.value)
        assert isinstance(info.value, ConnectionError)
        # Later calls are refused at once.
        started = time.monotonic()
        with pytest.raises(squall.UnavailableError):
            client.call("double", 2, timeout=60.0)
        assert time.monotonic() - started < 0.5
    finally:
        client.close()


def test_a_client_given_every_router_goes_on_when_one_is_stalled(healing):
    c, _ = healing
    routers = [r["addresses"][0] for r in c.record["routers"]]
    schedulers = [s["addresses"][0] for s in c.record["schedulers"]]
    stalled = c.record["routers"][0]["pid"]
    os.kill(stalled, signal.SIGSTOP)
    try:
        key = str(c.state_dir / "keys" / "client.key")
        client = squall.connect(routers, scheduler=schedulers, timeout=10.0, key_file=key)
        try:
            client.put("repair/router-list", squall.Lww(b"ok"), ack=2)
            assert client.get("repair/router-list") == b"ok"
            client.register(double)
            assert client.call("double", 4, timeout=20.0) == 8
        finally:
            client.close()
    finally:
        os.kill(stalled, signal.SIGCONT)
    with pytest.raises(ValueError):
        squall.connect(["not-an-address"])
