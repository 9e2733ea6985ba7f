"""One set of API tests, run against the local test mode
(`squall.testing.local()`, `connect("local://")`) and against the session's
real cluster (3 storage nodes, 2 compute nodes): the two must agree on
values, lattices, errors, functions, DAGs, futures, instances and
`squall.user`."""

from __future__ import annotations

import random
import time

import pytest

import squall
import squall.testing

from conftest import eventually


@pytest.fixture(scope="module")
def local_client():
    client = squall.connect("local://")
    yield client
    client.close()


@pytest.fixture(params=["local", "cluster"])
def api(request, local_client):
    """`(client, prefix)`: a client of either kind, and a prefix that keeps
    this test's names apart."""
    if request.param == "local":
        client = local_client
    else:
        client = request.getfixturevalue("compute")
    prefix = f"api_{request.param}_{random.getrandbits(24):06x}"
    return client, prefix


def square(x):
    return x * x


def add(a, b):
    return a + b


def shout(text):
    print(f"shouting {text}")
    return text.upper()


def fails(x):
    raise KeyError(f"missing {x}")


def nap(seconds):
    time.sleep(seconds)
    return seconds


def remember(key, value):
    from squall import user

    user.put(key, value)
    return user.get(key)


async def remember_awaiting(key, value):
    import asyncio

    from squall import user

    await asyncio.sleep(0.01)
    await user.aput(key, value)
    print(f"kept {value}")
    return await user.aget(key)


async def fails_awaiting(x):
    import asyncio

    await asyncio.sleep(0.01)
    raise KeyError(f"missing {x}")


class Tally:
    def __init__(self, start):
        self.total = start

    def add(self, n):
        self.total += n
        return self.total


class Scale:
    def __init__(self, factor):
        self.factor = factor

    def __call__(self, x):
        return self.factor * x


def test_local_mode_is_what_connect_local_gives():
    client = squall.connect("local://")
    assert isinstance(client, squall.testing.LocalClient)
    client.close()


def test_values_and_lattices_behave_alike(api):
    client, p = api
    client.put(f"{p}/obj", {"a": [1, 2]})
    assert client.get(f"{p}/obj") == {"a": [1, 2]}
    assert client.get(f"{p}/none") is None and not client.exists(f"{p}/none")
    client.put(f"{p}/n", squall.Counter(2))
    client.put(f"{p}/n", squall.Counter(3))
    assert client.get(f"{p}/n") == 5
    client.put(f"{p}/s", squall.Set({"a"}))
    client.put(f"{p}/s", squall.Set({b"b"}))
    assert client.get(f"{p}/s") == {"a", b"b"}
    with pytest.raises(squall.TypeMismatchError, match="stored value is counter"):
        client.put(f"{p}/n", "text")
    assert client.get(f"{p}/n") == 5
    client.delete(f"{p}/obj")
    assert client.get(f"{p}/obj") is None
    client.put_many({f"{p}/m{i}": i for i in range(5)})
    assert client.get_many([f"{p}/m{i}" for i in range(6)]) == {
        **{f"{p}/m{i}": i for i in range(5)},
        f"{p}/m5": None,
    }


def test_functions_errors_and_output_behave_alike(api):
    client, p = api
    sq = client.register(square, name=f"{p}_square")
    assert sq(7) == 49 and client.call(f"{p}_square", 3) == 9
    assert f"{p}_square" in client.list_functions()
    fut = client.register(shout, name=f"{p}_shout").call_async("hi")
    assert fut.result(timeout=20) == "HI"
    assert "shouting hi" in fut.logs()
    with pytest.raises(squall.RemoteError) as info:
        client.register(fails, name=f"{p}_fails")("x")
    assert info.value.type_name == "KeyError" and "missing x" in str(info.value)
    assert "in fails" in info.value.traceback
    with pytest.raises(squall.UnknownFunctionError):
        client.call(f"{p}_nobody", 1)
    with pytest.raises(squall.CallTimeoutError):
        client.register(nap, name=f"{p}_nap")(2.0, timeout=0.5)
    client.delete_function(f"{p}_square")
    assert f"{p}_square" not in client.list_functions()


def write_first(values):
    try:
        values[0] = 7
    except ValueError as e:
        return "refused: " + str(e)
    return float(values.sum())


def test_readonly_references_behave_alike(api):
    np = pytest.importorskip("numpy")
    client, p = api
    client.register(write_first, name=f"{p}_write_first")
    client.put(f"{p}/arr", np.zeros(8))
    assert client.call(f"{p}_write_first", squall.Reference(f"{p}/arr")) == 7.0
    got = client.call(f"{p}_write_first", squall.Reference(f"{p}/arr", readonly=True))
    assert got.startswith("refused: ") and "read-only" in got, got
    assert float(client.get(f"{p}/arr").sum()) == 0.0


def test_readonly_gets_behave_alike(api):
    np = pytest.importorskip("numpy")
    client, p = api
    big = np.arange(100_000, dtype=np.float64)
    client.put(f"{p}/pair", (big, np.arange(4)))
    got = client.get(f"{p}/pair", readonly=True)
    assert all(not a.flags.writeable for a in got)
    assert np.array_equal(got[0], big) and list(got[1]) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="read-only"):
        got[0][0] = 1.0
    plain = client.get(f"{p}/pair")
    assert plain[0].flags.writeable and not np.shares_memory(plain[0], got[0])
    with pytest.raises(ValueError, match="readonly"):
        client.get(f"{p}/pair", raw=True, readonly=True)


def test_references_futures_and_dags_behave_alike(api):
    client, p = api
    client.register(square, name=f"{p}_sq")
    client.register(add, name=f"{p}_add")
    client.put(f"{p}/list", [1, 2])
    assert client.call(f"{p}_add", squall.Reference(f"{p}/list"), [3]) == [1, 2, 3]
    pending = client.call_async(f"{p}_sq", 4)
    assert client.call_async(f"{p}_add", pending, 1).result(timeout=20) == 17
    assert squall.gather([client.call_async(f"{p}_sq", i) for i in range(4)], timeout=20) == [0, 1, 4, 9]
    dag = client.register_dag(f"{p}_dag", [f"{p}_sq", f"{p}_add"], [(f"{p}_sq", f"{p}_add")])
    assert dag({f"{p}_sq": (3,), f"{p}_add": (10,)}) == 19
    assert f"{p}_dag" in client.list_dags()
    with pytest.raises(squall.UnknownDagError):
        client.call_dag(f"{p}_nodag")


def test_classes_instances_and_user_behave_alike(api):
    client, p = api
    scale = client.register(Scale, name=f"{p}_scale", init_args=(3,))
    assert scale(5) == 15
    tally = client.register(Tally, name=f"{p}_tally").instance("t", init_args=(10,))
    assert tally.add(1) == 11 and tally.add(2) == 13
    assert tally.state() == {"total": 13}
    with pytest.raises(squall.RemoteError):
        client.call(f"{p}_tally", 1)  # __init__ needs an argument
    remember_fn = client.register(remember, name=f"{p}_remember")
    assert remember_fn(f"{p}/r", [7]) == [7]
    assert eventually(lambda: client.get(f"{p}/r")) == [7]


def remember_change(event):
    from squall import user

    user.put(f"{event.trigger}/seen", squall.Set([f"{event.kind}|{event.key}|{event.value!r}"]))


def test_triggers_behave_alike(api):
    client, prefix = api
    trigger = client.register_trigger(remember_change, key_prefix=f"{prefix}/in/", name=f"{prefix}-t")
    assert trigger in client.list_triggers()
    seen_key = f"{prefix}-t/seen"
    # A cluster's schedulers pick the registration up within a refresh:
    # write until the trigger fires once.
    deadline = time.monotonic() + 15
    while not client.get(seen_key) and time.monotonic() < deadline:
        client.put(f"{prefix}/in/probe", 0)
        time.sleep(0.2)
    for i in range(5):
        client.put(f"{prefix}/in/{i}", i)
    client.put(f"{prefix}/out/x", 1)
    want = {f"put|{prefix}/in/{i}|{i}" for i in range(5)} | {f"put|{prefix}/in/probe|0"}
    got = eventually(lambda: set(client.get(seen_key) or ()), want, timeout=20)
    assert got == want
    client.delete_trigger(trigger.name)
    assert trigger not in client.list_triggers()


def test_coroutine_functions_behave_alike(api):
    client, p = api
    fn = client.register(remember_awaiting, name=f"{p}_remember_awaiting")
    fut = fn.call_async(f"{p}/ra", {"v": 1})
    assert fut.result(timeout=20) == {"v": 1}
    assert "kept {'v': 1}" in fut.logs()
    assert eventually(lambda: client.get(f"{p}/ra")) == {"v": 1}
    with pytest.raises(squall.RemoteError) as info:
        client.register(fails_awaiting, name=f"{p}_fails_awaiting")("y")
    assert info.value.type_name == "KeyError" and "missing y" in str(info.value)
    assert "in fails_awaiting" in info.value.traceback
