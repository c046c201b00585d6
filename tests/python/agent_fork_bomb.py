"""A fork bomb that keeps score: forks children that sleep (so each keeps its pid) until
fork has failed 20 times in a row or 200 forks succeeded, then prints
`FORKBOMB {"forked": n, "failed": m, "errors": [...]}` and sleeps while its children live.

Usage: agent_fork_bomb.py <socket>
"""

import errno
import json
import os
import time

forked = 0
failed = 0
failed_in_a_row = 0
errors = set()
while forked < 200 and failed_in_a_row < 20:
    try:
        pid = os.fork()
    except OSError as e:
        failed += 1
        failed_in_a_row += 1
        errors.add(errno.errorcode.get(e.errno, str(e.errno)))
        time.sleep(0.01)
        continue
    if pid == 0:
        time.sleep(600)
        os._exit(0)
    forked += 1
    failed_in_a_row = 0
report = {"forked": forked, "failed": failed, "errors": sorted(errors)}
print("FORKBOMB " + json.dumps(report), flush=True)
time.sleep(600)
