"""Every public method of the blocking `CloveClient`, against a real kernel."""

from __future__ import annotations

import json
import os
import re
import threading
import time

import pytest

import clove_sdk
from clove_sdk import CloveClient, Message, SyscallOp, _native, connect, errors, resolve_socket
from clove_sdk.errors import (
    CloveError,
    InvalidRequestError,
    KernelUnreachableError,
    NotFoundError,
)

from conftest import SLEEPER

#: The opcodes this kernel implements today (HELLO's features.opcodes lists them).
IMPLEMENTED = {"NOOP", "SPAWN", "KILL", "LIST", "PAUSE", "RESUME", "WAIT", "LOGS", "HELLO", "EXIT",
               "GET_AUDIT_LOG", "SET_AUDIT_CONFIG", "METRICS_SYSTEM", "METRICS_AGENT",
               "METRICS_ALL_AGENTS", "METRICS_CGROUP"}


# ---- hello, echo, noop -----------------------------------------------------------------------

def test_hello_reply_shape(client):
    r = client.hello()
    assert list(r) == ["success", "protocol_version", "kernel_version", "features"]
    assert r["success"] is True
    assert r["protocol_version"] == 1
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", r["kernel_version"]), r["kernel_version"]
    f = r["features"]
    assert "json" in f["codecs"]
    assert IMPLEMENTED <= set(f["opcodes"])
    # Every opcode it lists is a real opcode name.
    assert set(f["opcodes"]) <= {op.name[4:] for op in SyscallOp}
    assert f["agents"] is True
    for flag in ("sandbox", "llm", "ipc", "state", "events", "supervision", "audit", "metrics"):
        assert isinstance(f[flag], bool), flag


def test_echo_and_noop(client):
    assert client.echo("hello clove") == "hello clove"
    assert client.echo("héllo ✓") == "héllo ✓"
    assert client.echo(b"raw\x01bytes") == "raw\x01bytes"
    assert client.echo("") == ""
    assert client.noop() is True
    # NOOP echoes exactly, even bytes that are not JSON.
    m = client.call(SyscallOp.SYS_NOOP, b"\xff\x00not json")
    assert m.payload == b"\xff\x00not json"


def test_version_attribute():
    assert isinstance(clove_sdk.__version__, str) and clove_sdk.__version__
    assert clove_sdk.AgentOSClient is CloveClient


# ---- connection management -------------------------------------------------------------------

def test_connect_disconnect_reconnect(kernel):
    c = CloveClient(kernel.socket)
    assert c.socket_path == kernel.socket
    assert c.connected is False  # the constructor does not connect
    assert c.agent_id is None
    assert c.connect() is True
    assert c.connected is True
    assert c.connect() is True  # idempotent
    assert c.hello()["success"] is True
    first = c.agent_id
    c.disconnect()
    assert c.connected is False
    c.disconnect()  # idempotent
    # A call on a disconnected client connects again: a new connection, a new id.
    assert c.hello()["success"] is True
    assert c.connected is True
    assert c.agent_id != first
    c.disconnect()


def test_first_call_connects(kernel):
    c = CloveClient(kernel.socket)
    assert c.echo("x") == "x"
    assert c.connected is True
    c.disconnect()


def test_context_manager(kernel):
    with CloveClient(kernel.socket) as c:
        assert c.connected is True
        assert c.hello()["protocol_version"] == 1
    assert c.connected is False


def test_connect_function(kernel):
    c = connect(kernel.socket, timeout=5)
    try:
        assert isinstance(c, CloveClient)
        assert c.connected is True
        assert c.timeout == 5
    finally:
        c.disconnect()
    bad = connect(os.path.join(kernel.dir, "absent.sock"))
    assert bad.connected is False
    assert bad.last_error


def test_exit(kernel):
    c = CloveClient(kernel.socket)
    assert c.hello()["success"] is True
    assert c.exit() is True
    assert c.connected is False
    assert c.exit() is False  # no session left to end
    # The client can be used again afterwards (a new connection).
    assert c.echo("again") == "again"
    c.disconnect()


def test_exit_low_level_reply(kernel):
    c = CloveClient(kernel.socket)
    m = c.call(SyscallOp.SYS_EXIT, b"")
    assert m.opcode == 0xFF and m.payload == b"goodbye" and m.payload_str == "goodbye"
    c.disconnect()


def test_agent_id_is_header_id(kernel):
    a = CloveClient(kernel.socket)
    b = CloveClient(kernel.socket)
    try:
        assert a.agent_id is None
        a.hello()
        m = a.call(SyscallOp.SYS_NOOP, b"")
        assert isinstance(a.agent_id, int) and a.agent_id > 0
        assert m.agent_id == a.agent_id
        b.hello()
        assert b.agent_id != a.agent_id  # every connection has an id of its own
        assert "agent_id=" in repr(a) and kernel.socket in repr(a)
    finally:
        a.disconnect()
        b.disconnect()


# ---- low level: send, recv, call -------------------------------------------------------------

def test_call_returns_message(client):
    m = client.call(SyscallOp.SYS_NOOP, "ping")
    assert isinstance(m, Message)
    assert m.opcode == 0 and m.op is SyscallOp.SYS_NOOP
    assert m.payload == b"ping" and m.payload_str == "ping"
    assert m.agent_id == client.agent_id

    h = client.call(SyscallOp.SYS_HELLO, {})
    assert h.opcode == 0xFE and h.op is SyscallOp.SYS_HELLO
    assert h.payload_json()["protocol_version"] == 1
    assert json.loads(h.payload_str) == h.payload_json()

    # LIST with an empty payload, as the original SDK sent it: a JSON array.
    lst = client.call(SyscallOp.SYS_LIST, b"")
    assert lst.opcode == 0x12 and isinstance(lst.payload_json(), list)


def test_call_unknown_and_unsupported_opcodes(client):
    m = client.call(0x13, b"{}")
    assert m.opcode == 0x13 and m.op == 0x13 and not isinstance(m.op, SyscallOp)
    assert m.payload_json() == {"success": False, "error": "unknown opcode 0x13", "code": "unknown_opcode"}
    for op in (SyscallOp.SYS_WORLD_CREATE, SyscallOp.SYS_TUNNEL_CONNECT):
        r = client.call(op, b"{}").payload_json()
        assert r["success"] is False and r["code"] == "not_supported"
        assert r["error"].startswith(f"{op.name[4:]} (0x{int(op):02X})")
        assert set(r) == {"success", "error", "code"}


def test_pipelined_send_recv_in_order(client):
    assert client.send(SyscallOp.SYS_NOOP, b"first") is True
    assert client.send(SyscallOp.SYS_HELLO, {}) is True
    assert client.send(SyscallOp.SYS_NOOP, "second") is True
    assert client.send(SyscallOp.SYS_LIST, b"") is True
    assert client.send(0x13, {"key": "k", "value": 1}) is True
    assert client.send(SyscallOp.SYS_NOOP, b"third") is True
    got = [client.recv() for _ in range(6)]
    assert [m.opcode for m in got] == [0x00, 0xFE, 0x00, 0x12, 0x13, 0x00]
    assert got[0].payload == b"first"
    assert got[1].payload_json()["protocol_version"] == 1
    assert got[2].payload == b"second"
    assert isinstance(got[3].payload_json(), list)
    assert got[4].payload_json()["code"] == "unknown_opcode"
    assert got[5].payload == b"third"
    assert {m.agent_id for m in got} == {client.agent_id}
    # The connection is still in step afterwards.
    assert client.echo("after") == "after"


def test_recv_without_pending_request(client):
    client.hello()
    with pytest.raises(ValueError):
        client.recv()


# ---- SPAWN -----------------------------------------------------------------------------------

def test_spawn_reply_shape(client, agents):
    name = agents.name("spawn")
    r = agents.track(client.spawn(name, agents.script(SLEEPER)))
    assert {"id", "name", "pid", "status", "restart_policy", "isolation"} <= set(r)
    assert "success" not in r  # as the original: callers test "id"
    assert isinstance(r["id"], int) and r["id"] > 0
    assert r["name"] == name
    assert r["status"] == "running"
    assert r["restart_policy"] == "never"
    assert isinstance(r["pid"], int) and os.path.exists(f"/proc/{r['pid']}")
    iso = r["isolation"]
    assert iso["namespaces"] == {"pid": True, "net": True, "mnt": True, "uts": True}
    cg = iso["cgroups"]
    for key in ("available", "memory_limit", "cpu_quota", "pids_limit"):
        assert isinstance(cg[key], bool), key
    if iso["fully_isolated"]:
        assert "degraded_reason" not in iso
    else:
        assert iso["degraded_reason"], iso
    assert agents.wait_output(r["id"], "up\n") == "up\n"


def test_spawn_unsandboxed_reports_degraded_isolation(client, agents):
    r = agents.spawn(sandboxed=False, via=client)
    iso = r["isolation"]
    assert iso["fully_isolated"] is False
    assert iso["namespaces"]["pid"] is False and iso["namespaces"]["mnt"] is False
    assert "pid_namespace" in iso["degraded_reason"]


def test_spawn_as_non_root_runs_without_sandbox(kernel, client, tmp_path):
    """Not root: SPAWN of a sandboxed agent still starts it, but says exactly why it is not
    isolated (the tests that need a sandbox are skipped then)."""
    if os.geteuid() == 0:
        pytest.skip("checks the kernel's answer when it does not run as root; this run is root")
    script = tmp_path / "a.py"
    script.write_text("print('unsandboxed', flush=True)\n")
    r = client.spawn(f"nonroot-{os.getpid()}", str(script))
    try:
        assert "id" in r, r
        iso = r["isolation"]
        assert iso["fully_isolated"] is False
        assert iso["namespaces"] == {"pid": False, "net": False, "mnt": False, "uts": False}
        assert "not running as root" in iso["degraded_reason"]
        assert client.wait(agent_id=r["id"], timeout=20)["exit_code"] == 0
        assert client.logs(agent_id=r["id"])["text"] == "unsandboxed\n"
    finally:
        if "id" in r:
            client.kill(agent_id=r["id"])


def test_spawn_with_options(client, agents):
    r = agents.spawn(
        via=client,
        limits={"memory": "64M", "max_pids": 16},
        restart_policy="on-failure",
        max_restarts=2,
        restart_window=60,
        grace_ms=500,
    )
    assert r["status"] == "running"
    assert r["restart_policy"] in ("on-failure", "on_failure")


@pytest.mark.parametrize(
    "kwargs, field, code",
    [
        ({"limits": {"memory": "lots"}}, "limits.memory", "invalid_request"),
        ({"limits": {"cpu": "x"}}, "limits.cpu", "invalid_request"),
        ({"restart_policy": "bogus"}, "restart_policy", "invalid_request"),
        ({"name": ""}, "name", "invalid_request"),
        ({"script": "/nonexistent/agent.py"}, "script", "invalid_request"),
    ],
)
def test_spawn_validation_errors_name_the_field(kernel, client, agents, kwargs, field, code):
    args = {"name": agents.name("bad"), "script": agents.script(SLEEPER), **kwargs}
    r = agents.track(client.spawn(**args))
    assert r["success"] is False and r["code"] == code
    assert field in r["error"], r["error"]
    assert "id" not in r
    assert client.last_error == r["error"]

    strict = CloveClient(kernel.socket, raise_on_error=True)
    try:
        with pytest.raises(InvalidRequestError) as ei:
            agents.track(strict.spawn(**args))
        e = ei.value
        assert isinstance(e, ValueError) and isinstance(e, CloveError)
        assert e.code == "invalid_request" and e.opcode == SyscallOp.SYS_SPAWN
        assert field in e.message and e.reply["code"] == "invalid_request"
        assert str(e).endswith("(invalid_request)")
    finally:
        strict.disconnect()


def test_spawn_duplicate_live_name(kernel, client, agents):
    r = agents.spawn(via=client)
    dup = agents.track(client.spawn(r["name"], agents.script(SLEEPER)))
    assert dup["success"] is False and dup["code"] == "already_exists"
    assert r["name"] in dup["error"]
    strict = CloveClient(kernel.socket, raise_on_error=True)
    try:
        with pytest.raises(errors.AlreadyExistsError):
            agents.track(strict.spawn(r["name"], agents.script(SLEEPER)))
    finally:
        strict.disconnect()


def test_spawn_passes_args_env_and_socket(client, agents):
    code = """
    import os, sys
    print(repr(sys.argv[1:]), os.environ.get("GREETING"), os.environ.get("CLOVE_SOCKET"), flush=True)
    """
    r = agents.spawn(code, via=client, args=["one", "two words"], env={"GREETING": "hi"})
    w = client.wait(agent_id=r["id"], timeout=20)
    assert w["exit_code"] == 0
    out = client.logs(agent_id=r["id"])["text"]
    sock = agents.kernel.socket
    # The original convention: the socket is argv[1]; extra args follow.
    assert out == f"{[sock, 'one', 'two words']!r} hi {sock}\n"


# ---- LIST ------------------------------------------------------------------------------------

def test_list_agents_original_shape(client, agents):
    assert client.list_agents() == []
    a = agents.spawn(via=client)
    b = agents.spawn(via=client)
    lst = client.list_agents()
    assert isinstance(lst, list) and len(lst) == 2
    by_id = {e["id"]: e for e in lst}
    for r in (a, b):
        e = by_id[r["id"]]
        assert {"id", "name", "pid", "state", "running"} <= set(e)
        assert e["name"] == r["name"] and e["pid"] == r["pid"]
        assert e["state"] == "RUNNING" and e["running"] is True
        assert "isolation" not in e


def test_list_agents_detail_includes_exited(client, agents):
    done = agents.spawn("print('bye')\n", via=client)
    live = agents.spawn(via=client)
    assert client.wait(agent_id=done["id"], timeout=20)["exit_code"] == 0
    plain = client.list_agents()
    assert [e["id"] for e in plain] == [live["id"]]  # dead agents are not listed
    detail = {e["id"]: e for e in client.list_agents(detail=True)}
    assert detail[done["id"]]["state"] == "STOPPED" and detail[done["id"]]["running"] is False
    assert "exited with code 0" in detail[done["id"]]["exit"]
    assert detail[live["id"]]["state"] == "RUNNING"
    assert detail[live["id"]]["isolation"] == live["isolation"]


# ---- KILL ------------------------------------------------------------------------------------

def test_kill_by_name_and_id(client, agents):
    a = agents.spawn(via=client)
    b = agents.spawn(via=client)
    assert client.kill(a["name"]) is True
    assert client.kill(agent_id=b["id"]) is True
    for r in (a, b):
        w = client.wait(agent_id=r["id"], timeout=10)
        assert w["exited"] is True and w["signal"] in (9, 15) and "exit_code" not in w
    assert client.list_agents() == []
    # Killing a dead or unknown agent: False.
    assert client.kill(a["name"]) is False
    assert client.kill("no-such-agent") is False
    assert client.kill(agent_id=999_999) is False
    with pytest.raises(ValueError):
        client.kill()


def test_kill_and_pause_unknown_raise_not_found(kernel, client):
    r = client.call(SyscallOp.SYS_KILL, {"name": "no-such-agent"}).payload_json()
    assert r == {"success": False, "error": 'no live agent named "no-such-agent"', "code": "not_found"}
    assert client.pause("no-such-agent") == r
    assert client.resume("no-such-agent")["code"] == "not_found"
    assert client.wait("no-such-agent")["code"] == "not_found"
    assert client.logs("no-such-agent")["code"] == "not_found"
    strict = CloveClient(kernel.socket, raise_on_error=True)
    try:
        for call in (lambda: strict.kill("no-such-agent"), lambda: strict.pause("no-such-agent"),
                     lambda: strict.resume(agent_id=999_999)):
            with pytest.raises(NotFoundError) as ei:
                call()
            assert isinstance(ei.value, LookupError)
            assert ei.value.code == "not_found" and ei.value.reply["success"] is False
        with pytest.raises(NotFoundError) as ei:
            strict.kill("no-such-agent")
        assert ei.value.opcode == SyscallOp.SYS_KILL
    finally:
        strict.disconnect()


# ---- PAUSE / RESUME --------------------------------------------------------------------------

TICKER = """
import time, itertools
for i in itertools.count():
    print(i, flush=True)
    time.sleep(0.02)
"""


def test_pause_resume(client, agents):
    r = agents.spawn(TICKER, via=client)
    agents.wait_output(r["id"], "3\n")
    p = client.pause(r["name"])
    assert p == {"success": True, "paused": True, "agent_id": r["id"]}
    assert [e["state"] for e in client.list_agents()] == ["PAUSED"]
    # A paused agent makes no progress.
    before = client.logs(agent_id=r["id"], offset=0)["next_offset"]
    time.sleep(0.4)
    assert client.logs(agent_id=r["id"], offset=0)["next_offset"] == before
    q = client.resume(agent_id=r["id"])
    assert q == {"success": True, "resumed": True, "agent_id": r["id"]}
    assert [e["state"] for e in client.list_agents()] == ["RUNNING"]
    after = client.logs(agent_id=r["id"], offset=before, wait=5)
    assert after["next_offset"] > before and after["text"]


# ---- WAIT ------------------------------------------------------------------------------------

def test_wait_exit_code(client, agents):
    r = agents.spawn("import sys\nsys.exit(3)\n", via=client)
    w = client.wait(r["name"], timeout=20)
    assert w == {"success": True, "agent_id": r["id"], "exited": True, "exit_code": 3, "oom": False,
                 "reason": "exited with code 3"}
    # WAIT on an exited agent answers at once, the same.
    assert client.wait(agent_id=r["id"]) == w


def test_wait_timeout_on_running_agent(client, agents):
    r = agents.spawn(via=client)
    t0 = time.monotonic()
    w = client.wait(agent_id=r["id"], timeout=0.5)
    took = time.monotonic() - t0
    assert w == {"success": True, "agent_id": r["id"], "exited": False, "oom": False}
    assert 0.45 <= took < 5
    with pytest.raises(ValueError):
        client.wait(agent_id=r["id"], timeout=-1)


# ---- EXEC --------------------------------------------------------------------------------------

def test_exec(client, tmp_path):
    r = client.exec("echo out; echo err >&2; exit 3", cwd=str(tmp_path))
    assert r == {"success": False, "stdout": "out\n", "stderr": "err\n", "exit_code": 3}
    r = client.exec("", argv=["/bin/sh", "-c", "pwd; echo $G"], cwd=str(tmp_path), env={"G": "hi"})
    assert r["success"] is True and r["stdout"] == f"{tmp_path}\nhi\n"
    r = client.exec("sleep 30", timeout=1)
    assert r["timed_out"] is True and r["exit_code"] == -1 and r["signal"] == 9
    bad = client.exec("true", cwd="relative")
    assert bad["code"] == "invalid_request" and bad["exit_code"] == -1
    accepted = client.exec("echo later", async_=True, request_id=7)
    assert (accepted["async"], accepted["request_id"], accepted["status"]) == (True, 7, "accepted")
    polled = client.poll_async(wait=20)
    assert polled["count"] == 1 and polled["results"][0]["opcode_name"] == "EXEC"
    assert json.loads(polled["results"][0]["payload"])["stdout"] == "later\n"


# ---- host files ------------------------------------------------------------------------------

def test_read_and_write_files(client, tmp_path):
    f = tmp_path / "sub" / "f.txt"
    assert client.write_file(str(f), "one")["code"] == "not_found"
    assert client.write_file(str(f), "one\n", create_dirs=True) == {"success": True, "bytes_written": 4}
    assert client.write_file(str(f), "two\n", mode="append")["bytes_written"] == 4
    assert client.read_file(str(f)) == {"success": True, "content": "one\ntwo\n", "size": 8}
    assert client.read_file(str(f), offset=4, limit=3)["content"] == "two"
    missing = client.read_file(str(tmp_path / "nope"))
    assert missing["success"] is False and missing["code"] == "not_found"
    assert (missing["content"], missing["size"]) == ("", 0)
    assert client.read_file("relative")["code"] == "invalid_request"


# ---- permissions -----------------------------------------------------------------------------

def test_permissions(client, agents):
    own = client.get_permissions()
    assert own["success"] is True and own["level"] == "unrestricted"
    a = agents.spawn(via=client)
    got = client.get_permissions(agent_id=a["id"])
    assert (got["level"], got["agent_id"]) == ("standard", a["id"])
    assert got["permissions"]["can_spawn"] is True and got["permissions"]["can_exec"] is False
    assert client.set_permissions(agent_id=a["id"], level="readonly") == {"success": True, "agent_id": a["id"]}
    assert client.get_permissions(agent_id=a["id"])["level"] == "readonly"
    custom = {"can_read": True, "filesystem": {"read": ["/tmp/**"], "write": []}, "can_write": False}
    assert client.set_permissions(custom, agent_id=a["id"])["success"] is True
    got = client.get_permissions(agent_id=a["id"])
    assert "level" not in got and got["permissions"]["filesystem"]["read"] == ["/tmp/**"]
    assert client.set_permissions(level="minimal")["code"] == "invalid_request"
    assert client.get_permissions(agent_id=999_999)["code"] == "not_found"


# ---- supervisor groups ---------------------------------------------------------------------

def test_groups(client, agents):
    g = client.group_create("py-pool", strategy="one_for_all", intensity=2, period=10)
    assert g["success"] is True
    assert {k: g["group"][k] for k in ("name", "strategy", "intensity", "period", "state")} == {
        "name": "py-pool", "strategy": "one_for_all", "intensity": 2, "period": 10.0, "state": "running"}
    sub = client.group_create("py-sub", parent="py-pool", shutdown_ms=500)["group"]
    assert (sub["parent"], sub["shutdown_ms"], sub["strategy"]) == ("py-pool", 500, "one_for_one")
    assert client.group_create("py-pool")["code"] == "already_exists"
    a = agents.spawn(via=client, group="py-sub", restart_policy="permanent")
    listed = client.group_list()["groups"]
    assert [x["name"] for x in listed] == ["py-pool", "py-sub"]
    assert [(c["kind"], c["name"]) for c in listed[0]["children"]] == [("group", "py-sub")]
    assert [(c["kind"], c["id"], c["state"]) for c in client.group_list("py-sub")["groups"][0]["children"]] == [
        ("agent", a["id"], "running")]
    stopped = client.group_stop("py-pool")
    assert stopped == {"success": True, "name": "py-pool", "stopped": [a["id"]]}
    assert client.group_list()["groups"] == []
    assert client.wait(agent_id=a["id"], timeout=5)["exited"] is True
    assert client.group_list("py-pool")["code"] == "not_found"
    refused = client.spawn("py-x", agents.script("pass\n"), group="py-pool")
    assert refused["code"] == "invalid_request" and "no such group" in refused["error"]


# ---- LOGS ------------------------------------------------------------------------------------

def test_logs(client, agents):
    code = """
    import sys
    print("line one")
    print("line two")
    print("to stderr", file=sys.stderr)
    print("line three", flush=True)
    """
    r = agents.spawn(code, via=client)
    assert client.wait(agent_id=r["id"], timeout=20)["exit_code"] == 0
    full = client.logs(r["name"])
    assert full["success"] is True and full["agent_id"] == r["id"]
    assert full["running"] is False and full["first_offset"] == 0
    lines = full["text"].splitlines()
    assert sorted(lines) == sorted(["line one", "line two", "to stderr", "line three"])
    assert full["next_offset"] == len(full["text"].encode())
    assert client.logs(r["name"], lines=1)["text"] == lines[-1] + "\n"
    assert client.logs(agent_id=r["id"], offset=full["next_offset"])["text"] == ""
    assert client.logs(agent_id=r["id"], offset=0)["text"] == full["text"]


def test_logs_wait_for_new_output(client, agents):
    r = agents.spawn("import time\ntime.sleep(0.5)\nprint('late', flush=True)\ntime.sleep(60)\n", via=client)
    t0 = time.monotonic()
    got = client.logs(agent_id=r["id"], offset=0, wait=10)
    took = time.monotonic() - t0
    # It answers as soon as new output arrives (which may be "late" before its newline).
    assert got["text"] in ("late", "late\n") and got["running"] is True
    assert got["next_offset"] == len(got["text"])
    assert 0.2 < took < 9, took
    # Nothing new: a short wait times out with empty text and the same offset.
    agents.wait_output(r["id"], "late\n")
    again = client.logs(agent_id=r["id"], offset=5, wait=0.3)
    assert again["text"] == "" and again["next_offset"] == 5


# ---- audit -----------------------------------------------------------------------------------

AUDIT_KEYS = ["id", "timestamp", "category", "event_type", "agent_id", "agent_name", "success",
              "details", "hash", "decided_by"]


def test_get_audit_log(client, agents):
    a = agents.spawn(via=client)
    assert client.kill(agent_id=a["id"]) is True
    client.wait(agent_id=a["id"], timeout=10)
    r = client.get_audit_log(agent_id=a["id"], limit=50)
    assert list(r) == ["success", "count", "entries"] and r["success"] is True
    assert r["count"] == len(r["entries"]) >= 2
    for e in r["entries"]:
        # The original's keys in its order, plus our hash and decided_by.
        assert [k for k in e if k != "agent_name"] == [k for k in AUDIT_KEYS if k != "agent_name"], e
        assert e["agent_id"] == a["id"] and e["agent_name"] == a["name"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["timestamp"]), e
        assert re.fullmatch(r"[0-9a-f]{64}", e["hash"]), e
    kinds = [(e["event_type"], e["decided_by"]) for e in r["entries"]]
    assert ("AGENT_SPAWNED", "operator:0") in kinds, kinds
    assert ("AGENT_EXITED", "operator:0") in kinds, kinds
    ids = [e["id"] for e in r["entries"]]
    assert ids == sorted(ids)
    # Polling after the last one: nothing new about that agent.
    again = client.get_audit_log(agent_id=a["id"], since_id=ids[-1])
    assert again["count"] == 0 and again["entries"] == []
    # By category.
    life = client.get_audit_log(category="agent_lifecycle", limit=5)
    assert life["success"] is True and 0 < life["count"] <= 5
    assert {e["category"] for e in life["entries"]} == {"AGENT_LIFECYCLE"}
    bad = client.get_audit_log(category="nope")
    assert bad["success"] is False and bad["code"] == "invalid_request", bad


def test_set_audit_config(client):
    r = client.set_audit_config(log_syscalls=True)
    try:
        assert r["success"] is True, r
        c = r["config"]
        assert set(c) == {"max_entries", "log_syscalls", "log_security", "log_lifecycle", "log_ipc",
                          "log_state", "log_resource", "log_network", "log_world"}
        assert c["log_syscalls"] is True and c["log_lifecycle"] is True and c["max_entries"] == 10000
        assert client.echo("audited") == "audited"
        log = client.get_audit_log(category="SYSCALL", limit=10000)["entries"]
        assert any(e["details"]["opcode"] == "NOOP" and e["decided_by"] == "operator:0" for e in log), log
        changes = client.get_audit_log(category="SECURITY", limit=10000)["entries"]
        assert any(e["event_type"] == "AUDIT_CONFIG_CHANGED" for e in changes), changes
        bad = client.set_audit_config(max_entries=0)
        assert bad["success"] is False and bad["code"] == "invalid_request", bad
    finally:
        assert client.set_audit_config(log_syscalls=False)["config"]["log_syscalls"] is False
# ---- HTTP and async results ------------------------------------------------------------------

@pytest.fixture
def web():
    """A loopback HTTP server (127.0.0.1, which the session's kernel may reach) for one test:
    ``/echo`` answers the request as JSON with an ``X-Echo`` header, ``/status/<n>`` answers
    that status, ``/slow/<ms>`` answers after a delay. Yields its base URL."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            parts = self.path.strip("/").split("/")
            if parts[0] == "status":
                code, out, extra = int(parts[1]), f"status {parts[1]}".encode(), {}
            elif parts[0] == "slow":
                time.sleep(int(parts[1]) / 1000)
                code, out, extra = 200, b"slow", {}
            else:
                code, extra = 200, {"X-Echo": "yes"}
                out = json.dumps({"method": self.command, "path": self.path, "body": body,
                                  "x_test": self.headers.get("X-Test")}).encode()
            self.send_response(code)
            for k, v in extra.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_round_trip_and_real_status(client, web):
    r = client.http(f"{web}/echo?q=1", method="POST", headers={"X-Test": "hi"}, body="payload")
    assert r["success"] is True and r["status_code"] == 200, r
    assert r["headers"]["x-echo"] == "yes"
    echo = json.loads(r["body"])
    assert echo == {"method": "POST", "path": "/echo?q=1", "body": "payload", "x_test": "hi"}
    r = client.http(f"{web}/status/404")
    assert (r["success"], r["status_code"], r["body"]) == (True, 404, "status 404")
    assert client.http(f"{web}/status/500")["status_code"] == 500


def test_http_refusals(client, web):
    port = web.rsplit(":", 1)[1]
    for url, says in [
        (f"http://127.0.0.2:{port}/", "127.0.0.2 is a loopback address"),
        (f"http://[::1]:{port}/", "::1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ]:
        r = client.http(url)
        assert r["success"] is False and r["code"] == "permission_denied", r
        assert says in r["error"], r
    assert client.http("ftp://127.0.0.1/")["code"] == "invalid_request"
    strict = CloveClient(client.socket_path, raise_on_error=True)
    try:
        with pytest.raises(errors.PermissionDeniedError):
            strict.http(f"http://127.0.0.2:{port}/")
    finally:
        strict.disconnect()


def test_http_async_and_poll_async(client, web):
    assert client.poll_async() == {"success": True, "results": [], "count": 0}
    r = client.http(f"{web}/slow/200", async_=True, request_id=42)
    assert r == {"success": True, "status_code": 0, "body": "", "async": True, "request_id": 42,
                 "status": "accepted"}
    t0 = time.monotonic()
    got = client.poll_async(wait=10)
    assert time.monotonic() - t0 < 10
    assert got["success"] is True and got["count"] == 1, got
    result = got["results"][0]
    assert (result["request_id"], result["opcode"], result["opcode_name"]) == (42, 0x50, "HTTP")
    payload = json.loads(result["payload"])
    assert (payload["success"], payload["status_code"], payload["body"]) == (True, 200, "slow")
    t0 = time.monotonic()
    assert client.poll_async(max_results=5, wait=0.2)["count"] == 0
    assert time.monotonic() - t0 >= 0.2


# ---- recording and replay --------------------------------------------------------------------

def _replay_done(client, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        r = client.get_replay_status()
        assert r["success"] is True, r
        if r["state"] != "RUNNING" or time.monotonic() > deadline:
            return r
        time.sleep(0.02)


def test_record_export_and_replay(kernel, client):
    """A recording of STOREs and a DELETE, replayed after the keys were deleted, writes them
    again with the same values and versions; the replay skips what it does not re-execute."""
    p = f"rr-{os.getpid()}-{time.monotonic_ns()}/"
    r = client.get_recording_status()
    assert r == {"success": True, "state": "IDLE", "recording": False, "entry_count": r["entry_count"]}, r
    r = client.start_recording(include_exec=True)
    assert r == {"success": True, "recording": True}, r
    try:
        r = client.get_recording_status()
        assert (r["state"], r["recording"], r["entry_count"]) == ("RECORDING", True, 0), r
        assert client.start_recording()["code"] == "conflict"
        assert client.store(p + "a", {"n": 1})["success"] is True
        assert client.store(p + "a", {"n": 2}, if_version=1)["version"] == 2
        assert client.store(p + "a", "late", if_version=1)["code"] == "conflict"
        assert client.store(p + "s", [1, "two"], scope="session", ttl=3600)["success"] is True
        assert client.store(p + "gone", 0)["success"] is True
        assert client.delete_key(p + "gone")["deleted"] is True
        assert client.fetch(p + "a")["exists"] is True  # reads are not recorded
        assert client.exec("true")["success"] is True  # recorded, never replayed
    finally:
        stopped = client.stop_recording()
    assert stopped == {"success": True, "recording": False, "entries_recorded": 7}, stopped
    r = client.get_recording_status(export=True)
    assert (r["state"], r["recording"], r["entry_count"]) == ("IDLE", False, 7), r
    data = json.loads(r["recording_data"])
    assert (data["format"], data["version"]) == ("clove-recording", 1)
    assert [e["op"] for e in data["entries"]] == ["STORE"] * 5 + ["DELETE", "EXEC"]
    assert [e["ok"] for e in data["entries"]][:3] == [True, True, False]
    before = {k: client.fetch(p + k) for k in ("a", "s")}
    for k in ("a", "s"):
        assert client.delete_key(p + k)["deleted"] is True

    r = client.start_replay(r["recording_data"])
    assert r == {"success": True, "total_entries": 7}, r
    done = _replay_done(client)
    assert done["state"] == "COMPLETED" and done["progress_percent"] == 100.0, done
    assert (done["entries_replayed"], done["entries_skipped"]) == (6, 1), done
    assert "last_error" not in done, done
    assert {k: client.fetch(p + k) for k in ("a", "s")} == before
    assert client.fetch(p + "gone")["exists"] is False


def test_replay_refusals_and_divergence(client):
    r = client.start_replay("not json")
    assert r["success"] is False and r["code"] == "invalid_request", r
    r = client._call(SyscallOp.SYS_REPLAY_START, {})
    assert r["code"] == "invalid_request" and "recording" in r["error"], r
    # The original kernel's field name works too; an empty recording completes at once.
    empty = client.get_recording_status(export=True)["recording_data"]
    key = f"rr-div-{os.getpid()}-{time.monotonic_ns()}"
    rec = json.loads(empty)
    rec["entries"] = [{"seq": 1, "t_ms": 0, "caller": {"id": 1, "agent": False, "uid": 0},
                       "opcode": int(SyscallOp.SYS_STORE), "op": "STORE",
                       "request": {"key": key, "value": 1}, "ok": True,
                       "reply": {"success": True, "key": key, "version": 5}}]
    r = client._call(SyscallOp.SYS_REPLAY_START, {"recording_data": json.dumps(rec)})
    assert r == {"success": True, "total_entries": 1}, r
    done = _replay_done(client)
    assert done["state"] == "COMPLETED" and done["entries_replayed"] == 1, done
    assert done["last_error"].startswith("1 divergence(s); last: entry 1 (STORE"), done
    assert "version" in done["last_error"], done
    assert client.delete_key(key)["deleted"] is True


def test_recording_from_an_agent_is_of_itself_only(client, agents):
    code = (
        "import json, sys\n"
        "from clove_sdk import CloveClient\n"
        "c = CloveClient(sys.argv[1])\n"
        "print('OTHERS', json.dumps(c.start_recording(filter_agents=[1])), flush=True)\n"
        "print('REPLAY', json.dumps(c.get_replay_status()), flush=True)\n"
    )
    a = agents.spawn(code)
    out = agents.wait_output(a["id"], "REPLAY", timeout=30)
    others = json.loads(out.split("OTHERS ", 1)[1].splitlines()[0])
    assert others["code"] == "permission_denied", out
    replay = json.loads(out.split("REPLAY ", 1)[1].splitlines()[0])
    assert replay["code"] == "permission_denied", out


# ---- error replies ---------------------------------------------------------------------------


def test_error_reply_shape_and_raise_on_error(kernel, client):
    """An error reply has the original's keys; raise_on_error turns it into its class, and the
    connection stays usable either way."""
    missing = 4_000_000
    r = client.get_agent_metrics(missing)
    assert r == {"success": False, "error": f"no agent with id {missing}", "code": "not_found"}
    assert client.last_error == r["error"]
    assert client.echo("still here") == "still here"

    strict = CloveClient(kernel.socket, raise_on_error=True)
    try:
        with pytest.raises(errors.NotFoundError) as ei:
            strict.get_agent_metrics(missing)
        e = ei.value
        assert isinstance(e, LookupError) and isinstance(e, CloveError)
        assert e.code == "not_found"
        assert e.opcode == SyscallOp.SYS_METRICS_AGENT
        assert e.reply == r
        assert e.message == r["error"]
        assert strict.last_error == r["error"]
        assert strict.echo("still here") == "still here"
    finally:
        strict.disconnect()


def test_every_method_is_tested_somewhere():
    """Every public syscall method of CloveClient is tested somewhere."""
    covered = {
        "hello", "echo", "noop", "spawn", "kill", "list_agents", "pause", "resume", "wait", "logs",
        "exit", "connect", "disconnect", "send", "recv", "call",
        "group_create", "group_list", "group_stop", "get_permissions", "set_permissions",
        "read_file", "write_file", "exec", "get_audit_log", "set_audit_config",
        # test_ipc_events.py
        "register_name", "send_message", "send_messages", "recv_messages", "broadcast",
        "store", "fetch", "delete_key", "list_keys", "subscribe", "unsubscribe", "poll_events",
        "emit_event",
        # HTTP and async results
        "http", "poll_async",
        # recording and replay
        "start_recording", "stop_recording", "get_recording_status", "start_replay",
        "get_replay_status",
        # test_llm.py
        "think", "llm_report", "llm_stats", "llm_config",
        # test_metrics.py
        "get_system_metrics", "get_agent_metrics", "get_all_agent_metrics", "get_cgroup_metrics",
    }
    public = {n for n in dir(CloveClient) if not n.startswith("_") and callable(getattr(CloveClient, n))}
    assert public - covered == set()


def test_error_from_reply_mapping():
    """Every code the kernel sends maps to its class."""
    table = {
        "invalid_request": errors.InvalidRequestError,
        "not_found": errors.NotFoundError,
        "already_exists": errors.AlreadyExistsError,
        "permission_denied": errors.PermissionDeniedError,
        "conflict": errors.ConflictError,
        "limit_exceeded": errors.LimitExceededError,
        "not_implemented": errors.NotImplementedByKernelError,
        "not_supported": errors.NotImplementedByKernelError,
        "unknown_opcode": errors.NotImplementedByKernelError,
        "unavailable": errors.UnavailableError,
        "timeout": errors.KernelTimeoutError,
        "internal": errors.InternalKernelError,
        "something_new": errors.CloveError,
    }
    for code, cls in table.items():
        e = errors.error_from_reply({"success": False, "error": "boom", "code": code}, 7)
        assert type(e) is cls and e.code == code and e.opcode == 7 and e.message == "boom"
    assert errors.is_error_reply({"error": "x"}) is True  # SPAWN's errors have no success key
    assert errors.is_error_reply({"id": 1, "name": "a"}) is False
    assert errors.is_error_reply([]) is False


# ---- the kernel cannot be reached ------------------------------------------------------------

@pytest.fixture
def absent_socket(tmp_path):
    return str(tmp_path / "no-kernel-here.sock")


def test_unreachable_kernel_failure_dicts(absent_socket):
    c = CloveClient(absent_socket)
    assert c.connect() is False
    assert c.connected is False
    assert absent_socket in c.last_error
    r = c.hello()
    assert r["success"] is False and r["code"] == "unavailable"
    assert absent_socket in r["error"] and c.last_error == r["error"]
    # A failure keeps the opcode's own empty fields, as a refusal would.
    assert c.read_file("/x") == {**_native.error_reply(0x03, "unavailable", c.last_error)}
    rf = c.read_file("/x")
    assert rf["content"] == "" and rf["size"] == 0 and rf["code"] == "unavailable"
    ex = c.exec("true")
    assert (ex["stdout"], ex["stderr"], ex["exit_code"]) == ("", "", -1)
    assert c.spawn("a", "/x.py")["code"] == "unavailable"
    assert c.list_agents() == []
    assert c.kill("a") is False
    assert c.echo("x") is None
    assert c.noop() is False
    assert c.call(SyscallOp.SYS_NOOP, b"x") is None
    assert c.send(SyscallOp.SYS_NOOP, b"x") is False
    assert c.recv() is None
    assert c.agent_id is None


def test_unreachable_kernel_raises(absent_socket):
    c = CloveClient(absent_socket, raise_on_error=True)
    with pytest.raises(KernelUnreachableError) as ei:
        c.connect()
    assert isinstance(ei.value, ConnectionError) and ei.value.code == "unavailable"
    with pytest.raises(KernelUnreachableError) as ei:
        c.hello()
    e = ei.value
    assert isinstance(e, ConnectionError) and isinstance(e, CloveError)
    assert e.code == "unavailable" and e.opcode == SyscallOp.SYS_HELLO
    assert absent_socket in str(e)
    assert isinstance(e.__cause__, OSError)
    with pytest.raises(KernelUnreachableError):
        c.list_agents()
    with pytest.raises(KernelUnreachableError):
        c.call(SyscallOp.SYS_NOOP, b"")


def test_socket_that_is_not_a_kernel(tmp_path):
    """A path that exists but is no socket: a failure dict too, not an exception."""
    p = tmp_path / "plain-file"
    p.write_text("x")
    c = CloveClient(str(p))
    assert c.connect() is False
    assert c.hello()["code"] == "unavailable"


def test_client_timeout_on_a_slow_call(kernel, agents):
    """A client-side timeout fails the call (and drops the connection, now out of step)."""
    r = agents.spawn()
    c = CloveClient(kernel.socket, timeout=0.3)
    t0 = time.monotonic()
    w = c.wait(agent_id=r["id"], timeout=3)
    assert time.monotonic() - t0 < 2
    assert w["success"] is False and w["code"] == "timeout" and "WAIT" in w["error"]
    assert c.connected is False
    strict = CloveClient(kernel.socket, timeout=0.3, raise_on_error=True)
    with pytest.raises(errors.KernelTimeoutError) as ei:
        strict.wait(agent_id=r["id"], timeout=3)
    assert isinstance(ei.value, TimeoutError) and ei.value.code == "timeout"
    strict.disconnect()
    assert c.hello()["success"] is True  # the next call connects again
    c.disconnect()
    with pytest.raises(ValueError):
        CloveClient(kernel.socket, timeout=0).hello()


# ---- requests that are not JSON --------------------------------------------------------------

def test_request_not_json_raises_like_the_original(client):
    """Requests are encoded as the original SDK did, with json.dumps: a value JSON cannot
    carry raises TypeError (bytes and sets are not quietly turned into arrays), NaN raises
    ValueError."""
    client.hello()
    with pytest.raises(TypeError):
        client.store("k", object())
    with pytest.raises(TypeError):
        client.emit_event("CUSTOM", {(1, 2): "tuple keys are not JSON"})
    with pytest.raises(TypeError):
        client.send_message(lambda: None, to=1)
    with pytest.raises(TypeError):
        client.spawn("x", "/x.py", env={"A": object()})
    with pytest.raises(TypeError):
        client.write_file("/tmp/x", b"data")
    with pytest.raises(TypeError):
        client.store("k", {1, 2})
    with pytest.raises(ValueError):
        client.store("k", float("nan"))
    with pytest.raises(TypeError):
        client.call(SyscallOp.SYS_STORE, {"value": object()})
    # Nothing was sent: the connection is still in step.
    assert client.echo("ok") == "ok"
    assert client.call(SyscallOp.SYS_HELLO, {}).opcode == 0xFE


# ---- socket resolution -----------------------------------------------------------------------

def test_socket_resolution_order(kernel, monkeypatch, tmp_path):
    monkeypatch.delenv("CLOVE_SOCKET", raising=False)
    monkeypatch.setattr("sys.argv", ["prog"])
    default = os.fspath(_native.resolve_socket(None))
    assert os.path.isabs(default) and default.endswith("clove.sock"), default
    if os.geteuid() == 0:
        assert default in ("/run/clove/clove.sock", "/tmp/clove.sock"), default
    assert CloveClient().socket_path == default
    assert resolve_socket() == default

    # sys.argv[1] counts only when it is a socket.
    plain = tmp_path / "not-a-socket"
    plain.write_text("")
    monkeypatch.setattr("sys.argv", ["prog", str(plain)])
    assert CloveClient().socket_path == default
    monkeypatch.setattr("sys.argv", ["prog", kernel.socket])
    assert CloveClient().socket_path == kernel.socket
    assert CloveClient().hello()["success"] is True

    # $CLOVE_SOCKET beats sys.argv[1].
    monkeypatch.setenv("CLOVE_SOCKET", "/env/clove.sock")
    assert CloveClient().socket_path == "/env/clove.sock"
    assert resolve_socket() == "/env/clove.sock"

    # An explicit path beats everything, str or PathLike.
    assert CloveClient("/explicit.sock").socket_path == "/explicit.sock"
    assert CloveClient(tmp_path / "x.sock").socket_path == str(tmp_path / "x.sock")
    assert resolve_socket("/explicit.sock") == "/explicit.sock"


# ---- the opcode table ------------------------------------------------------------------------

def test_syscallop_matches_native_opcodes():
    native = {f"SYS_{name}": value for name, value in _native.opcodes()}
    ours = {op.name: op.value for op in SyscallOp}
    assert ours == native
    assert len(native) == len(_native.opcodes())  # no duplicate names
    assert SyscallOp.SYS_WAIT == 0xD0 and SyscallOp.SYS_LOGS == 0xD1 and SyscallOp.SYS_HELLO == 0xFE
    assert 0x13 not in {op.value for op in SyscallOp}


# ---- threads ---------------------------------------------------------------------------------

def test_threads_sharing_a_client_take_turns(client):
    """Calls from several threads on one client never mix up their replies."""
    errors_seen = []

    def worker(t):
        for i in range(50):
            msg = f"thread {t} call {i}"
            got = client.echo(msg)
            if got != msg:
                errors_seen.append((msg, got))
            if i % 10 == 0 and client.hello()["protocol_version"] != 1:
                errors_seen.append((t, i, "hello"))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert errors_seen == []


# ---- the GIL ---------------------------------------------------------------------------------

def test_blocking_call_releases_the_gil(kernel, agents):
    r = agents.spawn()
    c = CloveClient(kernel.socket)
    c.hello()
    result = {}

    def blocked():
        t0 = time.monotonic()
        result["reply"] = c.wait(agent_id=r["id"], timeout=1.0)
        result["took"] = time.monotonic() - t0

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.05)  # let the thread enter the call
    n = 0
    t0 = time.monotonic()
    while t.is_alive():
        n += 1
    spun = time.monotonic() - t0
    t.join()
    c.disconnect()
    assert result["reply"]["exited"] is False and result["took"] >= 0.95
    # The main thread kept running Python code for most of the wait: hundreds of thousands of
    # iterations, not the handful it would get if the call held the GIL.
    assert spun >= 0.7, spun
    assert n > 100_000, n
