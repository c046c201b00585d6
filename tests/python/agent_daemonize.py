"""An agent that leaves a daemon behind, as a badly behaved tool would: it forks a child that
double-forks with setsid in between, so the grandchild has no parent in the agent's tree and
its own session. The grandchild sleeps ten minutes. Prints `DAEMON {"pid": ..., "sid": ...}`
(as seen from inside) once the daemon runs, then the agent itself sleeps.

Usage: agent_daemonize.py <socket>
"""

import json
import os
import time

r, w = os.pipe()
child = os.fork()
if child == 0:
    os.close(r)
    os.setsid()
    if os.fork() != 0:
        os._exit(0)
    # The daemon: no parent of ours, its own session.
    os.write(w, json.dumps({"pid": os.getpid(), "sid": os.getsid(0)}).encode())
    os.close(w)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    time.sleep(600)
    os._exit(0)
os.close(w)
os.waitpid(child, 0)
info = os.read(r, 4096).decode()
print("DAEMON " + info, flush=True)
time.sleep(600)
