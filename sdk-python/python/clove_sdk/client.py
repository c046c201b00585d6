"""The blocking client, `CloveClient`: a drop-in for the original SDK's class of that name."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from types import TracebackType
from typing import Any, Dict, List, Optional, Type, Union

from . import _native
from ._api import SyscallApi, _target
from .errors import KernelTimeoutError, KernelUnreachableError, error_from_reply, is_error_reply
from .protocol import Message, SyscallOp

__all__ = ["CloveClient", "AgentOSClient", "connect", "resolve_socket"]

Payload = Union[bytes, str, Dict[str, Any], List[Any], None]


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def resolve_socket(socket_path: Optional[Union[str, os.PathLike]] = None) -> str:
    """The socket a client uses, in this order: ``socket_path``; ``$CLOVE_SOCKET`` (a spawned
    agent finds its own socket there); ``sys.argv[1]`` when it names a socket (the original
    kernel passed the socket there); the kernel's default socket (/run/clove/clove.sock for
    root, $XDG_RUNTIME_DIR/clove/clove.sock for others); /tmp/clove.sock, the original's, when
    only that one exists."""
    if socket_path:
        return os.fspath(socket_path)
    env = os.environ.get("CLOVE_SOCKET")
    if env:
        return env
    if len(sys.argv) > 1 and _is_socket(sys.argv[1]):
        return sys.argv[1]
    return os.fspath(_native.resolve_socket(None))


def _json(request: Any) -> bytes:
    """A request as JSON text, the way the original SDK made it: with the standard library, so
    a value JSON cannot carry (bytes, a set, an object) raises ``TypeError`` and NaN raises
    ``ValueError``, instead of being quietly turned into something else."""
    return json.dumps(request, allow_nan=False, separators=(",", ":")).encode("utf-8")


def _payload_bytes(payload: Payload) -> bytes:
    """A low-level payload as bytes: bytes as they are, text as UTF-8, other values as JSON."""
    if payload is None:
        return b""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return _json(payload)


class _ClientBase:
    """What both clients share besides the syscalls: the socket choice, `agent_id`,
    `last_error`, and turning a failure into the reply dict or an exception."""

    def __init__(
        self,
        socket_path: Optional[Union[str, os.PathLike]] = None,
        *,
        raise_on_error: bool = False,
    ) -> None:
        self.socket_path: str = resolve_socket(socket_path)
        self.raise_on_error = raise_on_error
        #: The message of the last failed call (a refusal or a connection failure), or None.
        self.last_error: Optional[str] = None
        self._agent_id: Optional[int] = None

    @property
    def agent_id(self) -> Optional[int]:
        """The caller's id as the kernel sees it, from the last reply (None before one)."""
        return self._agent_id

    def _checked(self, opcode: int, reply: Any) -> Any:
        """A reply as the caller gets it: returned, or raised when it is an error and the
        client raises."""
        if is_error_reply(reply):
            self.last_error = str(reply.get("error"))
            if self.raise_on_error:
                raise error_from_reply(reply, opcode)
        return reply

    def _failed(self, opcode: int, exc: BaseException) -> Dict[str, Any]:
        """A call that did not get through, in the shape of the kernel's error replies: code
        ``timeout`` when the client's own timeout ran out, ``unavailable`` otherwise."""
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
            code, error = "timeout", KernelTimeoutError
            message = f"no reply from the Clove kernel at {self.socket_path} in time: {exc}"
        else:
            code, error = "unavailable", KernelUnreachableError
            message = f"cannot reach the Clove kernel at {self.socket_path}: {exc}"
        self.last_error = message
        if self.raise_on_error:
            raise error(message, code=code, opcode=opcode) from exc
        return _native.error_reply(opcode, code, message)


class CloveClient(_ClientBase, SyscallApi[Dict[str, Any]]):
    """A blocking connection to the Clove kernel.

    ``CloveClient(socket_path=None)`` does not connect: ``connect()`` does (it returns whether
    it succeeded), and so does the first call on a client that is not connected. Every syscall
    method returns the kernel's reply, a dict (``list_agents`` a list). A failure is a dict too,
    ``{"success": False, "error": ..., "code": ...}``, as with the original SDK, unless the
    client was made with ``raise_on_error=True``: then it raises a ``clove_sdk.errors``
    exception.

    Socket I/O releases the GIL. One call runs at a time; threads sharing a client take turns.

    >>> with CloveClient() as client:            # doctest: +SKIP
    ...     client.store("greeting", "hello")
    ...     client.fetch("greeting")["value"]
    'hello'
    """

    def __init__(
        self,
        socket_path: Optional[Union[str, os.PathLike]] = None,
        *,
        timeout: Optional[float] = None,
        raise_on_error: bool = False,
    ) -> None:
        super().__init__(socket_path, raise_on_error=raise_on_error)
        self.timeout = timeout
        self._conn: Optional[_native.Connection] = None

    # ---- connection --------------------------------------------------------------------------

    def connect(self) -> bool:
        """Connects to the kernel; returns whether it worked (``last_error`` says why not).
        With ``raise_on_error=True`` a failure raises ``KernelUnreachableError`` instead."""
        if self._conn is not None and self._conn.open:
            return True
        try:
            self._conn = _native.Connection(self.socket_path, self.timeout)
        except OSError as exc:
            self._conn = None
            self._failed(SyscallOp.SYS_HELLO, exc)
            return False
        return True

    def disconnect(self) -> None:
        """Closes the connection (a later call connects again)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @property
    def connected(self) -> bool:
        """Whether the client holds an open connection."""
        return self._conn is not None and self._conn.open

    def _connection(self) -> "_native.Connection":
        if self._conn is None or not self._conn.open:
            self._conn = _native.Connection(self.socket_path, self.timeout)
        return self._conn

    def _broken(self) -> None:
        """Drops a connection an I/O error left out of step."""
        self.disconnect()

    def _call(self, opcode: int, request: Any = None) -> Dict[str, Any]:
        payload = b"" if request is None else _json(request)
        try:
            conn = self._connection()
            reply = conn.call_json(int(opcode), payload)
        except OSError as exc:
            self._broken()
            return self._failed(opcode, exc)
        self._agent_id = conn.agent_id
        return self._checked(opcode, reply)

    def __enter__(self) -> "CloveClient":
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.disconnect()

    def __del__(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # interpreter shutdown: the extension may be gone already
                pass

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<CloveClient {self.socket_path} {state}, agent_id={self._agent_id}>"

    # ---- low level: the original frame -------------------------------------------------------

    def send(self, opcode: int, payload: Payload = b"") -> bool:
        """Sends one frame (``payload`` as bytes, text, or a value sent as JSON) without waiting
        for its reply; returns whether it was sent. Replies come in order from ``recv()``."""
        try:
            self._connection().send(int(opcode), _payload_bytes(payload))
        except OSError as exc:
            self._broken()
            self._failed(opcode, exc)
            return False
        return True

    def recv(self) -> Optional[Message]:
        """The reply to the oldest request sent with ``send``, as a `Message`; None on failure."""
        try:
            agent_id, opcode, payload = self._connection().recv()
        except OSError as exc:
            self._broken()
            self._failed(SyscallOp.SYS_NOOP, exc)
            return None
        self._agent_id = agent_id
        if opcode == SyscallOp.SYS_EXIT:
            self.disconnect()  # the kernel closes the connection after `goodbye`
        return Message(agent_id, opcode, payload)

    def call(self, opcode: int, payload: Payload = b"") -> Optional[Message]:
        """Sends one frame and returns its reply as a `Message`; None on failure."""
        try:
            conn = self._connection()
            agent_id, op, data = conn.call(int(opcode), _payload_bytes(payload))
        except OSError as exc:
            self._broken()
            self._failed(opcode, exc)
            return None
        self._agent_id = agent_id
        if op == SyscallOp.SYS_EXIT:
            self.disconnect()  # the kernel closes the connection after `goodbye`
        return Message(agent_id, op, data)

    # ---- methods whose results are not the reply dict ----------------------------------------

    def echo(self, message: Union[str, bytes]) -> Optional[str]:
        """NOOP with ``message``: the kernel's echo as text, or None on failure."""
        reply = self.call(SyscallOp.SYS_NOOP, message)
        return reply.payload_str if reply is not None else None

    def noop(self) -> bool:
        """An empty NOOP round trip: whether the kernel answered."""
        return self.call(SyscallOp.SYS_NOOP, b"") is not None

    def kill(self, name: Optional[str] = None, agent_id: Optional[int] = None) -> bool:
        """KILL: stops an agent (SIGTERM, then SIGKILL after its grace period) and returns
        whether it was killed."""
        reply = self._call(SyscallOp.SYS_KILL, _target(name, agent_id))
        return bool(reply.get("killed", False))

    def list_agents(self, detail: bool = False) -> List[Dict[str, Any]]:
        """LIST: the live agents, ``[{id, name, pid, state, running}]``; with ``detail`` also
        exited ones, with their isolation and exit. An empty list on failure (``last_error``
        says why; ``raise_on_error=True`` raises)."""
        reply = self._call(SyscallOp.SYS_LIST, {"detail": True} if detail else None)
        return reply if isinstance(reply, list) else []

    def exit(self) -> bool:
        """EXIT: ends the session politely and disconnects. True when the kernel said
        ``goodbye``; False when there was no session to end or it did not answer."""
        if not self.connected:
            return False
        reply = self.call(SyscallOp.SYS_EXIT, b"")
        self.disconnect()
        return reply is not None and reply.payload == b"goodbye"


#: The original SDK's earlier name for `CloveClient`.
AgentOSClient = CloveClient


def connect(
    socket_path: Optional[Union[str, os.PathLike]] = None, **options: Any
) -> CloveClient:
    """A `CloveClient` that has tried to connect (see ``client.connected``); ``options`` are
    `CloveClient`'s keyword arguments."""
    client = CloveClient(socket_path, **options)
    client.connect()
    return client
