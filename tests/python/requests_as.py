"""Sends JSON requests on the original frame, standard library only, and prints each reply
as one JSON line. The tests run it as another uid (an operator that is not root).

Usage: requests_as.py SOCKET '[[opcode, {payload}], ...]'
"""

import json
import socket
import struct
import sys

MAGIC = 0x41474E54
HEADER = struct.Struct("<IIBQ")


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk
    return buf


def main():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(sys.argv[1])
    for opcode, payload in json.loads(sys.argv[2]):
        body = json.dumps(payload).encode()
        s.sendall(HEADER.pack(MAGIC, 0, opcode, len(body)) + body)
        _, _, _, n = HEADER.unpack(recv_exact(s, HEADER.size))
        print(recv_exact(s, n).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
