"""Privilege: check the agent's own privilege layers, then try to gain or use privileges.

From /proc/self/status: `Seccomp: 2` (a filter is installed), `NoNewPrivs: 1` (no setuid
binary can raise privileges), `CapBnd: 0000000000000000` (no capability can ever come back)
and `CapEff` 0.

Then, each of which must fail:
* unshare(CLONE_NEWUSER): a user namespace would give it every capability over new mounts;
* mount(2) of a tmpfs;
* setuid(0);
* ptrace(PTRACE_ATTACH) of the healthy neighbour, by the host pid the runner passes (inside
  the agent's pid namespace that pid does not even exist);
* kill(SIGKILL) of the kernel and of the healthy neighbour, by their host pids.

The runner also checks from outside that the kernel still answers and the neighbour still
runs.

Verdict: `DEMO {"demo": "privilege", "status": {...}, "unshare_user": ..., "mount": ...,
"setuid0": ..., "ptrace_neighbour": ..., "kill_kernel": ..., "kill_neighbour": ...}`: `ok`
or the errno name.

Usage: privilege.py <socket> <neighbour host pid> <kernel host pid> (0: unknown, skipped)
"""

import ctypes
import errno
import json
import os
import signal
import sys

CLONE_NEWUSER = 0x10000000
PTRACE_ATTACH = 16
PTRACE_DETACH = 17

libc = ctypes.CDLL(None, use_errno=True)


def errname(n):
    return errno.errorcode.get(n, str(n))


def libc_call(fn, *args):
    ctypes.set_errno(0)
    if fn(*args) == -1:
        return errname(ctypes.get_errno())
    return "ok"


def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Seccomp", "NoNewPrivs", "CapBnd", "CapEff", "CapPrm", "Uid"):
                out[key] = value.strip()
    return out


def os_call(fn, *args):
    try:
        fn(*args)
        return "ok"
    except OSError as e:
        return errname(e.errno)


def ptrace_attach(pid):
    if pid <= 1 or pid in (os.getpid(), os.getppid()):
        return "skipped (no host pid given, or the pid is one of this agent's own)"
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    libc.ptrace.restype = ctypes.c_long
    result = libc_call(libc.ptrace, PTRACE_ATTACH, pid, None, None)
    if result == "ok":
        # Leave the neighbour as it was: wait for the attach stop, then detach.
        try:
            os.waitpid(pid, 0x40000000)  # __WALL
        except OSError:
            pass
        libc.ptrace(PTRACE_DETACH, pid, None, None)
    return result


def kill(pid):
    # 0 and -1 mean process groups and everyone; a host pid that happens to exist in our own
    # namespace would be one of our own processes: killing it proves nothing.
    if pid <= 1 or pid in (os.getpid(), os.getppid()):
        return "skipped (no host pid given, or the pid is one of this agent's own)"
    return os_call(os.kill, pid, signal.SIGKILL)


def main():
    neighbour, kernel = int(sys.argv[2]), int(sys.argv[3])
    os.makedirs("mnt", exist_ok=True)
    verdict = {
        "demo": "privilege",
        "attack": "gain or use privileges",
        "status": status(),
        "unshare_user": libc_call(libc.unshare, CLONE_NEWUSER),
        "mount": libc_call(libc.mount, b"none", b"mnt", b"tmpfs", 0, None),
        "setuid0": os_call(os.setuid, 0),
        "ptrace_neighbour": ptrace_attach(neighbour),
        "kill_neighbour": kill(neighbour),
        "kill_kernel": kill(kernel),
    }
    print("DEMO " + json.dumps(verdict), flush=True)


if __name__ == "__main__":
    main()
