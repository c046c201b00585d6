#!/usr/bin/env python3
"""Round-trip latency of clove_sdk against a pure-Python client, measured in the same run.

    python sdk-python/bench/noop.py [--kernel target/release/clove-kernel] [--iters 5000]

Starts its own kernel (a fresh socket and state dir in a temp dir, stopped at the end), then
measures, in alternating rounds so that drift in the machine hits every client alike:

* NOOP with an 8-byte payload:
  - the pure-Python client: the original SDK's framing with the standard library (struct +
    socket.sendall + recv), returning the payload;
  - `CloveClient.call(SYS_NOOP, ...)`: the public low-level call, returning a `Message`;
  - `CloveClient.echo(...)`: the original's convenience method, returning text.
* HELLO (a JSON request and a 330-byte JSON reply turned into a dict):
  - pure Python with `json.dumps` / `json.loads`;
  - `CloveClient.hello()`.

Prints p50 and p99 in microseconds and each ratio to the pure-Python client.
"""

import argparse
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clove_sdk import CloveClient, SyscallOp

HEADER = struct.Struct("<IIBQ")
MAGIC = 0x41474E54


class PurePython:
    """The original SDK's framing, standard library only."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)

    def _recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("kernel closed the connection")
            buf += chunk
        return bytes(buf)

    def call(self, opcode, payload):
        self.sock.sendall(HEADER.pack(MAGIC, 0, opcode, len(payload)) + payload)
        _magic, _agent, _op, length = HEADER.unpack(self._recv_exact(HEADER.size))
        return self._recv_exact(length)

    def noop(self, payload):
        return self.call(0x00, payload)

    def hello(self):
        return json.loads(self.call(0xFE, json.dumps({}).encode()))


def percentile(sorted_values, p):
    i = min(len(sorted_values) - 1, int(round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[i]


def timed(fn, iters):
    out = []
    clock = time.perf_counter_ns
    for _ in range(iters):
        t = clock()
        fn()
        out.append(clock() - t)
    return out


def start_kernel(binary, tmp):
    sock = os.path.join(tmp, "clove.sock")
    env = {k: v for k, v in os.environ.items() if k not in ("CLOVE_SOCKET", "CLOVE_CONFIG")}
    env["CLOVE_LOG"] = "warn"
    proc = subprocess.Popen(
        [binary, "--socket", sock, "--state-dir", os.path.join(tmp, "state"), "--no-compat-socket"],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            PurePython(sock).hello()
            return proc, sock
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"kernel at {sock} did not come up")


def main():
    root = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default=str(root / "target/release/clove-kernel"))
    parser.add_argument("--iters", type=int, default=5000, help="round trips per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not os.access(args.kernel, os.X_OK):
        raise SystemExit(f"no kernel binary at {args.kernel}: cargo build --release -p clove-kernel")

    with tempfile.TemporaryDirectory(prefix="clove-pybench-") as tmp:
        proc, sock = start_kernel(args.kernel, tmp)
        try:
            pure = PurePython(sock)
            sdk = CloveClient(sock, raise_on_error=True)
            sdk.connect()
            payload = b"12345678"
            cases = {
                "NOOP pure Python": lambda: pure.noop(payload),
                "NOOP CloveClient.call": lambda: sdk.call(SyscallOp.SYS_NOOP, payload),
                "NOOP CloveClient.echo": lambda: sdk.echo("12345678"),
                "HELLO pure Python (json)": pure.hello,
                "HELLO CloveClient.hello": sdk.hello,
            }
            for fn in cases.values():  # warm-up
                timed(fn, 500)
            samples = {name: [] for name in cases}
            for _ in range(args.rounds):
                for name, fn in cases.items():
                    samples[name] += timed(fn, args.iters)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)

    stats = {n: sorted(v) for n, v in samples.items()}
    print(f"python {sys.version.split()[0]}, {args.rounds} rounds x {args.iters} round trips")
    print(f"{'case':<28}{'p50 us':>9}{'p99 us':>9}{'p50 ratio':>11}")
    for name, v in stats.items():
        base = stats["NOOP pure Python" if name.startswith("NOOP") else "HELLO pure Python (json)"]
        ratio = percentile(v, 50) / percentile(base, 50)
        print(f"{name:<28}{percentile(v, 50) / 1000:>9.1f}{percentile(v, 99) / 1000:>9.1f}{ratio:>10.2f}x")


if __name__ == "__main__":
    main()
