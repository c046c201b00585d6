"""clove_sdk: the Python SDK of the Clove agent kernel.

A drop-in for the original Clove SDK: scripts written for it run unchanged.

    from clove_sdk import CloveClient

    with CloveClient() as client:       # the socket: argument, $CLOVE_SOCKET, sys.argv[1], default
        print(client.hello())
        agent = client.spawn("worker", "/srv/agents/worker.py")
        print(client.list_agents())

`CloveClient` is blocking (its socket I/O releases the GIL); `clove_sdk.aio.AsyncCloveClient`
has the same methods for asyncio. Replies are the kernel's JSON replies as dicts; failures are
``{"success": False, "error": ..., "code": ...}`` dicts, or `clove_sdk.errors` exceptions with
``raise_on_error=True``.
"""

from . import errors
from ._native import __version__
from .aio import AsyncCloveClient
from .client import AgentOSClient, CloveClient, connect, resolve_socket
from .errors import CloveError
from .protocol import Message, SyscallOp

__all__ = [
    "AgentOSClient",
    "AsyncCloveClient",
    "CloveClient",
    "CloveError",
    "Message",
    "SyscallOp",
    "__version__",
    "connect",
    "errors",
    "resolve_socket",
]
