"""The healthy neighbour: runs beside every attacker and prints a heartbeat.

The demo runner checks after each attack that this agent is still RUNNING and that it kept
printing heartbeats while the attacker ran, so an attack that takes the whole machine (or
just its neighbour) down shows up as an escape. Standard library only.

Usage: healthy.py <socket> [interval seconds, default 0.1]
"""

import sys
import time


def main():
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
    beat = 0
    while True:
        beat += 1
        # One write per line: print() may write the text and the newline separately, and
        # the runner counts whole lines.
        sys.stdout.write(f"heartbeat {beat}\n")
        sys.stdout.flush()
        time.sleep(interval)


if __name__ == "__main__":
    main()
