"""The monitor's compute policies on a real cluster, through the Python
client.

A burst of calls queues at the scheduler, so the monitor adds a compute
node (a cache and its executor) and, once the burst is over and the tier
idle, removes it again, its processes gone. A function called at a high
rate is preloaded (`Prewarm`) on the executor that had not run it, so it
ends up warm on both.

The module runs its own cluster (one storage node, one compute node of
one executor, at most two) with a config file of short monitor timings;
what the monitor decided is read from `squall status` ("recent
decisions"), the executors' warm functions from its scheduler lines.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

import squall
from conftest import Cluster, running, squall_bin, state_directory

# The storage policy and the hot keys stay off: only the compute tier moves.
CONFIG = """\
[monitor]
period = 250

[monitor.storage]
enabled = false

[monitor.compute]
max_nodes = 2
busy_high = 600
busy_low = 50
sustain = 1000
sustain_low = 4000
grace = 3000

[monitor.hot_keys]
enabled = false

[monitor.hot_functions]
min_per_second = 20
grace = 2000
"""


def sleepy(seconds):
    import time as t

    t.sleep(seconds)
    return seconds


def hot(x):
    import time as t

    t.sleep(0.005)
    return x + 1


class Scaling:
    """The module's cluster, its client, and what `squall status` says."""

    def __init__(self, cluster: Cluster, client) -> None:
        self.cluster = cluster
        self.client = client
        self.log_from = 0

    def begin(self) -> None:
        """Starts a test: only what the monitor logs from now on counts."""
        self.log_from = len(self.monitor_log())

    def status(self) -> str:
        return self.cluster.cli("status").stdout

    def events(self, status: str, policy: str, action: str) -> list:
        """The reasons of the recent decisions `policy action` in `status`."""
        pattern = re.compile(rf"^\s+\d\d:\d\d:\d\d {policy} {action}: (.*)$")
        return [m.group(1) for m in map(pattern.match, status.splitlines()) if m]

    def executors(self, status: str) -> dict:
        """The scheduler's executors: address -> warm functions."""
        out = {}
        for line in status.splitlines():
            m = re.match(r"^\s+executor (tcp://\S+) .* warm \[(.*)\]$", line)
            if m:
                out[m.group(1)] = [w for w in m.group(2).split(", ") if w]
        return out

    def monitor_log(self) -> str:
        log = self.cluster.state_dir / "logs" / "monitor.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def wait(self, what: str, limit: float, probe, strict: bool = True):
        """Polls `probe(status)` until it returns something true; fails
        with the last status and the monitor's log after `limit` seconds,
        or (`strict`) at once if the monitor could not carry out a decision
        since `begin`."""
        deadline = time.monotonic() + limit
        status = ""
        while time.monotonic() < deadline:
            failed = strict and [
                line
                for line in self.monitor_log()[self.log_from :].splitlines()
                if "scaling failed" in line or "changing replication failed" in line
            ]
            assert not failed, f"the monitor could not carry out its decision:\n{failed[0]}"
            status = self.status()
            got = probe(status)
            if got:
                return got
            time.sleep(0.2)
        pytest.fail(
            f"timed out after {limit} s waiting for {what}\n--- squall status\n{status}"
            f"\n--- monitor.log\n{self.monitor_log()[-4000:]}"
        )


@pytest.fixture(scope="module")
def scaling():
    state_dir = state_directory("squall-monitor-")
    config = state_dir / "squall.toml"
    config.write_text(CONFIG)
    c = Cluster(squall_bin(), state_dir, config)
    try:
        # Below the ephemeral ports (32768..), so no client socket takes a
        # port of the compute node the monitor starts later.
        c.up(
            "--nodes", "1", "--threads", "1", "--compute-nodes", "1", "--executors", "1",
            high=32768,
        )
        client = squall.connect(str(state_dir), timeout=10.0)
        yield Scaling(c, client)
        client.close()
    finally:
        c.cli("down", check=False)
        shutil.rmtree(state_dir, ignore_errors=True)


def processes_mentioning(needle: str) -> list:
    """The pids of running processes whose command line contains `needle`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if needle in cmdline and running(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def test_a_burst_of_calls_adds_a_compute_node_and_the_idle_node_is_removed(scaling):
    started = time.monotonic()
    scaling.begin()
    client = scaling.client
    name = client.register(sleepy, name="monitor_sleepy")
    futures = [client.call_async(name, 0.05, timeout=60) for _ in range(150)]

    added = scaling.wait(
        "a compute add-node decision",
        20,
        lambda s: scaling.events(s, "compute", "add-node"),
    )
    assert "1 → 2 compute nodes" in added[0], added
    record = scaling.cluster.record
    assert [c["id"] for c in record["caches"]] == [0, 1], record
    assert [e["id"] for e in record["executors"]] == [0, 1], record
    scaling.wait(
        "the scheduler to see 2 executors",
        20,
        lambda s: len(scaling.executors(s)) == 2,
    )
    assert [f.get(timeout=60) for f in futures] == [0.05] * 150
    burst = time.monotonic() - started

    scaling.wait(
        "a compute remove-node decision",
        30,
        lambda s: scaling.events(s, "compute", "remove-node"),
    )
    added_pids = [record["caches"][1]["pid"], record["executors"][1]["pid"]]

    def removed(status):
        r = scaling.cluster.record
        return (
            len(r["caches"]) == 1
            and not any(running(p) for p in added_pids)
            and len(scaling.executors(status)) == 1
        )

    scaling.wait("compute node 1 to be gone", 30, removed)
    r = scaling.cluster.record
    assert [c["id"] for c in r["caches"]] == [0], r
    assert [e["id"] for e in r["executors"]] == [0], r
    # The executor's supervised child included.
    socket = str((scaling.cluster.state_dir / "cache-1.sock").resolve())
    assert processes_mentioning(socket) == []
    # The one node left still serves calls.
    assert client.call(name, 0.0) == 0.0
    print(f"burst {burst:.1f} s, test {time.monotonic() - started:.1f} s")


def test_a_hot_function_is_prewarmed_on_every_executor(scaling):
    started = time.monotonic()
    # Whatever an earlier test left queued has run.
    scaling.wait(
        "the scheduler to be idle",
        30,
        lambda s: re.search(r"^scheduler \S+: 0 call\(s\) in flight, 0 queued$", s, re.M),
        strict=False,
    )
    scaling.begin()
    client = scaling.client
    name = client.register(hot, name="monitor_hot")
    assert client.call(name, 1) == 2
    stop = threading.Event()
    calls = []

    def caller():
        # About 50 calls a second, one at a time: far above min_per_second,
        # and the executor running them stays well under the scheduler's
        # busy mark, so the scheduler keeps them on the warm executor.
        while not stop.is_set():
            calls.append(client.call(name, len(calls)))
            time.sleep(0.01)

    thread = threading.Thread(target=caller, daemon=True)
    thread.start()
    try:
        # The calls keep the tier above its low mark, so the monitor leaves
        # the node added here alone.
        time.sleep(1.0)
        out = scaling.cluster.cli("scale", "compute", "2").stdout
        assert "every scheduler sees 2 executor(s)" in out, out
        prewarm = scaling.wait(
            f"a prewarm decision for {name}",
            15,
            lambda s: [e for e in scaling.events(s, "hot-function", "prewarm") if name in e],
        )
        assert "loading it on 1 more" in prewarm[-1], prewarm

        def warm_on_both(status):
            executors = scaling.executors(status)
            everywhere = len(executors) == 2 and all(name in w for w in executors.values())
            return executors if everywhere else None

        warm = scaling.wait(f"{name} warm on both executors", 10, warm_on_both)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert len(calls) > 50, len(calls)
    assert calls == [i + 1 for i in range(len(calls))]
    print(f"warm: {warm}; {len(calls)} calls; test {time.monotonic() - started:.1f} s")
