"""The example agents in agents/, spawned sandboxed as `clove run` would, with the kernel's
interpreter set to the test venv's python (so they import clove_sdk inside the sandbox).

The pipeline example is the issue's demo: parser -> reasoner -> verifier agents talking by
name, run twice in a row in one kernel with identical reports (the original Clove failed the
second run: it never released names).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clove_sdk import CloveClient

AGENTS = Path(__file__).resolve().parents[2] / "agents"


def run(agents, client, script, name, args=(), timeout=60):
    """Spawns agents/<script> as `name`, waits for its exit, returns (exit code, output)."""
    r = agents.track(client.spawn(name, str(AGENTS / script), args=list(args)))
    assert "id" in r, r
    done = client.wait(agent_id=r["id"], timeout=timeout)
    assert done["exited"] is True, done
    return done.get("exit_code"), client.logs(agent_id=r["id"], lines=1000)["text"]


@pytest.fixture
def slow_client(kernel):
    c = CloveClient(kernel.socket, timeout=120)
    yield c
    c.disconnect()


def test_hello_agent(agents, slow_client):
    code, out = run(agents, slow_client, "hello.py", agents.name("hello"))
    assert code == 0, out
    assert "hello from agent" in out and "kernel" in out


def test_heartbeat_worker_beats_and_stores(agents, slow_client):
    name = agents.name("beat")
    # Heartbeat keys live for 10 intervals: 3 s here, long enough to read after the exit.
    r = agents.track(slow_client.spawn(name, str(AGENTS / "heartbeat_worker.py"),
                                       args=["--beats", "3", "--interval", "0.3"]))
    done = slow_client.wait(agent_id=r["id"], timeout=60)
    out = slow_client.logs(agent_id=r["id"], lines=1000)["text"]
    assert done.get("exit_code") == 0, out
    assert [l for l in out.splitlines() if l.startswith("heartbeat ")][-1].startswith("heartbeat 3 ")
    assert "stopping after 3 beats" in out
    assert "no state store" not in out
    beat = slow_client.fetch(f"heartbeat/{r['id']}")
    assert beat["exists"] is True, beat
    assert beat["value"]["beat"] == 3 and beat["value"]["work_done"] == 3, beat


@pytest.mark.parametrize("mode,code", [("error", 1), ("clean", 0)])
def test_crashy_worker_ends_as_told(agents, slow_client, mode, code):
    got, out = run(agents, slow_client, "crashy_worker.py", agents.name("crashy"),
                   ["--crash-after", "2", "--interval", "0.01", "--mode", mode])
    assert got == code, out
    assert f"ending with mode {mode}" in out


def test_crashy_worker_signal_mode(agents, slow_client):
    r = agents.track(slow_client.spawn(agents.name("crashy"), str(AGENTS / "crashy_worker.py"),
                                       args=["--crash-after", "1", "--interval", "0.01",
                                             "--mode", "signal"]))
    done = slow_client.wait(agent_id=r["id"], timeout=60)
    assert done["signal"] == 11 and done.get("exit_code") is None, done


def test_pipeline_runs_twice_with_identical_results(agents, slow_client):
    reports = []
    for _ in range(2):
        # The same driver name and the same stage names both times.
        code, out = run(agents, slow_client, "pipeline.py", "pipeline-demo",
                        ["--prefix", "pipe-test"], timeout=120)
        assert code == 0, out
        assert "verified 6/6" in out, out
        reports.append(out)
    assert reports[0] == reports[1]
    assert slow_client.list_agents() == []


def test_chat_agent_asks_the_kernels_llm(agents, slow_client):
    # The test kernel has no provider key: the simulated provider answers, and says so.
    code, out = run(agents, slow_client, "chat.py", agents.name("chat"), ["hi", "and again?"])
    assert code == 0, out
    # One answer per question, each followed by its tokens and who answered.
    assert out.count("simulated)\n") == 2, out
    assert "> hi\n[simulated answer" in out and "> and again?\n[simulated answer" in out, out
