"""Lattices that shrink, through the session's cluster (three storage nodes,
every key on two of them) and two clients: observed-remove sets and maps
(a remove removes what it read; an add it did not read survives), `str`
elements of sets, and concurrent writers counting through lattices without
losing an update (where a read-modify-write of a plain object does)."""

from __future__ import annotations

import threading
import time

import pytest

import squall
from squall import _native
from conftest import eventually


@pytest.fixture(scope="module")
def other(cluster):
    """A second client: another writer id, another session, and its reads
    may go to the other replica."""
    c = squall.connect(str(cluster.state_dir), timeout=10.0)
    yield c
    c.close()


def stays(read, want, hold=1.0, timeout=8.0):
    """Asserts that `read()` comes to answer `want` and then keeps
    answering it for `hold` seconds. A client's reads go to either replica
    of the key, and one may not have the latest write until gossip brings
    it (rounds run every few hundred milliseconds); once every replica
    has it, no merge may change the answer."""
    deadline = time.monotonic() + timeout
    since = time.monotonic()
    while True:
        got = read()
        now = time.monotonic()
        if got != want:
            since = now
        elif now - since >= hold:
            return
        assert now < deadline, f"{got!r} is not {want!r}, or did not stay"
        time.sleep(0.05)


def test_a_set_of_str_reads_back_as_str_and_bytes_as_bytes(client, other, key, cluster):
    client.put(key, squall.Set({"x", b"y", "é"}))
    client.put(key, squall.Set([b"\xffraw"]))
    got = client.get(key)
    assert got == {"x", b"y", "é", b"\xffraw"}
    assert {type(e) for e in got} == {str, bytes}
    assert eventually(lambda: other.get(key), got) == got
    # The shell shows text without its marker.
    shell = lambda: cluster.cli("kv", "get", key).stdout  # noqa: E731
    assert "x\n" in shell() and "é\n" in shell() and "y\n" in shell()


def test_set_elements_written_as_bytes_by_the_shell_read_back_as_bytes(client, key, cluster):
    cluster.cli("kv", "put", "-t", "set", key, "a", "b")
    assert eventually(lambda: client.get(key)) == {b"a", b"b"}
    client.put(key, squall.Set({"a"}))
    assert client.get(key) == {b"a", b"b", "a"}


def test_the_function_index_keeps_names_as_bytes_and_lists_str_names_too(client, key):
    index = key + "/index"
    client.put(index, squall.Set([b"old"]))
    client.put(index, squall.Set(["new", "old"]))
    client.put(key + "/fn/old", 1)
    client.put(key + "/fn/new", 1)
    from squall.client import _listed

    listed = _listed(client, index, lambda n: f"{key}/fn/{n}")
    assert listed == ["new", "old"]


def test_an_or_set_adds_and_removes(client, key):
    client.put(key, squall.ORSet({"a", "b", b"c"}))
    s = client.get(key)
    assert isinstance(s, squall.ORSet) and s == {"a", "b", b"c"}
    s.remove("a")
    s.discard(b"c")
    s.add("d")
    with pytest.raises(KeyError):
        s.remove("nope")
    client.put(key, s)
    assert client.get(key) == {"b", "d"}


def test_an_element_removed_stays_removed_after_gossip_and_a_stale_copy(client, other, key, cluster):
    client.put(key, squall.ORSet({"x", "y"}))
    stale = eventually(lambda: other.get(key), {"x", "y"})
    assert stale == {"x", "y"}
    s = client.get(key)
    s.remove("x")
    client.put(key, s)
    assert eventually(lambda: other.get(key), {"y"}) == {"y"}
    # Putting back the copy read before the remove sends no change: it
    # cannot bring x back, nor can replicas that merge older states.
    other.put(key, stale)
    stays(lambda: other.get(key), {"y"})
    stays(lambda: client.get(key), {"y"})
    assert cluster.cli("kv", "get", key).stdout == "y\n"


def test_a_concurrent_add_survives_a_remove_from_another_client(client, other, key):
    client.put(key, squall.ORSet({"x", "y"}))
    read_by_a = client.get(key)
    assert eventually(lambda: other.get(key), {"x", "y"}) == {"x", "y"}
    # B adds x again and z while A, having read before, removes x and y.
    other.put(key, squall.ORSet({"x", "z"}))
    read_by_a.remove("x")
    read_by_a.remove("y")
    client.put(key, read_by_a)
    want = {"x", "z"}
    assert eventually(lambda: client.get(key), want) == want
    assert eventually(lambda: other.get(key), want) == want
    stays(lambda: other.get(key), want)


def test_concurrent_adds_and_removes_from_two_clients_converge(client, other, key):
    """Two clients add and remove overlapping elements at once; each
    removes only what it read, and the replicas agree. Last, each client
    removes the shared elements as it reads them: together they read every
    add, so none survives, and no element only added is lost."""
    client.put(key, squall.ORSet())
    errors = []

    def churn(c, mine):
        try:
            for i in range(30):
                s = c.get(key) or squall.ORSet()
                s.discard(f"shared{i % 3}")
                s.add(f"{mine}{i % 5}")
                s.add(f"shared{(i + 1) % 3}")
                c.put(key, s)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=churn, args=(c, n)) for c, n in ((client, "a"), (other, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # Each client reads at least its own writes: between them, the two
    # last removes see every add of the shared elements.
    for c in (client, other):
        s = c.get(key)
        for i in range(3):
            s.discard(f"shared{i}")
        c.put(key, s)
    want = {f"a{i}" for i in range(5)} | {f"b{i}" for i in range(5)}
    assert eventually(lambda: client.get(key), want) == want
    assert eventually(lambda: other.get(key), want) == want


def test_a_blind_discard_removes_what_is_stored_when_put(client, key):
    client.put(key, squall.ORSet({"a", "b"}))
    s = squall.ORSet()
    s.discard("a")
    client.put(key, s)
    assert client.get(key) == {"b"}


def test_the_shell_adds_to_or_sets_and_or_maps_and_prints_what_is_there(client, key, cluster):
    shell = lambda k: cluster.cli("kv", "get", k).stdout  # noqa: E731
    cluster.cli("kv", "put", "-t", "or-set", key, "a", "b")
    s = eventually(lambda: client.get(key), {b"a", b"b"})
    s.remove(b"a")
    client.put(key, s)
    assert eventually(lambda: shell(key), "b\n") == "b\n"
    cluster.cli("kv", "put", "-t", "or-map", key + "/m", "f=v", "g=w")
    m = eventually(lambda: client.get(key + "/m"), {"f": b"v", "g": b"w"})
    del m["f"]
    client.put(key + "/m", m)
    assert eventually(lambda: shell(key + "/m"), "g = w\n") == "g = w\n"


def test_a_map_field_is_removed_and_other_fields_stay(client, other, key, cluster):
    client.put(key, squall.ORMap({"who": "ada", "n": squall.Counter(2), "tags": squall.ORSet({"t"})}))
    m = client.get(key)
    assert isinstance(m, squall.ORMap)
    assert m == {"who": "ada", "n": 2, "tags": {"t"}}
    del m["who"]
    m["n"] = squall.Counter(1)
    client.put(key, m)
    want = {"n": 3, "tags": {"t"}}
    assert client.get(key) == want
    assert eventually(lambda: other.get(key), want) == want
    stays(lambda: other.get(key), want)
    assert "who" not in cluster.cli("kv", "get", key).stdout
    # Set again, a removed last-writer-wins field shows the new value.
    other.put(key, squall.ORMap({"who": "grace"}))
    assert eventually(lambda: client.get(key).get("who")) == "grace"


def test_a_concurrent_update_of_a_removed_field_survives(client, other, key):
    client.put(key, squall.ORMap({"f": "v1", "g": 1}))
    read_by_a = client.get(key)
    assert eventually(lambda: other.get(key)) == {"f": "v1", "g": 1}
    other.put(key, squall.ORMap({"f": "v2"}))
    del read_by_a["f"]
    del read_by_a["g"]
    client.put(key, read_by_a)
    want = {"f": "v2"}
    assert eventually(lambda: client.get(key), want) == want
    assert eventually(lambda: other.get(key), want) == want


def test_a_plain_map_field_set_to_none_is_not_a_removal(client, key):
    client.put(key, squall.Map({"a": 1}))
    client.put(key, squall.Map({"a": None}))
    assert client.get(key) == {"a": None}
    with pytest.raises(squall.TypeMismatchError):
        client.put(key, squall.ORMap({"a": 1}))


def test_read_modify_write_of_a_plain_object_loses_a_concurrent_update(client, other, key):
    """The warning in the README, shown: two writers read the same dict,
    each adds its entry, each writes its dict back; the later write wins
    and the other's entry is gone."""
    client.put(key, {"count": 0})
    # (Each read may reach another replica: read until this one has it.)
    theirs = eventually(lambda: other.get(key), {"count": 0})
    assert theirs == {"count": 0}
    mine = client.get(key)
    mine["count"] += 1
    theirs["count"] += 1
    client.put(key, mine)
    other.put(key, theirs)
    assert eventually(lambda: client.get(key), {"count": 1}) == {"count": 1}  # one lost


WRITERS = 8
EACH = 40


def _in_threads(cluster, work):
    """Runs `work(client, i)` in WRITERS threads, each with its own client."""
    clients = [squall.connect(str(cluster.state_dir), timeout=10.0) for _ in range(WRITERS)]
    errors = []
    barrier = threading.Barrier(WRITERS)

    def run(i):
        try:
            barrier.wait()
            work(clients[i], i)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(WRITERS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for c in clients:
            c.close()
    assert not errors, errors


def test_eight_writers_incrementing_a_counter_lose_nothing(client, cluster, key):
    def work(c, _):
        for _ in range(EACH):
            c.put(key, squall.Counter(1))

    _in_threads(cluster, work)
    want = WRITERS * EACH
    assert eventually(lambda: client.get(key), want) == want


def test_eight_writers_incrementing_an_or_map_of_counters_lose_nothing(client, cluster, key):
    def work(c, i):
        for n in range(EACH):
            update = squall.ORMap({"total": squall.Counter(1), f"w{i}": squall.Counter(1)})
            if n == EACH - 1:
                update.discard(f"gone{i}")
            c.put(key, update)

    client.put(key, squall.ORMap({f"gone{i}": 0 for i in range(WRITERS)}))
    _in_threads(cluster, work)
    want = {"total": WRITERS * EACH, **{f"w{i}": EACH for i in range(WRITERS)}}
    assert eventually(lambda: client.get(key), want) == want


def test_or_values_convert_without_a_cluster():
    s = _native.decode_lattice(_native.encode_lattice(squall.ORSet({"a", b"b"})))
    assert isinstance(s, squall.ORSet) and s == {"a", b"b"}
    m = _native.decode_lattice(_native.encode_lattice(squall.ORMap({"x": 1})))
    assert isinstance(m, squall.ORMap) and m == {"x": 1}
    assert _native.decode_lattice(_native.encode_lattice(squall.Set(["q", b"q"]))) == {"q", b"q"}
