"""Versions of a function, on the local test mode and on the session's real
cluster alike: every `register` of a name is a new version, `call(name,
version=n)` calls one, `rollback` makes the previous one current, and a DAG
naming `f@n` pins it."""

from __future__ import annotations

import random

import pytest

import squall


@pytest.fixture(scope="module")
def local_client():
    client = squall.connect("local://")
    yield client
    client.close()


@pytest.fixture(params=["local", "cluster"])
def api(request, local_client):
    client = local_client if request.param == "local" else request.getfixturevalue("compute")
    return client, f"ver_{request.param}_{random.getrandbits(24):06x}"


def test_each_register_is_a_version_and_old_ones_stay_callable(api):
    client, p = api
    client.register(lambda x: x + 1, name=p)
    client.register(lambda x: x + 100, name=p)
    assert [v["version"] for v in client.list_versions(p)] == [1, 2]
    assert [v["current"] for v in client.list_versions(p)] == [False, True]
    assert client.call(p, 1) == 101
    assert client.call(p, 1, version=1) == 2
    assert client.call_async(p, 1, version=2).result(timeout=20) == 101
    with pytest.raises(squall.UnknownFunctionError):
        client.call(p, 1, version=9)
    with pytest.raises(ValueError):
        client.register(lambda x: x, name=f"{p}@3")


def test_rollback_makes_the_previous_version_current(api):
    client, p = api
    client.register(lambda x: "one", name=p)
    with pytest.raises(ValueError, match="no version before"):
        client.rollback(p)
    client.register(lambda x: "two", name=p)
    assert client.call(p, 0) == "two"
    assert client.rollback(p) == 1
    # Executors that ran version 2 load version 1 again.
    for _ in range(10):
        assert client.call(p, 0) == "one"
    assert [v["current"] for v in client.list_versions(p)] == [True, False]


def test_a_dag_pins_a_version_or_follows_the_current(api):
    client, p = api
    client.register(lambda x: x * 2, name=f"{p}_f")
    client.register(lambda x: x * 3, name=f"{p}_f")
    client.register(lambda x: x + 1, name=f"{p}_g")
    pinned = client.register_dag(f"{p}_pinned", [f"{p}_f@1", f"{p}_g"], [(f"{p}_f@1", f"{p}_g")])
    latest = client.register_dag(f"{p}_latest", [f"{p}_f", f"{p}_g"], [(f"{p}_f", f"{p}_g")])
    assert pinned({f"{p}_f@1": (5,)}) == 11
    assert latest({f"{p}_f": (5,)}) == 16


def test_only_the_latest_versions_are_kept_and_delete_removes_them_all(api):
    client, p = api
    for i in range(12):
        client.register(lambda x, i=i: i, name=p)
    kept = [v["version"] for v in client.list_versions(p)]
    assert kept == list(range(3, 13))
    with pytest.raises(squall.UnknownFunctionError):
        client.call(p, 0, version=1)
    assert client.call(p, 0, version=3) == 2
    client.delete_function(p)
    assert client.list_versions(p) == [] and p not in client.list_functions()
