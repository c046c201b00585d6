"""A memory hog: keeps allocating 1 MiB blocks it writes to (so the pages are really used),
printing `HOG <MiB>` every 16 MiB, up to 1 GiB. Under a memory limit it is killed on the
way; if it ever gets to the end it prints `HOG survived` and exits 0.

Usage: agent_memory_hog.py <socket>
"""

import sys

blocks = []
for mib in range(1, 1025):
    # bytes multiplication writes every byte: no untouched, lazily mapped pages.
    blocks.append(b"x" * (1 << 20))
    if mib % 16 == 0:
        print("HOG %d" % mib, flush=True)
print("HOG survived", flush=True)
sys.exit(0)
