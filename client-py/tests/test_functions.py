"""Functions and DAGs end to end: register, call, call_async, references,
class-based functions, errors, DAGs, timeouts.

Tests that need executors take the `compute` fixture, which skips them
while the cluster record lists no schedulers. DAG validation and the
function and DAG lists only touch the KVS and always run.
"""

from __future__ import annotations

import time

import pytest

import squall
from squall import _native


def square(x):
    return x * x


def increment(x):
    return x + 1


def greet(name, greeting="hello", punctuation="!"):
    return f"{greeting}, {name}{punctuation}"


def add(a, b):
    return a + b


def divide(a, b):
    return a / b


def sleeper(seconds):
    time.sleep(seconds)
    return seconds


def source(x):
    return x


def plus_one(x):
    return x + 1


def times_ten(x):
    return x * 10


def join(first, second, *own):
    return (first, second) + own


class Counted:
    """Instantiated once per executor: `inits` counts instantiations in the
    executor's copy of the class, `calls` the calls of this instance."""

    inits = 0

    def __init__(self):
        type(self).inits += 1
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return (type(self).inits, self.calls, x)


def unique(prefix):
    return f"{prefix}_{time.monotonic_ns() % 10**9}"


# -- without executors: registration, lists, DAG validation -----------------


def test_register_stores_the_function_and_lists_it(client):
    name = client.register(square, name=unique("square"))
    assert name in client.list_functions()
    raw = client.get(_native.function_key(name), raw=True)
    runtime, code, is_class, export = _native.decode_function(raw.value)
    assert (runtime, is_class, export) == ("python", False, "")
    import cloudpickle

    assert cloudpickle.loads(code)(7) == 49
    client.delete_function(name)
    assert name not in client.list_functions()


def test_register_marks_classes(client):
    name = client.register(Counted, name=unique("counted"))
    raw = client.get(_native.function_key(name), raw=True)
    assert _native.decode_function(raw.value)[2] is True


def test_register_needs_a_name_for_a_lambda(client):
    with pytest.raises(ValueError, match="name="):
        client.register(lambda x: x)


@pytest.mark.parametrize("not_callable", [42, "square", None, [square]])
def test_register_refuses_what_cannot_be_called(client, not_callable):
    name = unique("not_callable")
    with pytest.raises(TypeError, match="function or a class"):
        client.register(not_callable, name=name)
    assert name not in client.list_functions()


@pytest.mark.parametrize("name", ["", "  "])
def test_register_refuses_an_empty_name(client, name):
    before = client.list_functions()
    with pytest.raises(ValueError, match="must not be empty"):
        client.register(square, name=name)
    with pytest.raises(ValueError, match="must not be empty"):
        client.register_wasm(b"(module)", name)
    f = client.register(square, name=unique("sq"))
    with pytest.raises(ValueError, match="must not be empty"):
        client.register_dag(name, [f], [])
    assert name not in client.list_functions()
    assert "square" not in set(client.list_functions()) - set(before)
    assert name not in client.list_dags()


def test_register_refuses_a_name_that_is_not_a_string(client):
    with pytest.raises(TypeError, match="must be a str"):
        client.register(square, name=7)
    with pytest.raises(TypeError, match="must be a str"):
        client.register_wasm(b"(module)", None)
    with pytest.raises(TypeError, match="must be a str"):
        client.register_dag(b"dag", [], [])


def test_register_dag_refuses_unregistered_functions(client):
    with pytest.raises(squall.UnknownFunctionError, match="not_registered"):
        client.register_dag(unique("dag"), ["not_registered"], [])


@pytest.mark.parametrize(
    "functions, connections, message",
    [
        (["a", "b"], [("a", "c")], "not listed"),
        (["a", "b"], [("a", "b"), ("b", "a")], "cycle"),
        (["a"], [("a", "a")], "cycle"),
        (["a", "b", "c"], [("a", "b"), ("a", "c")], "exactly one sink"),
        (["a", "a"], [], "listed twice"),
        ([], [], "at least one"),
    ],
    ids=["unknown-edge", "cycle", "self-loop", "two-sinks", "duplicate", "empty"],
)
def test_register_dag_refuses_malformed_dags(client, functions, connections, message):
    with pytest.raises(ValueError, match=message):
        client.register_dag(unique("bad"), functions, connections)


def test_dags_are_listed_until_deleted(client):
    f = client.register(square, name=unique("sq"))
    g = client.register(increment, name=unique("inc"))
    dag = client.register_dag(unique("dag"), [f, g], [(f, g)])
    assert dag in client.list_dags()
    assert _native.decode_dag(client.get(_native.dag_key(dag), raw=True).value) == (
        dag,
        [f, g],
        [(f, g)],
    )
    client.delete_dag(dag)
    assert dag not in client.list_dags()


# -- with executors -----------------------------------------------------------


def test_a_registered_function_is_called(compute):
    name = compute.register(square, name=unique("square"))
    assert compute.call(name, 7) == 49


def test_call_async_returns_futures(compute):
    name = compute.register(square, name=unique("square"))
    futures = [compute.call_async(name, i) for i in range(5)]
    assert [f.get(timeout=30) for f in futures] == [0, 1, 4, 9, 16]
    assert all(f.done() for f in futures)


def test_keyword_arguments_reach_the_function(compute):
    name = compute.register(greet, name=unique("greet"))
    assert compute.call(name, "ada", greeting="hi") == "hi, ada!"
    assert compute.call(name, name="bob", punctuation="?") == "hello, bob?"


def test_reference_arguments_are_resolved_on_the_executor(compute, key):
    compute.put(key, 40)
    compute.put(key + "/b", 2)
    name = compute.register(add, name=unique("add"))
    assert compute.call(name, squall.Reference(key), 2) == 42
    assert compute.call(name, 1, b=squall.Reference(key + "/b")) == 3


def test_a_class_is_instantiated_once_per_executor(compute):
    name = compute.register(Counted, name=unique("counted"))
    results = [compute.call(name, i) for i in range(8)]
    assert [x for _, _, x in results] == list(range(8))
    assert all(inits == 1 for inits, _, _ in results), results
    # However the calls spread, some executor served several of them with
    # the same warm instance.
    assert max(calls for _, calls, _ in results) >= 2, results


def test_a_raising_function_gives_a_remote_error_with_its_traceback(compute):
    name = compute.register(divide, name=unique("divide"))
    with pytest.raises(squall.RemoteError) as e:
        compute.call(name, 1, 0)
    err = e.value
    assert err.type_name == "ZeroDivisionError"
    assert "division by zero" in err.message
    assert "ZeroDivisionError" in err.traceback and "divide" in err.traceback
    assert err.traceback.strip() in str(err)
    assert isinstance(err, squall.SquallError)


def test_an_unknown_function_is_reported(compute):
    with pytest.raises(squall.UnknownFunctionError):
        compute.call(unique("never_registered"), 1)


def test_a_wrong_number_of_arguments_is_a_remote_type_error(compute):
    name = compute.register(square, name=unique("square"))
    with pytest.raises(squall.RemoteError) as e:
        compute.call(name, 1, 2, 3)
    assert e.value.type_name == "TypeError"


def test_a_corrupt_pickle_is_a_bad_function(compute):
    name = unique("corrupt")
    record = _native.encode_function(b"\x80\x05garbage, not a pickle", False)
    compute.put(_native.function_key(name), squall.Lww(record))
    compute.put(_native.FUNCTIONS_KEY, squall.Set([name]))
    with pytest.raises(squall.BadFunctionError):
        compute.call(name, 1)


def test_a_record_that_is_not_a_function_code_fails_the_call(compute):
    name = unique("garbage")
    compute.put(_native.function_key(name), squall.Lww(b"\xff\xfe not bincode"))
    with pytest.raises(squall.CallError):
        compute.call(name, 1, timeout=10)


def test_a_dag_chains_its_functions(compute):
    sq = compute.register(square, name=unique("square"))
    inc = compute.register(increment, name=unique("increment"))
    dag = compute.register_dag(unique("square_inc"), [sq, inc], [(sq, inc)])
    assert compute.call_dag(dag, {sq: (3,)}) == 10


def test_a_fan_in_function_gets_upstream_results_in_connection_order(compute):
    src = compute.register(source, name=unique("source"))
    a = compute.register(plus_one, name=unique("plus_one"))
    b = compute.register(times_ten, name=unique("times_ten"))
    j = compute.register(join, name=unique("join"))
    functions = [src, a, b, j]
    forward = compute.register_dag(
        unique("fan"), functions, [(src, a), (src, b), (a, j), (b, j)]
    )
    assert compute.call_dag(forward, {src: (2,)}) == (3, 20)
    assert compute.call_dag(forward, {src: [2], j: ["own"]}) == (3, 20, "own")
    backward = compute.register_dag(
        unique("fan"), functions, [(b, j), (a, j), (src, a), (src, b)]
    )
    assert compute.call_dag(backward, {src: (2,)}) == (20, 3)


def test_a_deleted_dag_cannot_be_called(compute):
    sq = compute.register(square, name=unique("square"))
    inc = compute.register(increment, name=unique("increment"))
    dag = compute.register_dag(unique("doomed"), [sq, inc], [(sq, inc)])
    assert compute.call_dag(dag, {sq: (2,)}) == 5
    compute.delete_dag(dag)
    with pytest.raises(squall.UnknownDagError):
        compute.call_dag(dag, {sq: (2,)})


def test_a_call_past_its_timeout_fails_with_call_timeout(compute):
    name = compute.register(sleeper, name=unique("sleeper"))
    started = time.monotonic()
    with pytest.raises(squall.CallTimeoutError) as e:
        compute.call(name, 3.0, timeout=1.0)
    assert time.monotonic() - started < 3.0 + 1.0
    assert isinstance(e.value, TimeoutError)


def test_a_future_waited_on_too_briefly_stays_pending(compute):
    name = compute.register(sleeper, name=unique("sleeper"))
    future = compute.call_async(name, 0.5, timeout=20)
    with pytest.raises(squall.CallTimeoutError, match="still pending"):
        future.get(timeout=0.01)
    assert future.get(timeout=20) == 0.5


def test_calls_without_a_scheduler_say_how_to_get_one(cluster):
    (router,) = cluster.record["routers"]
    key = cluster.state_dir / "keys" / "client.key"
    kv_only = squall.connect(router["addresses"][0], key_file=str(key))
    with pytest.raises(squall.SquallError, match="no scheduler known"):
        kv_only.call("anything", 1)
