"""What the functions benchmarks share: a free block of loopback ports for
`squall up`, and a local cluster started with a config and stopped again."""

from __future__ import annotations

import contextlib
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def free_base_port(span=600, low=20000, high=60000):
    """A base port such that [base, base+span), where `squall up` puts
    its processes at fixed offsets, is free on loopback now."""
    for base in range(low, high - span, 997):
        socks = []
        try:
            for port in range(base, base + span):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range found")


@contextlib.contextmanager
def local_cluster(binary, config, *up_args, prefix="squall-bench-"):
    """Starts `squall up UP_ARGS` on free ports with `config` (TOML text)
    in a fresh state directory; yields the directory; stops the cluster
    and removes the directory at the end."""
    state = tempfile.mkdtemp(prefix=prefix)
    path = Path(state) / "squall.toml"
    path.write_text(config)
    base = [str(binary), "--state-dir", state, "--config", str(path)]
    up = base + ["up", "--base-port", str(free_base_port()), *up_args]
    print("$", " ".join(shlex.quote(c) for c in up), flush=True)
    try:
        subprocess.run(up, check=True, stdout=subprocess.DEVNULL)
        yield state
    finally:
        subprocess.run(base + ["down"], check=False, stdout=subprocess.DEVNULL)
        shutil.rmtree(state, ignore_errors=True)
