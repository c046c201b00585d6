"""Messages (REGISTER, SEND, RECV, BROADCAST) and events (SUBSCRIBE, EMIT, POLL_EVENTS,
UNSUBSCRIBE) through `CloveClient`, once the kernel implements them.

Each test skips, with the reason, while the kernel does not list its opcodes in HELLO's
features.opcodes; test_methods.py then checks their not_implemented answers instead.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from clove_sdk import CloveClient, SyscallOp
from clove_sdk.errors import AlreadyExistsError, NotFoundError


def requires(implemented, *names):
    missing = [n for n in names if n not in implemented]
    if missing:
        pytest.skip(f"the kernel does not implement {', '.join(missing)} yet")


@pytest.fixture
def pair(kernel):
    a, b = CloveClient(kernel.socket), CloveClient(kernel.socket)
    a.hello()
    b.hello()
    yield a, b
    a.disconnect()
    b.disconnect()


def uname(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_register_name(kernel, pair, implemented):
    requires(implemented, "REGISTER")
    a, b = pair
    name = uname("alice")
    assert a.register_name(name) == {"success": True, "agent_id": a.agent_id, "name": name}
    dup = b.register_name(name)
    assert dup["success"] is False and dup["code"] == "already_exists" and name in dup["error"]
    strict = CloveClient(kernel.socket, raise_on_error=True)
    try:
        with pytest.raises(AlreadyExistsError) as ei:
            strict.register_name(name)
        assert ei.value.opcode == SyscallOp.SYS_REGISTER
    finally:
        strict.disconnect()
    # A closed connection releases its name.
    a.disconnect()
    deadline = time.monotonic() + 5
    while True:
        r = b.register_name(name)
        if r["success"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r == {"success": True, "agent_id": b.agent_id, "name": name}


def test_send_and_recv(pair, implemented):
    requires(implemented, "REGISTER", "SEND", "RECV")
    a, b = pair
    an, bn = uname("a"), uname("b")
    assert a.register_name(an)["success"] and b.register_name(bn)["success"]
    assert b.send_message({"hi": [1, 2]}, to_name=an) == {"success": True, "delivered_to": a.agent_id}
    assert b.send_message("by id", to=a.agent_id) == {"success": True, "delivered_to": a.agent_id}
    assert b.send_message(3)["success"] is False  # no recipient named
    got = a.recv_messages()
    assert got["success"] is True and got["count"] == 2
    assert [(m["from"], m["from_name"], m["message"]) for m in got["messages"]] == [
        (b.agent_id, bn, {"hi": [1, 2]}),
        (b.agent_id, bn, "by id"),
    ]
    assert all(isinstance(m["age_ms"], int) and m["age_ms"] >= 0 for m in got["messages"])
    assert a.recv_messages() == {"success": True, "messages": [], "count": 0}
    # max_messages
    for i in range(3):
        b.send_message(i, to=a.agent_id)
    assert [m["message"] for m in a.recv_messages(max_messages=2)["messages"]] == [0, 1]
    assert [m["message"] for m in a.recv_messages(max_messages=2)["messages"]] == [2]


def test_send_to_unknown_is_not_found(kernel, pair, implemented):
    requires(implemented, "SEND")
    _, b = pair
    r = b.send_message("x", to_name=uname("nobody"))
    assert r["success"] is False and r["code"] == "not_found"
    strict = CloveClient(kernel.socket, raise_on_error=True)
    try:
        with pytest.raises(NotFoundError):
            strict.send_message("x", to_name=uname("nobody"))
    finally:
        strict.disconnect()


def test_recv_wait(pair, implemented):
    requires(implemented, "RECV", "SEND")
    a, b = pair
    t0 = time.monotonic()
    assert a.recv_messages(wait=0.3) == {"success": True, "messages": [], "count": 0}
    assert time.monotonic() - t0 >= 0.28
    # A message arriving during the wait ends it early.
    target = a.agent_id
    threading.Timer(0.2, lambda: b.send_message("wake", to=target)).start()
    t0 = time.monotonic()
    r = a.recv_messages(wait=10)
    took = time.monotonic() - t0
    assert [m["message"] for m in r["messages"]] == ["wake"]
    assert 0.1 < took < 5, took


def test_broadcast(pair, implemented):
    requires(implemented, "BROADCAST", "RECV", "REGISTER")
    a, b = pair
    # This kernel delivers broadcasts to connections that registered a name (or to agents);
    # a bare unregistered connection gets none (see the report).
    assert a.register_name(uname("a"))["success"] and b.register_name(uname("b"))["success"]
    n = a.broadcast({"all": True})
    assert n["success"] is True and n["delivered_count"] >= 1
    assert [m["message"] for m in b.recv_messages()["messages"]] == [{"all": True}]
    assert a.recv_messages()["count"] == 0  # not to itself by default
    m = a.broadcast("me too", include_self=True)
    assert m["delivered_count"] == n["delivered_count"] + 1
    assert [x["message"] for x in a.recv_messages()["messages"]] == ["me too"]
    assert [x["message"] for x in b.recv_messages()["messages"]] == ["me too"]


def test_events(pair, implemented):
    requires(implemented, "SUBSCRIBE", "EMIT", "POLL_EVENTS", "UNSUBSCRIBE")
    a, b = pair
    assert a.subscribe(["CUSTOM", "AGENT_EXITED"]) == {"success": True, "subscribed": ["CUSTOM", "AGENT_EXITED"]}
    assert b.emit_event("CUSTOM", {"x": 1}) == {"success": True, "event": "CUSTOM"}
    got = a.poll_events()
    assert got["success"] is True and got["count"] == 1
    ev = got["events"][0]
    assert (ev["type"], ev["data"], ev["source_agent_id"]) == ("CUSTOM", {"x": 1}, b.agent_id)
    assert isinstance(ev["timestamp"], int) and ev["timestamp"] > 0
    assert a.poll_events() == {"success": True, "events": [], "count": 0}
    assert b.poll_events()["count"] == 0  # b did not subscribe
    un = a.unsubscribe("CUSTOM")
    assert un["success"] is True
    b.emit_event("CUSTOM", 2)
    assert a.poll_events()["count"] == 0
    assert a.unsubscribe()["success"] is True
