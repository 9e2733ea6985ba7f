#!/usr/bin/env python3
"""The functions benchmark: Squall vs Ray vs Dask distributed, side by side
in one run on one machine.

    benches/functions/setup.sh                       # once: .venv-bench
    .venv-bench/bin/python benches/functions/compose.py [--calls 1000] [--warmup 100]

Three parts, each run against every system one after the other:

  (a) composition latency: increment(square(x)), one call in flight, `--calls`
      measured calls after `--warmup` unmeasured ones; p50/p99/mean in ms.
      Squall: a registered DAG (register_dag + call_dag), and a plain `call`
      of one function for reference; then the same two with both functions
      in WebAssembly (examples/wasm/square.wat and increment.wat, registered
      with register_wasm; --skip-wasm leaves them out). Ray: increment.remote(square.remote(x))
      then ray.get. Dask: client.submit(increment, client.submit(square, x))
      .result(), pure=False.
  (b) locality: a function summing a 1 MB and a 10 MB float64 array held by
      the system (Squall: put in the KVS, passed as squall.Reference; Ray:
      ray.put object refs; Dask: scattered futures). "first": the first call
      on freshly stored arrays (median over --locality-fresh pairs);
      "warm": later calls on the same arrays (median of --locality-warm).
      First and warm calls again with squall.Reference(key, readonly=True):
      the executor reads the arrays where the value lies (its cache's file
      in shared memory, no copy) and hands each call the read-only arrays
      it made once; the driver's fetch again with get(key, readonly=True)
      (arrays over the mapped value, no copy). Ray's arrays are read-only
      in every row.
  (c) throughput: --tasks tiny calls put in flight at once (Squall
      call_async, Ray .remote, Dask submit), then all awaited; wall time and
      calls/s. Before each system's part the objects alive are frozen out
      of the garbage collector's sight (gc.freeze), the same for all three.

The script starts the Squall cluster itself (the release binary, a temporary
state directory, a free port range) and always stops it; Ray and Dask are
shut down at the end of their parts.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
from local_cluster import free_base_port

ROOT = Path(__file__).resolve().parents[2]
MB = 1 << 20
# The environment this benchmark was started in. Squall's clusters are
# started in it, not in os.environ as it is later: starting a Dask
# LocalCluster sets MALLOC_TRIM_THRESHOLD_=65536 in this process's
# environment, which a Squall cluster started afterwards would inherit
# (its processes keep an allocator setting the environment chooses:
# transport/src/heap.rs) and run with glibc returning every freed block.
START_ENV = dict(os.environ)
WASM_EXAMPLES = ROOT / "examples" / "wasm"


# -- the functions every system runs ---------------------------------------

def square(x):
    return x * x


def increment(x):
    return x + 1


def total(a, b):
    return float(a.sum()) + float(b.sum())


# -- helpers ----------------------------------------------------------------

def ms_stats(samples_s):
    xs = sorted(samples_s)
    n = len(xs)
    p = lambda q: xs[min(n - 1, max(0, int(round(q * n + 0.5)) - 1))]  # nearest rank
    return {
        "n": n,
        "p50": p(0.50) * 1e3,
        "p99": p(0.99) * 1e3,
        "mean": statistics.fmean(xs) * 1e3,
    }


def timed_loop(fn, calls, warmup, check=None):
    for i in range(warmup):
        fn(i)
    out = []
    for i in range(calls):
        t0 = time.perf_counter()
        r = fn(i)
        out.append(time.perf_counter() - t0)
        if check is not None and i < 5:
            assert r == check(i), (r, check(i))
    return out


def loadavg():
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def cpu_ticks():
    """(steal, total) jiffies of every CPU since boot, from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def steal_percent(before, after):
    """The share of CPU time the hypervisor took between two `cpu_ticks`."""
    if before is None or after is None or after[1] <= before[1]:
        return "?"
    return f"{100 * (after[0] - before[0]) / (after[1] - before[1]):.1f}%"


def git_commit():
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+uncommitted changes" if dirty else "")
    except Exception:
        return "?"


def versions():
    v = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("ray", "dask", "distributed", "squall"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001
            v[mod] = f"not importable ({type(e).__name__})"
    v["squall commit"] = git_commit()
    return v


def settle_heap():
    """Before a throughput part: what is alive now (the three systems'
    modules, earlier parts' leftovers) moves out of the collector's sight
    (gc.freeze), so that no system's 10,000 futures pay for full
    collections walking the others' objects (measured: +17% calls/s for
    Squall's client with Ray and Dask imported, benches/RESULTS.md)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def arrays(seed):
    rng = np.random.default_rng(seed)
    return rng.random(MB // 8), rng.random(10 * MB // 8)


# -- Squall -----------------------------------------------------------------

class SquallCluster:
    def __init__(self, binary, executors, config=None):
        self.binary = str(binary)
        self.dir = tempfile.mkdtemp(prefix="squall-fbench-")
        self.port = free_base_port()
        self.executors = executors
        self.config = config
        self.started = False

    def up(self):
        env = dict(START_ENV)
        # Executors import from this venv (numpy, cloudpickle, squall).
        env["VIRTUAL_ENV"] = sys.prefix
        config = []
        if self.config is not None:
            path = Path(self.dir) / "squall.toml"
            path.write_text(self.config)
            config = ["--config", str(path)]
        cmd = [self.binary, "--state-dir", self.dir, *config, "up", "--base-port", str(self.port),
               "--nodes", "1", "--threads", "1", "--compute-nodes", "1",
               "--executors", str(self.executors),
               "--no-monitor"]  # a fixed cluster: no autoscaling mid-measurement
        print("  $", " ".join(shlex.quote(c) for c in cmd), flush=True)
        self.started = True  # a failed `up` may still leave processes: always `down`
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, cwd=str(ROOT),
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return time.perf_counter() - t0

    def down(self):
        if not self.started:
            return
        r = subprocess.run([self.binary, "--state-dir", self.dir, "down"],
                           capture_output=True, text=True, cwd=str(ROOT))
        if r.returncode != 0:
            print(f"  squall down failed ({r.returncode}): {r.stderr.strip()}; "
                  f"state and logs kept in {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.started = False

    def logs_tail(self, lines=20):
        out = []
        for p in sorted(Path(self.dir).rglob("*.log")):
            try:
                tail = p.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            out.append(f"--- {p.name}\n" + "\n".join(tail))
        return "\n".join(out)


def run_squall_split(args, res):
    """The composition row with the two functions on two executors: a
    cluster whose scheduler puts a chain link on another executor than its
    upstream function's, so the result crosses a socket as Ray's does."""
    import squall

    cluster = SquallCluster(args.squall_bin, args.executors, config="[scheduler]\ncolocate_chains = false\n")
    try:
        cluster.up()
        client = squall.connect(cluster.dir, call_timeout=120.0)
        client.register(square)
        client.register(increment)
        client.register_dag("square-then-increment", ["square", "increment"], [("square", "increment")])
        fut = client.call_dag_async("square-then-increment", {"square": [5]}, trace=True)
        assert fut.result() == 26
        placed = {s["function"]: s["executor"] for s in fut.trace()["steps"]}
        assert placed["square"] != placed["increment"], f"both on one executor: {placed}"
        res["compose_split"] = ms_stats(timed_loop(
            lambda i: client.call_dag("square-then-increment", {"square": [i]}),
            args.calls, args.warmup, check=lambda i: i * i + 1))
        client.close()
    finally:
        cluster.down()


def run_squall(args, res):
    import squall

    cluster = SquallCluster(args.squall_bin, args.executors)
    try:
        res["start_s"] = cluster.up()
        client = squall.connect(cluster.dir, call_timeout=120.0)
        client.register(square)
        client.register(increment)
        client.register(total)
        client.register_dag("square-then-increment", ["square", "increment"],
                            [("square", "increment")])
        assert client.call_dag("square-then-increment", {"square": [5]}) == 26
        assert client.call("increment", 41) == 42

        print("  (a) composition: call_dag", flush=True)
        res["compose"] = ms_stats(timed_loop(
            lambda i: client.call_dag("square-then-increment", {"square": [i]}),
            args.calls, args.warmup, check=lambda i: i * i + 1))
        print("  (a) composition on two executors: a second cluster, [scheduler] colocate_chains = false",
              flush=True)
        run_squall_split(args, res)
        print("  (a) single call: call", flush=True)
        res["single"] = ms_stats(timed_loop(
            lambda i: client.call("increment", i), args.calls, args.warmup,
            check=lambda i: i + 1))

        if not args.skip_wasm:
            try:
                run_squall_wasm(args, client, res)
            except Exception:  # the Python figures still count
                res["wasm_error"] = traceback.format_exc()

        print("  (b) locality", flush=True)
        def first_calls(prefix, readonly):
            """The first call on each of --locality-fresh pairs put just
            before it, under keys fbench:{prefix}a:K and fbench:{prefix}b:K."""
            took = []
            for k in range(args.locality_fresh):
                a, b = arrays(k)
                ka, kb = f"fbench:{prefix}a:{k}", f"fbench:{prefix}b:{k}"
                client.put(ka, a)
                client.put(kb, b)
                want = float(a.sum()) + float(b.sum())
                t0 = time.perf_counter()
                got = client.call("total", squall.Reference(ka, readonly=readonly),
                                  squall.Reference(kb, readonly=readonly))
                took.append(time.perf_counter() - t0)
                assert abs(got - want) < 1e-6 * abs(want), (got, want)
            return took

        first = first_calls("", readonly=False)
        # The same with read-only arguments (fresh keys): the executor
        # reads the arrays where the value lies, no copy.
        first_ro = first_calls("r", readonly=True)
        warm = []
        ra, rb = squall.Reference("fbench:a:0"), squall.Reference("fbench:b:0")
        for _ in range(args.warmup // 10 + 2):
            client.call("total", ra, rb)
        for _ in range(args.locality_warm):
            t0 = time.perf_counter()
            client.call("total", ra, rb)
            warm.append(time.perf_counter() - t0)
        # The same warm calls with read-only arguments: the executor hands
        # every call the arrays it decoded once (Ray's ray.get gives
        # read-only arrays too).
        warm_ro = []
        ra, rb = (squall.Reference("fbench:a:0", readonly=True),
                  squall.Reference("fbench:b:0", readonly=True))
        a, b = arrays(0)
        want = float(a.sum()) + float(b.sum())
        for _ in range(args.warmup // 10 + 2):
            client.call("total", ra, rb)
        for _ in range(args.locality_warm):
            t0 = time.perf_counter()
            got = client.call("total", ra, rb)
            warm_ro.append(time.perf_counter() - t0)
            assert abs(got - want) < 1e-6 * abs(want), (got, want)
        res["loc_first"] = ms_stats(first)
        res["loc_first_ro"] = ms_stats(first_ro)
        res["loc_warm"] = ms_stats(warm)
        res["loc_warm_ro"] = ms_stats(warm_ro)
        res["loc_driver"] = ms_stats(timed_loop(
            lambda i: (client.get("fbench:a:0"), client.get("fbench:b:0")),
            args.locality_warm, 2))
        res["loc_driver_ro"] = ms_stats(timed_loop(
            lambda i: (client.get("fbench:a:0", readonly=True),
                       client.get("fbench:b:0", readonly=True)),
            args.locality_warm, 2))

        print(f"  (c) throughput: {args.tasks} call_async in flight", flush=True)
        for i in range(min(200, args.tasks)):
            client.call_async("increment", i).get()
        settle_heap()
        t0 = time.perf_counter()
        futs = [client.call_async("increment", i) for i in range(args.tasks)]
        t_sub = time.perf_counter() - t0
        errors, bad = 0, 0
        first_error = None
        for i, f in enumerate(futs):
            try:
                if f.get() != i + 1:
                    bad += 1
            except Exception as e:  # noqa: BLE001
                errors += 1
                first_error = first_error or f"{type(e).__name__}: {e}"
        wall = time.perf_counter() - t0
        res["tput"] = {"wall_s": wall, "submit_s": t_sub, "per_s": args.tasks / wall,
                       "errors": errors, "wrong": bad, "first_error": first_error}
    except Exception:
        res["error"] = traceback.format_exc()
        res["logs"] = cluster.logs_tail()
    finally:
        cluster.down()


def run_squall_wasm(args, client, res):
    """(a) again with square and increment in WebAssembly (hand-written WAT,
    Int in, Int out): a DAG of the two, and one call of increment."""
    client.register_wasm(WASM_EXAMPLES / "square.wat", "wasm_square", result="int")
    client.register_wasm(WASM_EXAMPLES / "increment.wat", "wasm_increment", result="int")
    client.register_dag("wasm-square-then-increment", ["wasm_square", "wasm_increment"],
                        [("wasm_square", "wasm_increment")])
    assert client.call_dag("wasm-square-then-increment", {"wasm_square": [5]}) == 26
    assert client.call("wasm_increment", 41) == 42

    print("  (a) composition, WebAssembly: call_dag", flush=True)
    res["compose_wasm"] = ms_stats(timed_loop(
        lambda i: client.call_dag("wasm-square-then-increment", {"wasm_square": [i]}),
        args.calls, args.warmup, check=lambda i: i * i + 1))
    print("  (a) single call, WebAssembly: call", flush=True)
    res["single_wasm"] = ms_stats(timed_loop(
        lambda i: client.call("wasm_increment", i), args.calls, args.warmup,
        check=lambda i: i + 1))


# -- Ray --------------------------------------------------------------------

def run_ray(args, res):
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    try:
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR", _node_ip_address="127.0.0.1")
        res["start_s"] = time.perf_counter() - t0
        r_square = ray.remote(square)
        r_increment = ray.remote(increment)
        r_total = ray.remote(total)

        print("  (a) composition: increment.remote(square.remote(x))", flush=True)
        res["compose"] = ms_stats(timed_loop(
            lambda i: ray.get(r_increment.remote(r_square.remote(i))),
            args.calls, args.warmup, check=lambda i: i * i + 1))
        print("  (a) single task", flush=True)
        res["single"] = ms_stats(timed_loop(
            lambda i: ray.get(r_increment.remote(i)), args.calls, args.warmup,
            check=lambda i: i + 1))

        print("  (b) locality", flush=True)
        first = []
        keep = []
        for k in range(args.locality_fresh):
            a, b = arrays(k)
            ra, rb = ray.put(a), ray.put(b)
            keep.append((ra, rb))
            want = float(a.sum()) + float(b.sum())
            t0 = time.perf_counter()
            got = ray.get(r_total.remote(ra, rb))
            first.append(time.perf_counter() - t0)
            assert abs(got - want) < 1e-6 * abs(want)
        ra, rb = keep[0]
        for _ in range(args.warmup // 10 + 2):
            ray.get(r_total.remote(ra, rb))
        warm = []
        for _ in range(args.locality_warm):
            t0 = time.perf_counter()
            ray.get(r_total.remote(ra, rb))
            warm.append(time.perf_counter() - t0)
        res["loc_first"] = ms_stats(first)
        res["loc_warm"] = ms_stats(warm)
        res["loc_driver"] = ms_stats(timed_loop(
            lambda i: (ray.get(ra), ray.get(rb)), args.locality_warm, 2))
        del keep, ra, rb

        print(f"  (c) throughput: {args.tasks} .remote in flight", flush=True)
        ray.get([r_increment.remote(i) for i in range(min(200, args.tasks))])
        settle_heap()
        t0 = time.perf_counter()
        refs = [r_increment.remote(i) for i in range(args.tasks)]
        t_sub = time.perf_counter() - t0
        out = ray.get(refs)
        wall = time.perf_counter() - t0
        bad = sum(1 for i, v in enumerate(out) if v != i + 1)
        res["tput"] = {"wall_s": wall, "submit_s": t_sub, "per_s": args.tasks / wall,
                       "errors": 0, "wrong": bad, "first_error": None}
    except Exception:
        res["error"] = traceback.format_exc()
    finally:
        try:
            ray.shutdown()
        except Exception:  # noqa: BLE001
            pass


# -- Dask -------------------------------------------------------------------

def run_dask(args, res):
    from dask.distributed import Client, LocalCluster

    cluster = client = None
    try:
        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None, host="127.0.0.1")
        client = Client(cluster)
        res["start_s"] = time.perf_counter() - t0

        print("  (a) composition: submit(increment, submit(square, x)).result()", flush=True)
        res["compose"] = ms_stats(timed_loop(
            lambda i: client.submit(increment, client.submit(square, i, pure=False),
                                    pure=False).result(),
            args.calls, args.warmup, check=lambda i: i * i + 1))
        print("  (a) single task", flush=True)
        res["single"] = ms_stats(timed_loop(
            lambda i: client.submit(increment, i, pure=False).result(),
            args.calls, args.warmup, check=lambda i: i + 1))

        print("  (b) locality", flush=True)
        first = []
        keep = []
        for k in range(args.locality_fresh):
            a, b = arrays(k)
            fa, fb = client.scatter(a), client.scatter(b)
            keep.append((fa, fb))
            want = float(a.sum()) + float(b.sum())
            t0 = time.perf_counter()
            got = client.submit(total, fa, fb, pure=False).result()
            first.append(time.perf_counter() - t0)
            assert abs(got - want) < 1e-6 * abs(want)
        fa, fb = keep[0]
        for _ in range(args.warmup // 10 + 2):
            client.submit(total, fa, fb, pure=False).result()
        warm = []
        for _ in range(args.locality_warm):
            t0 = time.perf_counter()
            client.submit(total, fa, fb, pure=False).result()
            warm.append(time.perf_counter() - t0)
        res["loc_first"] = ms_stats(first)
        res["loc_warm"] = ms_stats(warm)
        res["loc_driver"] = ms_stats(timed_loop(
            lambda i: (fa.result(), fb.result()), args.locality_warm, 2))
        del keep, fa, fb

        print(f"  (c) throughput: {args.tasks} submit in flight", flush=True)
        client.gather(client.map(increment, range(min(200, args.tasks)), pure=False))
        settle_heap()
        t0 = time.perf_counter()
        futs = [client.submit(increment, i, pure=False) for i in range(args.tasks)]
        t_sub = time.perf_counter() - t0
        out = client.gather(futs)
        wall = time.perf_counter() - t0
        bad = sum(1 for i, v in enumerate(out) if v != i + 1)
        res["tput"] = {"wall_s": wall, "submit_s": t_sub, "per_s": args.tasks / wall,
                       "errors": 0, "wrong": bad, "first_error": None}
    except Exception:
        res["error"] = traceback.format_exc()
    finally:
        for thing in (client, cluster):
            try:
                if thing is not None:
                    thing.close()
            except Exception:  # noqa: BLE001
                pass


# -- report -----------------------------------------------------------------

def local_sum_ms(reps=20):
    a, b = arrays(0)
    xs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        total(a, b)
        xs.append(time.perf_counter() - t0)
    return statistics.median(xs) * 1e3


def fmt(x, nd=2):
    return "—" if x is None else f"{x:.{nd}f}"


def report(args, results, meta):
    systems = [s for s in ("squall", "ray", "dask") if s in results]
    names = {"squall": "Squall", "ray": "Ray", "dask": "Dask"}
    print()
    print("## Functions benchmark: Squall vs Ray vs Dask (one run, same machine)")
    print()
    print("```")
    print(meta["command"])
    print("```")
    print()
    print(f"- date: {meta['date']}; machine: {meta['machine']}; load average before {meta['load_before']}, after {meta['load_after']}; steal {meta['steal']}")
    print(f"- order of backends this round: {', '.join(meta['order'])}")
    print("- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    print(f"- Squall cluster: 1 router, 1 storage node x 1 thread, 1 scheduler, 1 compute node x {args.executors} executors (binary {os.path.relpath(args.squall_bin, ROOT)}, built {meta['squall_bin_built']})")
    print("- Ray: ray.init(num_cpus=2, include_dashboard=False); Dask: LocalCluster(n_workers=2, threads_per_worker=1, processes=True)")
    print(f"- the same sum done locally in the driver: {local_sum_ms():.2f} ms")
    print()

    def row(label, key, sub=("p50", "p99", "mean")):
        """One row of `key`'s figures per system; `key` may instead map a
        system to its key (a system it leaves out shows "—")."""
        cells = []
        for s in systems:
            r = results[s].get(key.get(s) if isinstance(key, dict) else key)
            cells.append(" / ".join(fmt(r[k]) for k in sub) if r else "failed" if "error" in results[s] else "—")
        print(f"| {label} | " + " | ".join(cells) + " |")

    print(f"(a) latency, one call in flight, {args.calls} calls after {args.warmup} warm-up, ms p50 / p99 / mean")
    print()
    print("| measure | " + " | ".join(names[s] for s in systems) + " |")
    print("|---|" + "---|" * len(systems))
    row("composition increment(square(x)) (Squall: call_dag, both on one executor; Ray: two chained tasks)", "compose")
    if "squall" in results:
        row("composition on two executors (Squall: colocate_chains = false; Ray: two chained tasks)",
            {s: "compose_split" if s == "squall" else "compose" for s in systems})
    row("single call increment(x) (Squall: call)", "single")
    if "squall" in results and not args.skip_wasm:
        row("composition, both in WebAssembly (Squall: call_dag of square.wat -> increment.wat)",
            "compose_wasm")
        row("single call, WebAssembly (Squall: call of increment.wat)", "single_wasm")
    print()
    print(f"(b) locality: sum of a 1 MB and a 10 MB float64 array held by the system, ms p50 / p99 / mean")
    print(f"    first = first call on freshly stored arrays ({args.locality_fresh} pairs); warm = later calls on the same arrays ({args.locality_warm} calls)")
    print()
    print("| measure | " + " | ".join(names[s] for s in systems) + " |")
    print("|---|" + "---|" * len(systems))
    row("first call", "loc_first")
    if "squall" in results:
        row("first call, read-only arrays (Squall: Reference(key, readonly=True); "
            "Ray: its arrays are read-only anyway)", {"squall": "loc_first_ro", "ray": "loc_first"})
    row("warm (cached) call", "loc_warm")
    if "squall" in results:
        row("warm call, read-only arrays (Squall: Reference(key, readonly=True); "
            "Ray: ray.get's arrays are read-only anyway)", {"squall": "loc_warm_ro", "ray": "loc_warm"})
    row("reference: both arrays fetched into the driver (get / ray.get / future.result)", "loc_driver")
    if "squall" in results:
        row("both arrays fetched into the driver read-only (Squall: get(key, readonly=True); "
            "Ray: ray.get's arrays are read-only anyway)", {"squall": "loc_driver_ro", "ray": "loc_driver"})
    print()
    print(f"(c) throughput: {args.tasks} tiny calls (increment) in flight at once, then all awaited")
    print()
    print("| measure | " + " | ".join(names[s] for s in systems) + " |")
    print("|---|" + "---|" * len(systems))
    for label, k, nd in (("wall time, s", "wall_s", 2), ("of which submitting, s", "submit_s", 2),
                         ("calls/s", "per_s", 0), ("failed calls", "errors", 0),
                         ("wrong results", "wrong", 0)):
        cells = []
        for s in systems:
            t = results[s].get("tput")
            cells.append(fmt(t[k], nd) if t else "failed" if "error" in results[s] else "—")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    print("| cluster start, s | " + " | ".join(fmt(results[s].get("start_s")) for s in systems) + " |")
    print()
    for s in systems:
        t = results[s].get("tput") or {}
        if t.get("wrong"):
            print(f"{names[s]} throughput: {t['wrong']} WRONG result(s): the run FAILS")
        if t.get("first_error"):
            print(f"{names[s]} throughput: first failed call: {t['first_error']}")
        if results[s].get("wasm_error"):
            print(f"{names[s]} WebAssembly rows FAILED:\n{results[s]['wasm_error']}")
        if "error" in results[s]:
            print(f"{names[s]} FAILED:\n{results[s]['error']}")
            if results[s].get("logs"):
                print(f"{names[s]} logs (tails):\n{results[s]['logs']}")
    for key, label in (("compose", "co-located"), ("compose_split", "on two executors")):
        if "squall" not in results or key not in results["squall"]:
            continue
        sq = results["squall"][key]["p50"]
        line = f"Goals: Squall composition {label}, p50 {sq:.3f} ms (goal < 1 ms: {'met' if sq < 1 else 'NOT met'})"
        if "ray" in results and "compose" in results["ray"]:
            ratio = results["ray"]["compose"]["p50"] / sq
            line += f"; Ray's two chained tasks p50 / Squall p50 = {ratio:.2f}x (goal >= 3x: {'met' if ratio >= 3 else 'NOT met'})"
        print(line)
    if "squall" in results and "compose_wasm" in results["squall"]:
        sq = results["squall"]
        print(f"Squall WebAssembly vs Python, p50: composition {sq['compose_wasm']['p50']:.3f} vs "
              f"{sq['compose']['p50']:.3f} ms; single call {sq['single_wasm']['p50']:.3f} vs "
              f"{sq['single']['p50']:.3f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=1000, help="measured calls per latency row")
    ap.add_argument("--warmup", type=int, default=100, help="unmeasured calls before each latency row")
    ap.add_argument("--tasks", type=int, default=10000, help="calls in flight in the throughput part")
    ap.add_argument("--locality-fresh", type=int, default=5, help="freshly stored array pairs (first calls)")
    ap.add_argument("--locality-warm", type=int, default=20, help="warm calls on the same arrays")
    ap.add_argument("--executors", type=int, default=2, help="Squall executors (Ray/Dask use 2 workers)")
    ap.add_argument("--skip-squall", action="store_true")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--skip-dask", action="store_true")
    ap.add_argument("--skip-wasm", action="store_true",
                    help="leave out Squall's WebAssembly rows of (a)")
    ap.add_argument("--squall-bin", default=str(ROOT / "target/release/squall"))
    ap.add_argument("--json", help="also write the raw results to this file (the last round's)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run everything this many times, the order of backends turned by one each round")
    ap.add_argument("--first", type=int, default=None,
                    help="index (in squall, ray, dask order, skipped ones left out) of the backend run first "
                         "in round 1 (default: drawn at random)")
    args = ap.parse_args()

    meta = {
        "command": " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable, os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)] + sys.argv[1:]),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.platform()}",
        "load_before": loadavg(),
        "versions": versions(),
        "squall_bin_built": (_dt.datetime.fromtimestamp(os.path.getmtime(args.squall_bin), _dt.timezone.utc)
                             .strftime("%Y-%m-%d %H:%M UTC") if os.path.exists(args.squall_bin) else "missing"),
    }
    print("functions benchmark:", meta["command"], flush=True)
    print("versions:", meta["versions"], flush=True)
    plan = [(name, fn) for name, fn, skip in (
        ("squall", run_squall, args.skip_squall), ("ray", run_ray, args.skip_ray),
        ("dask", run_dask, args.skip_dask)) if not skip]
    # The order of backends turns by one each round, from a first one
    # drawn at random: none is always measured right after another's load.
    first = random.randrange(len(plan)) if args.first is None else args.first % max(len(plan), 1)
    failed = False
    for round_ in range(args.rounds):
        turn = (first + round_) % max(len(plan), 1)
        order = plan[turn:] + plan[:turn]
        meta["order"] = [name for name, _ in order]
        meta["load_before"] = loadavg()
        ticks = cpu_ticks()
        results = {}
        for name, fn in order:
            print(f"== {name} (round {round_ + 1} of {args.rounds})", flush=True)
            results[name] = {}
            t0 = time.perf_counter()
            try:
                fn(args, results[name])
            except Exception:  # an import failure, say
                results[name]["error"] = traceback.format_exc()
            print(f"   {name}: {time.perf_counter() - t0:.1f} s"
                  + (" (FAILED)" if "error" in results[name] else ""), flush=True)
            gc.collect()
        meta["load_after"] = loadavg()
        meta["steal"] = steal_percent(ticks, cpu_ticks())
        report(args, results, meta)
        failed |= any("error" in r or "wasm_error" in r or (r.get("tput") or {}).get("wrong")
                      for r in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
