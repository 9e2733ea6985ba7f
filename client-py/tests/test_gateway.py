"""The HTTP gateway, driven by a plain HTTP client (urllib): functions and
DAGs called with JSON, references, keys, errors as statuses, keys checked
(no key, a wrong key, a missing right), /openapi.json. The functions are
registered by a fixture with the Python client (the gateway has no way to
register code); every request under test is plain HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from conftest import own_cluster


def square(x):
    return x * x


def greet(name, greeting="hello"):
    return f"{greeting}, {name}"


def total(values, scale=1):
    return sum(values) * scale


def divide(a, b):
    return a / b


def opaque():
    return object()


def increment(x):
    return x + 1


@pytest.fixture(scope="module")
def gateway(cluster, compute):
    client = compute
    for fn in (square, greet, total, divide, opaque, increment):
        client.register(fn, name=f"gw_{fn.__name__}")
    client.register_dag("gw_dag", ["gw_square", "gw_increment"], [("gw_square", "gw_increment")])
    client.register(lambda x: x, name="gw_versioned")
    client.register(lambda x: -x, name="gw_versioned")
    [g] = cluster.record["gateways"]
    url = g["addresses"][0]
    key_file = (cluster.state_dir / "keys" / "client.key").read_text().split()
    return url, f"{key_file[1]}:{key_file[2]}"


def request(method, url, body=None, token=None, accept=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if accept:
        req.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if r.headers["Content-Type"] == "application/json" else raw)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_function_is_called_with_json_and_answers_json(gateway):
    url, token = gateway
    assert request("POST", f"{url}/functions/gw_square", {"args": [7]}, token) == (200, {"result": 49})
    status, body = request("POST", f"{url}/functions/gw_greet", {"args": ["ada"], "kwargs": {"greeting": "hi"}}, token)
    assert (status, body) == (200, {"result": "hi, ada"})


def test_a_version_is_called_by_number(gateway):
    url, token = gateway
    assert request("POST", f"{url}/functions/gw_versioned", {"args": [5]}, token) == (200, {"result": -5})
    body = {"args": [5], "version": 1}
    assert request("POST", f"{url}/functions/gw_versioned", body, token) == (200, {"result": 5})
    assert request("POST", f"{url}/functions/gw_versioned", {"args": [5], "version": 0}, token)[0] == 400


def test_keys_are_put_and_got_and_references_resolve_on_the_executor(gateway):
    url, token = gateway
    assert request("PUT", f"{url}/keys/gw%2Fnumbers", {"value": [1, 2, 3.5]}, token)[0] == 200
    assert request("GET", f"{url}/keys/gw%2Fnumbers", None, token) == (200, {"value": [1, 2, 3.5]})
    status, body = request(
        "POST", f"{url}/functions/gw_total", {"args": [{"$ref": "gw/numbers"}], "kwargs": {"scale": 2}}, token
    )
    assert (status, body) == (200, {"result": 13.0})
    assert request("GET", f"{url}/keys/gw%2Fnothing", None, token)[0] == 404


def test_a_dag_is_called_with_each_functions_arguments(gateway):
    url, token = gateway
    status, body = request("POST", f"{url}/dags/gw_dag", {"args": {"gw_square": [5]}}, token)
    assert (status, body) == (200, {"result": 26})


def test_errors_are_statuses_with_the_remote_error_in_the_body(gateway):
    url, token = gateway
    status, body = request("POST", f"{url}/functions/gw_divide", {"args": [1, 0]}, token)
    assert status == 500
    assert body["error"]["kind"] == "Remote" and body["error"]["type"] == "ZeroDivisionError"
    assert "in divide" in body["error"]["traceback"]
    assert request("POST", f"{url}/functions/gw_nobody", {"args": []}, token)[0] == 404
    assert request("POST", f"{url}/dags/gw_nodag", {}, token)[0] == 404
    assert request("POST", f"{url}/functions/gw_square", {"args": "7"}, token)[0] == 400
    status, body = request("POST", f"{url}/functions/gw_opaque", {}, token)
    assert status == 406 and "application/x-python-pickle" in body["error"]["message"]
    status, raw = request("POST", f"{url}/functions/gw_square", {"args": [3]}, token, accept="application/x-python-pickle")
    assert status == 200 and raw[:1] == b"\x80"


def test_callers_need_a_clients_key_and_its_rights(gateway, cluster):
    url, token = gateway
    assert request("POST", f"{url}/functions/gw_square", {"args": [2]})[0] == 401
    name, key = token.split(":")
    wrong = f"{name}:{'0' * 64}"
    status, body = request("POST", f"{url}/functions/gw_square", {"args": [2]}, wrong)
    assert status == 401 and "not client" in body["error"]["message"]


def test_a_read_only_client_may_get_and_not_call():
    config = (
        "[monitor.storage]\nenabled = false\n\n[monitor.compute]\nenabled = false\n\n"
        "[security.clients]\nadmin = [\"read\", \"write\", \"register\", \"call\"]\nreader = [\"read\"]\n"
    )
    up = ("--nodes", "1", "--threads", "1", "--compute-nodes", "1", "--executors", "1")
    with own_cluster("squall-gateway-", config, *up) as (cluster, client):
        client.register(square, name="gw_square")
        [g] = cluster.record["gateways"]
        url = g["addresses"][0]
        fields = (cluster.state_dir / "keys" / "client-reader.key").read_text().split()
        reader = f"{fields[1]}:{fields[2]}"
        client.put("shared", "visible")
        assert request("GET", f"{url}/keys/shared", None, reader) == (200, {"value": "visible"})
        status, body = request("POST", f"{url}/functions/gw_square", {"args": [2]}, reader)
        assert status == 403 and "`call`" in body["error"]["message"]
        assert request("PUT", f"{url}/keys/shared", {"value": 1}, reader)[0] == 403


def test_bad_requests_are_refused_with_a_clear_400(gateway):
    import socket
    from urllib.parse import urlparse

    url, token = gateway
    req = urllib.request.Request(f"{url}/functions/gw_square", data=b"{not json", method="POST")
    req.add_header("Authorization", f"Bearer {token}")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 400 and "not JSON" in json.loads(info.value.read())["error"]["message"]
    target = urlparse(url)

    def raw(data):
        with socket.create_connection((target.hostname, target.port), timeout=10) as s:
            s.sendall(data)
            answer = b""
            while chunk := s.recv(65536):  # until the gateway closes it
                answer += chunk
            return answer.decode(errors="replace")

    # A declared body over the limit is refused before it is read.
    huge = raw(b"POST /functions/gw_square HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n")
    assert huge.startswith("HTTP/1.1 400") and "is over" in huge
    assert raw(b"\x00\x01garbage\r\n\r\n").startswith("HTTP/1.1 400")
    # The gateway serves on.
    assert request("POST", f"{url}/functions/gw_square", {"args": [3]}, token) == (200, {"result": 9})


def test_openapi_describes_the_endpoints(gateway):
    url, _ = gateway
    status, spec = request("GET", f"{url}/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    assert {"/functions/{name}", "/dags/{name}", "/keys/{key}"} <= set(spec["paths"])
