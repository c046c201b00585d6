"""Filesystem escape: reach host files the agent's uid could reach without the sandbox.

The runner prepares, on the host:
* a canary file, world-readable, in a fresh 0755 directory outside the agent's project;
* a world-writable (1777) directory;
and passes their paths, plus the host path of the healthy neighbour's work dir
(`<state dir>/agents/<id>/work`).

This script tries to read the canary, to create a file in the writable directory, to list
the neighbour's work dir, and lists /proc to see whose processes it can see. In the sandbox
its root is a fresh tmpfs holding only the system directories, its project and its work dir,
and its /proc belongs to its own pid namespace: the paths do not exist and /proc shows only
its init (pid 1) and itself.

Verdict: `DEMO {"demo": "fs-escape", "canary": {...}, "write": {...}, "proc": {...},
"neighbour_workdir": {...}}`, each with a `result` (`read`, `written`, `listed` or the errno
name) and what was seen.

Usage: fs_escape.py <socket> <canary file> <writable dir> <neighbour work dir>
"""

import errno
import json
import os
import sys


def err(e):
    return errno.errorcode.get(e.errno, str(e.errno))


def read_canary(path):
    try:
        with open(path) as f:
            return {"path": path, "result": "read", "content": f.read(200)}
    except OSError as e:
        return {"path": path, "result": err(e)}


def write_into(directory):
    path = os.path.join(directory, f"escaped-by-agent-{os.environ.get('CLOVE_AGENT_ID', '?')}")
    try:
        with open(path, "w") as f:
            f.write("written from inside an agent\n")
        return {"path": path, "result": "written"}
    except OSError as e:
        return {"path": path, "result": err(e)}


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command may contain spaces and parentheses: the fields follow the last ')'.
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def list_proc():
    pids = sorted(int(n) for n in os.listdir("/proc") if n.isdigit())
    # Its own: itself and its ancestors (the sandbox's init). Anything else is someone
    # else's process.
    own = set()
    pid = os.getpid()
    while pid and pid not in own:
        own.add(pid)
        pid = ppid(pid)
    foreign = [p for p in pids if p not in own]
    return {
        "result": "listed",
        "visible": len(pids),
        "own": len([p for p in pids if p in own]),
        "foreign": len(foreign),
        "foreign_sample": [f"{p}:{comm(p)}" for p in foreign[:5]],
    }


def list_dir(path):
    try:
        return {"path": path, "result": "listed", "entries": sorted(os.listdir(path))[:10]}
    except OSError as e:
        return {"path": path, "result": err(e)}


def main():
    canary, writable, workdir = sys.argv[2], sys.argv[3], sys.argv[4]
    verdict = {
        "demo": "fs-escape",
        "attack": "read, write and list host paths",
        "uid": os.getuid(),
        "canary": read_canary(canary),
        "write": write_into(writable),
        "proc": list_proc(),
        "neighbour_workdir": list_dir(workdir),
    }
    print("DEMO " + json.dumps(verdict), flush=True)


if __name__ == "__main__":
    main()
