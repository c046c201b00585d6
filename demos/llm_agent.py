"""An agent for `clove demo llm`: asks the kernel's shared LLM (THINK) at the pace its role
says, and reports what it was served.

Standard library only: it runs sandboxed, where the Clove SDK is not importable, so it speaks
the original frame itself (17-byte header `<IIBQ`: magic, agent id, opcode, payload length,
then the JSON payload).

Usage: llm_agent.py <socket> <role JSON>

The role (every key optional except `start_at` and `duration_s`):

  label        a name for the report (default "agent")
  model        THINK's `model` (default "simulated:demo": the kernel's simulated provider,
               whatever its default provider is, so the demo never spends real tokens)
  prompt_tokens the prompt's size in tokens (4 bytes each; default 100)
  max_tokens   THINK's `max_tokens`: the answer's size (default 100)
  outstanding  > 0: keep this many async THINKs outstanding, taking the answers with
               ASYNC_POLL (a backlogged agent, or a flooder with many); 0: one synchronous
               THINK every `interval_ms` (a polite agent)
  interval_ms  the polite agent's period (default 200)
  start_at     the wall-clock time (seconds since the epoch) to begin at, so that every agent
               of the demo starts together
  duration_s   how long to send, from `start_at`
  grace_s      how long the polite agent may still wait for its last answer (default 3)

At the end it prints one line, `LLM {json}`:

  {"label", "sent", "errors", "error_samples": [first few error replies],
   "answers": [[sent_ms, done_ms, queue_ms, input, output], ...]}

with times in ms since `start_at`, and exits 0. Outstanding async requests are simply left:
the kernel cancels them when the agent exits.
"""

import json
import socket
import struct
import sys
import time

MAGIC = 0x41474E54
HEADER = struct.Struct("<IIBQ")  # magic, agent_id, opcode, payload_len: 17 bytes
THINK, ASYNC_POLL = 0x01, 0x80
MAX_ERROR_SAMPLES = 5


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
    magic, _, _, n = HEADER.unpack(recv_exact(s, HEADER.size))
    if magic != MAGIC:
        raise RuntimeError("reply magic 0x%08X" % magic)
    return json.loads(recv_exact(s, n))


class Agent:
    def __init__(self, role):
        self.role = role
        self.label = role.get("label", "agent")
        self.start = float(role["start_at"])
        self.end = self.start + float(role["duration_s"])
        self.request = {
            "prompt": self.prompt(int(role.get("prompt_tokens", 100))),
            "max_tokens": int(role.get("max_tokens", 100)),
            "model": role.get("model", "simulated:demo"),
        }
        self.sent = 0
        self.errors = 0
        self.error_samples = []
        self.answers = []

    def prompt(self, tokens):
        # The kernel counts a token per 4 bytes of prompt.
        text = "%s asks: " % self.label
        return (text + "x" * max(0, 4 * tokens - len(text)))[: max(4 * tokens, 1)]

    def ms(self, t):
        return int(round((t - self.start) * 1000))

    def record(self, sent_at, reply):
        if not isinstance(reply, dict) or not reply.get("success") or "usage" not in reply:
            self.errors += 1
            if len(self.error_samples) < MAX_ERROR_SAMPLES:
                self.error_samples.append(reply)
            return
        usage = reply.get("usage") or {}
        self.answers.append([
            self.ms(sent_at),
            self.ms(time.time()),
            int(reply.get("queue_ms") or 0),
            int(usage.get("input", 0)),
            int(usage.get("output", 0)),
        ])

    def run_backlogged(self, s, outstanding):
        sent_at = {}
        next_id = 1
        while True:
            now = time.time()
            if now >= self.end:
                return
            while len(sent_at) < outstanding:
                req = dict(self.request, request_id=next_id)
                req["async"] = True
                at = time.time()
                reply = call(s, THINK, req)
                self.sent += 1
                if reply.get("async") and reply.get("request_id") is not None:
                    sent_at[reply["request_id"]] = at
                else:
                    # Refused at once (queue full, quota): counted, and tried again later.
                    self.record(at, reply)
                    break
                next_id += 1
            wait = max(1, min(100, int((self.end - time.time()) * 1000)))
            got = call(s, ASYNC_POLL, {"max": 256, "wait_ms": wait})
            for r in got.get("results", []):
                at = sent_at.pop(r.get("request_id"), None)
                if at is None:
                    continue
                try:
                    reply = json.loads(r.get("payload") or "null")
                except ValueError:
                    reply = {"success": False, "error": "unreadable payload"}
                self.record(at, reply)

    def run_polite(self, s, interval):
        grace = float(self.role.get("grace_s", 3))
        next_at = self.start
        while True:
            now = time.time()
            if now >= self.end:
                return
            if next_at > now:
                time.sleep(next_at - now)
                continue
            # A request sent near the end may wait a while: allow it until end + grace.
            s.settimeout(max(0.5, self.end + grace - time.time()))
            at = time.time()
            try:
                reply = call(s, THINK, self.request)
            except socket.timeout:
                return
            self.sent += 1
            self.record(at, reply)
            next_at += interval
            # Fell behind (a long wait): the next request goes now, not in a burst.
            next_at = max(next_at, time.time())

    def summary(self):
        return {
            "label": self.label,
            "sent": self.sent,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "answers": self.answers,
        }


def main():
    path = sys.argv[1]
    role = json.loads(sys.argv[2])
    agent = Agent(role)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(path)
    delay = agent.start - time.time()
    if delay > 0:
        time.sleep(delay)
    outstanding = int(role.get("outstanding", 0))
    try:
        if outstanding > 0:
            agent.run_backlogged(s, outstanding)
        else:
            agent.run_polite(s, float(role.get("interval_ms", 200)) / 1000.0)
    finally:
        # One write for the whole line: the runner reads it from the agent's log.
        sys.stdout.write("LLM " + json.dumps(agent.summary(), separators=(",", ":")) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
