#!/usr/bin/env bash
# Validates every manifest of deploy/k8s offline, with no cluster:
#
#  1. the Kubernetes schemas of one fixed version, strictly (unknown fields
#     are errors), by kubernetes-validate (requirements-dev.txt);
#  2. the shell of every `sh -c` command, probe and hook parses (`sh -n`),
#     and a storage pod's command gives `--id` = ordinal + 1;
#  3. the ConfigMap's squall.toml is accepted by `squall --config`, and every
#     container's command line is accepted by the binary's argument parser,
#     when a built squall binary is found (SQUALL=path, else
#     target/{debug,release}).
#
# Usage: deploy/k8s/validate.sh   (from anywhere; exits non-zero on a failure)
set -euo pipefail

KUBERNETES_VERSION=1.37.0
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/.venv/bin"
validate="${KUBERNETES_VALIDATE:-$venv/kubernetes-validate}"
python="${PYTHON:-$venv/python}"
[ -x "$validate" ] || validate="$(command -v kubernetes-validate || true)"
if [ -z "$validate" ]; then
    echo "validate.sh: kubernetes-validate not found (make setup installs it into .venv)" >&2
    exit 1
fi

manifests=("$here"/*.yaml)
echo "== schemas: kubernetes-validate --strict, Kubernetes $KUBERNETES_VERSION, ${#manifests[@]} files"
"$validate" --strict --kubernetes-version "$KUBERNETES_VERSION" "${manifests[@]}"

squall="${SQUALL:-}"
if [ -z "$squall" ]; then
    for candidate in "$root/target/debug/squall" "$root/target/release/squall"; do
        if [ -x "$candidate" ]; then squall="$candidate"; break; fi
    done
fi

echo "== commands and config"
SQUALL_BIN="$squall" "$python" - "${manifests[@]}" <<'PY'
import os, subprocess, sys, tempfile, yaml

failed = []

def check(ok, what):
    print(("  ok    " if ok else "  FAIL  ") + what)
    if not ok:
        failed.append(what)

docs = []
for path in sys.argv[1:]:
    with open(path) as f:
        docs += [(os.path.basename(path), d) for d in yaml.safe_load_all(f) if d]

def shell_scripts(container):
    """Every `sh -c` script of a container: command, probes, hooks."""
    cmd = (container.get("command") or []) + (container.get("args") or [])
    if cmd[:2] == ["/bin/sh", "-c"]:
        yield "command", cmd[2]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        exe = (container.get(probe) or {}).get("exec", {}).get("command", [])
        if exe[:2] == ["/bin/sh", "-c"]:
            yield probe, exe[2]
    exe = (container.get("lifecycle", {}).get("preStop") or {}).get("exec", {}).get("command", [])
    if exe[:2] == ["/bin/sh", "-c"]:
        yield "preStop", exe[2]

for file, doc in docs:
    spec = doc.get("spec", {}).get("template", {}).get("spec")
    if not spec:
        continue
    for c in spec["containers"]:
        for what, script in shell_scripts(c):
            r = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
            check(r.returncode == 0, f"{file} {doc['metadata']['name']}/{c['name']} {what} parses (sh -n) {r.stderr.strip()}".rstrip())

# The storage pod's command, run with a stand-in `squall` that prints its
# arguments, as pod squall-kvs-3 would run it.
kvs = next(d for _, d in docs if d["kind"] == "StatefulSet")
script = kvs["spec"]["template"]["spec"]["containers"][0]["args"][0]
with tempfile.TemporaryDirectory() as bin_dir:
    stub = os.path.join(bin_dir, "squall")
    with open(stub, "w") as f:
        f.write('#!/bin/sh\necho "$@"\n')
    os.chmod(stub, 0o755)
    env = {"PATH": bin_dir + ":/usr/bin:/bin", "HOSTNAME": "squall-kvs-3", "POD_IP": "10.1.2.3"}
    out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True).stdout.split()
    check(out[out.index("--id") + 1] == "4" and out[out.index("--host") + 1] == "10.1.2.3",
          f"pod squall-kvs-3 runs `squall {' '.join(out)}` (--id 4, --host its pod IP)")

squall = os.environ.get("SQUALL_BIN")

# Every container's command, expanded by a stand-in `squall` as a pod would
# run it, is then parsed by the real binary (`--help` appended: clap refuses
# an unknown flag or a bad value before it prints help and exits 0).
if squall:
    with tempfile.TemporaryDirectory() as bin_dir:
        stub = os.path.join(bin_dir, "squall")
        with open(stub, "w") as f:
            f.write('#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done\n')
        os.chmod(stub, 0o755)
        env = {"PATH": bin_dir + ":/usr/bin:/bin", "HOSTNAME": "squall-pod-0", "POD_IP": "10.1.2.3"}
        for file, doc in docs:
            spec = doc.get("spec", {}).get("template", {}).get("spec")
            if not spec:
                continue
            for c in spec["containers"]:
                cmd = (c.get("command") or []) + (c.get("args") or [])
                if cmd[:2] != ["/bin/sh", "-c"]:
                    continue
                argv = subprocess.run(["sh", "-c", cmd[2]], env=env, capture_output=True).stdout
                argv = [a.decode() for a in argv.split(b"\0") if a]
                r = subprocess.run([squall, *argv, "--help"], capture_output=True, text=True)
                check(r.returncode == 0,
                      f"{file} {doc['metadata']['name']}/{c['name']}: `squall {' '.join(argv[:1])} ...` flags accepted {r.stderr.strip()[-300:]}".rstrip())
else:
    print("  skip  container flags: no squall binary built (set SQUALL=path)")

toml = next(d for _, d in docs if d["kind"] == "ConfigMap")["data"]["squall.toml"]
if squall:
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write(toml)
        f.flush()
        # Any subcommand loads the config first; an in-process ping is quick.
        r = subprocess.run([squall, "--config", f.name, "ping", "--count", "1", "--warmup", "0"],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"ConfigMap squall.toml loads in {squall} {r.stderr.strip()[-300:]}")
else:
    print("  skip  ConfigMap squall.toml: no squall binary built (set SQUALL=path)")

sys.exit(1 if failed else 0)
PY
echo "== deploy/k8s: all manifests valid"
