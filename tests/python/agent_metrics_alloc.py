"""An agent for the metrics test, standard library only (our SDK is not installed in the
sandbox's python3): it asks METRICS_AGENT about itself without an id and prints
`SELF <JSON>` (the reply header's agent id and the reply), prints `READY`, then waits for a
message on RECV. On a message it allocates and writes 100 MiB (every byte, so the pages are
really resident), asks METRICS_AGENT about itself again (`SELF2 <JSON>`), prints
`ALLOCATED`, and waits for messages until it is killed.

Usage: agent_metrics_alloc.py <socket>
"""

import json
import socket
import sys

from agent_plan import call as frame_call  # the frame, written once (same directory)

RECV, METRICS_AGENT = 0x21, 0xC1
MIB = 1 << 20


def call(s, opcode, payload):
    """One request on the original frame (agent_plan.py's): the reply header's agent id and
    the reply."""
    agent_id, _, reply = frame_call(s, opcode, payload)
    return agent_id, reply


def wait_message(s):
    while True:
        _, got = call(s, RECV, {"max": 1, "wait_ms": 60000})
        if not got.get("success"):
            raise RuntimeError("RECV: %r" % got)
        if got["count"]:
            return got["messages"][0]


def report(s, label):
    agent_id, reply = call(s, METRICS_AGENT, {})
    print("%s %s" % (label, json.dumps({"agent_id": agent_id, "reply": reply})), flush=True)


def main():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(120)
    s.connect(sys.argv[1])
    report(s, "SELF")
    print("READY", flush=True)
    wait_message(s)
    # bytes multiplication writes every byte: no untouched, lazily mapped pages.
    blob = b"\x01" * (100 * MIB)
    report(s, "SELF2")
    print("ALLOCATED %d" % len(blob), flush=True)
    while True:
        wait_message(s)


if __name__ == "__main__":
    sys.exit(main())
