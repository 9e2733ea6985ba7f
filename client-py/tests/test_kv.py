"""KVS round trips through a real local cluster: pickled objects, every
explicit lattice type, type mismatches, and values shared with the shell."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time

import pytest

import squall
from conftest import eventually


@dataclasses.dataclass
class Point:
    x: int
    y: int


@pytest.mark.parametrize(
    "value",
    [
        {"hello": ["world", 1, 2.5, None]},
        (1, "two", b"three"),
        b"raw bytes are pickled too",
        "text",
        12345678901234567890,
        Point(1, 2),
        {1, 2, 3},
    ],
    ids=["dict", "tuple", "bytes", "str", "bigint", "dataclass", "pyset"],
)
def test_pickled_objects_round_trip(client, key, value):
    client.put(key, value)
    assert client.get(key) == value


def test_a_later_put_wins(client, key):
    client.put(key, "first")
    client.put(key, "second")
    assert client.get(key) == "second"


def test_a_missing_key_reads_as_none(client, key):
    assert client.get(key) is None
    assert not client.exists(key)


def test_delete_removes_the_value(client, key):
    client.put(key, [1, 2])
    assert client.exists(key)
    client.delete(key)
    assert client.get(key) is None


def test_raw_lww_bytes_are_stored_as_is_and_read_as_bytes(client, key, cluster):
    client.put(key, squall.Lww(b"plain"))
    assert client.get(key) == b"plain"
    # The shell is another client: it sees the write once gossip brings it
    # to the replica it reads.
    assert eventually(lambda: cluster.cli("kv", "get", key, check=False).stdout, "plain\n") == "plain\n"
    raw = client.get(key, raw=True)
    assert isinstance(raw, squall.Lww) and raw.value == b"plain"
    wall_ms, logical, writer = raw.timestamp
    assert wall_ms > 0 and writer == client.id


def test_a_raw_get_of_a_pickled_value_gives_its_bytes(client, key):
    client.put(key, {"a": 1})
    raw = client.get(key, raw=True)
    assert raw.value.startswith(b"\x80")


def test_sets_merge_and_read_back_as_frozensets(client, key):
    client.put(key, squall.Set({b"a", "b"}))
    client.put(key, squall.Set([b"c"]))
    got = client.get(key)
    assert isinstance(got, squall.Set) and isinstance(got, frozenset)
    # Each element comes back as it was put: a str as str.
    assert got == {b"a", "b", b"c"}


def test_ordered_sets_merge_in_order(client, key):
    client.put(key, squall.OrderedSet([b"m", b"a"]))
    client.put(key, squall.OrderedSet([b"z", b"b"]))
    got = client.get(key)
    assert isinstance(got, squall.OrderedSet)
    assert tuple(got) == (b"a", b"b", b"m", b"z")


def test_counters_add_every_delta(client, key):
    for delta in (5, 3, -2):
        client.put(key, squall.Counter(delta))
    got = client.get(key)
    assert isinstance(got, squall.Counter) and got == 6


def test_counters_of_two_clients_both_count(client, key, cluster):
    other = squall.connect(str(cluster.state_dir))
    client.put(key, squall.Counter(2))
    other.put(key, squall.Counter(3))
    client.put(key, squall.Counter(1))
    # `other`'s increment reaches this client's replica by gossip.
    assert eventually(lambda: client.get(key), 6) == 6


def test_a_deleted_counter_starts_afresh(client, key):
    client.put(key, squall.Counter(10))
    client.delete(key)
    client.put(key, squall.Counter(1))
    assert client.get(key) == 1


def test_a_refused_counter_write_does_not_count_later(client, key):
    client.put(key, "not a counter")
    with pytest.raises(squall.TypeMismatchError):
        client.put(key, squall.Counter(100))
    client.delete(key)
    client.put(key, squall.Counter(1))
    assert client.get(key) == 1


def test_max_and_min_keep_the_extremes(client, key):
    for n in (3, 9, -4):
        client.put(key + "/max", squall.Max(n))
        client.put(key + "/min", squall.Min(n))
    assert client.get(key + "/max") == 9 and isinstance(client.get(key + "/max"), squall.Max)
    assert client.get(key + "/min") == -4 and isinstance(client.get(key + "/min"), squall.Min)


def test_maps_merge_field_by_field_with_nested_lattices(client, key):
    client.put(key, squall.Map({"hits": squall.Counter(1), "tags": squall.Set([b"x"])}))
    client.put(key, squall.Map({"hits": squall.Counter(2), "owner": {"name": "ada"}}))
    got = client.get(key)
    assert isinstance(got, squall.Map)
    assert got == {"hits": 3, "tags": {b"x"}, "owner": {"name": "ada"}}
    assert isinstance(got["hits"], squall.Counter)


def test_a_type_mismatch_inside_a_map_is_refused(client, key):
    client.put(key, squall.Map({"n": squall.Max(1)}))
    with pytest.raises(squall.TypeMismatchError, match="at `n`"):
        client.put(key, squall.Map({"n": squall.Set([b"a"])}))


def test_priority_keeps_the_lowest(client, key):
    client.put(key, squall.Priority(5.0, b"later"))
    client.put(key, squall.Priority(1.5, "first"))
    client.put(key, squall.Priority(3, b"middle"))
    assert client.get(key) == squall.Priority(1.5, b"first")


def test_vector_clocks_merge_by_maximum(client, key):
    client.put(key, squall.VectorClock({1: 3, 2: 1}))
    client.put(key, squall.VectorClock({2: 5, 7: 1}))
    got = client.get(key)
    assert isinstance(got, squall.VectorClock)
    assert got == {1: 3, 2: 5, 7: 1}


def test_single_key_causal_writes_supersede_what_they_read(client, key):
    client.put(key, squall.SingleKeyCausal(b"v1"))
    client.put(key, squall.SingleKeyCausal(b"v2"))
    got = client.get(key)
    assert isinstance(got, squall.SingleKeyCausal)
    assert got.value == b"v2"
    assert got.versions[0].clock == {client.id: 2}


def test_concurrent_causal_writes_are_both_kept(client, key):
    client.put(key, squall.SingleKeyCausal(b"a", clock={1: 1}))
    client.put(key, squall.SingleKeyCausal(b"b", clock={2: 1}))
    got = client.get(key)
    assert sorted(got.values) == [b"a", b"b"]
    with pytest.raises(ValueError):
        got.value


def test_multi_key_causal_keeps_dependencies(client, key):
    client.put(key, squall.MultiKeyCausal(b"v", dependencies={"other": {9: 2}}))
    got = client.get(key)
    assert isinstance(got, squall.MultiKeyCausal)
    (version,) = got.versions
    assert version.value == b"v"
    assert version.dependencies == {"other": {9: 2}}


def test_a_put_of_another_type_raises_type_mismatch_and_changes_nothing(client, key):
    client.put(key, squall.Counter(4))
    with pytest.raises(squall.TypeMismatchError) as e:
        client.put(key, "a pickled lww value")
    assert "type mismatch: stored value is counter, incoming value is lww" in str(e.value)
    assert isinstance(e.value, squall.SquallError) and isinstance(e.value, TypeError)
    assert client.get(key) == 4


def test_values_written_by_the_shell_are_readable(client, key, cluster):
    # The shell is another client: its writes reach the replica this
    # client reads by gossip, milliseconds later.
    cluster.cli("kv", "put", key, "hello", "world")
    assert eventually(lambda: client.get(key)) == b"hello world"
    cluster.cli("kv", "put", "-t", "set", key + "/set", "a", "b")
    assert eventually(lambda: client.get(key + "/set")) == {b"a", b"b"}
    cluster.cli("kv", "put", "-t", "counter", key + "/n", "7")
    client.put(key + "/n", squall.Counter(1))
    assert eventually(lambda: client.get(key + "/n"), 8) == 8
    cluster.cli("kv", "put", "-t", "map", key + "/map", "f=v")
    assert eventually(lambda: client.get(key + "/map")) == {"f": b"v"}


def test_values_written_from_python_are_readable_by_the_shell(client, key, cluster):
    shell = lambda k: cluster.cli("kv", "get", k, check=False).stdout  # noqa: E731
    client.put(key, squall.Set([b"x", b"y"]))
    assert eventually(lambda: shell(key), "x\ny\n") == "x\ny\n"
    client.put(key + "/n", squall.Counter(41))
    client.put(key + "/n", squall.Counter(1))
    assert eventually(lambda: shell(key + "/n"), "42\n") == "42\n"


def test_one_client_may_be_shared_by_threads(client, key):
    errors = []

    def work(i):
        try:
            for j in range(10):
                client.put(f"{key}/{i}", j)
                client.put(key, squall.Counter(1))
                assert client.get(f"{key}/{i}") == j
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert client.get(key) == 40


def test_direct_kvs_reads_and_writes_one_endpoint(client, key, cluster):
    from squall import _native

    # A storage thread that owns the key (the others answer "not mine",
    # an error for a direct endpoint).
    def owner():
        for node in cluster.record["nodes"]:
            for address in node["addresses"]:
                direct = _native.DirectKvs(address, 5.0)
                try:
                    direct.get(key)
                    direct.get(key + "/n")
                    return direct
                except squall.SquallError:
                    continue
        raise AssertionError("no storage thread owns both keys")

    direct = owner()
    direct.put(key, {"via": "direct"})
    assert direct.get(key) == {"via": "direct"}
    # Written at one replica by another writer: the client sees it once
    # gossip brings it to the replica it reads (milliseconds).
    assert eventually(lambda: client.get(key)) == {"via": "direct"}
    direct.put(key + "/n", squall.Counter(2))
    direct.put(key + "/n", squall.Counter(2))
    assert eventually(lambda: client.get(key + "/n"), want=4) == 4
    with pytest.raises(squall.TypeMismatchError):
        direct.put(key + "/n", squall.Set([b"a"]))
    direct.delete(key)
    assert direct.get(key) is None


def test_direct_kvs_times_out_against_a_silent_endpoint():
    from squall import _native

    direct = _native.DirectKvs("tcp://127.0.0.1:9", 0.2)
    with pytest.raises(squall.KvsTimeoutError):
        direct.get("k")


def test_send_user_message_does_not_block_on_an_absent_peer():
    from squall import _native

    _native.send_user_message("tcp://127.0.0.1:9", "tcp://127.0.0.1:10", b"hi")


def test_connect_without_a_cluster_record_says_so(tmp_path):
    with pytest.raises(squall.ClusterNotFoundError, match="squall up"):
        squall.connect(str(tmp_path))


def test_connect_reads_the_state_dir_from_the_environment(cluster, key, monkeypatch):
    monkeypatch.setenv("SQUALL_STATE_DIR", str(cluster.state_dir))
    c = squall.connect()
    c.put(key, 1)
    assert c.get(key) == 1


def test_connect_to_a_router_address(cluster, key):
    (router,) = cluster.record["routers"]
    c = squall.connect(router["addresses"][0], key_file=str(cluster.state_dir / "keys/client.key"))
    c.put(key, "via router")
    assert c.get(key) == "via router"


def test_the_package_and_its_errors_import_without_the_native_module():
    code = (
        "import sys, pickle, squall\n"
        "from squall.reference import Reference\n"
        "from squall.errors import RemoteError, SquallError\n"
        "r = pickle.loads(pickle.dumps(squall.Reference('k')))\n"
        "assert r == Reference('k') and r.key == 'k'\n"
        "assert issubclass(squall.CallTimeoutError, TimeoutError)\n"
        "assert issubclass(RemoteError, SquallError)\n"
        "assert 'squall._native' not in sys.modules, 'native loaded'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_native_module_exports_what_the_executor_uses():
    from squall import _native

    assert callable(_native.DirectKvs) and callable(_native.send_user_message)
    assert _native.function_key("f") == "__squall/fn/f"
    assert _native.dag_key("d") == "__squall/dag/d"
    record = _native.encode_function(b"code", True)
    assert _native.decode_function(record) == ("python", b"code", True, "")
    assert _native.decode_dag(_native.encode_dag("d", ["a", "b"], [("a", "b")])) == (
        "d",
        ["a", "b"],
        [("a", "b")],
    )
    assert _native.decode_lattice(_native.encode_lattice(squall.Set([b"q"]))) == {b"q"}
    assert _native.decode_lattice(_native.encode_lattice({"a": 1})) == {"a": 1}


def test_remote_errors_show_the_remote_traceback_and_pickle():
    import pickle

    e = squall.errors.call_error("Remote", "ZeroDivisionError", "division by zero",
                                 "Traceback...\n  line 3\nZeroDivisionError", "f")
    assert isinstance(e, squall.RemoteError)
    assert "Traceback..." in str(e) and "ZeroDivisionError" in str(e)
    again = pickle.loads(pickle.dumps(e))
    assert type(again) is squall.RemoteError and again.traceback == e.traceback
    assert isinstance(squall.errors.call_error("Timeout", "Timeout", "late"), TimeoutError)
