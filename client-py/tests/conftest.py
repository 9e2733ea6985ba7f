"""A real local Squall cluster for the tests, started once per session.

The binary is `$SQUALL_BIN`, else target/debug/squall (what `cargo test`
builds), else target/release/squall. The cluster runs in a temporary state
directory on free ports and is always stopped at the end. When the binary
starts the compute tier too (a scheduler, two compute nodes of two executors each);
tests of functions use the `compute` fixture. Three storage nodes and two
compute nodes: a one-node cluster hides every replication bug.

The cluster's monitor runs, but with its storage and compute policies off
(a config file in the state directory, passed to every `squall` command
of the fixture), so the cluster keeps its shape whatever load the tests
make. Tests of the policies start clusters of their own
(`test_monitor.py`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import squall
import squall.testing

ROOT = Path(__file__).resolve().parents[2]
# `squall up` takes ports from its base port up: routers, schedulers (+50),
# the monitor (+60, +61), storage nodes (+100, 20 each), compute nodes
# (+400, 20 each).
PORTS = 500

# The session cluster's config: a monitor that decides nothing about the
# number of nodes.
SESSION_CONFIG = """\
[monitor.storage]
enabled = false

[monitor.compute]
enabled = false
"""


def squall_bin() -> Path:
    env = os.environ.get("SQUALL_BIN")
    if env:
        return Path(env)
    for profile in ("debug", "release"):
        path = ROOT / "target" / profile / "squall"
        if path.exists():
            return path
    pytest.exit("no squall binary: run `cargo build -p squall` or set SQUALL_BIN", 2)


def free_base_port(ports: int = PORTS, low: int = 20000, high: int = 60000) -> int:
    """`squall.testing.free_base_port`, for this suite's clusters."""
    return squall.testing.free_base_port(ports, low, high)


def eventually(read, want=None, timeout=3.0):
    """`read()` once it is `want` (without `want`: once it is not None), or
    its last value after `timeout` seconds: for reads of what *another*
    writer wrote, which reach the replica read by gossip (a client reads
    its own writes at once; see test_sessions.py)."""
    deadline = time.monotonic() + timeout
    while True:
        got = read()
        done = got is not None if want is None else got == want
        if done or time.monotonic() > deadline:
            return got
        time.sleep(0.01)


def up_args(binary: Path) -> list:
    """`squall up` flags: three storage nodes of one thread (every key on two
    of them, so replication shows in every test), and the compute tier
    (two compute nodes of two executors) where the binary has it.
    `SQUALL_TEST_UP_ARGS` replaces the compute flags."""
    args = ["--nodes", "3", "--threads", "1"]
    extra = os.environ.get("SQUALL_TEST_UP_ARGS")
    if extra is not None:
        return args + extra.split()
    helptext = subprocess.run(
        [str(binary), "up", "--help"], capture_output=True, text=True, check=False
    ).stdout
    if "--compute-nodes" in helptext:
        args += ["--compute-nodes", "2"]
        if "--executors" in helptext:
            args += ["--executors", "2"]
    return args


class Cluster:
    """A local cluster's state directory, and `squall` commands on it, with
    `config` (a file) passed to each if given."""

    def __init__(self, binary: Path, state_dir: Path, config: "Path | None" = None) -> None:
        self.binary = binary
        self.state_dir = state_dir
        self.config = config

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        config = ["--config", str(self.config)] if self.config is not None else []
        return subprocess.run(
            [str(self.binary), "--state-dir", str(self.state_dir), *config, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def up(self, *args: str, **ports: int) -> None:
        """`squall up ARGS` on free ports (`ports`: as `free_base_port`
        takes them), tried three times; fails the test with the logs if it
        never starts."""
        last = None
        for _ in range(3):
            base = free_base_port(**ports)
            last = self.cli("up", "--base-port", str(base), *args, check=False)
            if last.returncode == 0:
                return
            try:
                self.cli("down", check=False)
            except subprocess.TimeoutExpired:
                pass
        pytest.fail(f"squall up failed:\n{last.stdout}\n{last.stderr}\n{self.logs()}")

    @property
    def record(self) -> dict:
        return json.loads((self.state_dir / "cluster.json").read_text())

    def logs(self) -> str:
        out = []
        for log in sorted((self.state_dir / "logs").glob("*")):
            out.append(f"--- {log.name}\n" + log.read_text(errors="replace")[-3000:])
        return "\n".join(out)


# A config section for clusters of their own whose node counts must not
# change under the test's load.
POLICIES_OFF = "[monitor.storage]\nenabled = false\n\n[monitor.compute]\nenabled = false\n"

# Config sections for clusters of their own that kill or stall nodes: a
# silent node is declared departed within 1.5 s, and heartbeats and state
# broadcasts come often enough for that.
FAST_FAILURE = """\
[storage]
heartbeat_period = 200

[router]
failure_timeout = 1500
broadcast_period = 300

"""


def state_directory(prefix: str, private: bool = False) -> Path:
    """A fresh state directory. Others may enter it (mode 0755, as `squall
    up` makes its own), so executors that drop root reach their cache's
    socket in it; `private` keeps mkdtemp's 0700."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if not private:
        path.chmod(0o755)
    return path


@contextlib.contextmanager
def own_cluster(prefix: str, config: str, *up: str, private: bool = False, **ports: int):
    """A cluster of a test module's own: `config` (a `squall.toml` text) in
    a fresh state directory (see `state_directory`), `squall up UP` on free
    ports (`ports` as `free_base_port` takes them); yields `(Cluster,
    client)` and always takes it down and removes the directory."""
    state_dir = state_directory(prefix, private)
    path = state_dir / "squall.toml"
    path.write_text(config)
    c = Cluster(squall_bin(), state_dir, path)
    try:
        c.up(*up, **ports)
        client = squall.connect(str(state_dir), timeout=10.0)
        try:
            yield c, client
        finally:
            client.close()
    finally:
        c.cli("down", check=False)
        shutil.rmtree(state_dir, ignore_errors=True)


def running(pid: int) -> bool:
    """Whether `pid` runs (exists and is not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.fixture(scope="session")
def cluster():
    binary = squall_bin()
    state_dir = state_directory("squall-pytest-")
    config = state_dir / "squall.toml"
    config.write_text(SESSION_CONFIG)
    c = Cluster(binary, state_dir, config)
    try:
        c.up(*up_args(binary))
        yield c
    finally:
        try:
            c.cli("down", check=False)
        except subprocess.TimeoutExpired as e:  # pragma: no cover - reported
            import warnings

            warnings.warn(f"`squall down` did not finish: {e}")
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def client(cluster):
    c = squall.connect(str(cluster.state_dir), timeout=10.0)
    yield c
    c.close()


@pytest.fixture
def key(request):
    """A key unique to the test."""
    return f"pytest/{request.node.name}/{random.getrandbits(32):08x}"


@pytest.fixture(scope="session")
def compute(cluster, client):
    """The client of a cluster running the compute tier."""
    assert cluster.record.get("schedulers"), (
        "the cluster record lists no schedulers: `squall up` did not start "
        "the compute tier"
    )
    return client
