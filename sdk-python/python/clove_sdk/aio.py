"""The asyncio client, `AsyncCloveClient`: the same methods as `CloveClient`, awaited.

The socket I/O runs on a tokio runtime inside the extension, so a call that waits (``wait``,
``recv_messages(wait=...)``) holds no thread of the event loop and no thread of a pool.

    import asyncio
    from clove_sdk.aio import AsyncCloveClient

    async def main():
        async with AsyncCloveClient() as client:
            print(await client.hello())

    asyncio.run(main())

Calls on one client run one at a time, in the order they were made; use one client per task
for concurrency.
"""

from __future__ import annotations

import asyncio
import os
from types import TracebackType
from typing import Any, Awaitable, Dict, List, Optional, Type, Union

from . import _native
from ._api import SyscallApi, _target
from .client import Payload, _ClientBase, _json, _payload_bytes
from .protocol import Message, SyscallOp

__all__ = ["AsyncCloveClient"]


class AsyncCloveClient(_ClientBase, SyscallApi[Awaitable[Dict[str, Any]]]):
    """An asyncio connection to the Clove kernel.

    As `CloveClient`: the constructor does not connect, ``await connect()`` does and returns
    whether it worked, the first call on a client that is not connected connects, and failures
    are reply dicts unless ``raise_on_error=True``.
    """

    def __init__(
        self,
        socket_path: Optional[Union[str, os.PathLike]] = None,
        *,
        timeout: Optional[float] = None,
        raise_on_error: bool = False,
    ) -> None:
        super().__init__(socket_path, raise_on_error=raise_on_error)
        #: Seconds a call may take before it fails with code ``timeout`` (None: no limit).
        self.timeout = timeout
        self._conn: Optional[_native.AsyncConnection] = None

    async def connect(self) -> bool:
        """Connects to the kernel; returns whether it worked."""
        if self._conn is not None:
            return True
        try:
            self._conn = await _native.AsyncConnection.connect(self.socket_path)
        except OSError as exc:
            self._failed(SyscallOp.SYS_HELLO, exc)
            return False
        return True

    async def disconnect(self) -> None:
        """Closes the connection (a later call connects again)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    @property
    def connected(self) -> bool:
        """Whether the client holds a connection."""
        return self._conn is not None

    async def _connection(self) -> "_native.AsyncConnection":
        if self._conn is None:
            self._conn = await _native.AsyncConnection.connect(self.socket_path)
        return self._conn

    async def _bounded(self, awaitable: Awaitable[Any]) -> Any:
        """Awaits a call within the client's timeout (a call cut short leaves the connection
        out of step, so the caller drops it)."""
        if self.timeout is None:
            return await awaitable
        return await asyncio.wait_for(awaitable, self.timeout)

    async def _call(self, opcode: int, request: Any = None) -> Any:  # type: ignore[override]
        payload = b"" if request is None else _json(request)
        try:
            conn = await self._connection()
            reply = await self._bounded(conn.call_json(int(opcode), payload))
        except (OSError, asyncio.TimeoutError) as exc:
            await self.disconnect()
            return self._failed(opcode, exc)
        self._agent_id = conn.agent_id
        return self._checked(opcode, reply)

    async def __aenter__(self) -> "AsyncCloveClient":
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.disconnect()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<AsyncCloveClient {self.socket_path} {state}, agent_id={self._agent_id}>"

    async def call(self, opcode: int, payload: Payload = b"") -> Optional[Message]:
        """Sends one frame and returns its reply as a `Message`; None on failure."""
        try:
            conn = await self._connection()
            agent_id, op, data = await self._bounded(conn.call(int(opcode), _payload_bytes(payload)))
        except (OSError, asyncio.TimeoutError) as exc:
            await self.disconnect()
            self._failed(opcode, exc)
            return None
        self._agent_id = agent_id
        if op == SyscallOp.SYS_EXIT:
            await self.disconnect()  # the kernel closes the connection after `goodbye`
        return Message(agent_id, op, data)

    async def echo(self, message: Union[str, bytes]) -> Optional[str]:
        """NOOP with ``message``: the kernel's echo as text, or None on failure."""
        reply = await self.call(SyscallOp.SYS_NOOP, message)
        return reply.payload_str if reply is not None else None

    async def noop(self) -> bool:
        """An empty NOOP round trip: whether the kernel answered."""
        return await self.call(SyscallOp.SYS_NOOP, b"") is not None

    async def kill(self, name: Optional[str] = None, agent_id: Optional[int] = None) -> bool:
        """KILL: stops an agent and returns whether it was killed."""
        reply = await self._call(SyscallOp.SYS_KILL, _target(name, agent_id))
        return bool(reply.get("killed", False))

    async def list_agents(self, detail: bool = False) -> List[Dict[str, Any]]:
        """LIST: the live agents (with ``detail``, exited ones too); [] on failure."""
        reply = await self._call(SyscallOp.SYS_LIST, {"detail": True} if detail else None)
        return reply if isinstance(reply, list) else []

    async def exit(self) -> bool:
        """EXIT: ends the session politely and disconnects (False when there was none)."""
        if self._conn is None:
            return False
        reply = await self.call(SyscallOp.SYS_EXIT, b"")
        await self.disconnect()
        return reply is not None and reply.payload == b"goodbye"
