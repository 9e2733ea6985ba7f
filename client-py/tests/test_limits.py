"""Limits, on a cluster of its own: one storage node, one compute node of
one executor, whose embedded Python may hold at most 64 MiB (`[executor]
python_memory_bytes`), and values of at most 1 MiB (`[limits]
max_value_bytes`).

A function that allocates past the cap fails at the caller with a
`RemoteError` naming the cap, and the same executor process serves the
next call. A put, an argument or a result over the size limit fails at
once with the size and the limit.
"""

from __future__ import annotations

import pytest

import squall
from conftest import POLICIES_OFF, own_cluster

CAP = 64 << 20
VALUE_LIMIT = 1 << 20


@pytest.fixture(scope="module")
def capped():
    config = (
        f"[executor]\npython_memory_bytes = {CAP}\nmax_value_bytes = {16 << 20}\n\n"
        f"[limits]\nmax_value_bytes = {VALUE_LIMIT}\n\n" + POLICIES_OFF
    )
    up = ("--nodes", "1", "--threads", "1", "--compute-nodes", "1", "--executors", "1")
    with own_cluster("squall-limits-", config, *up) as cluster_and_client:
        yield cluster_and_client


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


def big_result(n):
    return b"x" * n


def test_values_over_the_size_limit_fail_at_once_naming_size_and_limit(capped):
    import time

    _, client = capped
    client.register(big_result)
    # A result over the cluster's limit: refused by the executor that made
    # it, at once, not after the call's deadline.
    started = time.monotonic()
    with pytest.raises(squall.TooLargeError) as info:
        client.call("big_result", 2 * VALUE_LIMIT, timeout=30.0)
    assert time.monotonic() - started < 5.0
    assert str(VALUE_LIMIT) in str(info.value) and "max_value_bytes" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert len(client.call("big_result", VALUE_LIMIT // 2)) == VALUE_LIMIT // 2

    # A put over the cluster's limit: the replica refuses it, nothing stored.
    with pytest.raises(squall.RefusedError) as info:
        client.put("too-big", squall.Lww(b"y" * (2 * VALUE_LIMIT)))
    assert str(2 * VALUE_LIMIT) in str(info.value), str(info.value)
    assert client.get("too-big") is None

    # Over the client's own (default, 32 MiB) limit: refused before sending.
    huge = b"z" * ((32 << 20) + 1)
    started = time.monotonic()
    with pytest.raises(squall.RefusedError):
        client.put("huge", squall.Lww(huge))
    with pytest.raises(squall.TooLargeError) as info:
        client.call("big_result", huge)
    assert time.monotonic() - started < 2.0
    assert "max_value_bytes" in str(info.value)
    assert client.call("square", 3) == 9
