"""A short run of the fault campaign (benches/faults.py; `make test-faults`
runs it for 10 minutes).

The script starts a cluster of its own (two routers, three storage nodes,
two schedulers, two compute nodes, the monitor repairing), puts and calls
under load for ~40 s while processes are killed, stalled and stopped with
SIGTERM, then reads back every acknowledged write. With a fixed seed the
choices of faults are the same every run (their timing is not); what is
asserted holds whatever the timing: no acknowledged write lost, no call
left without an answer or given a wrong result, every fault healed.
Failed calls with a clear error are the script's report, not a failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, squall_bin

SCRIPT = ROOT / "benches" / "faults.py"


def test_help_explains_every_option():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in ("--minutes", "--seed", "--nodes", "--compute-nodes", "--routers",
                   "--schedulers", "--ack", "--fault-every", "--binary", "--keep"):
        assert option in out, option


def test_a_short_fault_campaign_loses_no_acknowledged_write_and_answers_every_call(tmp_path):
    summary = tmp_path / "summary.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--minutes", "0.7", "--seed", "13", "--ack", "2",
         "--fault-every", "2.5", "--binary", str(squall_bin()), "--json", str(summary)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    report = f"exit {run.returncode}\n{run.stdout}\n{run.stderr[-4000:]}"
    assert summary.exists(), report
    r = json.loads(summary.read_text())
    # It did what it says: faults happened under load, writes were acknowledged.
    assert r["faults"] >= 3, report
    assert r["writes_acked"] > 100, report
    assert r["calls_ok"] > 50, report
    # The goals.
    assert r["writes_lost"] == 0, report
    assert r["calls_no_answer"] == 0, report
    assert r["calls_wrong"] == 0, report
    assert r["unrecovered"] == [], report
    assert r["not_whole_at_end"] == [], report
    assert r["panics"] == [], report
    assert run.returncode == 0, report
