#!/usr/bin/env python3
"""The function of the compute autoscaling benchmark (`squall-bench autoscale
--tier compute`): registers it with the `squall` Python client, checks one
call, and prints what the benchmark sends with each call.

    .venv/bin/python benches/functions/autoscale.py --state-dir DIR [--sleep-ms 30]

`autoscale_sleep(ms)` sleeps `ms` milliseconds and returns `ms`: one
executor (one call at a time) completes at most about 1000 / ms calls a
second, so a stream of calls faster than that outgrows one compute node.

Prints one JSON line: the function's name, the cloudpickled `((ms,), {})`
payload the benchmark puts in every `CallRequest` (hex), and the first
call's latency. The benchmark drives the calls itself (in Rust, open loop),
so that its timing does not share the GIL with the load.
"""

from __future__ import annotations

import argparse
import json
import time

import cloudpickle
import squall

NAME = "autoscale_sleep"


def autoscale_sleep(ms):
    time.sleep(ms / 1000.0)
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state-dir", required=True, help="the cluster's state directory")
    ap.add_argument("--sleep-ms", type=int, default=30, help="how long each call sleeps")
    args = ap.parse_args()

    client = squall.connect(args.state_dir)
    client.register(autoscale_sleep, name=NAME)
    t0 = time.perf_counter()
    got = client.call(NAME, args.sleep_ms, timeout=30)
    first_ms = (time.perf_counter() - t0) * 1e3
    if got != args.sleep_ms:
        raise SystemExit(f"{NAME}({args.sleep_ms}) returned {got!r}")
    # The client's own encoding of call arguments (squall.client._pickle_args).
    payload = cloudpickle.dumps(((args.sleep_ms,), {}))
    print(json.dumps({"function": NAME, "payload_hex": payload.hex(), "first_call_ms": first_ms}))


if __name__ == "__main__":
    main()
