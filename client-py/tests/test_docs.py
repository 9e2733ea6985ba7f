"""Every Python sample of the README files runs, as written, against a
real local cluster (three storage nodes, two compute nodes).

Each ```python block of `README.md` and `client-py/README.md` is one
test, found afresh at every run, so a sample added later is tested too.
The blocks of one file run in order in one namespace, as a reader would
type them into one session, seeded with `squall` and a connected `client`
(a sample may assume the client of an earlier section). The working
directory holds the cluster's state directory as `.squall` (so
`squall.connect()` finds it as the docs say) and the repository's
`examples/`.

A block that must not run says why in an HTML comment on the line before
its fence, which the rendered page does not show:

    <!-- not run: the addresses are another cluster's -->

and a block meant to fail (its last line shows the error) names the
exception:

    <!-- raises: PermissionError -->

Use them sparingly: a sample that cannot run is a sample nobody checks.
"""

from __future__ import annotations

import builtins
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import pytest

import squall
from conftest import ROOT, Cluster, squall_bin, state_directory, up_args

DOCS = [ROOT / "README.md", ROOT / "client-py" / "README.md"]

# The clients and rights the samples use (`client-py/README.md`, "Keys"),
# and a monitor that leaves the cluster's shape alone.
CONFIG = """\
[monitor.storage]
enabled = false

[monitor.compute]
enabled = false

[security.clients]
admin = ["read", "write", "register", "call"]
dashboard = ["read"]
frontend = ["read", "call"]
"""

FENCE = re.compile(r"^```python\s*$")
MARK = re.compile(r"^<!--\s*(not run|raises):\s*(.+?)\s*-->\s*$")


@dataclass
class Block:
    path: Path
    line: int  # of the first line of code
    code: str
    not_run: Optional[str] = None
    raises: Optional[str] = None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> List[Block]:
    """The ```python blocks of `path`, with the mark before each."""
    lines = path.read_text().splitlines()
    found = []
    i = 0
    while i < len(lines):
        if not FENCE.match(lines[i]):
            i += 1
            continue
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = MARK.match(before.strip())
        end = i + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        block = Block(path, i + 2, "\n".join(lines[i + 1 : end]) + "\n")
        if mark and mark.group(1) == "not run":
            block.not_run = mark.group(2)
        elif mark:
            block.raises = mark.group(2)
        found.append(block)
        i = end + 1
    return found


ALL = [b for path in DOCS for b in blocks(path)]


def test_the_readmes_have_python_samples_and_marks_say_why():
    assert {b.path for b in ALL} == set(DOCS)
    for b in ALL:
        for reason in (b.not_run, b.raises):
            assert reason is None or len(reason) > 3, f"{b.name}: say why"


@pytest.fixture(scope="module")
def docs_home():
    """A directory holding a running cluster's state directory as `.squall`
    and the repository's `examples/`."""
    home = state_directory("squall-docs-")
    state = home / ".squall"
    state.mkdir()
    state.chmod(0o755)
    config = state / "squall.toml"
    config.write_text(CONFIG)
    (home / "examples").symlink_to(ROOT / "examples")
    binary = squall_bin()
    cluster = Cluster(binary, state, config)
    try:
        cluster.up(*up_args(binary))
        yield home
    finally:
        cluster.cli("down", check=False)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def namespaces() -> Dict[Path, dict]:
    return {}


@pytest.fixture
def in_docs_home(docs_home, monkeypatch):
    for var in ("SQUALL_STATE_DIR", "SQUALL_KEY_FILE", "SQUALL_INSECURE", "SQUALL_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(docs_home)
    return docs_home


@pytest.mark.parametrize("block", ALL, ids=[b.name for b in ALL])
def test_sample_runs(block, in_docs_home, namespaces):
    if block.not_run:
        pytest.skip(f"not run: {block.not_run}")
    namespace = namespaces.get(block.path)
    if namespace is None:
        namespace = {"__name__": "__main__", "squall": squall, "client": squall.connect()}
        namespaces[block.path] = namespace
    # Padded so that a traceback's line numbers are the file's.
    code = compile("\n" * (block.line - 1) + block.code, str(block.path), "exec")
    if block.raises is None:
        exec(code, namespace)
        return
    expected = getattr(squall, block.raises, None) or getattr(builtins, block.raises, None)
    assert isinstance(expected, type), f"{block.name}: no exception named {block.raises}"
    with pytest.raises(expected):
        exec(code, namespace)
