#!/usr/bin/env python3
"""crashy_worker: a worker that fails now and then, for trying out restart policies.

    clove run agents/crashy_worker.py -- --crash-after 3 --mode error

It counts steps, one per --interval seconds, then ends the way --mode says:
  error   exits with code 1 (a crash: `on-failure` and `always` restart it)
  clean   exits with code 0 (a normal end: only `always` restarts it)
  signal  kills itself with SIGSEGV (a crash by signal)
  random  picks one of the three, with --seed for repeatable runs
"""

import argparse
import os
import random
import signal
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", nargs="?", help="the kernel's socket (given by the kernel)")
    parser.add_argument("--crash-after", type=int, default=3, help="steps before the end")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds per step")
    parser.add_argument("--mode", choices=["error", "clean", "signal", "random"], default="error")
    parser.add_argument("--seed", type=int, default=None, help="seed for --mode random")
    args = parser.parse_args()

    mode = args.mode
    if mode == "random":
        mode = random.Random(args.seed).choice(["error", "clean", "signal"])
    for step in range(1, args.crash_after + 1):
        print(f"crashy_worker pid {os.getpid()}: step {step}/{args.crash_after}", flush=True)
        time.sleep(args.interval)

    print(f"crashy_worker: ending with mode {mode}", flush=True)
    if mode == "clean":
        return 0
    if mode == "signal":
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGSEGV)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
