#!/usr/bin/env python3
"""Calls per second alone: tiny calls put in flight at once, the
throughput part of compose.py in a process of its own, for A/B runs of
builds.

    .venv-bench/bin/python benches/functions/throughput.py [--binary B ...] [--after get]

Starts a local cluster per binary (1 storage node of 1 thread, 1 compute
node of 2 executors, no monitor), registers ``increment(x) = x + 1``,
and runs ``--rounds`` rounds of ``--calls`` ``call_async`` calls, every
result checked; with several ``--binary`` the builds alternate
``--repeat`` times. ``--after`` first does what compose.py does before
its throughput part, then measures again: ``put`` five pairs of 1 MB +
10 MB numpy arrays, ``call`` a function summing each pair, ``get`` both
arrays of a pair into this process twenty times (each step implies the
ones before it). Prints one line per round: calls/s, the time spent
submitting, and the steal (cores' worth of time the hypervisor did not
run this machine's vCPUs).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

import squall
from local_cluster import local_cluster

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("nothing", "put", "call", "get")


def increment(x):
    return x + 1


def total(a, b):
    return float(a.sum()) + float(b.sum())


def steal_ticks():
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8])


def rounds(client, label, args):
    for i in range(200):
        assert client.call_async("increment", i).get() == i + 1
    for r in range(args.rounds):
        gc.collect()
        steal0, t0 = steal_ticks(), time.perf_counter()
        futures = [client.call_async("increment", i) for i in range(args.calls)]
        submitted = time.perf_counter() - t0
        wrong = sum(1 for i, f in enumerate(futures) if f.get() != i + 1)
        wall = time.perf_counter() - t0
        steal = (steal_ticks() - steal0) / 100 / wall
        print(f"{label}, round {r + 1}: {args.calls / wall:,.0f} calls/s, "
              f"submitting {submitted:.2f} s of {wall:.2f} s, steal {steal:.2f}", flush=True)
        if wrong:
            sys.exit(f"{wrong} wrong results")


def before_steps(client, upto):
    import numpy as np

    step = STEPS.index(upto)
    rng = np.random.default_rng(1)
    if step >= 1:
        for k in range(5):
            client.put(f"tput:a:{k}", rng.random(1 << 17))
            client.put(f"tput:b:{k}", rng.random(10 << 17))
    if step >= 2:
        for k in range(5):
            client.call("total", squall.Reference(f"tput:a:{k}"), squall.Reference(f"tput:b:{k}"))
    if step >= 3:
        for _ in range(20):
            client.get("tput:a:0")
            client.get("tput:b:0")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", action="append", type=Path,
                    help="squall binaries to compare (default: target/release/squall)")
    ap.add_argument("--calls", type=int, default=10_000, help="calls in flight per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per cluster")
    ap.add_argument("--repeat", type=int, default=1, help="clusters per binary, alternating")
    ap.add_argument("--after", choices=STEPS, default="nothing",
                    help="measure again after compose.py's steps up to this one")
    ap.add_argument("--import-peers", action="store_true",
                    help="import numpy, ray and dask.distributed first, as compose.py does")
    ap.add_argument("--gc-freeze", action="store_true",
                    help="then move every object alive into the collector's permanent "
                         "generation (gc.freeze), as compose.py does")
    args = ap.parse_args()
    if args.import_peers:
        import dask.distributed  # noqa: F401
        import numpy  # noqa: F401
        import ray  # noqa: F401
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    binaries = args.binary or [ROOT / "target" / "release" / "squall"]
    # Executors import from this venv (numpy, for --after call).
    os.environ["VIRTUAL_ENV"] = sys.prefix
    up = ("--nodes", "1", "--threads", "1", "--compute-nodes", "1", "--executors", "2",
          "--no-monitor")
    for _ in range(args.repeat):
        for binary in binaries:
            with local_cluster(binary, "", *up, prefix="squall-tput-") as state:
                client = squall.connect(state, call_timeout=120.0)
                client.register(increment)
                client.register(total)
                rounds(client, f"{binary}", args)
                if args.after != "nothing":
                    before_steps(client, args.after)
                    rounds(client, f"{binary}, after {args.after}", args)
                client.close()


if __name__ == "__main__":
    main()
