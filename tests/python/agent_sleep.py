"""An agent that does nothing for ten minutes, with Python's default signal handling (SIGTERM
ends it). Prints `READY` once running.

Usage: agent_sleep.py <socket>
"""

import os
import time

print("READY pid=%d uid=%d" % (os.getpid(), os.getuid()), flush=True)
time.sleep(600)
