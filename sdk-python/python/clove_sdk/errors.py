"""Typed exceptions, raised by clients made with ``raise_on_error=True``.

By default a client behaves as the original SDK did: a refusal by the kernel, or a kernel that
cannot be reached, comes back as the reply dict ``{"success": False, "error": ..., "code": ...}``.
With ``raise_on_error=True`` the same failures raise one of these instead. Every class carries
the machine-readable ``code`` the kernel sent, the human ``message``, the ``opcode`` of the
request and the ``reply`` dict itself.
"""

from __future__ import annotations

import builtins
from typing import Any, Dict, Optional, Type

__all__ = [
    "CloveError",
    "KernelUnreachableError",
    "InvalidRequestError",
    "NotFoundError",
    "AlreadyExistsError",
    "PermissionDeniedError",
    "ConflictError",
    "LimitExceededError",
    "NotImplementedByKernelError",
    "UnavailableError",
    "KernelTimeoutError",
    "InternalKernelError",
    "error_from_reply",
    "is_error_reply",
]


class CloveError(Exception):
    """A request the kernel refused, or one that never reached it."""

    code: str = "error"

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        opcode: Optional[int] = None,
        reply: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.opcode = opcode
        self.reply = reply if reply is not None else {}

    def __str__(self) -> str:
        return f"{self.message} ({self.code})"


class KernelUnreachableError(CloveError, ConnectionError):
    """The kernel could not be reached, or the connection broke during the call."""

    code = "unavailable"


class InvalidRequestError(CloveError, ValueError):
    """The request was malformed: a missing or wrongly typed field (the message names it)."""

    code = "invalid_request"


class NotFoundError(CloveError, LookupError):
    """The named agent, key or thing does not exist."""

    code = "not_found"


class AlreadyExistsError(CloveError):
    """The thing exists already (an agent name in use, say)."""

    code = "already_exists"


class PermissionDeniedError(CloveError, PermissionError):
    """The caller may not do this."""

    code = "permission_denied"


class ConflictError(CloveError):
    """A compare-and-set lost a race (STORE with ``if_version``)."""

    code = "conflict"


class LimitExceededError(CloveError):
    """A configured limit was reached (agents, mailbox size, quota, ...)."""

    code = "limit_exceeded"


class NotImplementedByKernelError(CloveError, NotImplementedError):
    """The kernel does not implement this opcode (yet, or at all: worlds and tunnels)."""

    code = "not_implemented"


class UnavailableError(CloveError):
    """The kernel is shutting down, or the resource is unavailable."""

    code = "unavailable"


class KernelTimeoutError(CloveError, builtins.TimeoutError):
    """A timeout: the client's own (``timeout=``) ran out before the reply came, or the kernel
    gave up waiting (a frame that stopped halfway)."""

    code = "timeout"


class InternalKernelError(CloveError):
    """A bug in the kernel or an unexpected failure of the host."""

    code = "internal"


_BY_CODE: Dict[str, Type[CloveError]] = {
    "invalid_request": InvalidRequestError,
    "not_found": NotFoundError,
    "already_exists": AlreadyExistsError,
    "permission_denied": PermissionDeniedError,
    "conflict": ConflictError,
    "limit_exceeded": LimitExceededError,
    "not_implemented": NotImplementedByKernelError,
    "not_supported": NotImplementedByKernelError,
    "unknown_opcode": NotImplementedByKernelError,
    "unavailable": UnavailableError,
    "timeout": KernelTimeoutError,
    "internal": InternalKernelError,
}


def is_error_reply(reply: Any) -> bool:
    """Whether a reply is a refusal: ``success`` is false, or (SPAWN, whose replies have no
    ``success`` key) it carries only an ``error``."""
    if not isinstance(reply, dict):
        return False
    if "success" in reply:
        return reply["success"] is False
    return "error" in reply


def error_from_reply(reply: Dict[str, Any], opcode: Optional[int] = None) -> CloveError:
    """The exception for an error reply, chosen by its ``code``."""
    code = str(reply.get("code") or "error")
    message = str(reply.get("error") or "the kernel refused the request")
    cls = _BY_CODE.get(code, CloveError)
    return cls(message, code=code, opcode=opcode, reply=reply)
