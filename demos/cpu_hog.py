"""CPU hog: spin for a few seconds of wall time and measure the CPU time actually received.

The agent's cgroup has a CPU quota (the runner uses `--cpus 0.2`: 20 ms per 100 ms period),
so however hard it spins it gets about 0.2 s of CPU per second of wall time. Without the
quota a busy loop gets a whole CPU (ratio about 1.0).

Verdict: `DEMO {"demo": "cpu-hog", "cpu_s": ..., "wall_s": ..., "ratio": ...}`, the CPU time
from getrusage(RUSAGE_SELF) (user + system, microsecond resolution; os.times() ticks in
10 ms steps) over the wall time of the loop.

Usage: cpu_hog.py <socket> [seconds, default 3]
"""

import json
import resource
import sys
import time


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    wall0 = time.monotonic()
    cpu0 = cpu_seconds()
    spins = 0
    while time.monotonic() - wall0 < seconds:
        for _ in range(10000):
            spins += 1
    wall = time.monotonic() - wall0
    cpu = cpu_seconds() - cpu0
    verdict = {
        "demo": "cpu-hog",
        "attack": f"busy loop for {seconds:g} s",
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "ratio": round(cpu / wall, 3),
        "spins": spins,
    }
    print("DEMO " + json.dumps(verdict), flush=True)


if __name__ == "__main__":
    main()
