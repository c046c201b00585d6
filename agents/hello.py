#!/usr/bin/env python3
"""hello: the smallest agent. It greets the kernel, says who it is, and lists its peers.

    clove run agents/hello.py

The client finds the kernel on its own: a spawned agent gets its socket in $CLOVE_SOCKET (and,
as with the original Clove, in sys.argv[1]).
"""

from clove_sdk import CloveClient


def main() -> int:
    with CloveClient() as client:
        hello = client.hello()
        if not hello.get("success"):
            print(f"hello: the kernel did not answer: {hello.get('error')}")
            return 1
        print(f"hello from agent {client.agent_id}, kernel {hello['kernel_version']}")
        for agent in client.list_agents():
            print(f"  peer {agent['id']:>4}  {agent['name']:<20} {agent['state']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
