"""A real local Squall cluster for the tests, started once per session.

The binary is `$SQUALL_BIN`, else target/debug/squall (what `cargo test`
builds), else target/release/squall. The cluster runs in a temporary state
directory on free ports and is always stopped at the end. When the binary
starts the compute tier too (a scheduler, one compute node, two executors);
tests of functions use the `compute` fixture.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

import squall

ROOT = Path(__file__).resolve().parents[2]
PORTS = 64


def squall_bin() -> Path:
    env = os.environ.get("SQUALL_BIN")
    if env:
        return Path(env)
    for profile in ("debug", "release"):
        path = ROOT / "target" / profile / "squall"
        if path.exists():
            return path
    pytest.exit("no squall binary: run `cargo build -p squall` or set SQUALL_BIN", 2)


def free_base_port() -> int:
    """A port P such that P..P+PORTS are free now."""
    for _ in range(50):
        base = random.randrange(20000, 60000 - PORTS)
        try:
            socks = []
            for p in range(base, base + PORTS):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range found")


def up_args(binary: Path) -> list:
    """`squall up` flags: one storage node of one thread (so any key has one
    owner, which `DirectKvs` tests rely on), and the compute tier where the
    binary has it. `SQUALL_TEST_UP_ARGS` replaces the compute flags."""
    args = ["--nodes", "1", "--threads", "1"]
    extra = os.environ.get("SQUALL_TEST_UP_ARGS")
    if extra is not None:
        return args + extra.split()
    helptext = subprocess.run(
        [str(binary), "up", "--help"], capture_output=True, text=True, check=False
    ).stdout
    if "--compute-nodes" in helptext:
        args += ["--compute-nodes", "1"]
        if "--executors" in helptext:
            args += ["--executors", "2"]
    return args


class Cluster:
    def __init__(self, binary: Path, state_dir: Path) -> None:
        self.binary = binary
        self.state_dir = state_dir

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.binary), "--state-dir", str(self.state_dir), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    @property
    def record(self) -> dict:
        return json.loads((self.state_dir / "cluster.json").read_text())

    def logs(self) -> str:
        out = []
        for log in sorted((self.state_dir / "logs").glob("*")):
            out.append(f"--- {log.name}\n" + log.read_text(errors="replace")[-3000:])
        return "\n".join(out)


@pytest.fixture(scope="session")
def cluster():
    binary = squall_bin()
    state_dir = Path(tempfile.mkdtemp(prefix="squall-pytest-"))
    c = Cluster(binary, state_dir)
    try:
        last = None
        for _ in range(3):
            last = c.cli("up", "--base-port", str(free_base_port()), *up_args(binary), check=False)
            if last.returncode == 0:
                break
            try:
                c.cli("down", check=False)
            except subprocess.TimeoutExpired:
                pass
        else:
            pytest.fail(f"squall up failed:\n{last.stdout}\n{last.stderr}\n{c.logs()}")
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
