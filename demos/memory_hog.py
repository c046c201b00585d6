"""Memory hog: allocate (and touch) memory in 8 MiB steps until something stops it.

The agent's cgroup has a memory limit (the runner uses 64M) and the host has no swap for it,
so the cgroup's OOM killer ends this process with SIGKILL long before the safety cap. The
verdict therefore comes from outside, from WAIT (`oom: true`, `signal: 9`); the progress lines
(`allocated N MiB`) say how far it got. Only when the cap is reached does the script print a
verdict itself, which the runner judges as an escape.

Usage: memory_hog.py <socket> [safety cap in MiB, default 1024]
"""

import json
import sys

STEP = 8 << 20


def main():
    cap_mib = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    hoard = []
    allocated = 0
    while allocated < cap_mib << 20:
        # bytes filled with a non-zero value: every page is written, so it is really resident
        # (a zeroed bytearray could stay untouched copy-on-write zero pages).
        hoard.append(b"\x01" * STEP)
        allocated += STEP
        print(f"allocated {allocated >> 20} MiB", flush=True)
    verdict = {
        "demo": "memory-hog",
        "attack": "allocate in 8 MiB steps",
        "allocated_mib": allocated >> 20,
        "hit_safety_cap": True,
    }
    print("DEMO " + json.dumps(verdict), flush=True)


if __name__ == "__main__":
    main()
