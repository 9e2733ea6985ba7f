"""What functions print reaches their caller, and the cluster's logs, tagged
with the call: `Future.logs()`, `CallError.logs`, `squall logs`."""

from __future__ import annotations

import logging
import sys
import time

import pytest

import squall

from conftest import eventually


def chatty(x):
    print(f"computing {x}")
    print("to stderr", file=sys.stderr)
    logging.getLogger("chatty").warning("careful with %s", x)
    return x + 1


def fails_loudly(x):
    print(f"about to fail on {x}")
    raise RuntimeError("gave up")


def quiet(x):
    return x


def left(x):
    print(f"left saw {x}")
    return x


def right(x):
    print(f"right saw {x}")
    return x * 10


def join(a, b):
    print(f"join got {a} and {b}")
    return a + b


def many_lines(n):
    for i in range(n):
        print("x" * 99)
    return n


@pytest.fixture(scope="module")
def fns(compute, client):
    names = {}
    for fn in (chatty, fails_loudly, quiet, left, right, join, many_lines):
        names[fn.__name__] = client.register(fn, name=f"out_{fn.__name__}")
    return names


def test_a_calls_prints_and_log_records_come_with_its_result(client, fns):
    fut = fns["chatty"].call_async(41)
    assert fut.result(timeout=20) == 42
    logs = fut.logs()
    assert "computing 41\n" in logs
    assert "to stderr\n" in logs
    assert "careful with 41" in logs
    # A call that printed nothing has no output.
    quiet = fns["quiet"].call_async(1)
    assert quiet.result(timeout=20) == 1 and quiet.logs() == ""


def test_a_failed_calls_output_is_on_its_error(client, fns):
    fut = fns["fails_loudly"].call_async("x")
    assert "about to fail on x" in fut.logs(timeout=20)
    with pytest.raises(squall.RemoteError) as info:
        fns["fails_loudly"]("y")
    assert "about to fail on y" in info.value.logs


def test_a_dags_functions_output_is_prefixed_with_their_names(client, fns):
    dag = client.register_dag(
        "out_dag",
        [fns["left"], fns["right"], fns["join"]],
        [(fns["left"], fns["join"]), (fns["right"], fns["join"])],
    )
    fut = dag.call_async({fns["left"]: (1,), fns["right"]: (2,)})
    assert fut.result(timeout=20) == 21
    lines = fut.logs().splitlines()
    assert f"[{fns['left']}] left saw 1" in lines
    assert f"[{fns['right']}] right saw 2" in lines
    assert lines[-1] == f"[{fns['join']}] join got 1 and 20"


def test_output_is_cut_at_its_limit_and_says_so(client, fns):
    fut = fns["many_lines"].call_async(2000)  # 200,000 characters
    assert fut.result(timeout=30) == 2000
    logs = fut.logs()
    assert "output cut at" in logs
    assert len(logs) < 70_000


def test_squall_logs_reads_a_calls_output_from_the_cluster(cluster, client, fns):
    fut = fns["chatty"].call_async(7)
    fut.result(timeout=20)
    other = fns["chatty"].call_async(8)
    other.result(timeout=20)

    def tagged():
        out = cluster.cli("logs", "--call", fut.call_id).stdout
        return out if "computing 7" in out else None

    out = eventually(tagged, timeout=5)
    assert out is not None, cluster.cli("logs", "--all").stdout[-3000:]
    assert f"[call {fut.call_id} {fns['chatty']}] computing 7" in out
    assert "computing 8" not in out
    by_function = cluster.cli("logs", "--function", fns["chatty"]).stdout
    assert "computing 7" in by_function and "computing 8" in by_function
    assert "computing" not in cluster.cli("logs", "--function", "out_nobody").stdout
