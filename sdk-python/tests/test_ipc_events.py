"""Messages (REGISTER, SEND, SEND_BATCH, RECV, BROADCAST), events (SUBSCRIBE, EMIT,
POLL_EVENTS, UNSUBSCRIBE) and state (STORE, FETCH, DELETE, KEYS) through `CloveClient`, once
the kernel implements them.

Each test first checks that HELLO lists its opcodes, and fails if one is missing.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from clove_sdk import CloveClient, SyscallOp
from clove_sdk.errors import AlreadyExistsError, NotFoundError


def requires(implemented, *names):
    """The kernel implements these opcodes now: one missing from HELLO is a failure, not a
    reason to skip (a test that skips when its feature is gone would pass without it)."""
    missing = [n for n in names if n not in implemented]
    assert not missing, f"HELLO no longer lists {', '.join(missing)}"


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
    # A broadcast reaches every live agent and every open connection, named or not.
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


def test_send_messages_batch_and_full_mailbox(pair, implemented):
    requires(implemented, "SEND_BATCH", "SEND", "RECV")
    a, b = pair
    r = b.send_messages([1, "two", {"three": 3}], to=a.agent_id)
    assert r == {"success": True, "delivered_to": a.agent_id, "delivered": 3}
    assert [m["message"] for m in a.recv_messages()["messages"]] == [1, "two", {"three": 3}]
    # The session kernel's mailboxes hold 1024 messages: fill one, then one more fails, or
    # waits for room when asked to.
    assert b.send_messages(list(range(1024)), to=a.agent_id)["delivered"] == 1024
    full = b.send_message("one too many", to=a.agent_id)
    assert full["success"] is False and full["code"] == "limit_exceeded", full
    assert "full" in full["error"]
    threading.Timer(0.2, lambda: a.recv_messages(max_messages=1)).start()
    t0 = time.monotonic()
    waited = b.send_message("waited", to=a.agent_id, timeout=10)
    assert waited["success"] is True, waited
    assert 0.1 < time.monotonic() - t0 < 5
    got = []
    while True:
        batch = a.recv_messages(max_messages=1000)["messages"]
        if not batch:
            break
        got += [m["message"] for m in batch]
    assert got == list(range(1, 1024)) + ["waited"]


def test_state_store_fetch_delete_keys(pair, implemented):
    requires(implemented, "STORE", "FETCH", "DELETE", "KEYS")
    a, b = pair
    key = uname("cfg")
    assert a.store(key, {"mode": "fast"}) == {"success": True, "key": key, "version": 1}
    assert b.fetch(key) == {"success": True, "exists": True, "value": {"mode": "fast"},
                            "scope": "global", "version": 1}
    assert a.store(key, 2)["version"] == 2
    # Compare-and-set: the wrong version is a conflict, the right one wins.
    c = b.store(key, 3, if_version=1)
    assert c["success"] is False and c["code"] == "conflict", c
    assert b.store(key, 3, if_version=2)["version"] == 3
    assert key in a.list_keys(prefix=key[:4])["keys"]
    assert a.delete_key(key) == {"success": True, "deleted": True}
    assert a.delete_key(key) == {"success": True, "deleted": False}
    assert b.fetch(key) == {"success": True, "exists": False, "value": None}


def test_state_scopes_and_ttl(pair, implemented):
    requires(implemented, "STORE", "FETCH", "KEYS")
    a, b = pair
    mine = uname("mine")
    assert a.store(mine, "secret", scope="agent")["success"] is True
    assert a.fetch(mine)["scope"] == "agent"
    # Another caller cannot see it, by FETCH or KEYS.
    assert b.fetch(mine)["exists"] is False
    assert mine not in b.list_keys()["keys"]
    sess = uname("sess")
    assert a.store(sess, 1, scope="session")["success"] is True
    assert b.fetch(sess)["scope"] == "session"
    short = uname("short")
    assert a.store(short, "soon gone", ttl=0.2)["success"] is True
    assert b.fetch(short)["exists"] is True
    time.sleep(0.3)
    assert b.fetch(short)["exists"] is False
    bad = a.store(uname("bad"), 1, ttl=-1)
    assert bad["success"] is False and bad["code"] == "invalid_request" and "ttl" in bad["error"]


def test_state_changed_events(pair, implemented):
    requires(implemented, "STORE", "SUBSCRIBE", "POLL_EVENTS")
    a, b = pair
    assert b.subscribe("STATE_CHANGED")["success"] is True
    key = uname("watched")
    a.store(key, 1)
    got = b.poll_events(wait=5)
    ev = [e for e in got["events"] if e["data"]["key"] == key]
    assert ev and ev[0]["type"] == "STATE_CHANGED", got
    assert ev[0]["data"]["kind"] == "set" and ev[0]["data"]["version"] == 1
    assert ev[0]["data"]["by"] == a.agent_id
    # Agent-scoped changes reach their owner only. (Other keys of the session kernel may
    # change meanwhile, an expiring heartbeat say: only this key's events count.)
    private = uname("private")
    a.store(private, 1, scope="agent")
    seen = b.poll_events(wait=0.3)["events"]
    assert [e for e in seen if e["data"].get("key") == private] == [], seen


def test_syscall_blocked_is_published(pair, implemented):
    requires(implemented, "EMIT", "SUBSCRIBE", "POLL_EVENTS")
    a, b = pair
    assert b.subscribe("SYSCALL_BLOCKED")["success"] is True
    denied = a.emit_event("AGENT_EXITED", {"forged": True})
    assert denied["success"] is False and denied["code"] == "permission_denied"
    ev = b.poll_events(wait=5)["events"]
    assert [e["type"] for e in ev] == ["SYSCALL_BLOCKED"], ev
    assert ev[0]["source_agent_id"] == a.agent_id
    assert ev[0]["data"]["opcode"].startswith("EMIT") and "kernel" in ev[0]["data"]["reason"]


def test_resource_warning_near_the_pids_limit(kernel, agents, implemented):
    requires(implemented, "SUBSCRIBE", "POLL_EVENTS")
    with CloveClient(kernel.socket, timeout=30) as watcher:
        assert watcher.subscribe("RESOURCE_WARNING")["success"] is True
        # 30 threads plus the interpreter and init under a limit of 34: above 90 %.
        r = agents.spawn("""
            import threading, time
            ts = [threading.Thread(target=time.sleep, args=(5,)) for _ in range(30)]
            [t.start() for t in ts]
            print("up", flush=True)
            time.sleep(5)
        """, limits={"max_pids": 34})
        deadline = time.monotonic() + 10
        warnings = []
        while time.monotonic() < deadline and not warnings:
            got = watcher.poll_events(wait=1)["events"]
            warnings = [e for e in got if e["data"].get("agent_id") == r["id"]]
        assert warnings, "no RESOURCE_WARNING within 10 s"
        w = warnings[0]["data"]
        assert (w["resource"], w["kind"], w["limit"]) == ("pids", "near_limit", 34), w
        assert w["current"] >= 31
