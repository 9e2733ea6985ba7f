"""An executor's limits, on a cluster of its own: one storage node, one
compute node of one executor, whose embedded Python may hold at most
64 MiB (`[executor] python_memory_bytes`).

A function that allocates past the cap fails at the caller with a
`RemoteError` naming the cap, and the same executor process serves the
next call.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

import squall
from conftest import Cluster, squall_bin

CAP = 64 << 20


@pytest.fixture(scope="module")
def capped():
    state_dir = Path(tempfile.mkdtemp(prefix="squall-limits-"))
    config = state_dir / "squall.toml"
    config.write_text(
        f"[executor]\npython_memory_bytes = {CAP}\nmax_value_bytes = {16 << 20}\n\n"
        "[monitor.storage]\nenabled = false\n\n[monitor.compute]\nenabled = false\n"
    )
    c = Cluster(squall_bin(), state_dir, config)
    try:
        c.up("--nodes", "1", "--threads", "1", "--compute-nodes", "1", "--executors", "1")
        client = squall.connect(str(state_dir), timeout=10.0)
        yield c, client
        client.close()
    finally:
        c.cli("down", check=False)
        shutil.rmtree(state_dir, ignore_errors=True)


def hog():
    return len(bytearray(8 << 30))


def hog_list():
    xs = []
    while True:
        xs.append(str(len(xs)) * 20)


def process():
    import os

    from squall import user

    return user.executor_id(), os.getpid()


def square(x):
    return x * x


def test_a_function_past_the_python_memory_cap_fails_naming_it_and_the_executor_serves_on(
    capped,
):
    _, client = capped
    for f in (hog, hog_list, process, square):
        client.register(f)
    executor = client.call("process")
    for name in ("hog", "hog_list", "hog", "hog_list"):
        with pytest.raises(squall.RemoteError) as info:
            client.call(name, timeout=20.0)
        e = info.value
        assert e.type_name == "MemoryError", e
        assert e.function == name, e
        assert e.message == (
            f"{name} exceeded the executor's Python memory cap of {CAP} bytes "
            "([executor] python_memory_bytes)"
        ), e
        assert f"{CAP} bytes" in str(e) and "python_memory_bytes" in str(e), str(e)
        assert client.call("process") == executor, "the same executor process serves on"
        assert client.call("square", 12) == 144
    # Under the cap a function allocates as ever.
    client.register(lambda n: len(bytearray(n)), name="moderate")
    assert client.call("moderate", 16 << 20) == 16 << 20
