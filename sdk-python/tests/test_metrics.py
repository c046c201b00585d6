"""METRICS_SYSTEM, METRICS_AGENT, METRICS_ALL_AGENTS and METRICS_CGROUP through the SDK,
against a real kernel: the original's reply shapes, our extensions, and who may see what."""

from __future__ import annotations

import os

import pytest

from clove_sdk import CloveClient, SyscallOp, errors

from conftest import SLEEPER

#: An agent that holds 32 MiB it has written, says so, and sleeps until killed.
HOLDER = """
import time
blob = b"\\x01" * (32 << 20)
print("holding", flush=True)
time.sleep(120)
"""


def test_system_metrics_have_the_original_shape(client):
    r = client.get_system_metrics()
    assert r["success"] is True, r
    m = r["metrics"]
    assert set(m) == {"timestamp", "cpu", "memory", "disk", "network"}
    assert set(m["cpu"]) == {"percent", "per_core", "count", "load_avg"}
    assert m["cpu"]["count"] == len(m["cpu"]["per_core"]) == os.cpu_count()
    assert 0 <= m["cpu"]["percent"] <= 100 and len(m["cpu"]["load_avg"]) == 3
    assert m["memory"]["used"] + m["memory"]["available"] == m["memory"]["total"]
    assert set(m["disk"]) == {"read_bytes", "write_bytes"}
    assert set(m["network"]) == {"bytes_sent", "bytes_recv"}
    # A second reading measures CPU since the first.
    again = client.get_system_metrics()["metrics"]
    assert again["timestamp"] >= m["timestamp"]


def test_agent_metrics_follow_the_agent(client, agents):
    a = agents.spawn(HOLDER)
    agents.wait_output(a["id"], "holding")
    r = client.get_agent_metrics(a["id"])
    assert r["success"] is True, r
    m = r["metrics"]
    assert {"agent_id", "name", "pid", "status", "uptime_ms", "process"} <= set(m)
    assert (m["agent_id"], m["name"], m["status"]) == (a["id"], a["name"], "RUNNING")
    # The agent's own process (the script), under the sandbox's init that SPAWN reported.
    assert m["init_pid"] == a["pid"] and m["pid"] != a["pid"]
    with open(f"/proc/{m['pid']}/cmdline", "rb") as f:
        assert b"agent_" in f.read()
    p = m["process"]
    assert set(p) >= {"pid", "cpu", "memory", "threads", "fds"}
    assert p["memory"]["rss"] >= 32 << 20 and p["memory"]["vms"] >= p["memory"]["rss"]
    assert p["threads"] >= 1 and p["fds"] >= 3
    assert m["restarts"] == 0
    if a["isolation"]["cgroups"]["memory_limit"]:
        cg = m["cgroup"]
        assert cg["memory"]["current"] >= 32 << 20
        assert cg["memory"]["max"] == 256 << 20
        assert cg["memory"]["oom_kills"] == 0
        assert cg["pids"]["current"] >= 2 and cg["pids"]["max"] == 64
        # The same cgroup by path: `agent-<id>` and the path the reply gave.
        for path in (f"agent-{a['id']}", cg["path"]):
            c = client.get_cgroup_metrics(path)
            assert c["success"] is True, c
            assert c["metrics"]["path"] == cg["path"]
            assert c["metrics"]["memory"]["current"] >= 32 << 20

    everyone = client.get_all_agent_metrics()
    assert everyone["success"] is True
    assert everyone["count"] == len(everyone["agents"])
    assert a["id"] in [x["agent_id"] for x in everyone["agents"]]


def test_metrics_refusals_and_bad_requests(kernel, client, agents):
    a = agents.spawn(SLEEPER)
    # An operator must name the agent.
    r = client.get_agent_metrics()
    assert r["success"] is False and r["code"] == "invalid_request" and "agent_id" in r["error"]
    # Escapes from the kernel's cgroup subtree are refused before anything is read.
    r = client.get_cgroup_metrics(f"agent-{a['id']}/../..")
    assert r["code"] == "invalid_request" and "'..'" in r["error"], r
    r = client.get_cgroup_metrics("not-an-agent")
    assert r["code"] == "invalid_request", r
    strict = CloveClient(kernel.socket, raise_on_error=True)
    try:
        with pytest.raises(errors.NotFoundError) as ei:
            strict.get_agent_metrics(4_000_000)
        assert ei.value.opcode == SyscallOp.SYS_METRICS_AGENT
        with pytest.raises(errors.InvalidRequestError):
            strict.get_cgroup_metrics("../x")
    finally:
        strict.disconnect()
