#!/usr/bin/env python3
"""heartbeat_worker: does a unit of work at a steady pace and reports a heartbeat after each.

    clove run agents/heartbeat_worker.py -- --beats 10 --interval 0.5

Each heartbeat is a line in the agent's log (`clove logs heartbeat_worker`) and, when the kernel
has a state store, the key `heartbeat/<agent id>` ({beat, at, work_done}) that a supervisor or
dashboard can read. The worker stops cleanly on SIGTERM (KILL), finishing its current beat.
"""

import argparse
import signal
import time

from clove_sdk import CloveClient

stopping = False


def on_sigterm(_signum, _frame):
    global stopping
    stopping = True


def work(n: int) -> int:
    """A unit of pretend work: sum of squares, enough to show up in CPU metrics."""
    return sum(i * i for i in range(20_000 + n))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", nargs="?", help="the kernel's socket (given by the kernel)")
    parser.add_argument("--beats", type=int, default=0, help="stop after N beats (0: run on)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between beats")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)

    client = CloveClient(args.socket)
    features = client.hello().get("features", {})
    use_state = bool(features.get("state"))
    if not use_state:
        print("heartbeat_worker: the kernel has no state store yet; heartbeats go to the log only")

    beat, done = 0, 0
    while not stopping and (args.beats == 0 or beat < args.beats):
        done += work(beat) > 0
        beat += 1
        now = time.time()
        print(f"heartbeat {beat} at {now:.3f}: {done} units done", flush=True)
        if use_state:
            key = f"heartbeat/{client.agent_id}"
            client.store(key, {"beat": beat, "at": now, "work_done": done}, ttl=10 * args.interval)
        time.sleep(args.interval)
    print(f"heartbeat_worker: stopping after {beat} beats", flush=True)
    client.disconnect()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
