"""An agent that counts: prints `COUNT <n>` with n = 1, 2, 3, ... every 20 ms, so a reader
of its output sees whether it makes progress.

Usage: agent_counter.py <socket>
"""

import sys
import time

n = 0
while True:
    n += 1
    sys.stdout.write("COUNT %d\n" % n)
    sys.stdout.flush()
    time.sleep(0.02)
