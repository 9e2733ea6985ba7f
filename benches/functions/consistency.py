#!/usr/bin/env python3
"""The price of each consistency level, and of carrying a session.

    make bench-consistency        # = .venv/bin/python benches/functions/consistency.py

Starts its own local cluster (the release binary; 3 storage nodes, 2
compute nodes of 2 executors; no monitor) with `executor_capacity = 1`, so
the scheduler cannot put both functions of a DAG call on one executor:
every measured DAG call crosses executors (the script counts how many also
cross compute nodes). One call in flight; p50/p99/mean in ms over
`--calls` calls after `--warmup`.

  (a) a two-function DAG: f reads key K (a `Reference` argument), g reads K
      again (`squall.user.get`), at "lww", "repeatable_read" and "causal"
      (last-writer-wins values: causal costs what repeatable read does plus
      its bookkeeping);
  (b) the same DAG reading 10 keys in each function;
  (c) one plain call from a client that wrote nothing, and from one whose
      session holds its 1,024 most recent writes (every call carries them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import squall
from local_cluster import local_cluster

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """\
[scheduler]
executor_capacity = 1
"""


def reads(*values_and_keys):
    """f: its `Reference` arguments resolved, then each key read again."""
    from squall import user

    n = len(values_and_keys) // 2
    values, keys = values_and_keys[:n], values_and_keys[n:]
    return user.executor_id(), keys, [list(values)]


def reads_again(seen):
    """g: the same keys read again."""
    from squall import user

    where, keys, got = seen
    return where, user.executor_id(), got + [[user.get(k) for k in keys]]


def one(x):
    return x


def stats(samples):
    ms = sorted(s * 1000 for s in samples)
    p = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return p(0.5), p(0.99), statistics.fmean(ms)


def timed(fn, calls, warmup):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "squall"))
    args = ap.parse_args()

    up = ("--nodes", "3", "--threads", "1", "--compute-nodes", "2", "--executors", "2",
          "--no-monitor")
    with local_cluster(args.binary, CONFIG, *up, prefix="squall-cbench-") as state:
        record = __import__("json").loads((Path(state) / "cluster.json").read_text())
        # Executor logs are named executor-NODE-I.log.
        node_of = {a: Path(e["log"]).stem.split("-")[1]
                   for e in record["executors"] for a in e["addresses"]}
        client = squall.connect(state, timeout=10.0)
        client.register(reads)
        client.register(reads_again)
        client.register(one)
        client.register_dag("reads", ["reads", "reads_again"], [("reads", "reads_again")])
        rows = []
        for nkeys in (1, 10):
            keys = [f"bench/k{i}" for i in range(nkeys)]
            for k in keys:
                client.put(k, b"x" * 100)
            dag_args = {"reads": [*(squall.Reference(k) for k in keys), *keys]}
            for level in ("lww", "repeatable_read", "causal"):
                crossed = {"executors": 0, "nodes": 0, "calls": 0}

                def call():
                    f_at, g_at, _ = client.call_dag("reads", dag_args, consistency=level)
                    crossed["calls"] += 1
                    crossed["executors"] += f_at != g_at
                    crossed["nodes"] += node_of.get(f_at) != node_of.get(g_at)

                p50, p99, mean = stats(timed(call, args.calls, args.warmup))
                share = f"{crossed['executors']}/{crossed['calls']} executors, " \
                        f"{crossed['nodes']}/{crossed['calls']} nodes"
                rows.append((f"DAG f->g, {nkeys} key(s) read in each", level, p50, p99, mean, share))
        fresh = squall.connect(state, timeout=10.0)
        p50, p99, mean = stats(timed(lambda: fresh.call("one", 1), args.calls, args.warmup))
        rows.append(("one call", "lww, empty session", p50, p99, mean, ""))
        for i in range(1024):
            client.put(f"bench/session/{i}", i)
        p50, p99, mean = stats(timed(lambda: client.call("one", 1), args.calls, args.warmup))
        rows.append(("one call", "lww, session of 1,024 keys", p50, p99, mean, ""))
        print()
        print("| workload | level | p50 ms | p99 ms | mean ms | functions crossed |")
        print("|---|---|---|---|---|---|")
        for name, level, p50, p99, mean, share in rows:
            print(f"| {name} | {level} | {p50:.2f} | {p99:.2f} | {mean:.2f} | {share} |")
        print(f"\n{args.calls} calls per row after {args.warmup} warm-up, one in flight; "
              f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
