"""Traced calls: where a call spent its time comes back with its result
when asked (`trace=True`): the scheduler's queue and placement, each
function's wait, run time and reads through its node's cache."""

from __future__ import annotations

import time

import pytest

import squall


def reader(value, pause):
    time.sleep(pause)
    return len(value)


def double(x):
    return 2 * x


def add_one(x):
    return x + 1


@pytest.fixture(scope="module")
def fns(compute, client):
    return {
        "reader": client.register(reader, name="trace_reader"),
        "double": client.register(double, name="trace_double"),
        "add_one": client.register(add_one, name="trace_add_one"),
    }


def test_a_traced_call_says_where_it_spent_its_time(client, fns, key):
    client.put(key, "x" * 10_000)
    fut = client.call_async(fns["reader"], squall.Reference(key), 0.05, trace=True)
    assert fut.result(timeout=20) == 10_000
    trace = fut.trace()
    assert trace["queued_ms"] >= 0 and trace["arrived"] > time.time() - 60
    [step] = trace["steps"]
    assert step["function"] == fns["reader"] and step["done"]
    assert step["executor"].startswith(("tcp://", "ipc://"))
    assert "calls outstanding" in step["placed"], step["placed"]
    assert step["ran_ms"] >= 50, step
    assert step["waited_ms"] >= 0
    assert step["reads"] >= 1 and step["bytes_read"] >= 10_000, step
    # A fresh key: the node's cache had to fetch it. Read again, the
    # value is held: by the cache of a node that read it (the scheduler
    # prefers those), or by the executor that kept it from an earlier call.
    assert step["cache_hits"] == 0, step
    held = 0
    for _ in range(20):
        again = client.call_async(fns["reader"], squall.Reference(key), 0.0, trace=True)
        again.result(timeout=20)
        [later] = again.trace()["steps"]
        kept, hits, reads = later["kept_reads"], later["cache_hits"], later["reads"]
        assert kept + reads == 1 and hits <= reads, later
        assert later["bytes_read"] >= 10_000, later
        held += kept + hits
    assert held >= 10, f"only {held} of 20 reads answered by a cache or a kept value"


def test_a_traced_dag_has_a_step_per_function(client, fns):
    dag = client.register_dag(
        "trace_dag", [fns["double"], fns["add_one"]], [(fns["double"], fns["add_one"])]
    )
    fut = dag.call_async({fns["double"]: (4,)}, trace=True)
    assert fut.result(timeout=20) == 9
    steps = fut.trace()["steps"]
    assert [s["function"] for s in steps] == [fns["double"], fns["add_one"]]
    assert all(s["done"] and s["executor"] for s in steps), steps


def test_an_untraced_call_has_no_trace(client, fns):
    fut = fns["double"].call_async(1)
    assert fut.result(timeout=20) == 2
    assert fut.trace() is None


def test_the_dashboard_shows_the_latest_traced_calls(cluster, client, fns):
    import json
    import urllib.request

    [monitor] = cluster.record["monitors"]
    url = next(a for a in monitor["addresses"] if a.startswith("http")).rstrip("/")
    if url.endswith("/metrics"):
        url = url[: -len("/metrics")]
    fut = fns["double"].call_async(21, trace=True)
    assert fut.result(timeout=20) == 42
    deadline = time.monotonic() + 15
    shown = []
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/api/cluster", timeout=5) as r:
            data = json.loads(r.read())
        shown = [t for t in (data or {}).get("compute", {}).get("traces", []) if t["call"] == fut.call_id]
        if shown:
            break
        time.sleep(0.5)
    assert shown, f"call {fut.call_id} not among the dashboard's traces"
    [t] = shown
    assert t["name"] == fns["double"] and not t["failed"]
    assert t["steps"][0]["done"] and t["steps"][0]["function"] == fns["double"]
