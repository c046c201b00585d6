"""Runs inside a sandboxed agent and reports what it sees, as one JSON line on stdout.

Written for the original SDK's world: standard library only, the socket path in sys.argv[1].
It speaks the original frame (magic AGNT, little-endian header) to the kernel over that
socket, so the test also proves an original-style script can talk to the kernel from inside.

Usage: sandbox_probe.py <socket> <canary path> [extra checks...]
"""

import ctypes
import errno
import json
import os
import socket
import struct
import sys
import threading

MAGIC = 0x41474E54
HELLO = 0xFE


def status_fields():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def hello(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall(struct.pack("<IIBQ", MAGIC, 0, HELLO, 2) + b"{}")
    header = b""
    while len(header) < 17:
        chunk = s.recv(17 - len(header))
        if not chunk:
            raise RuntimeError("closed before the header")
        header += chunk
    magic, agent_id, opcode, length = struct.unpack("<IIBQ", header)
    body = b""
    while len(body) < length:
        chunk = s.recv(length - len(body))
        if not chunk:
            raise RuntimeError("closed before the payload")
        body += chunk
    s.close()
    return {"agent_id": agent_id, "opcode": opcode, "reply": json.loads(body)}


def try_call(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def libc_errno(name, *args):
    libc = ctypes.CDLL(None, use_errno=True)
    r = getattr(libc, name)(*args)
    if r == -1:
        return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    return "ok"


def main():
    sock = sys.argv[1]
    canary = sys.argv[2]
    st = status_fields()
    report = {
        "argv": sys.argv,
        "uid": os.getuid(),
        "gid": os.getgid(),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "cwd": os.getcwd(),
        "hostname": socket.gethostname(),
        "env": {k: v for k, v in os.environ.items() if k.startswith("CLOVE_") or k in ("HOME", "PATH", "USER")},
        "seccomp": st.get("Seccomp"),
        "no_new_privs": st.get("NoNewPrivs"),
        "cap_bnd": st.get("CapBnd"),
        "cap_eff": st.get("CapEff"),
        "procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "canary_visible": os.path.exists(canary),
        "write_root": try_call(lambda: open("/clove-probe", "w").close()),
        "write_work": try_call(lambda: open("probe.txt", "w").write("x")),
        "write_tmp": try_call(lambda: open("/tmp/probe.txt", "w").write("x")),
        "unshare_user": libc_errno("unshare", 0x10000000),
        "setuid_root": libc_errno("setuid", 0),
    }
    threads = []
    results = []
    for i in range(4):
        t = threading.Thread(target=lambda i=i: results.append(i))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    report["threads"] = len(results)
    try:
        report["hello"] = hello(sock)
    except Exception as e:  # reported, not raised: the test shows what failed
        report["hello"] = {"error": repr(e)}
    try:
        report["compat_hello"] = hello("/tmp/clove.sock")
    except Exception as e:
        report["compat_hello"] = {"error": repr(e)}
    print("PROBE " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
