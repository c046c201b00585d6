"""A worker for `clove demo supervisor`: prints heartbeats and crashes on a schedule.

Standard library only: it runs sandboxed, where the Clove SDK may not be importable.

Usage: supervised_worker.py <socket> <plan> [heartbeat seconds, default 0.25]

It counts its runs in the file `runs` of its work dir (its cwd, which a restart keeps), so
each run knows its number n, and does what step n of the comma-separated <plan> says (runs
past the end repeat the last step):

  crash:<s>  prints heartbeats for <s> seconds, then exits with code 1 (a crash)
  run        prints heartbeats until it is stopped

On SIGTERM (its group stopping it, for a restart or for good) it says so, takes 0.15 s to
finish up, as a real worker would, and exits 0. The runner reads what happened from the
kernel's events; this output is for `clove logs`.
"""

import os
import signal
import sys
import time

FINISH_UP = 0.15


def run_number():
    """This run's number, from the counter file in the work dir (1 when it cannot be kept)."""
    n = 1
    try:
        with open("runs") as f:
            n = int(f.read().strip() or "0") + 1
    except (OSError, ValueError):
        pass
    try:
        with open("runs", "w") as f:
            f.write(str(n))
    except OSError as e:
        say("cannot keep the run counter (%s); every run counts as run 1" % e)
    return n


def say(text):
    # One write per line: print() may write the text and the newline separately.
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def on_term(*_):
    say("SIGTERM: finishing up")
    time.sleep(FINISH_UP)
    say("stopped")
    sys.exit(0)


def main():
    plan = (sys.argv[2] if len(sys.argv) > 2 else "run").split(",")
    beat = float(sys.argv[3]) if len(sys.argv) > 3 else 0.25
    signal.signal(signal.SIGTERM, on_term)
    n = run_number()
    step = plan[min(n, len(plan)) - 1].strip()
    say("run %d (pid %d): %s" % (n, os.getpid(), step))
    if step.startswith("crash:"):
        up = float(step[len("crash:"):])
        deadline = time.monotonic() + up
        beats = 0
        while time.monotonic() < deadline:
            beats += 1
            say("heartbeat %d" % beats)
            time.sleep(max(0.0, min(beat, deadline - time.monotonic())))
        say("crashing: exit code 1 after %.1f s" % up)
        return 1
    if step != "run":
        say("unknown step %r: treated as run" % step)
    beats = 0
    while True:
        beats += 1
        say("heartbeat %d" % beats)
        time.sleep(beat)


if __name__ == "__main__":
    sys.exit(main())
