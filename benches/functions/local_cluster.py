"""What the functions benchmarks share: a local cluster started on free
loopback ports (`squall.testing.free_base_port`) with a config, and
stopped again."""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from squall.testing import free_base_port


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
