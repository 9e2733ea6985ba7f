"""Client keys and rights against a cluster of real processes: each client
seals its frames with its own key, and what its key has no right to do is
a PermissionError naming the right, while its other operations go on."""

import os
import pwd
import secrets
import tempfile
from pathlib import Path

import pytest

import squall
from conftest import own_cluster

CONFIG = """\
[monitor.storage]
enabled = false

[monitor.compute]
enabled = false

[security.clients]
admin = ["read", "write", "register", "call"]
reader = ["read"]
caller = ["read", "call"]
"""


def double(x):
    return 2 * x


@pytest.fixture(scope="module")
def secured():
    with own_cluster(
        "squall-security-", CONFIG, "--nodes", "2", "--threads", "1", "--compute-nodes", "1"
    ) as (cluster, admin):
        admin.register(double)
        admin.put("shared", "from admin", ack="all")
        yield cluster, admin


def keyed(cluster, name: str, **kw):
    key = cluster.state_dir / "keys" / f"client-{name}.key"
    return squall.connect(str(cluster.state_dir), key_file=str(key), timeout=5.0, **kw)


def test_up_writes_a_key_per_client_readable_by_its_owner_only(secured):
    cluster, _ = secured
    keys = cluster.state_dir / "keys"
    names = sorted(p.name for p in keys.iterdir())
    assert names == [
        "client-admin.key",
        "client-caller.key",
        "client-reader.key",
        "client.key",
        "cluster.key",
        "executor.key",
        "member.key",
        "node-1.key",
        "node-2.key",
    ]
    for p in keys.iterdir():
        assert p.stat().st_mode & 0o077 == 0, p
    # client.key is the default client's: admin's.
    assert (keys / "client.key").read_text() == (keys / "client-admin.key").read_text()


def test_a_read_only_client_reads_and_every_other_right_is_refused_by_name(secured):
    cluster, _ = secured
    reader = keyed(cluster, "reader")
    assert reader.get("shared") == "from admin"
    with pytest.raises(PermissionError, match="`write`") as refused:
        reader.put("shared", "from reader")
    assert isinstance(refused.value, squall.AccessDeniedError)
    with pytest.raises(PermissionError, match="`register`"):
        reader.register(double, name="reader_double")
    with pytest.raises(PermissionError, match="`call`") as refused:
        reader.call("double", 4)
    assert isinstance(refused.value, squall.CallAccessDeniedError)
    # Nothing was written, and the client still works.
    assert reader.get("shared") == "from admin"
    assert reader.get("__squall/functions/reader_double") is None
    reader.close()


def test_a_caller_calls_but_cannot_write(secured):
    cluster, _ = secured
    caller = keyed(cluster, "caller")
    assert caller.call("double", 21) == 42
    with pytest.raises(PermissionError, match="`write`"):
        caller.put("k", 1)
    caller.close()


def test_an_encrypting_client_works_as_any_other(secured):
    cluster, admin = secured
    c = keyed(cluster, "admin", encrypt=True)
    # Read by another client: acknowledged by both replicas first (with the
    # first replica's ack, the other client's read may reach the replica
    # the write has not reached yet).
    c.put("encrypted", {"a": 1}, ack="all")
    assert admin.get("encrypted") == {"a": 1}
    assert c.call("double", 5) == 10
    c.close()


def test_a_key_of_another_cluster_or_none_gets_no_answer_and_a_clear_error(secured):
    cluster, _ = secured
    with tempfile.TemporaryDirectory() as other:
        key = Path(other) / "client.key"
        # A well-formed key of another cluster.
        key.write_text(
            f"squall-client-key-v1 admin {secrets.token_hex(32)} {secrets.token_hex(32)}\n"
        )
        stranger = squall.connect(str(cluster.state_dir), key_file=str(key), timeout=1.0)
        with pytest.raises(squall.KvsTimeoutError):
            stranger.get("shared")
        stranger.close()
        key.write_text("not a key\n")
        with pytest.raises(squall.SquallError, match="not a Squall key file"):
            squall.connect(str(cluster.state_dir), key_file=str(key))
        # No key where one is looked for.
        router = cluster.record["routers"][0]["addresses"][0]
        saved = {k: os.environ.pop(k, None) for k in ("SQUALL_KEY_FILE", "SQUALL_STATE_DIR")}
        os.environ["SQUALL_STATE_DIR"] = other
        try:
            with pytest.raises(squall.SquallError, match="no client key"):
                squall.connect(router)
        finally:
            os.environ.pop("SQUALL_STATE_DIR")
            os.environ.update({k: v for k, v in saved.items() if v is not None})
    # The cluster counted what it dropped.
    status = cluster.cli("status").stdout
    counts = [int(line.split("unauthenticated ")[1].split()[0])
              for line in status.splitlines() if "unauthenticated " in line]
    assert sum(counts) >= 1, status


def whoami():
    import os

    return os.geteuid()


def read_file(path):
    with open(path) as f:
        return f.read()


def test_user_functions_do_not_run_as_root(secured):
    cluster, admin = secured
    admin.register(whoami)
    admin.register(read_file)
    euid = admin.call("whoami")
    if os.geteuid() != 0:
        assert euid == os.geteuid()
        return
    # Started as root (as `make test` is here), the executors became
    # `nobody`: the cluster's secret and every key on disk are out of a
    # function's reach.
    logs = "".join(p.read_text() for p in (cluster.state_dir / "logs").glob("executor-*"))
    assert euid == pwd.getpwnam("nobody").pw_uid, logs[-2000:]
    assert "user functions run as nobody" in logs, logs[-2000:]
    for key in ("cluster.key", "member.key", "executor.key"):
        with pytest.raises(squall.RemoteError, match="PermissionError"):
            admin.call("read_file", str(cluster.state_dir / "keys" / key))


def test_an_executor_that_could_not_reach_its_cache_as_nobody_stays_root_and_says_why():
    # A state directory only root may enter (mkdtemp's 0700): `nobody`
    # could not reach the cache's socket in it.
    with own_cluster(
        "squall-private-", CONFIG, "--nodes", "1", "--threads", "1", "--compute-nodes", "1",
        "--executors", "1", private=True,
    ) as (cluster, admin):
        admin.register(whoami)
        assert admin.call("whoami") == (0 if os.geteuid() == 0 else os.geteuid())
        if os.geteuid() == 0:
            logs = "".join(p.read_text() for p in (cluster.state_dir / "logs").glob("executor-*"))
            assert "user functions run as root: nobody cannot read" in logs, logs[-2000:]
            assert str(cluster.state_dir) in logs


def test_a_cluster_started_insecure_takes_open_frames_and_its_tools_follow_its_record():
    with own_cluster(
        "squall-insecure-", CONFIG, "--nodes", "1", "--threads", "1", "--compute-nodes", "1",
        "--executors", "1", "--insecure",
    ) as (cluster, client):
        assert not (cluster.state_dir / "keys").exists()
        assert cluster.record["launch"]["insecure"] is True
        client.put("open", [1, 2])
        client.register(double)
        assert client.call("double", client.get("open")) == [1, 2, 1, 2]
        # `squall kv` and `status` read the record: no flag needed.
        assert cluster.cli("kv", "get", "missing", check=False).returncode == 1
        assert "frames dropped: malformed 0 unauthenticated 0" in cluster.cli("status").stdout


def test_a_cluster_that_encrypts_serves_plain_and_encrypting_clients():
    with own_cluster(
        "squall-encrypted-", CONFIG + "\n[security]\nencrypt = true\n", "--nodes", "2",
        "--threads", "1", "--compute-nodes", "1", "--executors", "1",
    ) as (cluster, client):
        client.put("sealed", {"x": 1}, ack="all")
        client.register(double)
        assert client.call("double", 21) == 42
        encrypting = keyed(cluster, "admin", encrypt=True)
        assert encrypting.get("sealed") == {"x": 1}
        assert encrypting.call("double", 2) == 4
        encrypting.close()
        assert "unauthenticated 0" in cluster.cli("status").stdout
