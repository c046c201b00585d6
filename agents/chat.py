#!/usr/bin/env python3
"""chat: an LLM chat agent that keeps the conversation and asks the kernel's shared model.

    clove run agents/chat.py -- "What is a cgroup?" "And a namespace?"

Every question goes to THINK with the conversation so far and a system instruction; the kernel
holds the provider keys and queues the request fairly among agents, so the agent needs neither
a key nor network access. Prints each answer with the tokens it cost.

The kernel decides which model answers (its --llm-provider, or the first provider whose key
is in its environment); a kernel without a key answers from its simulated provider, and every
reply says which provider answered. A kernel without THINK (an old one) makes it say so and
exit with code 2.
"""

import argparse
import sys

from clove_sdk import CloveClient

SYSTEM = "You are a concise assistant inside the Clove agent kernel. Answer in two sentences."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("questions", nargs="*", help="questions to ask, in order")
    parser.add_argument("--model", default=None, help="a model name or alias (kernel default)")
    argv = sys.argv[1:]
    if argv and argv[0].startswith("/"):  # the kernel passes its socket first
        argv = argv[1:]
    args = parser.parse_args(argv)
    questions = args.questions or ["Say hello to the agents of this machine."]

    with CloveClient() as client:
        if not client.hello().get("features", {}).get("llm"):
            print("chat: this kernel has no LLM configured (THINK is not available)")
            return 2
        history = []
        for question in questions:
            history.append(f"User: {question}")
            reply = client.think("\n".join(history) + "\nAssistant:",
                                 system_instruction=SYSTEM, model=args.model)
            if not reply.get("success"):
                print(f"chat: THINK failed: {reply.get('error')}")
                return 1
            answer = reply["content"].strip()
            history.append(f"Assistant: {answer}")
            who = reply.get("provider", "?")
            print(f"> {question}\n{answer}\n  ({reply.get('tokens', 0)} tokens, {who})\n",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
