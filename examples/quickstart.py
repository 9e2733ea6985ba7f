"""Squall in one page: the README's main job runs this against a local cluster.

    make demo                      # installs everything, starts a cluster, runs this
    .venv/bin/python examples/quickstart.py   # against a cluster already `squall up`

Every step prints what it did; any failure raises and exits non-zero.
"""

import squall


def main():
    client = squall.connect()  # the local cluster started by `squall up`

    # -- get/put: any Python object, last-writer-wins by default ------------
    client.put("greeting", {"text": "hello", "lang": "en"})
    print("get greeting ->", client.get("greeting"))

    # Other lattices are explicit: a set merges instead of overwriting.
    client.put("tags", squall.Set({b"fast"}))
    client.put("tags", squall.Set({b"stateful"}))
    print("get tags ->", sorted(client.get("tags")))

    # -- a function, registered once and called by name ---------------------
    def square(x):
        return x * x

    client.register(square)
    print("call square(7) ->", client.call("square", 7))

    future = client.call_async("square", 12)
    print("call_async square(12) ->", future.get(timeout=10))

    # -- a Reference argument is resolved at the executor, from its cache --
    def total(values, scale=1):
        return sum(values) * scale

    client.register(total)
    client.put("numbers", [1, 2, 3, 4])
    print("call total(Reference('numbers'), scale=10) ->",
          client.call("total", squall.Reference("numbers"), scale=10))

    # -- a two-function DAG: square, then increment --------------------------
    def increment(x):
        return x + 1

    client.register(increment)
    client.register_dag("square-then-increment", ["square", "increment"],
                        [("square", "increment")])
    print("call_dag square-then-increment(5) ->",
          client.call_dag("square-then-increment", {"square": [5]}))

    # -- a class: __init__ runs once per executor, __call__ serves calls ----
    class Greeter:
        def __init__(self):
            self.greeting = "hello"  # where a model or a connection would load

        def __call__(self, name):
            return f"{self.greeting}, {name}"

    client.register(Greeter, name="greeter")
    print("call greeter('ada') ->", client.call("greeter", "ada"))

    # -- a function that raises: the caller gets the remote traceback --------
    def divide(a, b):
        return a / b

    client.register(divide)
    try:
        client.call("divide", 1, 0)
    except squall.RemoteError as e:
        print("call divide(1, 0) -> RemoteError:", e.type_name, "-", e.message)

    print("functions:", client.list_functions())
    print("dags:", client.list_dags())
    client.delete_dag("square-then-increment")
    print("quickstart: all steps passed")


if __name__ == "__main__":
    main()
