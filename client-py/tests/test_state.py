"""State next to functions: references kept fresh by the cache's
subscription, functions reading and writing keys through their node's
cache, messages between two running functions, and a reference to a key
that never appears."""

from __future__ import annotations

import pickle
import time

import pytest

import squall


def unique(prefix):
    return f"{prefix}_{time.monotonic_ns() % 10**9}"


def identity(value):
    return value


def bump(key):
    from squall import user

    value = (user.get(key) or 0) + 1
    user.put(key, value)
    return value


def sender(receiver_name):
    from squall import user

    user.send(user.executor_of(receiver_name), b"hello from upstream")
    return user.executor_id()


def receiver(upstream_executor):
    from squall import user

    got_from, data = user.recv(timeout=5.0)
    return upstream_executor, got_from, data


def cache_hits(cluster):
    """Hits of every cache, from `squall status`."""
    out = cluster.cli("status").stdout
    hits = 0
    for line in out.splitlines():
        words = line.split()
        if words[:1] == ["cache"] and "hits" in words:
            hits += int(words[words.index("hits") + 1])
    return hits


def test_a_reference_sees_a_value_written_after_the_key_was_cached(compute, cluster, key):
    name = compute.register(identity, name=unique("identity"))
    compute.put(key, "first")
    assert compute.call(name, squall.Reference(key)) == "first"
    hits_before = cache_hits(cluster)

    # Written straight to the KVS: the cache learns it by its subscription.
    compute.put(key, "second")
    deadline = time.monotonic() + 5
    seen = None
    while time.monotonic() < deadline:
        seen = compute.call(name, squall.Reference(key))
        if seen == "second":
            break
        time.sleep(0.02)
    assert seen == "second"
    # Once the cache holds the version the caller wrote, calls are served
    # from it, not fetched again: its hits rise. (Reports reach the
    # scheduler every 500 ms.)
    for _ in range(3):
        assert compute.call(name, squall.Reference(key)) == "second"
    deadline = time.monotonic() + 3
    while cache_hits(cluster) <= hits_before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cache_hits(cluster) > hits_before


def test_functions_read_and_write_keys_through_the_cache(compute, key):
    name = compute.register(bump, name=unique("bump"))
    assert compute.call(name, key) == 1
    assert compute.call(name, key) == 2
    # The writes went through to the KVS.
    assert compute.get(key) == 2


def test_two_functions_of_one_dag_exchange_a_message(compute):
    a = compute.register(sender, name=unique("sender"))
    b = compute.register(receiver, name=unique("receiver"))
    dag = compute.register_dag(unique("talk"), [a, b], [(a, b)])
    upstream, got_from, data = compute.call_dag(dag, {a: (b,)}, timeout=20)
    assert data == b"hello from upstream"
    assert got_from == upstream and upstream.startswith("tcp://")


def test_a_reference_to_a_key_that_never_appears_times_out(compute):
    name = compute.register(identity, name=unique("identity"))
    missing = unique("never-written")
    started = time.monotonic()
    with pytest.raises(squall.CallTimeoutError) as e:
        compute.call(name, squall.Reference(missing), timeout=1.5)
    assert missing in str(e.value)
    assert time.monotonic() - started < 5


def append_one(values):
    values.append(99)
    return len(values)


def test_a_kept_referenced_value_is_fresh_for_every_call(compute, key):
    # Executors keep referenced values between calls; a function that
    # mutates its argument must not change what the next call sees.
    name = compute.register(append_one, name=unique("append_one"))
    compute.put(key, [1, 2, 3])
    assert [compute.call(name, squall.Reference(key)) for _ in range(4)] == [4, 4, 4, 4]
    assert compute.get(key) == [1, 2, 3]


def kept_reads(value):
    import sys

    from squall import user

    return value, user.executor_id(), sys.modules["_squall_runtime"].value_cache()[2]


def test_a_value_the_caller_wrote_is_kept_yet_every_call_sees_the_callers_latest_write(
    compute, key
):
    name = compute.register(kept_reads, name=unique("kept_reads"))
    compute.put(key, b"x" * 100_000)
    seen = [compute.call(name, squall.Reference(key)) for _ in range(16)]
    assert all(v == b"x" * 100_000 for v, _, _ in seen)
    # Sixteen calls on at most four executors: some executor answered a
    # later call from the value it kept, though the caller wrote the key
    # (its session names the write, which the kept value is). (The node's
    # cache may push the key once as it subscribes, dropping a value kept
    # just before: the later calls see it kept.)
    hits = {}
    for _, executor, h in seen:
        hits[executor] = max(hits.get(executor, 0), h)
    assert sum(hits.values()) > 0, seen
    # A newer write of the caller's is never answered from the old value.
    for i in range(4):
        compute.put(key, f"v{i}".encode())
        assert compute.call(name, squall.Reference(key))[0] == f"v{i}".encode()


def readonly_view(values):
    """What a function sees of a read-only array: whether it may write
    it, what writing raises, and whether an earlier call on its executor
    was handed this very object (each one seen is kept alive, so an
    identity cannot be a freed object's reused address)."""
    import squall
    from squall import user

    try:
        values[0] = -1.0
        refused = ""
    except ValueError as e:
        refused = str(e)
    seen = squall.__dict__.setdefault("_readonly_views_seen", [])
    again = any(v is values for v in seen)
    seen.append(values)
    return bool(values.flags.writeable), refused, float(values.sum()), user.executor_id(), again


def scale_in_place(values):
    values *= 2
    return float(values.sum())


def test_a_readonly_reference_shares_one_read_only_array_per_version(compute, key):
    np = pytest.importorskip("numpy")
    name = compute.register(readonly_view, name=unique("readonly_view"))
    values = np.arange(100_000, dtype=np.float64)
    compute.put(key, values)
    seen = [compute.call(name, squall.Reference(key, readonly=True)) for _ in range(16)]
    for writeable, refused, total, _, _ in seen:
        assert not writeable and "read-only" in refused, (writeable, refused)
        assert total == float(values.sum())
    # An executor that answered several calls handed the later ones the
    # object it decoded for the first: decoded once, not per call.
    executors = [executor for _, _, _, executor, _ in seen]
    assert len(set(executors)) < len(executors), executors
    assert any(again for *_, again in seen), seen
    # A new version is seen at once, read-only too.
    compute.put(key, values + 1)
    writeable, _, total, _, _ = compute.call(name, squall.Reference(key, readonly=True))
    assert not writeable and total == float((values + 1).sum())
    # A plain reference to the same key still gets its own writable copy,
    # and what it changes no later call sees.
    scale = compute.register(scale_in_place, name=unique("scale_in_place"))
    for _ in range(4):
        assert compute.call(scale, squall.Reference(key)) == float((values + 1).sum() * 2)
    for _ in range(4):
        _, _, total, _, _ = compute.call(name, squall.Reference(key, readonly=True))
        assert total == float((values + 1).sum())
    # Writing a read-only argument is the function's error, at the caller.
    with pytest.raises(squall.RemoteError) as e:
        compute.call(scale, squall.Reference(key, readonly=True))
    assert "read-only" in str(e.value)


def where_it_lies(values):
    """What a function sees of an array: what its memory belongs to (what
    the last of its bases views: a `bytearray` unpickled for it, the
    stored value's `ValueBuffer`, a `bytes` copied once), whether it may
    write it, whether it is aligned, and its sum."""
    array = values
    while type(array).__name__ == "ndarray" and array.base is not None:
        array = array.base
    owner = type(getattr(array, "obj", array)).__name__
    return owner, bool(values.flags.writeable), bool(values.flags.aligned), float(values.sum())


def test_a_readonly_reference_reads_a_large_array_where_the_value_lies(compute, key):
    np = pytest.importorskip("numpy")
    name = compute.register(where_it_lies, name=unique("where_it_lies"))
    # 3 MiB: the cache holds it in a file of shared memory, which its
    # executors map.
    values = np.arange(3 << 17, dtype=np.float64)
    compute.put(key, values)
    for _ in range(4):
        lies, writeable, aligned, total = compute.call(name, squall.Reference(key, readonly=True))
        assert (lies, writeable, aligned, total) == ("ValueBuffer", False, True, float(values.sum()))
    # A plain reference still gets an array of its own, writable.
    assert compute.call(name, squall.Reference(key)) == ("bytearray", True, True, float(values.sum()))
    # A value written as a plain pickle (by another writer) is read too,
    # unpickled into a copy as before, and frozen.
    compute.put(key, squall.Lww(pickle.dumps(values + 1, protocol=5)))
    lies, writeable, aligned, total = compute.call(name, squall.Reference(key, readonly=True))
    assert (lies, writeable, aligned, total) == ("bytearray", False, True, float((values + 1).sum()))


def test_a_readonly_get_reads_large_arrays_where_the_value_lies(client, key):
    np = pytest.importorskip("numpy")
    # 3 MiB, read from the storage node's file in shared memory, and 200 KB
    # in the frame, beside a plain object.
    big = np.arange(3 << 17, dtype=np.float64)
    small = np.arange(50_000, dtype=np.int32)
    client.put(key, (big, "label", small))
    got = client.get(key, readonly=True)
    assert got[1] == "label"
    for array, want in ((got[0], big), (got[2], small)):
        assert np.array_equal(array, want)
        assert not array.flags.writeable and array.flags.aligned
    assert where_it_lies(got[0])[0] == "ValueBuffer"
    with pytest.raises(ValueError, match="read-only"):
        got[0][0] = -1.0
    # A plain get gets writable arrays of its own; what it changes stays
    # in it.
    plain = client.get(key)
    assert plain[0].flags.writeable and not np.shares_memory(plain[0], got[0])
    plain[0][0] = -1.0
    assert client.get(key, readonly=True)[0][0] == 0.0
    # The stored value is a plain pickle to any reader.
    assert np.array_equal(pickle.loads(client.get(key, raw=True).value)[0], big)


def test_a_readonly_reference_to_a_mutable_value_is_still_fresh_for_every_call(compute, key):
    name = compute.register(append_one, name=unique("append_one"))
    compute.put(key, [1, 2, 3])
    got = [compute.call(name, squall.Reference(key, readonly=True)) for _ in range(4)]
    assert got == [4, 4, 4, 4]
    assert compute.get(key) == [1, 2, 3]


def digest_of(key):
    import hashlib

    from squall import user

    value = user.get(key)
    return len(value), hashlib.sha256(value).hexdigest()


def digest(value):
    import hashlib

    return len(value), hashlib.sha256(value).hexdigest()


def shared_files(cluster):
    """The files of this cluster's caches' values in shared memory: path,
    and its bytes."""
    from pathlib import Path

    found = {}
    for cache in cluster.record["caches"]:
        node = cache["args"][cache["args"].index("--node") + 1]
        folder = Path("/dev/shm") / f"squall-{node}-{cache['pid']}"
        if folder.is_dir():
            for f in folder.iterdir():
                if not f.name.startswith("."):
                    found[str(f)] = f.read_bytes()
    return found


@pytest.mark.skipif(not __import__("os").path.isdir("/dev/shm"), reason="no /dev/shm")
def test_a_large_value_reaches_functions_through_shared_memory_and_a_newer_one_replaces_it(
    compute, cluster, key
):
    import hashlib

    name_of = unique("digest_of")
    compute.register(digest_of, name=name_of)
    name_ref = unique("digest")
    compute.register(digest, name=name_ref)
    first = bytes(range(256)) * 4096 + b"first"
    compute.put(key, first)
    want = (len(first), hashlib.sha256(first).hexdigest())
    assert compute.call(name_of, key) == want
    assert compute.call(name_ref, squall.Reference(key)) == want

    # The cache of each node that served it wrote the value once, as
    # stored (the pickle the client put).
    from pathlib import Path

    stored = compute.get(key, raw=True).value
    files = [p for p, data in shared_files(cluster).items() if data == stored]
    folders = [Path(p).parent for p in files]
    assert files, f"a file holds the value: {sorted(shared_files(cluster))}"
    assert len(set(folders)) == len(folders), f"one file per cache: {files}"

    # A newer version is read, never the old file's.
    second = bytes(range(255, -1, -1)) * 4096 + b"second"
    compute.put(key, second)
    want = (len(second), hashlib.sha256(second).hexdigest())
    assert compute.call(name_of, key) == want
    assert compute.call(name_ref, squall.Reference(key)) == want
    stored = compute.get(key, raw=True).value
    assert any(data == stored for data in shared_files(cluster).values())
