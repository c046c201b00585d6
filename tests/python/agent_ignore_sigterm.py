"""An agent that traps SIGTERM and carries on, so only SIGKILL ends it. Prints `READY` once
the handler is installed, and `SIGTERM ignored` for every SIGTERM it gets.

Usage: agent_ignore_sigterm.py <socket>
"""

import signal
import time


def ignore(signum, frame):
    print("SIGTERM ignored", flush=True)


signal.signal(signal.SIGTERM, ignore)
print("READY", flush=True)
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    time.sleep(1)
