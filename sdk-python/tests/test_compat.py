"""clove_sdk against a reference client that frames exactly as the original SDK did.

Two kinds of check:

* The same scenario runs through `clove_sdk.CloveClient` and through `original_client.OriginalClient`
  (standard library only) on the real kernel, and the replies must be equal after normalisation.
  Normalised, because they legitimately differ between two runs:

  - ``id`` / ``agent_id`` of an agent: each run spawns its own agent, which gets the next id;
  - ``pid``: its process id;
  - ``name``: the two runs use distinct agent names (a name is unique among live agents), and
    SPAWN and LIST echo it; error texts that quote it (``no live agent named "..."``) have it
    replaced by ``<name>``;
  - ``uptime_ms`` (LIST): timing;
  - the connection's own id (``client.agent_id``, the reply header's agent_id): every connection
    gets a new one.

  The scenario's refused THINK (an empty prompt) checks an error reply with its opcode's own
  empty field (THINK's ``content``).

  Everything else (keys, their values, error texts, codes, the per-opcode empty fields, LIST's
  upper-case states, EXIT's ``goodbye``) must be identical.

* Both clients talk to a fake kernel (a Unix socket listener of this test) that records the frames
  they send: opcodes, header magic and lengths, and payloads must be the same. JSON payloads are
  compared parsed (the original's ``json.dumps`` puts spaces after separators, ours is compact;
  key order is not significant to the kernel); LIST and EXIT must be empty; NOOP raw.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import uuid
from typing import Any, List, Tuple

import pytest

from clove_sdk import CloveClient

from conftest import SLEEPER
from original_client import HEADER, MAGIC, OriginalClient, encode_frame

NORMALISED = {"id", "agent_id", "pid", "name", "uptime_ms"}


def normalise(value: Any, name: str) -> Any:
    """``value`` with the fields in NORMALISED replaced, and the run's agent name replaced in
    text (error messages quote it)."""
    if isinstance(value, dict):
        return {k: ("<norm>" if k in NORMALISED else normalise(v, name)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(normalise(v, name) for v in value)
    if isinstance(value, str):
        return value.replace(name, "<name>")
    return value


def scenario(c, script: str, name: str) -> List[Tuple[str, Any]]:
    """The steps, each with the reply the client returned."""
    out: List[Tuple[str, Any]] = []
    out.append(("hello", c.hello()))
    out.append(("echo", c.echo("compat ✓ echo")))
    sp = c.spawn(name, script)
    out.append(("spawn", sp))
    aid = sp["id"]
    out.append(("list", c.list_agents()))
    out.append(("pause", c.pause(name)))
    out.append(("list paused", [(e["state"], e["running"]) for e in c.list_agents()]))
    out.append(("resume", c.resume(agent_id=aid)))
    out.append(("wait running", c.wait(agent_id=aid, timeout=0.2)))
    out.append(("kill", c.kill(name)))
    out.append(("wait killed", c.wait(agent_id=aid, timeout=10)))
    out.append(("list empty", c.list_agents()))
    out.append(("kill again", c.kill(name)))
    out.append(("pause unknown", c.pause(name)))
    # A refused THINK: the error reply with THINK's own empty field (`content`).
    out.append(("think refused", c.think("")))
    m = c.call(0x13, b"{}")
    out.append(("unknown opcode", (m.opcode, json.loads(m.payload_str))))
    m = c.call(0xA0, b"{}")
    out.append(("world", (m.opcode, json.loads(m.payload_str))))
    out.append(("connection id", c.agent_id))
    out.append(("exit", c.exit()))
    return out


def test_same_scenario_same_replies(kernel, agents, implemented):
    script = agents.script(SLEEPER)
    ours_name = agents.name("compat-sdk")
    orig_name = agents.name("compat-orig")

    ours = CloveClient(kernel.socket)
    try:
        a = scenario(ours, script, ours_name)
    finally:
        ours.disconnect()
    orig = OriginalClient(kernel.socket)
    assert orig.connect() is True
    try:
        b = scenario(orig, script, orig_name)
    finally:
        orig.disconnect()

    # Both agents are dead by now; a scenario that failed half-way leaves its agent to the
    # autouse guard in conftest, which kills it and fails the test.

    assert [step for step, _ in a] == [step for step, _ in b]
    # The unnormalised replies really are about each run's own agent.
    assert dict(a)["spawn"]["name"] == ours_name and dict(b)["spawn"]["name"] == orig_name
    assert dict(a)["spawn"]["id"] != dict(b)["spawn"]["id"]
    assert dict(a)["connection id"] != dict(b)["connection id"]

    for (step, ra), (_, rb) in zip(a, b):
        if step == "connection id":
            assert isinstance(ra, int) and isinstance(rb, int)
            continue
        assert normalise(ra, ours_name) == normalise(rb, orig_name), f"step {step!r} differs:\n  sdk:      {ra!r}\n  original: {rb!r}"

    # Sanity: the scenario went the way it should, so equality means something.
    r = dict(a)
    assert r["hello"]["protocol_version"] == 1
    assert r["echo"] == "compat ✓ echo"
    assert r["spawn"]["status"] == "running"
    assert [e["state"] for e in r["list"]] == ["RUNNING"]
    assert r["list paused"] == [("PAUSED", True)]
    assert r["pause"]["paused"] is True and r["resume"]["resumed"] is True
    assert r["wait running"]["exited"] is False
    assert r["kill"] is True and r["kill again"] is False
    assert r["wait killed"]["exited"] is True and r["wait killed"]["signal"] in (9, 15)
    assert r["list empty"] == []
    assert r["pause unknown"]["code"] == "not_found"
    assert r["think refused"]["code"] == "invalid_request"
    assert r["think refused"]["content"] == "" and r["think refused"]["success"] is False
    assert r["unknown opcode"] == (0x13, {"success": False, "error": "unknown opcode 0x13", "code": "unknown_opcode"})
    assert r["world"][1]["code"] == "not_supported"
    assert r["exit"] is True


# ---- the frames on the wire ------------------------------------------------------------------

class FakeKernel:
    """A Unix socket listener that records every frame and answers with canned replies whose
    header agent_id is 42."""

    AGENT_ID = 42

    def __init__(self, path: str) -> None:
        self.path = path
        self.frames: List[Tuple[int, int, int, bytes]] = []  # magic, agent_id, opcode, payload
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    @staticmethod
    def _exact(conn: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def _conn(self, conn: socket.socket) -> None:
        with conn:
            try:
                while True:
                    magic, agent_id, opcode, length = HEADER.unpack(self._exact(conn, HEADER.size))
                    payload = self._exact(conn, length) if length else b""
                    self.frames.append((magic, agent_id, opcode, payload))
                    if opcode == 0x00:
                        reply = payload
                    elif opcode == 0x12:
                        reply = b"[]"
                    elif opcode == 0xFF:
                        reply = b"goodbye"
                    elif opcode == 0x11:
                        reply = b'{"killed": true, "agent_id": 7}'
                    else:
                        reply = b'{"success": true}'
                    conn.sendall(HEADER.pack(MAGIC, self.AGENT_ID, opcode, len(reply)) + reply)
            except (EOFError, OSError):
                return

    def close(self) -> None:
        self.srv.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def calls(c) -> None:
    c.echo("hi there")
    c.hello()
    c.spawn("worker", "/srv/agents/worker.py")
    c.spawn("limited", "/srv/agents/w.py", sandboxed=False, network=True, limits={"memory": 1 << 26},
            restart_policy="on-failure", max_restarts=2, restart_window=60)
    c.kill("worker")
    c.kill(agent_id=7)
    c.list_agents()
    c.pause("worker")
    c.resume(agent_id=7)
    c.read_file("/etc/hostname")
    c.store("k", {"nested": [1, "two", None, True]})
    c.store("k", "v", ttl=5)
    c.think("What is 2+2?", system_instruction="be brief")
    c.exec("ls -l", cwd="/tmp")
    c.write_file("/tmp/out.txt", "data", mode="append")
    c.recv_messages(5)
    c.broadcast({"hello": "all"}, include_self=True)
    c.exit()


def test_frames_match_the_original(tmp_path):
    sock = str(tmp_path / f"fake-{uuid.uuid4().hex[:6]}.sock")
    fake = FakeKernel(sock)
    try:
        ours = CloveClient(sock)
        calls(ours)
        ours_frames, fake.frames = list(fake.frames), []
        orig = OriginalClient(sock)
        calls(orig)
        orig_frames = list(fake.frames)
    finally:
        fake.close()

    assert len(ours_frames) == len(orig_frames) == 18
    for i, (o, r) in enumerate(zip(ours_frames, orig_frames)):
        assert o[0] == r[0] == MAGIC, i
        assert o[2] == r[2], f"frame {i}: opcode {o[2]:#x} vs {r[2]:#x}"
        op = o[2]
        if op in (0x00, 0x12, 0xFF):
            assert o[3] == r[3], f"frame {i} ({op:#x}): {o[3]!r} vs {r[3]!r}"
        else:
            assert json.loads(o[3]) == json.loads(r[3]), f"frame {i} ({op:#x}): {o[3]!r} vs {r[3]!r}"
    by_op = {f[2]: f for f in ours_frames}
    assert by_op[0x12][3] == b"" and by_op[0xFF][3] == b""  # LIST and EXIT: empty payloads
    assert by_op[0x00][3] == b"hi there"
    # Both copied the reply header's agent_id.
    assert ours.agent_id == FakeKernel.AGENT_ID
    assert orig.agent_id == FakeKernel.AGENT_ID


def test_reference_encoder_is_the_documented_layout():
    frame = encode_frame(0xFE, {}, agent_id=5)
    assert len(frame) == 17 + 2
    assert frame[:4] == b"TNGA"  # 0x41474E54 little-endian
    assert struct.unpack("<IIBQ", frame[:17]) == (MAGIC, 5, 0xFE, 2)
    assert frame[17:] == b"{}"
