"""WebAssembly functions on Squall in one page.

    squall up --compute-nodes 1            # a local cluster, if none runs
    .venv/bin/python examples/wasm_quickstart.py

Registers the hand-written WAT functions of examples/wasm/ (and the
AssemblyScript one: examples/wasm/assemblyscript/build/wordcount.wasm if
build.sh made it, else built here in a temporary directory by `npm
install` and `npx asc`, which needs npm and the network; the source tree
is not written to), calls them, runs a DAG that mixes WebAssembly and
Python, and shows the host `get`/`put` from Python.
The calling convention is in client-py/README.md, "WebAssembly functions".
Every step prints what it did; any failure raises and exits non-zero
(an AssemblyScript build that cannot run here is skipped, saying why).
"""

import shutil
import subprocess
import tempfile
from pathlib import Path

import squall

HERE = Path(__file__).resolve().parent / "wasm"


def main():
    client = squall.connect()  # the local cluster started by `squall up`

    # -- register: a .wat path (compiled and validated here), Int in/out -----
    client.register_wasm(HERE / "square.wat", "wasm_square", result="int")
    client.register_wasm(HERE / "increment.wat", "wasm_increment", result="int")
    print("call wasm_square(7) ->", client.call("wasm_square", 7))
    futures = [client.call_async("wasm_increment", i) for i in range(3)]
    print("call_async wasm_increment(0..2) ->", [f.get(timeout=10) for f in futures])

    # -- an invalid module is refused before anything is stored --------------
    try:
        client.register_wasm(b"(module (func (export \"run\")))", "broken")
    except squall.InvalidModuleError as e:
        print("register_wasm(broken) -> InvalidModuleError:", str(e).splitlines()[0])

    # -- a DAG mixing runtimes: square in WebAssembly, increment in Python ---
    def increment(x):
        return x + 1

    client.register(increment, name="py_increment")
    client.register_dag("wasm_then_python", ["wasm_square", "py_increment"],
                        [("wasm_square", "py_increment")])
    print("call_dag wasm_then_python (square 5, then + 1) ->",
          client.call_dag("wasm_then_python", {"wasm_square": [5]}))

    # -- host get/put: a Python int read by WebAssembly, bytes written back --
    client.register_wasm(HERE / "counter.wat", "wasm_counter", result="int")
    client.put("visits", 41)  # a Python int: `get` hands the module 8 bytes
    print("call wasm_counter('visits') ->", client.call("wasm_counter", "visits"))
    raw = client.get("visits")  # what the module `put`: bytes
    print("get visits ->", raw, "=", int.from_bytes(raw, "little"))

    # -- a function in a real language: AssemblyScript -----------------------
    wasm = HERE / "assemblyscript" / "build" / "wordcount.wasm"
    if wasm.exists():
        module = wasm.read_bytes()
    else:
        module = build_wordcount()
    if module is not None:
        client.register_wasm(module, "wordcount", result="int")
        print("call wordcount('the quick brown fox', 'jumps') ->",
              client.call("wordcount", "the quick brown fox", "jumps"))


def build_wordcount():
    """wordcount.wasm built from examples/wasm/assemblyscript in a temporary
    directory (npm downloads AssemblyScript into it), so the source tree is
    left as it is; `None`, saying why, when it cannot be built."""
    source = HERE / "assemblyscript"
    if not shutil.which("npx"):
        print("skipped AssemblyScript: no npm/npx to build", source / "wordcount.ts")
        return None
    with tempfile.TemporaryDirectory(prefix="squall-assemblyscript-") as tmp:
        print(f"building wordcount.wasm in {tmp}: `npm install` of AssemblyScript "
              f"(from the npm registry), then `npx asc`; nothing is written to {source}")
        for name in ("build.sh", "package.json", "package-lock.json", "wordcount.ts"):
            shutil.copy2(source / name, tmp)
        try:
            subprocess.run([str(Path(tmp) / "build.sh")], check=True, capture_output=True,
                           text=True)
        except subprocess.CalledProcessError as e:
            last = (e.stderr or e.stdout or "").strip().splitlines()[-1:] or ["no output"]
            print("skipped AssemblyScript: the build failed:", last[0])
            return None
        return (Path(tmp) / "build" / "wordcount.wasm").read_bytes()

if __name__ == "__main__":
    main()
