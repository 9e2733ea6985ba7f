"""Named stateful instances: every call of one instance goes to the one
executor holding it, one at a time; its state lives in the KVS, so a new
executor process carries on where a killed one stopped."""

from __future__ import annotations

import os
import signal
import time

import pytest

import squall
from conftest import own_cluster, running


class Account:
    def __init__(self, owner, limit=100):
        self.owner = owner
        self.limit = limit
        self.balance = 0

    def deposit(self, amount):
        if self.balance + amount > self.limit:
            raise ValueError(f"{self.owner} would be over {self.limit}")
        self.balance += amount
        return self.balance

    def where(self):
        return os.getpid()

    def _secret(self):
        return "no"


class Tally:
    def __init__(self):
        self.seen = []

    def add(self, x):
        self.seen.append(x)
        time.sleep(0.01)
        return len(self.seen)


@pytest.fixture(scope="module")
def accounts(compute, client):
    return client.register(Account, name="inst_account")


def test_an_instance_keeps_its_state_between_calls(client, accounts):
    alice = accounts.instance("alice", init_args=("alice",), init_kwargs={"limit": 50})
    bob = client.instance("inst_account", "bob", init_args=("bob",))
    assert alice.deposit(10) == 10
    assert alice.deposit(5) == 15
    assert bob.deposit(7) == 7
    assert alice.call_async("deposit", 1).result(timeout=20) == 16
    assert alice.state() == {"owner": "alice", "limit": 50, "balance": 16}
    assert alice.key.startswith("__squall/instance/inst_account/")
    # The method's errors come to the caller, and leave the state as it was.
    with pytest.raises(squall.RemoteError, match="over 50"):
        alice.deposit(1000)
    assert alice.deposit(0) == 16
    # Private and missing methods are refused.
    with pytest.raises(AttributeError):
        alice._secret()
    with pytest.raises(squall.BadArgumentsError, match="no public method"):
        alice.call("withdraw", 1)
    alice.delete()
    assert alice.deposit(3) == 3


def test_a_class_whose_init_takes_arguments_is_refused_a_plain_call(client, accounts):
    with pytest.raises(squall.RemoteError) as info:
        accounts(1)
    assert info.value.type_name == "TypeError" and "owner" in str(info.value)


def test_calls_of_one_instance_run_on_one_executor_one_at_a_time(client, compute):
    tally = client.register(Tally, name="inst_tally").instance("one")
    futures = [tally.call_async("add", i) for i in range(40)]
    counts = squall.gather(futures, timeout=60)
    # One at a time: each call saw every earlier one, none the same count.
    assert sorted(counts) == list(range(1, 41))
    assert len(tally.state()["seen"]) == 40
    pids = {client.instance("inst_account", "pid-probe", ("p",)).where() for _ in range(10)}
    assert len(pids) == 1


def test_an_instance_outlives_its_executor_process():
    config = "[monitor.storage]\nenabled = false\n\n[monitor.compute]\nenabled = false\n"
    up = ("--nodes", "2", "--threads", "1", "--compute-nodes", "1", "--executors", "2")
    with own_cluster("squall-instances-", config, *up) as (_, client):
        h = client.register(Account, name="account")
        carol = h.instance("carol", init_args=("carol",))
        assert carol.deposit(20) == 20
        pid = carol.where()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        # The next call is served by a new process (the supervisor's
        # restart, or the other executor), from the state in the KVS.
        assert carol.deposit(1, timeout=30) == 21
        assert carol.where() != pid
        assert carol.state()["balance"] == 21
