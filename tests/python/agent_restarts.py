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
import sys
import time

from agent_plan import call as frame_call  # the frame, written once (same directory)

RECV, STORE, FETCH = 0x21, 0x30, 0x31


def call(s, opcode, payload):
    """One request on the original frame (agent_plan.py's): the reply header's agent id and
    the reply."""
    agent_id, _, reply = frame_call(s, opcode, payload)
    return agent_id, reply


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
