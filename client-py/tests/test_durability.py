"""Durable state, on clusters of their own: three storage nodes keeping
their keys under the state directory, and one compute node.

`squall down` then `squall up` on the same state directory keeps every
key, function and DAG. `kill -9` of every storage process loses no write
acknowledged at `ack="durable"`: the monitor starts them again, and each
loads its keys before it serves.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest

import squall
from conftest import Cluster, FAST_FAILURE, POLICIES_OFF, running, squall_bin, state_directory

CONFIG = FAST_FAILURE + POLICIES_OFF

UP = ("--nodes", "3", "--threads", "1", "--compute-nodes", "1", "--executors", "1")


@pytest.fixture
def state_dir():
    path = state_directory("squall-durable-")
    (path / "squall.toml").write_text(CONFIG)
    c = Cluster(squall_bin(), path, path / "squall.toml")
    try:
        yield c
    finally:
        c.cli("down", check=False)
        shutil.rmtree(path, ignore_errors=True)


def triple(x):
    return 3 * x


def plus_one(x):
    return x + 1


def test_down_then_up_keeps_every_key_function_and_dag(state_dir):
    c = state_dir
    c.up(*UP)
    client = squall.connect(str(c.state_dir), timeout=10.0)
    try:
        for i in range(200):
            client.put(f"keep/{i}", {"i": i})
        client.put("keep/set", squall.Set([b"a", b"b"]))
        client.put("keep/counter", squall.Counter(5))
        client.delete("keep/0")
        client.register(triple)
        client.register(plus_one)
        client.register_dag("triple-then-one", ["triple", "plus_one"], [("triple", "plus_one")])
        assert client.call_dag("triple-then-one", {"triple": [2]}) == 7
    finally:
        client.close()
    # A clean stop flushes what the periodic flush had not yet written.
    c.cli("down")
    data = c.state_dir / "data"
    assert sorted(p.name for p in data.iterdir()) == ["node-1", "node-2", "node-3"]

    c.up(*UP)
    client = squall.connect(str(c.state_dir), timeout=10.0)
    try:
        for i in range(1, 200):
            assert client.get(f"keep/{i}") == {"i": i}, i
        assert client.get("keep/0") is None
        assert client.get("keep/set") == {b"a", b"b"}
        assert client.get("keep/counter") == 5
        assert client.call("triple", 4, timeout=20.0) == 12
        assert client.call_dag("triple-then-one", {"triple": [5]}, timeout=20.0) == 16
    finally:
        client.close()
    logs = c.logs()
    assert "loaded the keys kept on disk" in logs


def test_kill_9_of_every_storage_process_loses_no_durable_write(state_dir):
    c = state_dir
    c.up(*UP)
    client = squall.connect(str(c.state_dir), timeout=10.0)
    acked = []
    errors = []

    def writer(w):
        mine = []
        try:
            for i in range(1250):
                key = f"durable/{w}/{i}"
                client.put(key, squall.Lww(f"{w}-{i}".encode()), ack="durable")
                mine.append(key)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
        acked.extend(mine)

    try:
        started = time.monotonic()
        threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - started
        assert not errors, errors[:3]
        assert len(acked) == 10_000
        print(f"10,000 durable puts from 8 threads in {took:.1f} s")

        # Every storage process, at once, with no chance to flush.
        pids = [n["pid"] for n in c.record["nodes"]]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            now = [n["pid"] for n in c.record["nodes"]]
            if all(p not in pids and running(p) for p in now):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the storage nodes were not restarted\n{c.logs()}")

        lost = []
        deadline = time.monotonic() + 30.0
        pending = list(acked)
        while pending and time.monotonic() < deadline:
            still = []
            for key in pending:
                w, i = key.split("/")[1:]
                try:
                    got = client.get(key)
                except squall.SquallError:
                    got = None
                if got != f"{w}-{i}".encode():
                    still.append(key)
            pending = still
            if pending:
                time.sleep(0.5)
        lost = pending
        assert not lost, f"{len(lost)} durable writes lost, e.g. {lost[:5]}\n{c.logs()}"
    finally:
        client.close()


def test_an_unknown_acknowledgement_level_names_the_levels(cluster, client, key):
    with pytest.raises(ValueError, match="durable"):
        client.put(key, 1, ack="disk")
    client.put(key, 1, ack="durable")
    assert client.get(key) == 1
