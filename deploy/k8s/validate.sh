#!/usr/bin/env bash
# Validates every manifest of deploy/k8s offline, with no cluster:
#
#  1. the Kubernetes schemas of one fixed version, strictly (unknown fields
#     are errors), by kubernetes-validate (requirements-dev.txt);
#  2. the shell of every `sh -c` command, probe and hook parses (`sh -n`),
#     and a storage pod's command gives `--id` = ordinal + 1 and a
#     `--data-dir` on the volume of the StatefulSet's claim template, so a
#     restarted pod keeps its keys;
#  3. the ConfigMap's squall.toml is accepted by `squall --config`, and every
#     container's command line, as each pod of the workload runs it, is
#     accepted by the binary's argument parser, when a built squall binary is
#     found (SQUALL=path, else target/{debug,release});
#  4. least privilege: every pod non-root under the RuntimeDefault seccomp
#     profile, every container with a read-only root filesystem, no
#     privilege escalation, no capabilities, and CPU and memory limits;
#     every container reads the cluster's secret (SQUALL_KEY_FILE) from the
#     squall-keys Secret, mounted read-only, readable by the pod's group
#     (executors only the executors' key, caches and schedulers only the
#     members' key); a NetworkPolicy admits only
#     Squall's pods, labelled clients and labelled metrics scrapers to
#     every pod the workloads make;
#  5. routers and schedulers are StatefulSets of two or more behind headless
#     Services, kept by a PodDisruptionBudget that leaves one serving, and
#     every component names each router and each scheduler by its pod's DNS
#     name (`--router`, `--scheduler`, a router's `--peer`), exactly as many
#     as the replica counts; the monitor's Role may scale every workload.
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

# Least privilege: every pod runs as a non-root user under the runtime's
# default seccomp profile; every container has a read-only root
# filesystem, no privilege escalation, no capabilities, and CPU and memory
# limits.
for file, doc in docs:
    spec = doc.get("spec", {}).get("template", {}).get("spec")
    if not spec:
        continue
    pod = spec.get("securityContext", {})
    name = f"{file} {doc['metadata']['name']}"
    check(pod.get("runAsNonRoot") is True and pod.get("runAsUser", 0) != 0,
          f"{name} runs as a non-root user")
    check(pod.get("seccompProfile", {}).get("type") == "RuntimeDefault",
          f"{name} has the RuntimeDefault seccomp profile")
    for c in spec["containers"]:
        ctx = c.get("securityContext", {})
        limits = c.get("resources", {}).get("limits", {})
        check(ctx.get("readOnlyRootFilesystem") is True
              and ctx.get("allowPrivilegeEscalation") is False
              and ctx.get("capabilities", {}).get("drop") == ["ALL"],
              f"{name}/{c['name']}: read-only root filesystem, no escalation, no capabilities")
        check("cpu" in limits and "memory" in limits,
              f"{name}/{c['name']}: CPU and memory limits ({limits})")
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        key = env.get("SQUALL_KEY_FILE") or ""
        keys = [(m, volumes[n]["secret"]) for n, m in mounts.items()
                if volumes.get(n, {}).get("secret", {}).get("secretName") == "squall-keys"]
        check(len(keys) == 1 and keys[0][0].get("readOnly") is True
              and key.startswith(keys[0][0]["mountPath"] + "/"),
              f"{name}/{c['name']}: SQUALL_KEY_FILE ({key}) on the squall-keys Secret, read-only")
        # Each role sees the least key it needs: executors (user code) the
        # executors' key, caches and schedulers the members' key; routers,
        # the monitor and storage nodes (which derive their node key) the
        # secret.
        least = {"executor": "executor.key", "cache": "member.key", "scheduler": "member.key"}
        want = next((f for role, f in least.items() if c["name"].startswith(role)), None)
        if want and keys:
            items = [i["key"] for i in keys[0][1].get("items", [])]
            check(key.endswith("/" + want) and items == [want],
                  f"{name}/{c['name']}: only {want} of the Secret is mounted ({items})")
        check(pod.get("fsGroup") is not None,
              f"{name}: the key Secret's group (fsGroup) is the pod's")

policies = [d for _, d in docs if d["kind"] == "NetworkPolicy"]
check(len(policies) == 1 and policies[0]["spec"].get("policyTypes") == ["Ingress"],
      "one NetworkPolicy governs ingress")
if policies:
    selected = policies[0]["spec"]["podSelector"].get("matchLabels", {})
    for file, doc in docs:
        template = doc.get("spec", {}).get("template")
        if template:
            labels = template.get("metadata", {}).get("labels", {})
            check(all(labels.get(k) == v for k, v in selected.items()),
                  f"{file} {doc['metadata']['name']}: its pods are under the NetworkPolicy")
    sources = [p.get("podSelector", {}).get("matchLabels", {})
               for rule in policies[0]["spec"]["ingress"] for p in rule["from"]]
    check(sources == [selected, {"squall.dev/client": "true"}, {"squall.dev/metrics": "true"}],
          f"ingress only from Squall's pods, labelled clients and labelled scrapers ({sources})")

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
kvs = next(d for _, d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "squall-kvs")
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
    # Its keys live on the volume of its own claim.
    data_dir = out[out.index("--data-dir") + 1] if "--data-dir" in out else None
    container = kvs["spec"]["template"]["spec"]["containers"][0]
    claims = {t["metadata"]["name"] for t in kvs["spec"].get("volumeClaimTemplates", [])}
    mounted = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    check(data_dir is not None and mounted.get(data_dir) in claims,
          f"pod squall-kvs-3 keeps its keys (--data-dir {data_dir}) on a volume of a claim template "
          f"(mounts {mounted}, claims {sorted(claims)})")

squall = os.environ.get("SQUALL_BIN")

def pod_names(doc):
    """The hostnames of a workload's pods: every ordinal of a StatefulSet,
    a made-up one for a Deployment."""
    name = doc["metadata"]["name"]
    if doc["kind"] == "StatefulSet":
        return [f"{name}-{i}" for i in range(doc["spec"].get("replicas", 1))]
    return [f"{name}-5d4f7b9c6-x2x4q"]

# Every container's command, expanded by a stand-in `squall` as each pod
# would run it (HOSTNAME = the pod's name, POD_IP from the downward API).
commands = []   # (what, pod name, argv)
with tempfile.TemporaryDirectory() as bin_dir:
    stub = os.path.join(bin_dir, "squall")
    with open(stub, "w") as f:
        f.write('#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done\n')
    os.chmod(stub, 0o755)
    for file, doc in docs:
        spec = doc.get("spec", {}).get("template", {}).get("spec")
        if not spec:
            continue
        for c in spec["containers"]:
            cmd = (c.get("command") or []) + (c.get("args") or [])
            if cmd[:2] != ["/bin/sh", "-c"]:
                continue
            for pod in pod_names(doc):
                env = {"PATH": bin_dir + ":/usr/bin:/bin", "HOSTNAME": pod, "POD_IP": "10.1.2.3"}
                argv = subprocess.run(["sh", "-c", cmd[2]], env=env, capture_output=True).stdout
                argv = [a.decode() for a in argv.split(b"\0") if a]
                commands.append((f"{file} {pod}/{c['name']}", pod, argv))

# ... then parsed by the real binary (`--help` appended: clap refuses an
# unknown flag or a bad value before it prints help and exits 0).
if squall:
    for what, _, argv in commands:
        r = subprocess.run([squall, *argv, "--help"], capture_output=True, text=True)
        check(r.returncode == 0,
              f"{what}: `squall {' '.join(argv[:1])} ...` flags accepted {r.stderr.strip()[-300:]}".rstrip())
else:
    print("  skip  container flags: no squall binary built (set SQUALL=path)")

# Routers and schedulers: StatefulSets of at least two behind headless
# Services, so each pod has its own DNS name, and every component names
# every one of them, as many as the replica count.
def component(doc):
    return doc["metadata"].get("labels", {}).get("app.kubernetes.io/component")

def replicated(name):
    """The address of every pod of component `name`'s StatefulSet, by its
    stable DNS name, and the pod name -> address map."""
    sets = [d for _, d in docs if d["kind"] == "StatefulSet" and component(d) == name]
    check(len(sets) == 1 and not any(d["kind"] == "Deployment" and component(d) == name for _, d in docs),
          f"{name}s: one StatefulSet and no Deployment")
    sts = sets[0]
    ns, replicas = sts["metadata"]["namespace"], sts["spec"].get("replicas", 1)
    check(replicas >= 2, f"{name}s: {sts['metadata']['name']} runs {replicas} replicas (at least 2)")
    svc = next((d for _, d in docs if d["kind"] == "Service"
                and d["metadata"]["name"] == sts["spec"].get("serviceName")), None)
    check(svc is not None, f"{name}s: serviceName {sts['spec'].get('serviceName')} is a Service")
    if svc is None:
        return {}
    check(svc["spec"].get("clusterIP") == "None" and svc["spec"].get("publishNotReadyAddresses") is True,
          f"{name}s: Service {svc['metadata']['name']} is headless (clusterIP: None) and publishes not-ready addresses")
    check(svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"],
          f"{name}s: Service {svc['metadata']['name']} selects the StatefulSet's pods")
    port = svc["spec"]["ports"][0]
    container_ports = {p.get("name"): p["containerPort"]
                       for c in sts["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
    check(container_ports.get(port["targetPort"]) == port["port"],
          f"{name}s: Service port {port['port']} is the containers' port {port['targetPort']}")
    # A drain keeps one of them serving and may still take one away.
    pdb = [d for _, d in docs if d["kind"] == "PodDisruptionBudget"
           and d["spec"]["selector"].get("matchLabels") == sts["spec"]["selector"]["matchLabels"]]
    keeps = None
    if len(pdb) == 1:
        keeps = pdb[0]["spec"].get("minAvailable", replicas - pdb[0]["spec"].get("maxUnavailable", replicas))
    check(isinstance(keeps, int) and 1 <= keeps < replicas,
          f"{name}s: one PodDisruptionBudget keeping at least 1 of {replicas} and letting a drain take one (keeps {keeps})")
    host = f"{svc['metadata']['name']}.{ns}.svc.cluster.local"
    return {pod: f"tcp://{pod}.{host}:{port['port']}" for pod in pod_names(sts)}

routers = replicated("router")
schedulers = replicated("scheduler")
# Which of them each subcommand names, by flag.
wants = {
    "kvs": {"--router": routers},
    "route": {"--peer": routers},
    "scheduler": {"--router": routers},
    "cache": {"--router": routers, "--scheduler": schedulers},
    "executor": {"--scheduler": schedulers},
    "monitor": {"--router": routers, "--scheduler": schedulers},
    "gateway": {"--router": routers, "--scheduler": schedulers},
}
for what, pod, argv in commands:
    sub = argv[0] if argv else ""
    if sub not in wants:
        check(False, f"{what}: `squall {sub}` is not known to validate.sh (add it to `wants`)")
        continue
    for flag in ("--router", "--scheduler", "--peer"):
        given = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]
        given += [a.split("=", 1)[1] for a in argv if a.startswith(flag + "=")]
        expected = wants[sub].get(flag, {})
        if not expected and not given:
            continue
        # A router may leave itself out of its peers (merging its own state
        # changes nothing either way).
        own = {expected[pod]} if flag == "--peer" and pod in expected else set()
        ok = len(given) == len(set(given)) and set(given) | own == set(expected.values())
        them = "routers" if expected is routers else "schedulers"
        names = (f"every one of the {len(expected)} {them}" if not own or own <= set(given)
                 else f"every other of the {len(expected)} {them}")
        check(ok, f"{what}: {flag} names {names}" + ("" if ok else f" (gives {given})"))

# The monitor's Role may scale every workload it could be told to scale,
# through the /scale subresource of the workload's own resource.
role = next(d for _, d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "squall-monitor")
for _, doc in docs:
    if doc["kind"] not in ("StatefulSet", "Deployment") or component(doc) == "monitor":
        continue
    resource = doc["kind"].lower() + "s/scale"
    name = doc["metadata"]["name"]
    check(any(resource in r.get("resources", []) and name in r.get("resourceNames", [])
              and {"get", "patch", "update"} <= set(r.get("verbs", [])) for r in role["rules"]),
          f"Role squall-monitor may get and patch {resource} of {name}")

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
