#!/usr/bin/env python3
"""First calls on fresh large values, step by step: for each of `--pairs`
fresh pairs of a 1 MB and a 10 MB float64 array, the time to put both,
then one call of a function reading both with `squall.user.get`, timed in
the function (each read: the node's cache, the storage thread, shared
memory, the executor's decode) and at the caller, with the executor that
ran it and whether numpy was imported there before.

    .venv-bench/bin/python benches/functions/first_call.py STATE_DIR [--pairs 8]

against a cluster started with `squall up --state-dir STATE_DIR` whose
executors import numpy (start it with VIRTUAL_ENV=.venv-bench).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import squall


def timed_reads(key_a, key_b):
    import sys
    import time

    from squall import user

    took = ["numpy" in sys.modules, user.executor_id()]
    for key in (key_a, key_b):
        t0 = time.perf_counter()
        user.get(key)
        took.append(round((time.perf_counter() - t0) * 1e3, 2))
    return took


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("state_dir", help="the cluster's state directory (squall up --state-dir)")
    ap.add_argument("--pairs", type=int, default=8, help="fresh pairs of arrays")
    args = ap.parse_args()
    client = squall.connect(args.state_dir, call_timeout=60)
    client.register(timed_reads)
    rng = np.random.default_rng(7)
    tag = time.monotonic_ns()
    for k in range(args.pairs):
        a, b = rng.random(1 << 17), rng.random(10 << 17)
        key_a, key_b = f"first:{tag}:a:{k}", f"first:{tag}:b:{k}"
        t0 = time.perf_counter()
        client.put(key_a, a)
        client.put(key_b, b)
        put_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        reads = client.call("timed_reads", key_a, key_b)
        call_ms = (time.perf_counter() - t0) * 1e3
        loaded, executor, read_a, read_b = reads
        print(f"pair {k}: put both {put_ms:.1f} ms, call {call_ms:.1f} ms, "
              f"reads in the function (1 MB, 10 MB) {read_a:.2f}, {read_b:.2f} ms "
              f"(executor {executor}, numpy {'already' if loaded else 'not yet'} imported)",
              flush=True)


if __name__ == "__main__":
    main()
