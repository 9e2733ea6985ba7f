"""Triggers: a function runs once per change of a key under a prefix.

On the session cluster (three storage nodes, two compute nodes): puts and
deletes fire their triggers with the event's key, value, kind and
timestamp. On a cluster of its own: 1,000 puts under a prefix run the
trigger's function for every one of them, none lost while a storage node
is stopped with SIGTERM in the middle of the puts.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

import squall
from conftest import POLICIES_OFF, own_cluster


def _remember(event):
    """Adds the event to the set named after its trigger: the key, the
    kind, the value and the timestamp, as text."""
    import squall
    from squall import user

    seen = f"trigger-seen/{event.trigger}"
    value = event.value if event.kind == "put" else None
    user.put(seen, squall.Set([f"{event.kind}|{event.key}|{value!r}|{tuple(event.timestamp)}"]))
    return event.key


def _remember_slowly(event):
    """`_remember`, taking 20 ms: changes pile up at the storage threads."""
    import time

    time.sleep(0.02)
    return _remember(event)


def _seen(client, trigger):
    return set(client.get(f"trigger-seen/{trigger}") or ())


def _wait_for(read, done, timeout):
    deadline = time.monotonic() + timeout
    while True:
        got = read()
        if done(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def _wait_registered(client, trigger, probe_key):
    """Writes `probe_key` until the trigger fires for it: schedulers pick a
    registration up within `trigger_refresh`."""
    deadline = time.monotonic() + 15
    n = 0
    while time.monotonic() < deadline:
        n += 1
        client.put(probe_key, n)
        time.sleep(0.3)
        if any(f"|{probe_key}|" in s for s in _seen(client, trigger)):
            return
    pytest.fail(f"trigger {trigger} never fired")


def test_puts_and_deletes_under_a_prefix_fire_their_triggers_with_the_event(compute, key):
    prefix = f"{key}/in/"
    f = compute.register(_remember, name="remember")
    on_put = compute.register_trigger(f, key_prefix=prefix, on="put", name=f"{key}-put")
    on_delete = compute.register_trigger("remember", key_prefix=prefix, on="delete", name=f"{key}-del")
    assert on_put == squall.Trigger(f"{key}-put", "remember", prefix, "put")
    assert {t.name for t in compute.list_triggers()} >= {on_put.name, on_delete.name}
    _wait_registered(compute, on_put.name, prefix + "probe")

    for i in range(20):
        compute.put(f"{prefix}k{i}", {"i": i})
    compute.put(f"{key}/out/k", 1)  # not under the prefix
    compute.delete(f"{prefix}k0")

    def puts():
        return {s for s in _seen(compute, on_put.name) if "|probe|" not in s and "probe" not in s}

    got = _wait_for(puts, lambda s: len(s) >= 20, 20)
    assert len(got) == 20, sorted(got)
    for i in range(20):
        [entry] = [s for s in got if s.startswith(f"put|{prefix}k{i}|")]
        _, _, value, stamp = entry.split("|")
        assert value == repr({"i": i})
        wall_ms, logical, writer = eval(stamp)
        assert abs(wall_ms / 1000 - time.time()) < 120 and writer != 0
    deleted = _wait_for(lambda: _seen(compute, on_delete.name), lambda s: len(s) >= 1, 20)
    assert [s.split("|")[:3] for s in deleted] == [["delete", f"{prefix}k0", "None"]]
    assert not any("/out/" in s for s in _seen(compute, on_put.name))

    compute.delete_trigger(on_put.name)
    compute.delete_trigger(on_delete.name)
    assert on_put.name not in {t.name for t in compute.list_triggers()}


def test_a_trigger_needs_a_registered_function_and_a_kind(compute):
    with pytest.raises(squall.UnknownFunctionError):
        compute.register_trigger("no-such-function", key_prefix="x/")
    with pytest.raises(ValueError):
        compute.register_trigger("remember", key_prefix="x/", on="change")


def test_the_status_and_metrics_show_a_triggers_runs_and_backlog(compute, cluster, key):
    prefix = f"{key}/"
    compute.register(_remember, name="remember")
    t = compute.register_trigger("remember", key_prefix=prefix, name=f"{key}-t")
    _wait_registered(compute, t.name, prefix + "probe")
    out = cluster.cli("status").stdout
    assert f"trigger  {t.name}" in out, out
    line = next(line for line in out.splitlines() if f"trigger  {t.name}" in line)
    assert "runs " in line and "backlog " in line, line
    # The monitor's /metrics has the trigger's runs (after its next look).
    import urllib.request

    [monitor] = cluster.record["monitors"]
    url = next(a for a in monitor["addresses"] if a.startswith("http")).rstrip("/")
    if not url.endswith("/metrics"):
        url += "/metrics"
    want = f'squall_trigger_runs_total{{trigger="{t.name}",function="remember"}}'
    deadline = time.monotonic() + 20
    runs = []
    # Until the run is counted: the trigger may be listed (0 runs) by a
    # scheduler's report taken before the probe's run.
    while time.monotonic() < deadline and not (runs and runs[0] >= 1):
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        runs = [float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(want)]
        time.sleep(0.5)
    assert runs and runs[0] >= 1, f"{want} not in /metrics"
    assert f'squall_trigger_backlog{{trigger="{t.name}"' in text
    compute.delete_trigger(t.name)


def test_a_thousand_puts_run_a_thousand_times_across_a_storage_nodes_sigterm():
    config = POLICIES_OFF
    up = ("--nodes", "3", "--threads", "1", "--compute-nodes", "2", "--executors", "2")
    with own_cluster("squall-triggers-", config, *up) as (c, client):
        client.register(_remember_slowly, name="remember")
        t = client.register_trigger("remember", key_prefix="orders/", name="orders")
        _wait_registered(client, t.name, "orders/probe")
        stopped = None
        acked = []
        for i in range(1000):
            if i == 300:
                stopped = c.record["nodes"][1]["pid"]
                os.kill(stopped, signal.SIGTERM)
            k = f"orders/{i:04d}"
            client.put(k, i)
            acked.append(k)

        def keys():
            return {s.split("|")[1] for s in _seen(client, t.name)} - {"orders/probe"}

        got = _wait_for(keys, lambda s: len(s) >= len(acked), 90)
        missing = sorted(set(acked) - got)
        assert not missing, f"{len(missing)} of {len(acked)} puts never ran the trigger: {missing[:10]}"
        assert len(got) == 1000
        # The schedulers counted at least one run per put (more where a
        # change was delivered twice), and nothing is left waiting.
        runs = backlog = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = next(
                (x for x in c.cli("status").stdout.splitlines() if "trigger  orders" in x), ""
            )
            fields = line.replace(",", " ").replace("(", " ").replace(")", " ").split()
            if "runs" in fields:
                runs = int(fields[fields.index("runs") + 1])
                backlog = int(fields[fields.index("backlog") + 1])
                if backlog == 0:
                    break
            time.sleep(0.5)
        print(f"1000 puts, {len(got)} keys seen by the trigger, {runs} runs, backlog {backlog}")
        assert runs is not None and runs >= 1000 and backlog == 0, line
        # The stopped node held changes not yet run when it was told to
        # stop, and delivered them before it left.
        said = [
            log.name
            for log in (c.state_dir / "logs").glob("node-*")
            if "leaving: delivering the trigger changes held here first" in log.read_text()
        ]
        assert said, c.logs()
