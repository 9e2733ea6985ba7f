"""Parallel branches of one DAG call run at the same time, on different
executors: two 50 ms branches and a sink take about 50 ms, not 100.

The session cluster has two compute nodes of two executors each. Each
branch returns the process id of the executor that ran it, so the test
sees where every branch of every call ran.
"""

from __future__ import annotations

import statistics
import time

CALLS = 30
BRANCH_S = 0.05


def branch(x):
    import os
    import time

    time.sleep(0.05)
    return os.getpid()


def both(left, right):
    return (left, right)


def test_two_branches_of_a_call_run_at_once_on_two_executors(compute):
    client = compute
    client.register(branch, name="parallel_left")
    client.register(branch, name="parallel_right")
    client.register(both, name="parallel_sink")
    client.register_dag(
        "parallel_branches",
        ["parallel_left", "parallel_right", "parallel_sink"],
        [("parallel_left", "parallel_sink"), ("parallel_right", "parallel_sink")],
    )
    args = {"parallel_left": (0,), "parallel_right": (1,)}
    # Warmth as a cluster in use has it: one executor has run both
    # branches, the others only the left one. Placing by warmth alone
    # then puts the right branch on that one executor every time, behind
    # the left branch whenever the left lands there too.
    client.call("parallel_right", 0)
    lefts = [client.call_async("parallel_left", 0) for _ in range(4)]
    for f in lefts:
        f.get(timeout=10)
    time.sleep(0.6)  # executors report what is warm every 200 ms
    client.call_dag("parallel_branches", args)  # the sink loads once

    latencies = []
    together = []
    for i in range(CALLS):
        start = time.perf_counter()
        left, right = client.call_dag("parallel_branches", args)
        latencies.append(time.perf_counter() - start)
        if left == right:
            together.append(i)

    p50 = statistics.median(latencies)
    print(f"p50 {p50 * 1000:.1f} ms over {CALLS} calls")
    shown = ", ".join(f"{s * 1000:.0f}" for s in sorted(latencies))
    assert not together, f"calls {together} ran both branches on one executor (ms: {shown})"
    assert p50 < 1.5 * BRANCH_S, f"p50 {p50 * 1000:.1f} ms (ms: {shown})"
