"""An agent that ends the way it is told: `code N` exits with sys.exit(N), `signal N`
sends itself signal N.

Usage: agent_exit.py <socket> code|signal N
"""

import os
import sys

how, number = sys.argv[2], int(sys.argv[3])
print("EXITING %s %d" % (how, number), flush=True)
if how == "code":
    sys.exit(number)
if how == "signal":
    os.kill(os.getpid(), number)
    # Not reached for a deadly signal.
    sys.exit(100)
sys.exit("unknown mode %r" % how)
