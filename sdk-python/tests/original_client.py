"""A pure-Python Clove client, standard library only, framing exactly as the original SDK did.

This is the reference for the compatibility tests: a script written against the original
`clove_sdk.CloveClient` spoke to the kernel like this. Frame: a packed little-endian 17-byte
header ``<IIBQ`` (magic 0x41474E54, agent_id, opcode, payload_len) and a payload: JSON text
(``json.dumps``) for every opcode except NOOP (raw bytes, echoed back) and LIST / EXIT, which the
original sent with an empty payload. The reply header's agent_id is copied into ``agent_id``.

The method names are `clove_sdk.CloveClient`'s for the calls the compatibility scenario makes;
`hello`, `wait` and `logs` use the same framing for opcodes the original SDK had no method for.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

MAGIC = 0x41474E54
HEADER = struct.Struct("<IIBQ")
HEADER_SIZE = HEADER.size  # 17

NOOP, THINK, EXEC, READ, WRITE = 0x00, 0x01, 0x02, 0x03, 0x04
SPAWN, KILL, LIST, PAUSE, RESUME = 0x10, 0x11, 0x12, 0x14, 0x15
RECV, BROADCAST, STORE = 0x21, 0x22, 0x30
WAIT, LOGS, HELLO, EXIT = 0xD0, 0xD1, 0xFE, 0xFF


@dataclass
class Message:
    agent_id: int
    opcode: int
    payload: bytes

    @property
    def payload_str(self) -> str:
        return self.payload.decode("utf-8", errors="replace")

    def payload_json(self) -> Any:
        return json.loads(self.payload) if self.payload else {}


def encode_frame(opcode: int, payload: Union[bytes, str, Dict[str, Any], None], agent_id: int = 0) -> bytes:
    """One request frame as the original SDK built it."""
    if payload is None:
        data = b""
    elif isinstance(payload, bytes):
        data = payload
    elif isinstance(payload, str):
        data = payload.encode("utf-8")
    else:
        data = json.dumps(payload).encode("utf-8")
    return HEADER.pack(MAGIC, agent_id, opcode, len(data)) + data


class OriginalClient:
    def __init__(self, socket_path: str = "/tmp/clove.sock") -> None:
        self.socket_path = socket_path
        self._sock: Optional[socket.socket] = None
        self.agent_id = 0

    # ---- connection --------------------------------------------------------------------------

    def connect(self) -> bool:
        try:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.connect(self.socket_path)
            return True
        except OSError:
            self._sock = None
            return False

    def disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "OriginalClient":
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.disconnect()

    def _recv_exact(self, n: int) -> bytes:
        assert self._sock is not None
        buf = b""
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed")
            buf += chunk
        return buf

    # ---- frames ------------------------------------------------------------------------------

    def send(self, opcode: int, payload: Union[bytes, str, Dict[str, Any], None] = b"") -> bool:
        if self._sock is None and not self.connect():
            return False
        assert self._sock is not None
        self._sock.sendall(encode_frame(opcode, payload, self.agent_id))
        return True

    def recv(self) -> Message:
        magic, agent_id, opcode, length = HEADER.unpack(self._recv_exact(HEADER_SIZE))
        if magic != MAGIC:
            raise ConnectionError(f"bad magic {magic:#x}")
        payload = self._recv_exact(length) if length else b""
        self.agent_id = agent_id
        return Message(agent_id, opcode, payload)

    def call(self, opcode: int, payload: Union[bytes, str, Dict[str, Any], None] = b"") -> Optional[Message]:
        if not self.send(opcode, payload):
            return None
        return self.recv()

    def _json(self, opcode: int, payload: Any) -> Any:
        reply = self.call(opcode, payload)
        if reply is None:
            return {"success": False, "error": "not connected"}
        try:
            return json.loads(reply.payload_str)
        except json.JSONDecodeError:
            return {"success": False, "error": f"invalid JSON reply: {reply.payload_str}"}

    # ---- the scenario's methods --------------------------------------------------------------

    def echo(self, message: str) -> Optional[str]:
        reply = self.call(NOOP, message)
        return reply.payload_str if reply else None

    def hello(self) -> Dict[str, Any]:
        return self._json(HELLO, {})

    def spawn(self, name: str, script: str, sandboxed: bool = True, network: bool = False,
              limits: Optional[Dict[str, Any]] = None, restart_policy: str = "never",
              max_restarts: int = 5, restart_window: int = 300) -> Dict[str, Any]:
        payload: Dict[str, Any] = {
            "name": name,
            "script": script,
            "sandboxed": sandboxed,
            "network": network,
            "restart_policy": restart_policy,
            "max_restarts": max_restarts,
            "restart_window": restart_window,
        }
        if limits:
            payload["limits"] = limits
        return self._json(SPAWN, payload)

    @staticmethod
    def _target(name: Optional[str], agent_id: Optional[int]) -> Dict[str, Any]:
        return {"id": agent_id} if agent_id is not None else {"name": name}

    def kill(self, name: Optional[str] = None, agent_id: Optional[int] = None) -> bool:
        return bool(self._json(KILL, self._target(name, agent_id)).get("killed", False))

    def list_agents(self) -> List[Dict[str, Any]]:
        reply = self.call(LIST, b"")  # the original sent LIST with an empty payload
        if reply is None:
            return []
        result = json.loads(reply.payload_str)
        return result if isinstance(result, list) else []

    def pause(self, name: Optional[str] = None, agent_id: Optional[int] = None) -> Dict[str, Any]:
        return self._json(PAUSE, self._target(name, agent_id))

    def resume(self, name: Optional[str] = None, agent_id: Optional[int] = None) -> Dict[str, Any]:
        return self._json(RESUME, self._target(name, agent_id))

    def wait(self, name: Optional[str] = None, agent_id: Optional[int] = None,
             timeout: Optional[float] = None) -> Dict[str, Any]:
        payload = self._target(name, agent_id)
        if timeout is not None:
            payload["timeout_ms"] = int(timeout * 1000)
        return self._json(WAIT, payload)

    def logs(self, name: Optional[str] = None, agent_id: Optional[int] = None, lines: int = 100) -> Dict[str, Any]:
        return self._json(LOGS, {**self._target(name, agent_id), "lines": lines})

    def think(self, prompt: str, system_instruction: Optional[str] = None) -> Dict[str, Any]:
        payload: Dict[str, Any] = {"prompt": prompt}
        if system_instruction:
            payload["system_instruction"] = system_instruction
        return self._json(THINK, payload)

    def exec(self, command: str, cwd: Optional[str] = None, timeout: int = 30) -> Dict[str, Any]:
        payload: Dict[str, Any] = {"command": command, "timeout": timeout}
        if cwd:
            payload["cwd"] = cwd
        return self._json(EXEC, payload)

    def write_file(self, path: str, content: str, mode: str = "write") -> Dict[str, Any]:
        return self._json(WRITE, {"path": path, "content": content, "mode": mode})

    def recv_messages(self, max_messages: int = 10) -> Dict[str, Any]:
        return self._json(RECV, {"max": max_messages})

    def broadcast(self, message: Any, include_self: bool = False) -> Dict[str, Any]:
        return self._json(BROADCAST, {"message": message, "include_self": include_self})

    def read_file(self, path: str) -> Dict[str, Any]:
        return self._json(READ, {"path": path})

    def store(self, key: str, value: Any, scope: str = "global", ttl: Optional[float] = None) -> Dict[str, Any]:
        payload = {"key": key, "value": value, "scope": scope}
        if ttl is not None:
            payload["ttl"] = ttl
        return self._json(STORE, payload)

    def exit(self) -> bool:
        reply = self.call(EXIT, b"")  # empty payload; the reply is the raw text "goodbye"
        self.disconnect()
        return reply is not None and reply.payload == b"goodbye"
