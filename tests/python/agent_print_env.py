"""Prints the agent's whole environment as one line, `ENV {...}` (JSON), and exits 0.

Usage: agent_print_env.py <socket>  (the socket is not used)
"""

import json
import os

print("ENV " + json.dumps(dict(os.environ), sort_keys=True), flush=True)
