"""An agent written the way the original Clove's example agents are: standard library only,
the original frame (magic AGNT, JSON payloads), the socket path in sys.argv[1].

It says HELLO, asks LIST, prints what it got as one line `ORIGINAL {json}` and exits 0 when
both calls answered as the original SDK expects (1 otherwise, with the reason on stderr).

Usage: original_agent.py <socket>
"""

import json
import socket
import struct
import sys

MAGIC = 0x41474E54
HEADER = struct.Struct("<IIBQ")  # magic, agent_id, opcode, payload_len: 17 bytes
LIST, HELLO = 0x12, 0xFE


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def call(s, opcode, payload=b""):
    """One request, one reply: (reply header agent_id, reply opcode, parsed JSON)."""
    s.sendall(HEADER.pack(MAGIC, 0, opcode, len(payload)) + payload)
    magic, agent_id, op, n = HEADER.unpack(recv_exact(s, HEADER.size))
    if magic != MAGIC:
        raise RuntimeError("reply magic 0x%08X" % magic)
    return agent_id, op, json.loads(recv_exact(s, n))


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "/tmp/clove.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    hello_id, hello_op, hello = call(s, HELLO, b"{}")
    # The original SDK sends LIST with an empty payload.
    list_id, list_op, agents = call(s, LIST)
    s.close()
    report = {
        "socket": path,
        "hello": {"agent_id": hello_id, "opcode": hello_op, "reply": hello},
        "list": {"agent_id": list_id, "opcode": list_op, "reply": agents},
    }
    print("ORIGINAL " + json.dumps(report), flush=True)
    if hello_op != HELLO or not hello.get("success"):
        print("HELLO failed: %r" % (hello,), file=sys.stderr)
        return 1
    if list_op != LIST or not isinstance(agents, list):
        print("LIST did not answer an array: %r" % (agents,), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
