#!/usr/bin/env python3
"""Coroutine functions against blocking ones: calls that wait share an
executor when written with ``async def``.

    make bench-async        # = cargo build --release -p squall && .venv/bin/python benches/functions/async_calls.py

Starts its own local cluster (the release binary; 1 storage node, 1
compute node of 2 executors; no monitor) once per coroutine limit in
``--limits`` (``[executor] max_async_calls``), and puts ``--calls`` calls
in flight at once (``call_async``, then all awaited) of:

  - ``async def wait(): await asyncio.sleep(0.1)``: a coroutine; each
    executor holds up to its limit of them at once, so the ideal wall time
    is 100 ms x calls / (2 x limit);
  - ``def wait_blocking(): time.sleep(0.1)``, the same written blocking
    (measured once, on the first cluster): one call at a time per executor,
    100 ms x calls / 2.

Prints a table: wall time, the ideal, their ratio, and the steal (cores'
worth of time the hypervisor did not run this machine's vCPUs) during each
run, from /proc/stat.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import squall
from local_cluster import local_cluster

ROOT = Path(__file__).resolve().parents[2]
SLEEP_S = 0.1
EXECUTORS = 2


async def wait():
    await asyncio.sleep(SLEEP_S)


def wait_blocking():
    time.sleep(SLEEP_S)


def steal_s():
    """Seconds of steal of all vCPUs together since boot."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def measure(client, name, calls):
    """Wall seconds for `calls` calls of `name` in flight at once, and the
    steal cores meanwhile."""
    stolen = steal_s()
    started = time.perf_counter()
    futures = [client.call_async(name) for _ in range(calls)]
    squall.gather(futures, timeout=600)
    took = time.perf_counter() - started
    return took, (steal_s() - stolen) / took


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--limits", default="100,10", help="max_async_calls values, one cluster each")
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "squall"))
    args = ap.parse_args()

    rows = []
    for i, limit in enumerate(int(x) for x in args.limits.split(",")):
        config = f"[executor]\nmax_async_calls = {limit}\n"
        up = ("--nodes", "1", "--threads", "1", "--compute-nodes", "1",
              "--executors", str(EXECUTORS), "--no-monitor")
        with local_cluster(args.binary, config, *up, prefix="squall-abench-") as state:
            client = squall.connect(state, timeout=10.0, call_timeout=600.0)
            client.register(wait)
            client.register(wait_blocking)
            # Both executors load both functions and learn `wait` is a
            # coroutine function.
            squall.gather([client.call_async("wait") for _ in range(20)], timeout=60)
            squall.gather([client.call_async("wait_blocking") for _ in range(4)], timeout=60)
            took, steal = measure(client, "wait", args.calls)
            ideal = SLEEP_S * args.calls / (EXECUTORS * limit)
            rows.append(("async def, await asyncio.sleep(0.1)", limit, took, ideal, steal))
            print(f"  async, limit {limit}: {took:.2f} s", flush=True)
            if i == 0:
                took, steal = measure(client, "wait_blocking", args.calls)
                ideal = SLEEP_S * args.calls / EXECUTORS
                rows.append(("def, time.sleep(0.1)", "-", took, ideal, steal))
                print(f"  blocking: {took:.2f} s", flush=True)
            client.close()

    print()
    print(f"{args.calls} calls in flight at once on {EXECUTORS} executors")
    print()
    print("| function | max_async_calls | wall s | ideal s | wall ÷ ideal | steal cores |")
    print("|---|---|---|---|---|---|")
    for name, limit, took, ideal, steal in rows:
        print(f"| {name} | {limit} | {took:.2f} | {ideal:.2f} | {took / ideal:.2f} | {steal:.2f} |")
    print(f"\n{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
