"""The wire vocabulary: opcodes (`SyscallOp`) and raw reply frames (`Message`).

These are what the low-level `send`, `recv` and `call` methods of a client speak. The values
are the original kernel's; `SYS_WAIT`, `SYS_LOGS`, `SYS_SEND_BATCH` and the `SYS_GROUP_*` opcodes are
this kernel's additions (0xD0-0xEF is the range of extensions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

__all__ = ["SyscallOp", "Message", "MAGIC", "HEADER_SIZE", "MAX_PAYLOAD"]

#: The frame magic of the JSON codec (the wire bytes read ``TNGA``).
MAGIC = 0x41474E54
#: Size of the packed frame header: magic u32, agent_id u32, opcode u8, payload_len u64.
HEADER_SIZE = 17
#: The largest request payload the kernel accepts (1 MiB).
MAX_PAYLOAD = 1024 * 1024


class SyscallOp(IntEnum):
    """Every opcode of the ABI, with the original's names and values."""

    SYS_NOOP = 0x00
    SYS_THINK = 0x01
    SYS_EXEC = 0x02
    SYS_READ = 0x03
    SYS_WRITE = 0x04
    SYS_SPAWN = 0x10
    SYS_KILL = 0x11
    SYS_LIST = 0x12
    SYS_PAUSE = 0x14
    SYS_RESUME = 0x15
    SYS_SEND = 0x20
    SYS_RECV = 0x21
    SYS_BROADCAST = 0x22
    SYS_REGISTER = 0x23
    SYS_STORE = 0x30
    SYS_FETCH = 0x31
    SYS_DELETE = 0x32
    SYS_KEYS = 0x33
    SYS_GET_PERMS = 0x40
    SYS_SET_PERMS = 0x41
    SYS_HTTP = 0x50
    SYS_SUBSCRIBE = 0x60
    SYS_UNSUBSCRIBE = 0x61
    SYS_POLL_EVENTS = 0x62
    SYS_EMIT = 0x63
    SYS_RECORD_START = 0x70
    SYS_RECORD_STOP = 0x71
    SYS_RECORD_STATUS = 0x72
    SYS_REPLAY_START = 0x73
    SYS_REPLAY_STATUS = 0x74
    SYS_GET_AUDIT_LOG = 0x76
    SYS_SET_AUDIT_CONFIG = 0x77
    SYS_ASYNC_POLL = 0x80
    SYS_WORLD_CREATE = 0xA0
    SYS_WORLD_DESTROY = 0xA1
    SYS_WORLD_LIST = 0xA2
    SYS_WORLD_JOIN = 0xA3
    SYS_WORLD_LEAVE = 0xA4
    SYS_WORLD_EVENT = 0xA5
    SYS_WORLD_STATE = 0xA6
    SYS_WORLD_SNAPSHOT = 0xA7
    SYS_WORLD_RESTORE = 0xA8
    SYS_TUNNEL_CONNECT = 0xB0
    SYS_TUNNEL_DISCONNECT = 0xB1
    SYS_TUNNEL_STATUS = 0xB2
    SYS_TUNNEL_LIST_REMOTES = 0xB3
    SYS_TUNNEL_CONFIG = 0xB4
    SYS_METRICS_SYSTEM = 0xC0
    SYS_METRICS_AGENT = 0xC1
    SYS_METRICS_ALL_AGENTS = 0xC2
    SYS_METRICS_CGROUP = 0xC3
    SYS_WAIT = 0xD0
    SYS_LOGS = 0xD1
    SYS_SEND_BATCH = 0xD2
    SYS_GROUP_CREATE = 0xD3
    SYS_GROUP_LIST = 0xD4
    SYS_GROUP_STOP = 0xD5
    SYS_LLM_STATS = 0xD6
    SYS_LLM_CONFIG = 0xD7
    SYS_LLM_REPORT = 0xF0
    SYS_HELLO = 0xFE
    SYS_EXIT = 0xFF


@dataclass
class Message:
    """One frame as the kernel sent it: the caller's id, the opcode and the raw payload."""

    agent_id: int
    opcode: int
    payload: bytes = b""

    @property
    def payload_str(self) -> str:
        """The payload as text (UTF-8; undecodable bytes are replaced)."""
        return self.payload.decode("utf-8", errors="replace")

    def payload_json(self) -> Any:
        """The payload parsed as JSON (an empty payload is ``{}``); raises ``ValueError`` if it is
        not JSON."""
        if not self.payload:
            return {}
        return json.loads(self.payload)

    @property
    def op(self) -> SyscallOp | int:
        """The opcode as a `SyscallOp` when it is a known one."""
        try:
            return SyscallOp(self.opcode)
        except ValueError:
            return self.opcode
