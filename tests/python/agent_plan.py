"""An agent that speaks the original frame with the standard library only (our SDK is not
installed in the sandbox's python3) and carries out a plan given as JSON in sys.argv[2].

Each step is one of:

* `{"op": <opcode>, "payload": {...}, "header_id": <n>}`: one request (the header carries
  `header_id`, default 0, which the kernel must ignore); prints
  `STEP <i> {"agent_id": <reply header id>, "opcode": <reply opcode>, "reply": <JSON>}`.
* `{"incr": <key>, "times": <n>}`: adds 1 to the global integer at <key>, <n> times, each with
  a FETCH then a STORE with `if_version` (retrying on `conflict`); prints
  `STEP <i> {"incremented": <n>, "conflicts": <c>}`. Any other error fails the agent.
* `{"exit": <code>}`: exits with <code> at once.

Prints `DONE` and exits 0 after the last step; an exception exits 1 with the reason on stderr.

Usage: agent_plan.py <socket> <plan JSON>
"""

import json
import socket
import struct
import sys

MAGIC = 0x41474E54
HEADER = struct.Struct("<IIBQ")  # magic, agent_id, opcode, payload_len: 17 bytes
FETCH, STORE = 0x31, 0x30


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def call(s, opcode, payload, header_id=0):
    body = json.dumps(payload).encode()
    s.sendall(HEADER.pack(MAGIC, header_id, opcode, len(body)) + body)
    magic, agent_id, op, n = HEADER.unpack(recv_exact(s, HEADER.size))
    if magic != MAGIC:
        raise RuntimeError("reply magic 0x%08X" % magic)
    return agent_id, op, json.loads(recv_exact(s, n))


def incr(s, key, times):
    conflicts = 0
    done = 0
    while done < times:
        _, _, got = call(s, FETCH, {"key": key})
        if not got.get("success") or not got.get("exists"):
            raise RuntimeError("FETCH %s: %r" % (key, got))
        req = {"key": key, "value": got["value"] + 1, "scope": "global",
               "if_version": got["version"]}
        _, _, put = call(s, STORE, req)
        if put.get("success"):
            done += 1
        elif put.get("code") == "conflict":
            conflicts += 1
        else:
            raise RuntimeError("STORE %s: %r" % (key, put))
    return {"incremented": done, "conflicts": conflicts}


def main():
    path = sys.argv[1]
    plan = json.loads(sys.argv[2])
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(120)
    s.connect(path)
    for i, step in enumerate(plan):
        if "exit" in step:
            print("EXIT %d" % step["exit"], flush=True)
            return step["exit"]
        if "incr" in step:
            out = incr(s, step["incr"], step["times"])
        else:
            agent_id, op, reply = call(s, step["op"], step.get("payload", {}),
                                       step.get("header_id", 0))
            out = {"agent_id": agent_id, "opcode": op, "reply": reply}
        print("STEP %d %s" % (i, json.dumps(out)), flush=True)
    s.close()
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
