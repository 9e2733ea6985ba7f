#!/usr/bin/env python3
"""A fault campaign: write-and-call load against a local cluster while its
processes are killed, stalled and stopped, then an audit of what survived.

    make test-faults              # 10 minutes against target/release/squall
    make test-faults MINUTES=1    # shorter
    .venv/bin/python benches/faults.py --minutes 2 --seed 7 --keep

It starts its own cluster (`squall up` in a temporary state directory, on
free ports) with short failure detection (heartbeats every 200 ms, a node
silent 1.5 s is declared failed) and the monitor running with its scaling
policies off, so that the only thing acting on the cluster is repair: the
monitor's local provider starting again, from the record, any process that
died. Then, for `--minutes`:

* writers put unique keys (`squall.Lww`) and add unique elements to a few
  shared `squall.Set` keys, each with `ack=--ack`, and record every write
  the cluster acknowledged;
* callers call a registered function, a two-function DAG, and a function
  reading a `squall.Reference` to a key the caller just wrote (its value
  is checked), and record each call's outcome: the right result, a wrong
  one, an error (by exception type), or no answer (the client's own
  deadline passed with nothing from the cluster, or the call never
  returned);
* a fault loop picks, every `--fault-every` seconds (jittered), a random
  process of the record (routers, storage nodes, schedulers, caches,
  executor supervisors, and the executor processes the supervisors run)
  and a random fault: `kill -9`, a stall (SIGSTOP for 1-6 s, then
  SIGCONT; a storage node or router stalled past the 1.5 s failure timeout
  is declared failed and must rejoin), or SIGTERM (a graceful stop: a
  storage node hands its keys over and departs; repair then starts every
  such process again, as it was not stopped by the cluster's own tools).
  Each fault's recovery time is measured, from the fault (from SIGCONT for
  a stall), until the process runs again under a new pid (kill, SIGTERM)
  and the cluster sees it whole: a router answers and lists every storage
  node up; a storage node is up at every router; a scheduler answers and
  lists every executor and cache; a compute node's cache and executors are
  listed by every scheduler (`squall status`).

Storage nodes restart with empty memory, so a write acknowledged by two
replicas survives the loss of one node at a time, not of two within the
failure and handoff window. The campaign keeps to that model: a storage
fault is injected only when no other fault is pending and the cluster has
been whole for `--storage-settle` seconds, and it stays pending (nothing
else is faulted) until the node is up at every router again *and* serves
its keys again: every key of a sample of writes acknowledged before the
fault that the node owns, read from the node directly, has its value (the
keys handed back to a restarted, empty node). Other roles are hit
more freely: faults of different kinds of role overlap (a router and a
scheduler may be down at once), but never two processes of one kind, so one
router and one scheduler always remain.

At the end the load stops, the cluster is left to heal and go quiet, and
every acknowledged write is read back by fresh clients (retrying a miss for
`--readback-retry` seconds, since a read may reach a replica that has not
caught up yet), then read from every storage node directly to count its
replicas (a write acknowledged by k replicas must be on k nodes). The summary gives the duration, faults by kind and role,
acknowledged, lost and under-replicated writes, failed writes and calls by
error (and by the fault in progress while they ran), calls left without an
answer, recovery times per role, and what the logs say (panics, processes
that died without being faulted, storage nodes declared failed by a router
and the fault in progress then).

Exit status: 0 when no acknowledged write was lost or under-replicated,
no call was left
without an answer or got a wrong result, and every fault healed within
`--recovery-limit`; 1 otherwise; 2 when the cluster could not be set up.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Short failure detection, as the self-repair tests use; the monitor runs
# (it repairs) but decides nothing about the tiers' sizes.
CONFIG = """\
[storage]
heartbeat_period = 200

[router]
failure_timeout = 1500
broadcast_period = 300

[monitor.storage]
enabled = false

[monitor.compute]
enabled = false
"""

# The record's lists, and what the campaign calls each role.
ROLES = {
    "router": "routers",
    "storage": "nodes",
    "scheduler": "schedulers",
    "cache": "caches",
    "executor": "executors",
    # The Python executor process an executor supervisor runs (its child;
    # the supervisor starts it again itself).
    "executor-child": "executors",
}
DEFAULT_ROLE_WEIGHTS = "storage=3,router=2,scheduler=2,cache=1.5,executor=1,executor-child=1.5"
DEFAULT_FAULT_WEIGHTS = "kill=4,stall=4,term=2"
# Faults of one kind of role never overlap: one router, one scheduler, one
# compute node's worth of processes always remain.
KIND_OF = {
    "router": "router",
    "storage": "storage",
    "scheduler": "scheduler",
    "cache": "compute",
    "executor": "compute",
    "executor-child": "compute",
}

STALL_MIN_S, STALL_MAX_S = 1.0, 6.0
# A faulted storage node serves its keys again once it answers, with the
# acknowledged value, every key of a sample of this many acknowledged before
# the fault that it owns.
PROBE_KEYS = 200


# -- functions the callers call (pickled by value) -----------------------


def faults_inc(n):
    return n + 1


def faults_square(n):
    return n * n


def faults_increment(x):
    return x + 1


def faults_read(value):
    return value


# -- the cluster ---------------------------------------------------------


def proc_state(pid: int) -> str:
    """The process's state letter from /proc ('' if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def running(pid: int) -> bool:
    """Runs and is not stopped (a zombie or a SIGSTOPped process is not)."""
    return proc_state(pid) not in ("", "Z", "X", "T", "t")


def children(pid: int) -> list:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


class Cluster:
    def __init__(self, binary: Path, state_dir: Path) -> None:
        self.binary = binary
        self.state_dir = state_dir
        self.config = state_dir / "squall.toml"
        self.config.write_text(CONFIG)

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.binary), "--state-dir", str(self.state_dir), "--config", str(self.config),
             *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )

    def up(self, args: argparse.Namespace) -> str:
        """`squall up` on free ports (three tries); returns the command."""
        from squall.testing import free_base_port

        last = None
        for _ in range(3):
            base = free_base_port(500)
            flags = [
                "up", "--base-port", str(base), "--nodes", str(args.nodes), "--threads", "1",
                "--routers", str(args.routers), "--schedulers", str(args.schedulers),
                "--compute-nodes", str(args.compute_nodes), "--executors", str(args.executors),
            ]
            last = self.cli(*flags, timeout=120)
            if last.returncode == 0:
                return " ".join(shlex.quote(a) for a in [str(self.binary), *flags])
            self.cli("down")
        raise RuntimeError(f"squall up failed:\n{last.stdout}\n{last.stderr}")

    def down(self) -> None:
        try:
            self.cli("down", timeout=60)
        except subprocess.TimeoutExpired:
            print("warning: `squall down` did not finish in 60 s", file=sys.stderr)

    def record(self) -> dict:
        for _ in range(20):
            try:
                return json.loads((self.state_dir / "cluster.json").read_text())
            except (OSError, ValueError):
                time.sleep(0.05)  # replaced whole by a rename; retry a race
        return json.loads((self.state_dir / "cluster.json").read_text())

    def status(self) -> dict:
        """What `squall status` says: each router's members, each
        scheduler's executors and caches (None where one did not answer)."""
        try:
            out = self.cli("status", timeout=30).stdout
        except subprocess.TimeoutExpired:
            return {"routers": {}, "schedulers": {}, "keys": {}, "timed_out": True}
        routers, schedulers, keys = {}, {}, {}
        section, current = None, None
        for line in out.splitlines():
            m = re.match(r"^router (\S+): (.*)$", line)
            if m:
                section, current = "router", m.group(1)
                ok = m.group(2).startswith("ring version")
                routers[current] = {} if ok else None
                continue
            m = re.match(r"^scheduler (\S+): (.*)$", line)
            if m:
                section, current = "scheduler", m.group(1)
                ok = "in flight" in m.group(2)
                schedulers[current] = {"executors": set(), "caches": set()} if ok else None
                continue
            if re.match(r"^\S", line):
                section = "storage" if line.startswith("storage threads") else None
                continue
            if section == "router" and routers.get(current) is not None:
                m = re.match(r"^\s+node (\d+)\s+incarnation (\d+)\s+(.*)$", line)
                if m:
                    up = m.group(3).startswith("up")
                    routers[current][int(m.group(1))] = (int(m.group(2)), up)
            elif section == "scheduler" and schedulers.get(current) is not None:
                m = re.match(r"^\s+(executor|cache)\s+(\S+)\s", line)
                if m:
                    schedulers[current][m.group(1) + "s"].add(m.group(2))
            elif section == "storage":
                m = re.match(r"^\s+(\S+)\s+keys (\d+)", line)
                if m:
                    keys[m.group(1)] = int(m.group(2))
        return {"routers": routers, "schedulers": schedulers, "keys": keys, "timed_out": False}


def problems(record: dict, status: dict) -> list:
    """What keeps the cluster from being whole, as (role, index, text): a
    process not running, a router or scheduler not answering or missing a
    member. A router missing a node is a problem of both."""
    out = []
    for role in ("router", "storage", "scheduler", "cache", "executor"):
        for i, p in enumerate(record.get(ROLES[role], [])):
            if p.get("stopping"):
                continue
            if not running(p["pid"]):
                out.append((role, i, f"{role} {i} pid {p['pid']} not running ({proc_state(p['pid']) or 'gone'})"))
            elif role == "executor":
                kids = [c for c in children(p["pid"]) if running(c)]
                if not kids:
                    out.append(("executor-child", i, f"executor {i} runs no executor process"))
    if status.get("timed_out"):
        out.append(("router", -1, "`squall status` timed out"))
        return out
    nodes = {p["id"]: i for i, p in enumerate(record.get("nodes", [])) if not p.get("stopping")}
    for i, r in enumerate(record.get("routers", [])):
        for addr in r["addresses"]:
            members = status["routers"].get(addr)
            if members is None:
                out.append(("router", i, f"router {addr} does not answer"))
                continue
            for node_id, j in nodes.items():
                inc_up = members.get(node_id)
                if not inc_up or not inc_up[1]:
                    text = f"router {addr} sees node {node_id} {'departed' if inc_up else 'nowhere'}"
                    out.append(("router", i, text))
                    out.append(("storage", j, text))
    executors = {a: i for i, p in enumerate(record.get("executors", [])) for a in p["addresses"]}
    caches = {p["addresses"][0]: i for i, p in enumerate(record.get("caches", [])) if p["addresses"]}
    for i, s in enumerate(record.get("schedulers", [])):
        for addr in s["addresses"]:
            seen = status["schedulers"].get(addr)
            if seen is None:
                out.append(("scheduler", i, f"scheduler {addr} does not answer"))
                continue
            for a, j in executors.items():
                if a not in seen["executors"]:
                    text = f"scheduler {addr} does not list executor {a}"
                    out.append(("scheduler", i, text))
                    out.append(("executor", j, text))
                    out.append(("executor-child", j, text))
            for a, j in caches.items():
                if a not in seen["caches"]:
                    text = f"scheduler {addr} does not list cache {a}"
                    out.append(("scheduler", i, text))
                    out.append(("cache", j, text))
    return out


# -- statistics ----------------------------------------------------------


class Tally:
    """Counts and examples under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.examples = {}

    def add(self, what: str, example: str = "") -> None:
        with self.lock:
            self.counts[what] += 1
            if example and what not in self.examples:
                self.examples[what] = example[:400]


def percentile(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def error_name(e: BaseException) -> str:
    import squall

    if isinstance(e, squall.CallTimeoutError) and "no answer before the call's deadline" in str(e):
        return "no answer (client deadline)"
    name = type(e).__name__
    type_name = getattr(e, "type_name", "")
    if type_name and type_name not in (name, name.removesuffix("Error")):
        name += f"({type_name})"
    return name


# -- the load ------------------------------------------------------------


class Load:
    def __init__(self, cluster: Cluster, args: argparse.Namespace, run: str) -> None:
        self.cluster = cluster
        self.args = args
        self.run = run
        self.stop = threading.Event()
        self.acked_lww = []  # (key, value bytes)
        self.acked_set = []  # (key, element bytes)
        self.acked_lock = threading.Lock()
        self.write_errors = Tally()
        self._tried = itertools.count()
        self.calls = Tally()  # "ok", "wrong result", error names
        self.call_latency = []  # seconds, of ok calls
        self.failures = []  # (started, ended (monotonic), "write" or the call, error name)
        self.in_flight = {}  # thread name -> (what, started)
        self.threads = []

    def sample(self, n: int) -> list:
        """Up to n acknowledged last-writer-wins (key, value) pairs."""
        with self.acked_lock:
            pool = list(self.acked_lww)
        return random.sample(pool, min(n, len(pool)))

    def writes_tried(self) -> int:
        return next(self._tried)  # the count so far (this call's own is not one)

    def client(self):
        import squall

        return squall.connect(str(self.cluster.state_dir), timeout=10.0,
                              call_timeout=self.args.call_timeout)

    def start(self) -> None:
        for t in range(self.args.writers):
            th = threading.Thread(target=self._writer, args=(t,), name=f"writer-{t}", daemon=True)
            self.threads.append(th)
        for t in range(self.args.callers):
            th = threading.Thread(target=self._caller, args=(t,), name=f"caller-{t}", daemon=True)
            self.threads.append(th)
        for th in self.threads:
            th.start()

    def write_failed(self, e: BaseException, example: str, started: float) -> None:
        self.write_errors.add(error_name(e), example)
        self.failures.append((started, time.monotonic(), "write", error_name(e)))

    def _pace(self, rate: float, started: float) -> None:
        if rate > 0:
            left = 1.0 / rate - (time.monotonic() - started)
            if left > 0:
                self.stop.wait(left)

    def _writer(self, t: int) -> None:
        import squall

        rng = random.Random(f"{self.args.seed}/writer/{t}")
        client = self.client()
        n = 0
        while not self.stop.is_set():
            started = time.monotonic()
            n += 1
            next(self._tried)
            if rng.random() < 0.6:
                key = f"faults/{self.run}/w{t}/{n}"
                value = f"{self.run}/w{t}/{n}/{rng.getrandbits(64):016x}".encode()
                try:
                    client.put(key, squall.Lww(value), ack=self.args.ack)
                except Exception as e:  # noqa: BLE001 - every failure is counted
                    self.write_failed(e, f"put {key}: {e}", started)
                else:
                    with self.acked_lock:
                        self.acked_lww.append((key, value))
            else:
                key = f"faults/{self.run}/set/{rng.randrange(self.args.set_keys)}"
                element = f"w{t}/{n}".encode()
                try:
                    client.put(key, squall.Set({element}), ack=self.args.ack)
                except Exception as e:  # noqa: BLE001
                    self.write_failed(e, f"set add {key}: {e}", started)
                else:
                    with self.acked_lock:
                        self.acked_set.append((key, element))
            self._pace(self.args.write_rate, started)

    def _caller(self, t: int) -> None:
        import squall

        rng = random.Random(f"{self.args.seed}/caller/{t}")
        client = self.client()
        me = threading.current_thread().name
        n = 0
        while not self.stop.is_set():
            started = time.monotonic()
            n += 1
            x = rng.randrange(1_000_000)
            pick = rng.random()
            try:
                if pick < 0.5:
                    what, want = "call", x + 1
                    self.in_flight[me] = (what, time.monotonic())
                    got = client.call_async("faults_inc", x).get()
                elif pick < 0.75:
                    what, want = "dag", x * x + 1
                    self.in_flight[me] = (what, time.monotonic())
                    got = client.call_dag_async("faults_dag", {"faults_square": (x,)}).get()
                else:
                    what = "reference"
                    key = f"faults/{self.run}/c{t}/{n}"
                    want = f"{self.run}/c{t}/{n}/{x}".encode()
                    next(self._tried)
                    try:
                        client.put(key, squall.Lww(want), ack=self.args.ack)
                    except Exception as e:  # noqa: BLE001
                        self.write_failed(e, f"put {key}: {e}", started)
                        self._pace(self.args.call_rate, started)
                        continue
                    with self.acked_lock:
                        self.acked_lww.append((key, want))
                    self.in_flight[me] = (what, time.monotonic())
                    got = client.call_async("faults_read", squall.Reference(key)).get()
            except Exception as e:  # noqa: BLE001
                self.calls.add(f"{what}: {error_name(e)}", str(e))
                self.failures.append((self.in_flight.get(me, (what, started))[1],
                                      time.monotonic(), f"{what} call", error_name(e)))
            else:
                if got == want:
                    self.calls.add(f"{what}: ok")
                    with self.calls.lock:
                        self.call_latency.append(time.monotonic() - self.in_flight[me][1])
                else:
                    self.calls.add(f"{what}: wrong result", f"wanted {want!r}, got {got!r}")
                    self.failures.append((self.in_flight[me][1], time.monotonic(),
                                          f"{what} call", "wrong result"))
            self.in_flight.pop(me, None)
            self._pace(self.args.call_rate, started)

    def finish(self, limit: float) -> list:
        """Stops the load; returns what was still in a call after `limit` s."""
        self.stop.set()
        deadline = time.monotonic() + limit
        for th in self.threads:
            th.join(max(0.0, deadline - time.monotonic()))
        return [(name, what, time.monotonic() - since)
                for name, (what, since) in list(self.in_flight.items())
                if any(th.name == name and th.is_alive() for th in self.threads)]


# -- faults --------------------------------------------------------------


class Fault:
    def __init__(self, role, index, kind, pid, started, log):
        self.role, self.index, self.kind, self.pid = role, index, kind, pid
        self.started = started  # when the signal went (SIGCONT for a stall)
        self.injected = started
        self.ended = None  # when it recovered or was given up
        self.stall_s = 0.0
        self.continued = kind != "stall"
        self.restarted_s = None  # a new pid runs (kill, term)
        self.recovered_s = None  # whole again
        self.failed = None  # why it never recovered
        self.log = log
        self.incarnation = None  # a storage node's, before the fault
        self.sample = []  # acknowledged (key, value)s before the fault (storage)
        self.keys_back_s = None  # until the node serves every sampled key it owns
        self.probe = ""  # the last probe's finding
        self.injected_wall = time.time()
        self.ended_wall = None
        self.rejoined = False


class Campaign:
    def __init__(self, cluster: Cluster, args: argparse.Namespace, sample=lambda n: []) -> None:
        self.cluster = cluster
        self.args = args
        self.sample = sample  # n acknowledged (key, value) pairs
        self.direct = {}  # storage thread address -> squall._native.DirectKvs
        self.rng = random.Random(f"{args.seed}/faults")
        self.roles = parse_weights(args.role_weights, ROLES)
        self.kinds = parse_weights(args.fault_weights, ("kill", "stall", "term"))
        self.pending = []
        self.done = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.events = []
        self.skipped = collections.Counter()
        self.last_storage_recovery = 0.0
        self.status_cache = (0.0, None, None)
        self.stalled = set()  # pids SIGSTOPped and not yet continued
        self.until = float("inf")

    def note(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        self.events.append(line)
        if self.args.verbose:
            print(line, flush=True)

    # What the cluster looks like now (one `squall status` per 0.2 s).
    def observe(self):
        now = time.monotonic()
        with self.lock:
            at, record, status = self.status_cache
        if record is not None and now - at < 0.2:
            return record, status
        record = self.cluster.record()
        status = self.cluster.status()
        with self.lock:
            self.status_cache = (time.monotonic(), record, status)
        return record, status

    def whole(self):
        record, status = self.observe()
        return problems(record, status)

    def target_pid(self, record, role, index):
        p = record[ROLES[role]][index]
        if role == "executor-child":
            kids = [c for c in children(p["pid"]) if running(c)]
            return kids[0] if kids else None
        return p["pid"]

    def incarnation(self, status, node_id):
        seen = [m[node_id][0] for m in status["routers"].values() if m and node_id in m]
        return max(seen) if seen else None

    def inject(self) -> None:
        """One fault, if one may be injected now."""
        role = weighted(self.rng, self.roles)
        kind = weighted(self.rng, self.kinds)
        if role == "storage":
            if not self.wait_whole_for_storage(self.until):
                self.skipped["storage: the cluster was not whole"] += 1
                return
        else:
            with self.lock:
                busy = {KIND_OF[f.role] for f in self.pending}
            if "storage" in busy or KIND_OF[role] in busy:
                self.skipped[f"{role}: a fault of its kind pending"] += 1
                return
        record, status = self.observe()
        count = len(record.get(ROLES[role], []))
        if count == 0:
            self.skipped[f"{role}: none in the cluster"] += 1
            return
        index = self.rng.randrange(count)
        pid = self.target_pid(record, role, index)
        if pid is None or not running(pid):
            self.skipped[f"{role}: target not running"] += 1
            return
        fault = Fault(role, index, kind, pid, time.monotonic(), None)
        if role == "storage":
            fault.incarnation = self.incarnation(status, record["nodes"][index]["id"])
            fault.sample = self.sample(PROBE_KEYS)
        name = record[ROLES[role]][index].get("name") or f"{role}-{index}"
        if role == "executor-child":
            name += " (executor process)"
        if kind == "kill":
            os.kill(pid, signal.SIGKILL)
            self.note(f"kill -9 {role} {name} pid {pid}")
        elif kind == "term":
            os.kill(pid, signal.SIGTERM)
            self.note(f"SIGTERM {role} {name} pid {pid}")
        else:
            fault.stall_s = self.rng.uniform(STALL_MIN_S, STALL_MAX_S)
            fault.continued = False
            os.kill(pid, signal.SIGSTOP)
            self.stalled.add(pid)
            self.note(f"SIGSTOP {role} {name} pid {pid} for {fault.stall_s:.1f} s")

            def resume(f=fault):
                try:
                    os.kill(f.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                self.stalled.discard(f.pid)
                f.started = time.monotonic()
                f.continued = True
                self.note(f"SIGCONT {f.role} {name} pid {f.pid}")

            timer = threading.Timer(fault.stall_s, resume)
            timer.daemon = True
            timer.start()
        with self.lock:
            self.pending.append(fault)

    def wait_whole_for_storage(self, until: float) -> bool:
        """Until nothing is pending and the cluster has been whole for
        --storage-settle seconds (at most --recovery-limit, and not past
        `until`)."""
        deadline = min(time.monotonic() + self.args.recovery_limit, until)
        whole_since = None
        while time.monotonic() < deadline and not self.stop.is_set():
            with self.lock:
                busy = bool(self.pending)
            if not busy and not self.whole():
                whole_since = whole_since or time.monotonic()
                settled_from = max(whole_since, self.last_storage_recovery)
                if time.monotonic() - settled_from >= self.args.storage_settle:
                    return True
            else:
                whole_since = None
            time.sleep(0.2)
        return False

    def check(self) -> None:
        """Resolves pending faults that recovered (or never will)."""
        with self.lock:
            pending = list(self.pending)
        if not pending:
            return
        record, status = self.observe()
        issues = problems(record, status)
        now = time.monotonic()
        for f in pending:
            if not f.continued:
                continue
            pid_now = self.target_pid(record, f.role, f.index)
            if f.kind in ("kill", "term"):
                replaced = pid_now is not None and pid_now != f.pid and running(pid_now)
                if replaced and f.restarted_s is None:
                    f.restarted_s = now - f.started
                if not replaced:
                    if now - f.started > self.args.recovery_limit:
                        self.give_up(f, issues, "no new process runs")
                    continue
            mine = [text for role, i, text in issues if role == f.role and i == f.index]
            if f.role == "executor-child":
                mine = [text for role, i, text in issues
                        if role in ("executor", "executor-child") and i == f.index]
            if mine:
                if now - f.started > self.args.recovery_limit:
                    self.give_up(f, issues, "; ".join(sorted(set(mine))))
                continue
            if f.recovered_s is None:
                f.recovered_s = now - f.started
                if f.role == "storage":
                    node_id = record["nodes"][f.index]["id"]
                    inc = self.incarnation(status, node_id)
                    f.rejoined = (inc is not None and f.incarnation is not None
                                  and inc > f.incarnation)
            if f.role == "storage" and f.sample:
                # It serves its keys again: each sampled key it owns, read
                # from it directly, has its acknowledged value.
                served, missing = self.probe(record["nodes"][f.index]["addresses"], f.sample)
                f.probe = f"{missing} of the {served + missing} sampled keys it owns missing"
                if missing or not served:
                    if now - f.started > self.args.recovery_limit:
                        self.give_up(f, issues, f"it does not serve its keys: {f.probe}")
                    continue
                f.keys_back_s = time.monotonic() - f.started
            f.ended = now
            f.ended_wall = time.time()
            if f.role == "storage":
                self.last_storage_recovery = now
            self.note(f"recovered: {f.kind} {f.role} {f.index} in {f.recovered_s:.2f} s"
                      + (" (new incarnation)" if f.rejoined else "")
                      + (f", serves its keys after {f.keys_back_s:.2f} s" if f.keys_back_s else ""))
            with self.lock:
                self.pending.remove(f)
                self.done.append(f)

    def probe(self, addresses, sample):
        """(served, missing): of `sample`, the keys a storage node owns, read
        from its threads directly, that have their value, and that do not."""
        from squall import _native

        served = missing = 0
        for key, value in sample:
            for a in addresses:
                d = self.direct.get(a)
                if d is None:
                    d = self.direct[a] = _native.DirectKvs(a, 2.0)
                try:
                    got = d.get(key)
                except Exception as e:  # noqa: BLE001
                    if "does not serve" in str(e):
                        continue  # not an owner
                    missing += 1
                    break
                if got == value:
                    served += 1
                else:
                    missing += 1
                break
        return served, missing

    def give_up(self, f: Fault, issues, why: str) -> None:
        f.ended = time.monotonic()
        f.ended_wall = time.time()
        f.failed = f"not recovered after {self.args.recovery_limit:.0f} s: {why}"
        self.note(f"NOT RECOVERED: {f.kind} {f.role} {f.index}: {why}; problems: "
                  + "; ".join(sorted({t for _, _, t in issues})))
        with self.lock:
            self.pending.remove(f)
            self.done.append(f)

    def watch(self) -> None:
        while not self.stop.is_set():
            try:
                self.check()
            except Exception as e:  # noqa: BLE001 - reported, the campaign goes on
                self.note(f"watcher error: {type(e).__name__}: {e}")
            time.sleep(0.1)

    def drive(self, until: float) -> None:
        """Faults every --fault-every seconds (0.5x to 1.5x) until `until`."""
        self.until = until
        while not self.stop.is_set():
            wait = self.args.fault_every * self.rng.uniform(0.5, 1.5)
            if time.monotonic() + wait >= until:
                break
            if self.stop.wait(wait):
                break
            try:
                self.inject()
            except ProcessLookupError:
                self.skipped["target exited before the signal"] += 1
            except Exception as e:  # noqa: BLE001
                self.note(f"fault loop error: {type(e).__name__}: {e}")

    def settle(self, limit: float) -> list:
        """Waits until nothing is pending and the cluster is whole; returns
        the problems left after `limit` seconds."""
        deadline = time.monotonic() + limit
        left = []
        while time.monotonic() < deadline:
            self.check()
            with self.lock:
                busy = bool(self.pending)
            left = self.whole()
            if not busy and not left:
                return []
            time.sleep(0.2)
        return left or ["faults still pending"]

    def release_stalls(self) -> None:
        for pid in list(self.stalled):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.stalled.discard(pid)


def parse_weights(text: str, allowed) -> dict:
    out = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, w = part.partition("=")
        if name not in allowed:
            raise SystemExit(f"unknown name {name!r} in {text!r}; expected one of {', '.join(allowed)}")
        out[name] = float(w)
    if not any(v > 0 for v in out.values()):
        raise SystemExit(f"no positive weight in {text!r}")
    return {k: v for k, v in out.items() if v > 0}


def weighted(rng: random.Random, weights: dict) -> str:
    names = list(weights)
    return rng.choices(names, [weights[n] for n in names])[0]


# -- read-back -----------------------------------------------------------


def read_back(cluster: Cluster, load: Load, retry_s: float, threads: int = 4) -> dict:
    """Reads every acknowledged write with fresh clients; a miss is read
    again until `retry_s` has passed."""
    import squall

    lww = list(load.acked_lww)
    sets = collections.defaultdict(set)
    for key, element in load.acked_set:
        sets[key].add(element)
    errors = Tally()

    def fresh():
        return squall.connect(str(cluster.state_dir), timeout=10.0)

    def lww_missing(keys_values):
        out = []
        client = fresh()
        for key, value in keys_values:
            try:
                got = client.get(key)
            except Exception as e:  # noqa: BLE001
                errors.add(error_name(e), f"get {key}: {e}")
                out.append((key, value, f"error {error_name(e)}"))
                continue
            if got != value:
                out.append((key, value, "missing" if got is None else f"other value {got!r:.80}"))
        return out

    def set_missing(items):
        out = []
        client = fresh()
        for key, elements in items:
            try:
                got = client.get(key)
            except Exception as e:  # noqa: BLE001
                errors.add(error_name(e), f"get {key}: {e}")
                out.extend((key, el, f"error {error_name(e)}") for el in elements)
                continue
            have = set(got) if got is not None else set()
            out.extend((key, el, "missing") for el in elements if el not in have)
        return out

    def parallel(fn, items):
        if not items:
            return []
        chunks = [items[i::threads] for i in range(threads)]
        results = [None] * threads
        workers = [threading.Thread(target=lambda i=i: results.__setitem__(i, fn(chunks[i])))
                   for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return [x for r in results for x in (r or [])]

    started = time.monotonic()
    miss_lww = parallel(lww_missing, lww)
    miss_set = set_missing(list(sets.items()))
    first_pass = len(miss_lww) + len(miss_set)
    deadline = time.monotonic() + retry_s
    while (miss_lww or miss_set) and time.monotonic() < deadline:
        time.sleep(1.0)
        miss_lww = lww_missing([(k, v) for k, v, _ in miss_lww])
        by_key = collections.defaultdict(set)
        for k, el, _ in miss_set:
            by_key[k].add(el)
        miss_set = set_missing(list(by_key.items()))
    return {
        "lww_acked": len(lww),
        "set_elements_acked": sum(len(v) for v in sets.values()),
        "missed_first_pass": first_pass,
        "lost": [(k, v.decode(errors="replace"), why) for k, v, why in miss_lww]
        + [(k, el.decode(errors="replace"), why) for k, el, why in miss_set],
        "errors": dict(errors.counts),
        "error_examples": errors.examples,
        "seconds": time.monotonic() - started,
    }


# Keys live on 2 storage nodes (the default replication, one thread each).
REPLICATION = 2


def replica_audit(cluster: Cluster, load: Load, want: int) -> dict:
    """Reads every acknowledged write from every storage node directly
    (`squall._native.DirectKvs`; a node that does not own a key says so) and
    counts the nodes holding it: a write acknowledged by `want` replicas
    should be on `want` nodes once the cluster is whole and quiet."""
    from squall import _native

    record = cluster.record()
    nodes = [(p["id"], p["addresses"]) for p in record.get("nodes", []) if not p.get("stopping")]
    lww = list(load.acked_lww)
    sets = collections.defaultdict(set)
    for key, element in load.acked_set:
        sets[key].add(element)
    held = {}  # node id -> {key: value or None}

    def read_node(node_id, addresses):
        directs = [_native.DirectKvs(a, 5.0) for a in addresses]
        out = {}
        for key in [k for k, _ in lww] + list(sets):
            got = "unreachable"
            for d in directs:
                try:
                    got = d.get(key)
                    break
                except Exception as e:  # noqa: BLE001
                    got = "not an owner" if "does not serve" in str(e) else f"error: {e}"
            out[key] = got
        held[node_id] = out

    started = time.monotonic()
    workers = [threading.Thread(target=read_node, args=n) for n in nodes]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    holders = collections.Counter()
    short = []
    for key, value in lww:
        n = sum(1 for node in held.values() if node.get(key) == value)
        holders[n] += 1
        if n < want:
            short.append((key, {i: describe(node.get(key), value) for i, node in held.items()}))
    for key, elements in sets.items():
        for el in elements:
            n = sum(1 for node in held.values()
                    if isinstance(node.get(key), frozenset) and el in node.get(key))
            holders[n] += 1
            if n < want:
                short.append((f"{key} element {el.decode()}",
                              {i: describe(node.get(key), None) for i, node in held.items()}))
    return {"holders": dict(sorted(holders.items())), "under_replicated": len(short),
            "examples": short[:20], "seconds": time.monotonic() - started}


def describe(got, want) -> str:
    if isinstance(got, str):
        return got
    if got is None:
        return "missing"
    if want is not None:
        return "holds it" if got == want else f"other value {got!r:.60}"
    return f"{len(got)} element(s)" if isinstance(got, frozenset) else f"{got!r:.60}"


# -- the logs ------------------------------------------------------------


def log_time(line: str) -> float:
    """The UTC timestamp a log line starts with, as seconds since the epoch."""
    import datetime

    stamp = line.split(": ", 1)[-1].split(" ", 1)[0].rstrip("Z")
    try:
        return datetime.datetime.fromisoformat(stamp).replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return float("nan")


def log_findings(state_dir: Path) -> dict:
    """Panics and abnormal ends the processes' logs report."""
    found = collections.defaultdict(list)
    patterns = {
        "panic": re.compile(r"panicked at|RUST_BACKTRACE"),
        "node declared failed": re.compile(r"node declared failed"),
        "declared departed while alive": re.compile(r"declared departed while alive"),
        "executor process ended abnormally": re.compile(r"ended abnormally"),
    }
    for log in sorted((state_dir / "logs").glob("*.log")):
        try:
            text = log.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            for what, pat in patterns.items():
                if pat.search(line):
                    found[what].append(f"{log.name}: {line.strip()[:300]}")
    return found


# -- the report ----------------------------------------------------------


def summary(args, up_cmd, duration, campaign: Campaign, load: Load, hung, readback, audit,
            left_problems, record, logs) -> dict:
    faults = campaign.done + campaign.pending
    by_role_kind = collections.Counter((f.role, f.kind) for f in faults)
    recovery = collections.defaultdict(list)
    restart = collections.defaultdict(list)
    keys_back = [f.keys_back_s for f in campaign.done if f.keys_back_s is not None]
    for f in campaign.done:
        if f.recovered_s is not None:
            recovery[f.role].append(f.recovered_s)
        if f.restarted_s is not None:
            restart[f.role].append(f.restarted_s)
    unrecovered = [f"{f.kind} {f.role} {f.index}: {f.failed}" for f in campaign.done if f.failed]
    unrecovered += [f"{f.kind} {f.role} {f.index}: still pending at the end" for f in campaign.pending]
    calls = dict(load.calls.counts)
    no_answer = sum(v for k, v in calls.items() if "no answer" in k) + len(hung)
    wrong = sum(v for k, v in calls.items() if "wrong result" in k)
    ok = sum(v for k, v in calls.items() if k.endswith(": ok"))
    # Processes that died more often than the campaign killed or stopped them.
    expected = collections.Counter()
    for f in faults:
        if f.kind in ("kill", "term") and f.role != "executor-child":
            expected[(f.role, f.index)] += 1
        if f.kind == "term" and f.role == "executor-child":
            expected[("executor", f.index)] += 1  # a clean exit ends the supervisor
    unexpected = []
    for role in ("router", "storage", "scheduler", "cache", "executor"):
        for i, p in enumerate(record.get(ROLES[role], [])):
            extra = p.get("restarts", 0) - expected[(role, i)]
            if extra > 0:
                unexpected.append(f"{role} {i} ({p.get('name')}): {p.get('restarts', 0)} restarts, "
                                  f"{expected[(role, i)]} caused by the campaign")
    # Each failed write or call, by the faults in progress while it ran
    # (from the signal to two seconds after the fault healed).
    now = time.monotonic()
    spans = [(f.injected, (f.ended or now) + 2.0, f"{f.role} {f.kind}") for f in faults]
    during = collections.Counter()
    for started, ended, what, err in load.failures:
        causes = sorted({name for a, b, name in spans if a <= ended and started <= b})
        during[(what, err, " + ".join(causes) or "no fault in progress")] += 1
    # Storage nodes declared failed by a router, by the faults in progress.
    wall = time.time()
    wall_spans = [(f.injected_wall, (f.ended_wall or wall) + 2.0, f"{f.role} {f.kind}")
                  for f in faults]
    declared = collections.Counter()
    for line in logs.get("node declared failed", []):
        t = log_time(line)
        causes = sorted({name for a, b, name in wall_spans if a <= t <= b})
        declared[" + ".join(causes) or "no fault in progress"] += 1
    monitors = record.get("monitors", [])
    result = {
        "command": up_cmd,
        "seed": args.seed,
        "minutes": args.minutes,
        "duration_s": duration,
        "ack": args.ack,
        "faults": len(faults),
        "faults_by_role_kind": {f"{r} {k}": n for (r, k), n in sorted(by_role_kind.items())},
        "faults_skipped": dict(campaign.skipped),
        "storage_rejoins": sum(1 for f in campaign.done if f.rejoined),
        "writes_tried": load.writes_tried(),
        "writes_acked": readback["lww_acked"] + readback["set_elements_acked"],
        "writes_lost": len(readback["lost"]),
        "lost": readback["lost"][:50],
        "write_errors": dict(load.write_errors.counts),
        "write_error_examples": load.write_errors.examples,
        "readback_missed_first_pass": readback["missed_first_pass"],
        "readback_errors": readback["errors"],
        "readback_s": readback["seconds"],
        "calls_ok": ok,
        "calls": calls,
        "call_examples": load.calls.examples,
        "failures_during": [{"what": w, "error": e, "during": d, "count": n}
                            for (w, e, d), n in sorted(during.items())],
        "calls_wrong": wrong,
        "calls_no_answer": no_answer,
        "calls_hung": [f"{n}: {w} for {s:.0f} s" for n, w, s in hung],
        "call_latency_ok_s": {
            "p50": percentile(load.call_latency, 0.5),
            "p99": percentile(load.call_latency, 0.99),
            "max": max(load.call_latency) if load.call_latency else float("nan"),
        },
        "recovery_s": {role: stats(v) for role, v in sorted(recovery.items())},
        "restart_s": {role: stats(v) for role, v in sorted(restart.items())},
        "storage_serves_keys_s": stats(keys_back) if keys_back else None,
        "unrecovered": unrecovered,
        "not_whole_at_end": left_problems,
        "unexpected_restarts": unexpected,
        "monitor_alive": bool(monitors) and all(running(m["pid"]) for m in monitors),
        "panics": logs.get("panic", [])[:20],
        "nodes_declared_failed": dict(declared),
        "nodes_declared_failed_examples": logs.get("node declared failed", [])[:6],
        "nodes_rejoined_while_alive": len(logs.get("declared departed while alive", [])),
        "replicas": audit,
        "executor_abnormal_ends": len(logs.get("executor process ended abnormally", [])),
        "events": campaign.events,
    }
    result["passed"] = (result["writes_lost"] == 0 and no_answer == 0 and wrong == 0
                        and not unrecovered and not left_problems
                        and audit["under_replicated"] == 0)
    return result


def stats(values) -> dict:
    return {"n": len(values), "min": min(values), "median": statistics.median(values),
            "p99": percentile(values, 0.99), "max": max(values)}


def print_summary(r: dict) -> None:
    p = lambda *a: print(*a, flush=True)  # noqa: E731
    p()
    p("== fault campaign ==")
    p(f"cluster: {r['command']}")
    p(f"duration {r['duration_s']:.0f} s (load), seed {r['seed']}, writes ack={r['ack']}")
    p()
    p(f"faults: {r['faults']} injected, {r['storage_rejoins']} storage node(s) back as a new incarnation")
    p("| role | kill -9 | stall | SIGTERM |")
    p("|---|---:|---:|---:|")
    roles = sorted({k.split()[0] for k in r["faults_by_role_kind"]})
    for role in roles:
        row = [r["faults_by_role_kind"].get(f"{role} {k}", 0) for k in ("kill", "stall", "term")]
        p(f"| {role} | {row[0]} | {row[1]} | {row[2]} |")
    if r["faults_skipped"]:
        p("skipped (the rules of the campaign): "
          + ", ".join(f"{k} x{v}" for k, v in sorted(r["faults_skipped"].items())))
    p()
    p(f"writes: {r['writes_tried']} tried, {r['writes_acked']} acknowledged, "
      f"**{r['writes_lost']} lost**")
    if r["write_errors"]:
        p("  failed (not acknowledged): "
          + ", ".join(f"{k} x{v}" for k, v in sorted(r["write_errors"].items())))
    p(f"  read back in {r['readback_s']:.0f} s; {r['readback_missed_first_pass']} missed at "
      f"the first read and found on a retry" if not r["writes_lost"] else
      f"  read back in {r['readback_s']:.0f} s")
    for k, v, why in r["lost"][:20]:
        p(f"  LOST {k} = {v!r}: {why}")
    a = r["replicas"]
    p(f"  replicas at the end (each write read from every storage node, {a['seconds']:.0f} s): "
      + ", ".join(f"{n} node(s): {c}" for n, c in a["holders"].items())
      + f"; **{a['under_replicated']} under-replicated**")
    for key, where in a["examples"][:10]:
        p(f"  UNDER-REPLICATED {key}: " + ", ".join(f"node {i} {w}" for i, w in where.items()))
    p()
    total = sum(r["calls"].values())
    p(f"calls: {total} made, {r['calls_ok']} ok, {r['calls_wrong']} wrong result, "
      f"**{r['calls_no_answer']} without an answer**")
    p("| call | outcome | count |")
    p("|---|---|---:|")
    for k, v in sorted(r["calls"].items()):
        what, _, outcome = k.partition(": ")
        p(f"| {what} | {outcome} | {v} |")
    lat = r["call_latency_ok_s"]
    p(f"  ok calls: p50 {lat['p50'] * 1000:.1f} ms, p99 {lat['p99'] * 1000:.0f} ms, "
      f"max {lat['max']:.2f} s")
    for h in r["calls_hung"]:
        p(f"  HUNG {h}")
    if r["failures_during"]:
        p()
        p("failed writes and calls by the fault in progress while they ran:")
        p("| operation | error | during | count |")
        p("|---|---|---|---:|")
        for row in r["failures_during"]:
            p(f"| {row['what']} | {row['error']} | {row['during']} | {row['count']} |")
    p()
    p("recovery (s, from the fault, or from SIGCONT for a stall, until the cluster sees the role whole):")
    p("| role | faults | min | median | p99 | max | restart (new pid) median |")
    p("|---|---:|---:|---:|---:|---:|---:|")
    for role, s in r["recovery_s"].items():
        rs = r["restart_s"].get(role)
        p(f"| {role} | {s['n']} | {s['min']:.2f} | {s['median']:.2f} | {s['p99']:.2f} | "
          f"{s['max']:.2f} | {rs['median']:.2f} |" if rs else
          f"| {role} | {s['n']} | {s['min']:.2f} | {s['median']:.2f} | {s['p99']:.2f} | "
          f"{s['max']:.2f} | - |")
    kb = r["storage_serves_keys_s"]
    if kb:
        p(f"  a faulted storage node served again every sampled key it owns (read from it "
          f"directly) after {kb['median']:.2f} s median, {kb['max']:.2f} s max ({kb['n']} faults)")
    for u in r["unrecovered"]:
        p(f"  NOT RECOVERED {u}")
    if r["not_whole_at_end"]:
        p("  not whole at the end: " + "; ".join(r["not_whole_at_end"][:10]))
    p()
    p(f"logs: {len(r['panics'])} panic line(s), {r['executor_abnormal_ends']} executor process "
      f"restart(s) by its supervisor; monitor alive at the end: {r['monitor_alive']}")
    for line in r["panics"][:10]:
        p(f"  {line}")
    if r["nodes_declared_failed"]:
        p("storage nodes declared failed by a router (one line per router and node), by the "
          "fault in progress: "
          + ", ".join(f"{k}: {v}" for k, v in sorted(r["nodes_declared_failed"].items()))
          + f"; {r['nodes_rejoined_while_alive']} time(s) a live node learnt it was declared "
          "departed and rejoined")
    for u in r["unexpected_restarts"]:
        p(f"  died without a fault: {u}")
    if r["write_error_examples"] or r["call_examples"]:
        p("examples of errors:")
        for k, v in sorted({**r["write_error_examples"], **r["call_examples"]}.items()):
            p(f"  {k}: {v.splitlines()[0] if v else ''}")
    p()
    p("PASSED: no acknowledged write lost or under-replicated, every call answered, every "
      "fault healed"
      if r["passed"] else "FAILED")


# -- main ----------------------------------------------------------------


def default_binary() -> Path:
    for profile in ("release", "debug"):
        path = ROOT / "target" / profile / "squall"
        if path.exists():
            return path
    return ROOT / "target" / "release" / "squall"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description="Fault campaign: write-and-call load against a local Squall cluster while "
        "its processes are killed (kill -9), stalled (SIGSTOP/SIGCONT) and stopped (SIGTERM), "
        "then every acknowledged write is read back. Exits 1 if an acknowledged write was "
        "lost, a call got no answer or a wrong result, or a fault did not heal.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--minutes", type=float, default=10.0,
                    help="how long the load runs with faults (the set-up, settling and "
                    "read-back come on top)")
    ap.add_argument("--seed", type=int, default=None,
                    help="seed of the fault and load choices (default: random, printed); the "
                    "timing of a run is not reproducible, the sequence of choices is")
    ap.add_argument("--nodes", type=int, default=3, help="storage nodes (one worker thread each)")
    ap.add_argument("--compute-nodes", type=int, default=2,
                    help="compute nodes (a cache and its executors each)")
    ap.add_argument("--executors", type=int, default=1, help="executors per compute node")
    ap.add_argument("--routers", type=int, default=2, help="routers")
    ap.add_argument("--schedulers", type=int, default=2, help="schedulers")
    ap.add_argument("--ack", default="2",
                    help="acknowledgement level of every write: an integer k (k replicas "
                    "hold it), 'all', or 'one'")
    ap.add_argument("--fault-every", type=float, default=3.0,
                    help="mean seconds between two faults (each wait is 0.5x to 1.5x this); a "
                    "storage fault also waits until the cluster is whole and settled")
    ap.add_argument("--role-weights", default=DEFAULT_ROLE_WEIGHTS,
                    help="how often each role is picked (router, storage, scheduler, cache, "
                    "executor = the supervisor, executor-child = the Python executor process it "
                    "runs); a weight of 0 spares the role")
    ap.add_argument("--fault-weights", default=DEFAULT_FAULT_WEIGHTS,
                    help="how often each fault is picked: kill (kill -9), stall (SIGSTOP for "
                    f"{STALL_MIN_S:.0f}-{STALL_MAX_S:.0f} s, then SIGCONT), term (SIGTERM: a graceful stop, "
                    "after which repair starts the process again)")
    ap.add_argument("--storage-settle", type=float, default=4.0,
                    help="seconds the cluster must have been whole, and since the last faulted "
                    "storage node served its keys again, before the next storage fault (more "
                    "than the 3 s transition window after a ring change)")
    ap.add_argument("--recovery-limit", type=float, default=120.0,
                    help="seconds a fault may take to heal before it counts as not recovered")
    ap.add_argument("--writers", type=int, default=2, help="writer threads, one client each")
    ap.add_argument("--write-rate", type=float, default=50.0,
                    help="puts per second per writer at most (0: as fast as it goes)")
    ap.add_argument("--set-keys", type=int, default=8,
                    help="shared set keys the writers add unique elements to (40%% of writes)")
    ap.add_argument("--callers", type=int, default=2, help="caller threads, one client each")
    ap.add_argument("--call-rate", type=float, default=20.0,
                    help="calls per second per caller at most (0: as fast as it goes)")
    ap.add_argument("--call-timeout", type=float, default=30.0,
                    help="each call's timeout in seconds; a call with no answer from the "
                    "cluster by then counts as 'no answer'")
    ap.add_argument("--quiet", type=float, default=5.0,
                    help="seconds to wait, once the load stopped and the cluster is whole, "
                    "before reading back")
    ap.add_argument("--readback-retry", type=float, default=30.0,
                    help="seconds a write missing at the read-back is read again before it "
                    "counts as lost")
    ap.add_argument("--binary", type=Path, default=default_binary(),
                    help="the squall binary (default: target/release/squall, else target/debug)")
    ap.add_argument("--state-dir", type=Path, default=None,
                    help="the cluster's state directory (default: a new temporary one)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the state directory (cluster.json, logs/, faults.log, "
                    "summary.json) after the run; the cluster itself is always stopped")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary here as JSON")
    ap.add_argument("--verbose", "-v", action="store_true",
                    help="print every fault and recovery as it happens")
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.ack not in ("one", "all"):
        try:
            args.ack = int(args.ack)
        except ValueError:
            raise SystemExit(f"--ack must be an integer, 'one' or 'all', not {args.ack!r}")
    if args.seed is None:
        args.seed = random.randrange(1 << 31)
    random.seed(args.seed)
    import squall  # noqa: F401 - fail early if the package is missing

    if not args.binary.exists():
        print(f"no squall binary at {args.binary}: run `cargo build --release -p squall`",
              file=sys.stderr)
        return 2
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="squall-faults-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(args.binary.resolve(), state_dir)
    run = f"{args.seed:x}-{os.getpid():x}"
    print(f"fault campaign: {args.minutes:g} min, seed {args.seed}, ack={args.ack}, a fault every "
          f"~{args.fault_every:g} s; state in {state_dir}", flush=True)
    campaign = load = None
    try:
        try:
            up_cmd = cluster.up(args)
        except Exception as e:  # noqa: BLE001
            print(e, file=sys.stderr)
            return 2
        print(f"$ {up_cmd}", flush=True)
        client = squall_connect(state_dir, args)
        client.register(faults_inc)
        client.register(faults_square)
        client.register(faults_increment)
        client.register(faults_read)
        client.register_dag("faults_dag", ["faults_square", "faults_increment"],
                            [("faults_square", "faults_increment")])
        assert client.call("faults_inc", 1, timeout=30) == 2
        assert client.call_dag("faults_dag", {"faults_square": (3,)}, timeout=30) == 10

        load = Load(cluster, args, run)
        campaign = Campaign(cluster, args, load.sample)
        watcher = threading.Thread(target=campaign.watch, name="watcher", daemon=True)
        watcher.start()
        load.start()
        started = time.monotonic()
        until = started + args.minutes * 60
        reporter = threading.Thread(target=progress, args=(campaign, load, started, until),
                                    daemon=True)
        reporter.start()
        campaign.drive(until)
        while time.monotonic() < until:
            time.sleep(0.2)
        hung = load.finish(args.call_timeout + 30)
        duration = time.monotonic() - started
        print(f"load stopped after {duration:.0f} s; waiting for the cluster to heal", flush=True)
        campaign.stop.set()
        watcher.join(5)
        campaign.release_stalls()
        left = campaign.settle(args.recovery_limit)
        time.sleep(args.quiet)
        print(f"reading back {len(load.acked_lww) + len(load.acked_set)} acknowledged writes",
              flush=True)
        readback = read_back(cluster, load, args.readback_retry)
        want = replicas_wanted(args)
        print(f"auditing the replicas: each acknowledged write on {want} storage node(s)",
              flush=True)
        audit = replica_audit(cluster, load, want)
        result = summary(args, up_cmd, duration, campaign, load, hung, readback, audit, left,
                         cluster.record(), log_findings(state_dir))
        print_summary(result)
        text = json.dumps(result, indent=2, default=str)
        (state_dir / "summary.json").write_text(text)
        (state_dir / "faults.log").write_text("\n".join(campaign.events) + "\n")
        if args.json:
            args.json.write_text(text)
        return 0 if result["passed"] else 1
    finally:
        if campaign is not None:
            campaign.stop.set()
            campaign.release_stalls()
        if load is not None:
            load.stop.set()
        cluster.down()
        if args.keep:
            print(f"state kept in {state_dir}", flush=True)
        elif args.state_dir is None:
            shutil.rmtree(state_dir, ignore_errors=True)


def replicas_wanted(args) -> int:
    """How many storage nodes must hold a write acknowledged at --ack."""
    full = min(REPLICATION, args.nodes)
    if args.ack == "one":
        return 1
    if args.ack == "all":
        return full
    return min(int(args.ack), full)


def squall_connect(state_dir: Path, args):
    import squall

    return squall.connect(str(state_dir), timeout=10.0, call_timeout=args.call_timeout)


def progress(campaign: Campaign, load: Load, started: float, until: float) -> None:
    """A line every 30 s while the load runs."""
    while time.monotonic() < until - 1:
        time.sleep(min(30.0, max(0.1, until - time.monotonic())))
        with campaign.lock:
            n = len(campaign.done) + len(campaign.pending)
        calls = load.calls.counts
        ok = sum(v for k, v in calls.items() if k.endswith(": ok"))
        print(f"  {time.monotonic() - started:5.0f} s: {n} faults, "
              f"{len(load.acked_lww) + len(load.acked_set)} writes acknowledged, "
              f"{sum(load.write_errors.counts.values())} failed; {ok} calls ok, "
              f"{sum(calls.values()) - ok} not", flush=True)


if __name__ == "__main__":
    sys.exit(main())
