#!/usr/bin/env bash
# The README's main job: a local cluster of real processes (a router, three
# storage nodes, a scheduler, a cache and two Python executors), a round
# trip of several lattice types from the shell, the Python quickstart
# (functions, a Reference, a DAG, a class), what the cluster sees, a stop
# and a start that keeps every key, and a clean stop. Run by `make demo`.
set -euo pipefail
squall=${SQUALL:-target/release/squall}
python=${PYTHON_VENV:-.venv}/bin/python
state=${SQUALL_STATE_DIR:-.squall/demo}
export SQUALL_STATE_DIR=$state SQUALL_LOG=${SQUALL_LOG:-warn}

"$squall" down >/dev/null 2>&1 || true
# A fresh start: storage nodes keep their keys in $state/data across runs.
rm -rf "$state/data"
trap '"$squall" down >/dev/null 2>&1 || true' EXIT

echo "== squall up: 1 router, 3 storage nodes x 2 threads, 1 scheduler, 1 compute node x 2 executors =="
"$squall" up --nodes 3 --threads 2 --base-port 7700

echo
echo "== a round trip of several lattice types =="
set -x
"$squall" kv put greeting "hello from squall"
"$squall" kv get greeting
"$squall" kv put fruit apple banana -t set
"$squall" kv put fruit cherry -t set
"$squall" kv get fruit
"$squall" kv put visits 3 -t counter
"$squall" kv put visits -1 -t counter
"$squall" kv get visits
"$squall" kv put profile name=ada lang=rust -t map
"$squall" kv get profile
"$squall" kv del greeting
"$squall" kv get greeting || echo "(deleted, as expected)"
"$squall" kv put visits oops || echo "(refused: a counter is not last-writer-wins)"
set +x

echo
echo "== the Python quickstart (examples/quickstart.py) =="
"$python" examples/quickstart.py

# Caches and executors report to the scheduler every 500 ms.
sleep 1
echo
echo "== squall status =="
"$squall" status

echo
echo "== the messaging floor every request sits on =="
"$squall" ping --count 5000

echo
echo "== squall down, then up again: the storage nodes load their keys from $state/data =="
"$squall" down
"$squall" up --nodes 3 --threads 2 --base-port 7700 >/dev/null
set -x
"$squall" kv get fruit
"$squall" kv get visits
"$squall" kv put visits 1 -t counter --ack durable
"$squall" kv get visits
set +x

echo
echo "== squall down =="
"$squall" down
trap - EXIT
