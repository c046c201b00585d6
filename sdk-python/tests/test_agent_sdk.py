"""A sandboxed agent imports clove_sdk and talks to the kernel from inside its sandbox.

The kernel runs agents with this venv's interpreter (``--python sys.executable`` in conftest),
so ``import clove_sdk`` inside the agent is the package under test, and ``CloveClient()`` finds
the socket with no argument ($CLOVE_SOCKET, or sys.argv[1] as the original kernel passed it).

The agent cannot be told its own id through SPAWN's ``args`` or ``env``: those are fixed before
the kernel assigns the id. So it gets its expected id in two ways, and must match both:
* its own name through ``env`` (chosen before SPAWN): it looks itself up in LIST;
* the id from the SPAWN reply, written by the test into a file next to the script after SPAWN
  answered (the agent reads its script's directory, as the original's examples did).
"""

from __future__ import annotations

import os

from clove_sdk import CloveClient

AGENT = r'''
import os, sys, time

from clove_sdk import CloveClient

c = CloveClient()
hello = c.hello()
print(hello["kernel_version"], c.agent_id, flush=True)
print("socket", c.socket_path, "argv1", sys.argv[1], "args", sys.argv[2:], flush=True)

# 1. LIST has me under the name the test gave me, with the id my connection carries.
mine = [a for a in c.list_agents() if a["name"] == os.environ["CLOVE_TEST_NAME"]]
print("listed", mine, flush=True)
if len(mine) != 1 or mine[0]["id"] != c.agent_id or mine[0]["pid"] is None:
    sys.exit(10)

# 2. The id of my SPAWN reply, which the test writes next to this script once SPAWN answered.
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), sys.argv[2])
deadline = time.monotonic() + 15
while not os.path.exists(path):
    if time.monotonic() > deadline:
        print("no expected-id file", path, flush=True)
        sys.exit(11)
    time.sleep(0.02)
time.sleep(0.05)
expected = int(open(path).read())
print("expected", expected, flush=True)
sys.exit(0 if c.agent_id == expected else 12)
'''


def test_sandboxed_agent_uses_clove_sdk(kernel, client, agents):
    name = agents.name("sdk-agent")
    r = agents.spawn(AGENT, name=name, via=client, args=["expected-id.txt"],
                     env={"CLOVE_TEST_NAME": name})
    assert r["isolation"]["namespaces"]["pid"] is True  # really sandboxed
    tmp = agents.tmp_path / "expected-id.txt.tmp"
    tmp.write_text(str(r["id"]))
    tmp.chmod(0o644)
    os.rename(tmp, agents.tmp_path / "expected-id.txt")

    w = client.wait(agent_id=r["id"], timeout=30)
    out = client.logs(agent_id=r["id"])["text"]
    assert w["exited"] is True and w.get("exit_code") == 0, f"{w}\n{out}"
    lines = out.splitlines()
    version = client.hello()["kernel_version"]
    assert lines[0] == f"{version} {r['id']}"
    assert lines[1] == f"socket {kernel.socket} argv1 {kernel.socket} args ['expected-id.txt']"
    assert lines[-1] == f"expected {r['id']}"


def test_agent_ids_differ_from_the_spawners(kernel, client, agents):
    """The spawner's connection and the agent's have different ids in one id space."""
    client.hello()
    r = agents.spawn("from clove_sdk import CloveClient\nc = CloveClient()\nc.hello()\nprint(c.agent_id)\n",
                     via=client)
    assert client.wait(agent_id=r["id"], timeout=30)["exit_code"] == 0
    seen = int(client.logs(agent_id=r["id"])["text"])
    assert seen == r["id"] != client.agent_id
