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


def _two_versions(client, p):
    """Registers `p` twice; each version returns its number."""
    client.register(lambda x: 1, name=p)
    client.register(lambda x: 2, name=p)


def _call_many(client, p, n):
    """The results of `n` calls of `p` by its plain name, in batches."""
    got = []
    for start in range(0, n, 100):
        futs = [client.call_async(p, 0) for _ in range(min(100, n - start))]
        got += [f.result(timeout=60) for f in futs]
    return got


def test_a_split_sends_its_share_of_calls_to_a_version_until_it_is_cleared(api):
    client, p = api
    _two_versions(client, p)
    assert client.traffic(p) == {}
    client.set_traffic(p, {1: 0.1})
    assert client.traffic(p) == {1: 0.1}
    got = _call_many(client, p, 1000)
    assert got.count(1) + got.count(2) == 1000
    # 10% expected; a binomial standard deviation is ~9.5 calls.
    assert 50 <= got.count(1) <= 150, got.count(1)
    # A call of one version is not split.
    assert {client.call(p, 0, version=2) for _ in range(30)} == {2}
    assert {client.call(p, 0, version=1) for _ in range(10)} == {1}

    client.clear_traffic(p)
    assert client.traffic(p) == {}
    assert set(_call_many(client, p, 100)) == {2}
    client.set_traffic(p, {1: 1.0})
    assert set(_call_many(client, p, 50)) == {1}
    client.set_traffic(p, {})
    assert client.traffic(p) == {} and set(_call_many(client, p, 50)) == {2}


def test_an_invalid_split_is_a_value_error_and_changes_nothing(api):
    client, p = api
    _two_versions(client, p)
    client.set_traffic(p, {1: 0.25})
    with pytest.raises(ValueError, match=r"has no version 7 \(kept: \[1, 2\]\)"):
        client.set_traffic(p, {7: 0.1})
    with pytest.raises(ValueError, match=r"a number in \[0, 1\], not 1.5"):
        client.set_traffic(p, {1: 1.5})
    with pytest.raises(ValueError, match=r"a number in \[0, 1\], not -0.1"):
        client.set_traffic(p, {1: -0.1})
    with pytest.raises(ValueError, match="add up to at most 1"):
        client.set_traffic(p, {1: 0.6, 2: 0.6})
    with pytest.raises(ValueError, match="is not registered"):
        client.set_traffic(f"{p}_none", {1: 0.1})
    with pytest.raises(ValueError, match="plain name"):
        client.set_traffic(f"{p}@1", {1: 0.1})
    with pytest.raises(TypeError):
        client.set_traffic(p, [(1, 0.1)])
    assert client.traffic(p) == {1: 0.25}


def test_a_new_register_or_a_rollback_ends_the_split(api):
    client, p = api
    _two_versions(client, p)
    client.set_traffic(p, {1: 1.0})
    assert set(_call_many(client, p, 20)) == {1}
    client.register(lambda x: 3, name=p)
    assert client.traffic(p) == {}
    assert set(_call_many(client, p, 20)) == {3}
    client.set_traffic(p, {1: 1.0})
    assert client.rollback(p) == 2
    assert client.traffic(p) == {}
    assert set(_call_many(client, p, 20)) == {2}
    client.set_traffic(p, {1: 0.5})
    client.delete_function(p)
    assert client.traffic(p) == {}


def _call_counts(cluster, p):
    """`squall_call_duration_seconds_count` per function label starting
    with `p`, from the monitor's `/metrics`."""
    import re
    import urllib.request

    [monitor] = cluster.record["monitors"]
    url = next(a for a in monitor["addresses"] if a.startswith("http")).rstrip("/")
    if not url.endswith("/metrics"):
        url += "/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    pattern = r'^squall_call_duration_seconds_count\{function="(' + re.escape(p) + r'[^"]*)"\} (\S+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.M)}


def test_metrics_count_the_calls_a_split_sends_to_each_version(cluster, compute):
    import time

    p = f"ver_metrics_{random.getrandbits(24):06x}"
    _two_versions(compute, p)
    compute.set_traffic(p, {1: 0.3})
    got = _call_many(compute, p, 300)
    want = {p: float(got.count(2)), f"{p}@1": float(got.count(1))}
    assert 0 < want[f"{p}@1"] < 300
    deadline = time.monotonic() + 20
    counts = {}
    while time.monotonic() < deadline:
        counts = _call_counts(cluster, p)
        if counts == want:
            break
        time.sleep(0.5)
    assert counts == want
