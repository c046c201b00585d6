"""Fork bomb: fork until the system says no.

Each child blocks on a pipe, so every fork holds one more process slot. The agent's cgroup
has `pids.max` = the `max_pids` it was spawned with (the runner uses 16): forking stops with
EAGAIN once the cgroup is full, the children are released, and the demo ends. Without the
limit the loop stops at its own safety cap (512 processes) and reports that number, which
the runner judges as an escape.

Verdict: `DEMO {"demo": "fork-bomb", "processes": N, "error": "EAGAIN", ...}` where
`processes` counts this process and its children at the peak.

Usage: fork_bomb.py <socket> [safety cap, default 512]
"""

import errno
import json
import os
import sys
import time


def main():
    cap = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    release_r, release_w = os.pipe()
    children = []
    error = None
    started = time.monotonic()
    while len(children) + 1 < cap:
        try:
            pid = os.fork()
        except OSError as e:
            error = errno.errorcode.get(e.errno, str(e.errno))
            break
        if pid == 0:
            # Child: hold the slot until the parent closes the pipe, then leave without
            # running any Python cleanup (the parent owns stdout).
            os.close(release_w)
            try:
                os.read(release_r, 1)
            finally:
                os._exit(0)
        children.append(pid)
    peak = len(children) + 1
    os.close(release_w)
    for pid in children:
        os.waitpid(pid, 0)
    verdict = {
        "demo": "fork-bomb",
        "attack": "fork until failure",
        "processes": peak,
        "error": error,
        "hit_safety_cap": error is None,
        "seconds": round(time.monotonic() - started, 3),
    }
    print("DEMO " + json.dumps(verdict), flush=True)


if __name__ == "__main__":
    main()
