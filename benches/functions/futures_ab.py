"""What `squall.Future` costs: 10,000 tiny calls in flight, collected two
ways on one running cluster, alternating, in one process.

- native: the client module's own path (a call sent, then a blocking wait
  per call and its result unpickled; no Python future, no completion
  thread): what `Client.call` does for one call, and what `call_async`
  did before futures became `concurrent.futures` futures;
- futures: `call_async` (a `squall.Future` each, completed by the client's
  completion thread) and `squall.gather`.

    .venv-bench/bin/python benches/functions/futures_ab.py STATE_DIR [--calls N] [--runs R]

against a cluster started with `squall up` (STATE_DIR its state directory).
Figures go in benches/RESULTS.md.
"""

from __future__ import annotations

import argparse
import time

import cloudpickle

import squall


def increment(x):
    return x + 1


def native_path(client: squall.Client, n: int) -> float:
    native = client._native
    started = time.perf_counter()
    seqs = [
        native.call("bench_increment", cloudpickle.dumps(((i,), {})), [], 60_000, "lww")
        for i in range(n)
    ]
    outcomes = [native.wait(s, 60.0) for s in seqs]
    if not all(o is not None and o[0] == "value" for o in outcomes):
        raise SystemExit("a call failed on the native path")
    # Unpickled, as every result is on the futures path.
    if [cloudpickle.loads(o[1]) for o in outcomes] != [i + 1 for i in range(n)]:
        raise SystemExit("a call gave a wrong result on the native path")
    return n / (time.perf_counter() - started)


def futures_path(client: squall.Client, handle: squall.Function, n: int) -> float:
    started = time.perf_counter()
    results = squall.gather([handle.call_async(i) for i in range(n)], timeout=300)
    if results != [i + 1 for i in range(n)]:
        raise SystemExit("a call gave a wrong result on the futures path")
    return n / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("state_dir", help="the cluster's state directory (squall up --state-dir)")
    ap.add_argument("--calls", type=int, default=10_000, help="calls in flight per measurement")
    ap.add_argument("--runs", type=int, default=3, help="alternating runs of each path")
    args = ap.parse_args()
    client = squall.connect(args.state_dir)
    handle = client.register(increment, name="bench_increment")
    for _ in range(200):  # warm every executor
        handle(1)
    print(f"{args.calls} tiny calls in flight, calls/s")
    print("| run | native path | squall.Future + gather | futures ÷ native |")
    print("|---|---|---|---|")
    for run in range(1, args.runs + 1):
        a = native_path(client, args.calls)
        b = futures_path(client, handle, args.calls)
        print(f"| {run} | {a:,.0f} | {b:,.0f} | {b / a:.2f}x |")


if __name__ == "__main__":
    main()
