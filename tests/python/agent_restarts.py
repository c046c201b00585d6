"""An agent for the restart tests, standard library only (the sandbox's python3 has no SDK).

It counts its runs in the file `runs` of its work dir (its cwd, which outlives restarts),
prints `RUN <n> id=<CLOVE_AGENT_ID>`, and then does what step n of the comma-separated
plan in sys.argv[2] says (runs past the end repeat the last step):

* `<n>` (an integer): exits with code n;
* `kill`: sends itself SIGKILL;
* `sleep`: sleeps until killed;
* `up:<s>`: stays up <s> seconds, then exits with code 1;
* `term`: sleeps until SIGTERM, then prints `TERM <unix time in ns>`, takes 0.3 s more and
  exits 0 (the supervision tests read the order in which agents were stopped);
* `state`: the agent-scoped key `runs` tells a first run from a later one: when it is
  missing, STOREs it (scope agent) and exits 1; when present, prints `STATE <value>`,
  RECVs one message (waiting up to 30 s), prints `GOT <message JSON>` and exits 0;
* `keep`: FETCHes the agent-scoped key `kept`; when it is missing, STOREs n there (scope
  agent) and prints `STORED`; then prints `KEPT <n> <value of kept>` and sleeps until killed.

Usage: agent_restarts.py <socket> <plan>
"""

import json
import os
import signal
import socket
import struct
import sys
import time

MAGIC = 0x41474E54
HEADER = struct.Struct("<IIBQ")  # magic, agent_id, opcode, payload_len: 17 bytes
RECV, STORE, FETCH = 0x21, 0x30, 0x31


# The frame is written out here, not imported from agent_plan.py: a test copies this script
# alone into a temporary directory (kernel_restart_forgets_an_agent_whose_script_is_gone).
def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def call(s, opcode, payload):
    body = json.dumps(payload).encode()
    s.sendall(HEADER.pack(MAGIC, 0, opcode, len(body)) + body)
    magic, agent_id, _, n = HEADER.unpack(recv_exact(s, HEADER.size))
    if magic != MAGIC:
        raise RuntimeError("reply magic 0x%08X" % magic)
    return agent_id, json.loads(recv_exact(s, n))


def stateful(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(path)
    _, got = call(s, FETCH, {"key": "runs"})
    if not got.get("success"):
        raise RuntimeError("FETCH runs: %r" % got)
    if not got.get("exists"):
        _, put = call(s, STORE, {"key": "runs", "value": 1, "scope": "agent"})
        if not put.get("success"):
            raise RuntimeError("STORE runs: %r" % put)
        print("STORED", flush=True)
        return 1
    print("STATE %s" % json.dumps(got["value"]), flush=True)
    header_id, got = call(s, RECV, {"max": 1, "wait_ms": 30000})
    print("GOT %s header_id=%d" % (json.dumps(got.get("messages")), header_id), flush=True)
    return 0


def keep(path, n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(path)
    _, got = call(s, FETCH, {"key": "kept"})
    if not got.get("success"):
        raise RuntimeError("FETCH kept: %r" % got)
    value = got.get("value") if got.get("exists") else None
    if value is None:
        _, put = call(s, STORE, {"key": "kept", "value": n, "scope": "agent"})
        if not put.get("success"):
            raise RuntimeError("STORE kept: %r" % put)
        print("STORED", flush=True)
        value = n
    print("KEPT %d %s" % (n, json.dumps(value)), flush=True)
    while True:
        time.sleep(3600)


def main():
    n = 1
    try:
        with open("runs") as f:
            n = int(f.read().strip() or "0") + 1
    except FileNotFoundError:
        pass
    with open("runs", "w") as f:
        f.write(str(n))
    print("RUN %d id=%s" % (n, os.environ.get("CLOVE_AGENT_ID")), flush=True)
    steps = sys.argv[2].split(",")
    step = steps[min(n, len(steps)) - 1]
    if step == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if step == "sleep":
        while True:
            time.sleep(3600)
    if step == "term":
        def on_term(*_):
            print("TERM %d" % time.time_ns(), flush=True)
            time.sleep(0.3)
            sys.exit(0)

        signal.signal(signal.SIGTERM, on_term)
        while True:
            time.sleep(3600)
    if step.startswith("up:"):
        time.sleep(float(step[3:]))
        return 1
    if step == "state":
        return stateful(sys.argv[1])
    if step == "keep":
        keep(sys.argv[1], n)
    return int(step)


if __name__ == "__main__":
    sys.exit(main())
