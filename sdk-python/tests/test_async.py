"""The essentials of `AsyncCloveClient` against a real kernel (no pytest plugin: asyncio.run)."""

from __future__ import annotations

import asyncio
import time

import pytest

from clove_sdk import AsyncCloveClient, Message, SyscallOp
from clove_sdk.errors import (
    CloveError,
    InvalidRequestError,
    KernelUnreachableError,
    NotFoundError,
)

from conftest import SLEEPER


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_async_hello_echo_call(kernel):
    async def main():
        c = AsyncCloveClient(kernel.socket)
        assert c.connected is False and c.agent_id is None
        assert await c.connect() is True
        assert c.connected is True
        h = await c.hello()
        assert list(h) == ["success", "protocol_version", "kernel_version", "features"]
        assert h["success"] is True and h["protocol_version"] == 1
        assert isinstance(c.agent_id, int) and c.agent_id > 0
        assert await c.echo("héllo") == "héllo"
        assert await c.noop() is True
        m = await c.call(SyscallOp.SYS_NOOP, b"raw")
        assert isinstance(m, Message) and m.payload == b"raw" and m.op is SyscallOp.SYS_NOOP
        assert m.agent_id == c.agent_id
        u = await c.call(0x13, b"{}")
        assert u.payload_json() == {"success": False, "error": "unknown opcode 0x13", "code": "unknown_opcode"}
        assert await c.exit() is True
        assert c.connected is False
        async with AsyncCloveClient(kernel.socket) as d:
            assert d.connected is True
            assert (await d.hello())["success"] is True
        assert d.connected is False

    run(main())


def test_async_spawn_wait_logs_kill_list(kernel, agents):
    code = "import sys\nprint('async agent', flush=True)\nsys.exit(5)\n"
    script = agents.script(code)
    sleeper = agents.script(SLEEPER)

    async def main():
        async with AsyncCloveClient(kernel.socket) as c:
            assert await c.list_agents() == []
            name = agents.name("async")
            r = agents.track(await c.spawn(name, script))
            assert r["name"] == name and r["status"] == "running" and "isolation" in r
            w = await c.wait(name, timeout=20)
            assert w == {"success": True, "agent_id": r["id"], "exited": True, "exit_code": 5,
                         "oom": False, "reason": "exited with code 5"}
            lg = await c.logs(agent_id=r["id"])
            assert lg["text"] == "async agent\n" and lg["running"] is False

            s = agents.track(await c.spawn(agents.name("async-sleep"), sleeper))
            lst = await c.list_agents()
            assert [(e["id"], e["name"], e["state"], e["running"]) for e in lst] == [
                (s["id"], s["name"], "RUNNING", True)
            ]
            assert (await c.pause(agent_id=s["id"]))["paused"] is True
            assert [e["state"] for e in await c.list_agents()] == ["PAUSED"]
            assert (await c.resume(agent_id=s["id"]))["resumed"] is True
            assert await c.kill(agent_id=s["id"]) is True
            assert (await c.wait(agent_id=s["id"], timeout=10))["exited"] is True
            assert await c.kill(agent_id=s["id"]) is False
            assert await c.list_agents() == []
            detail = await c.list_agents(detail=True)
            assert {r["id"], s["id"]} <= {e["id"] for e in detail}

    run(main())


def test_async_error_reply_and_raise_on_error(kernel):
    """An error reply as the original shaped it, and the same as a typed exception."""
    missing = 4_000_000

    async def main():
        async with AsyncCloveClient(kernel.socket) as c:
            r = await c.get_agent_metrics(missing)
            assert r == {"success": False, "error": f"no agent with id {missing}", "code": "not_found"}
            assert c.last_error == r["error"]
            nf = await c.pause("no-such-agent")
            assert nf["code"] == "not_found"
        async with AsyncCloveClient(kernel.socket, raise_on_error=True) as s:
            with pytest.raises(NotFoundError) as ei:
                await s.get_agent_metrics(missing)
            assert ei.value.code == "not_found" and ei.value.opcode == SyscallOp.SYS_METRICS_AGENT
            assert ei.value.reply == r
            # An operator must name the agent: its connection is not one.
            with pytest.raises(InvalidRequestError) as ei:
                await s.get_agent_metrics()
            assert "agent_id" in ei.value.message
            with pytest.raises(NotFoundError) as ei:
                await s.kill("no-such-agent")
            assert ei.value.opcode == SyscallOp.SYS_KILL
            # A refusal does not break the connection.
            assert (await s.hello())["success"] is True
            with pytest.raises(TypeError):
                await s.store("k", object())
            assert await s.echo("ok") == "ok"

    run(main())


def test_async_unreachable_kernel(tmp_path):
    sock = str(tmp_path / "absent.sock")

    async def main():
        c = AsyncCloveClient(sock)
        assert await c.connect() is False
        assert c.connected is False and sock in c.last_error
        r = await c.hello()
        assert r["success"] is False and r["code"] == "unavailable" and sock in r["error"]
        rf = await c.read_file("/x")
        assert (rf["content"], rf["size"], rf["code"]) == ("", 0, "unavailable")
        assert await c.list_agents() == []
        assert await c.kill("x") is False
        assert await c.echo("x") is None
        assert await c.call(0, b"") is None
        s = AsyncCloveClient(sock, raise_on_error=True)
        with pytest.raises(KernelUnreachableError) as ei:
            await s.hello()
        assert isinstance(ei.value, ConnectionError) and isinstance(ei.value, CloveError)
        assert ei.value.code == "unavailable"
        with pytest.raises(KernelUnreachableError):
            await s.connect()

    run(main())


def test_async_concurrent_clients(kernel):
    async def one(i):
        async with AsyncCloveClient(kernel.socket) as c:
            h = await c.hello()
            echoes = [await c.echo(f"client {i} msg {j}") for j in range(5)]
            return c.agent_id, h["protocol_version"], echoes

    async def main():
        results = await asyncio.gather(*(one(i) for i in range(8)))
        ids = [r[0] for r in results]
        assert len(set(ids)) == 8  # eight connections, eight ids
        for i, (_, version, echoes) in enumerate(results):
            assert version == 1
            assert echoes == [f"client {i} msg {j}" for j in range(5)]

    run(main())


def test_async_calls_on_one_client_keep_order(kernel):
    async def main():
        async with AsyncCloveClient(kernel.socket) as c:
            got = await asyncio.gather(*(c.echo(str(i)) for i in range(20)))
            assert got == [str(i) for i in range(20)]

    run(main())


def test_async_long_wait_does_not_block_the_loop(kernel, agents):
    r = agents.spawn()

    async def main():
        ticks = 0
        stop = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        async with AsyncCloveClient(kernel.socket) as c:
            t = asyncio.ensure_future(ticker())
            t0 = time.monotonic()
            w = await c.wait(agent_id=r["id"], timeout=1.0)
            took = time.monotonic() - t0
            stop.set()
            await t
        assert w == {"success": True, "agent_id": r["id"], "exited": False, "oom": False}
        assert took >= 0.95
        # About 100 ticks of 10 ms fit into the second; a blocked loop would manage 1 or 2.
        assert ticks >= 40, ticks

    run(main())
