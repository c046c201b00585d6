#!/usr/bin/env python3
"""pipeline: three agents that talk by name: parser -> reasoner -> verifier.

    clove run agents/pipeline.py                       # the built-in problems
    clove run agents/pipeline.py -- --problems "2 + 3" "6 * 7" "1 / 8"
    clove logs pipeline

Run as above, this script is the driver. It spawns itself three times as child agents, one per
stage, each with its own sandbox and limits nested under the driver's. It hands the problems to
the parser, and prints the verifier's report:

    parser     turns each text problem into {id, a, op, b} and passes it to the reasoner
    reasoner   works out each answer and passes {id, text, answer} to the verifier
    verifier   checks every answer independently (exact fractions) and reports to the driver

The stages reach each other by their spawn names (pipeline-parser, ...), so no stage needs
another's id. Running the driver twice in a row in one kernel prints the same report both
times: a stage's name is free again as soon as it exits (the original Clove never released
names, so its second run failed).

It needs the kernel's IPC (SEND and RECV with a wait); on a kernel without it, the driver says
so and exits with code 2.
"""

import argparse
import os
import sys
from fractions import Fraction

from clove_sdk import CloveClient, CloveError

END = "<end>"
PROBLEMS = ["12 + 30", "6 * 7", "100 - 58", "84 / 2", "7 * 6", "1 / 3 "]
STAGES = ["verifier", "reasoner", "parser"]  # started in reverse: each stage's next one exists
WAIT = 30  # seconds a stage waits for its next message before giving up


def stage_name(prefix: str, stage: str) -> str:
    return f"{prefix}-{stage}"


def receive(client: CloveClient):
    """Yields messages until END (or raises after WAIT seconds of silence)."""
    while True:
        batch = client.recv_messages(max_messages=100, wait=WAIT)
        if not batch["messages"]:
            raise TimeoutError(f"no message for {WAIT} s")
        for m in batch["messages"]:
            if m["message"] == END:
                return
            yield m["message"]


def parser(client: CloveClient, prefix: str) -> None:
    nxt = stage_name(prefix, "reasoner")
    for i, text in enumerate(receive(client)):
        a, op, b = text.split()
        client.send_message({"id": i, "a": int(a), "op": op, "b": int(b)}, to_name=nxt)
    client.send_message(END, to_name=nxt)


def reasoner(client: CloveClient, prefix: str) -> None:
    nxt = stage_name(prefix, "verifier")
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b,
           "*": lambda a, b: a * b, "/": lambda a, b: a / b}
    for task in receive(client):
        answer = ops[task["op"]](task["a"], task["b"])
        text = f"{task['a']} {task['op']} {task['b']}"
        client.send_message({"id": task["id"], "text": text, "answer": answer}, to_name=nxt)
    client.send_message(END, to_name=nxt)


def verifier(client: CloveClient, report_to: int) -> None:
    results = []
    for r in receive(client):
        a, op, b = r["text"].split()
        exact = {"+": Fraction(a) + Fraction(b), "-": Fraction(a) - Fraction(b),
                 "*": Fraction(a) * Fraction(b), "/": Fraction(a) / Fraction(b)}[op]
        ok = abs(Fraction(r["answer"]) - exact) < Fraction(1, 10**9)
        results.append({"id": r["id"], "text": r["text"], "answer": r["answer"], "ok": ok})
    results.sort(key=lambda r: r["id"])
    client.send_message({"results": results}, to=report_to)


def drive(client: CloveClient, prefix: str, problems) -> int:
    if not client.hello()["features"].get("ipc"):
        print("pipeline: this kernel does not implement IPC (SEND/RECV) yet", flush=True)
        return 2
    script = os.path.abspath(__file__)
    for stage in STAGES:
        client.spawn(
            stage_name(prefix, stage),
            script,
            args=["--stage", stage, "--prefix", prefix, "--report-to", str(client.agent_id)],
            limits={"memory": "64M", "max_pids": 16},
        )
    parser_name = stage_name(prefix, "parser")
    client.send_messages(list(problems) + [END], to_name=parser_name)
    reply = client.recv_messages(max_messages=1, wait=2 * WAIT)
    if not reply["messages"]:
        print("pipeline: no report from the verifier", flush=True)
        return 1
    results = reply["messages"][0]["message"]["results"]
    for r in results:
        mark = "ok" if r["ok"] else "WRONG"
        print(f"{r['text']:>10} = {r['answer']:<22} {mark}", flush=True)
    good = sum(r["ok"] for r in results)
    print(f"verified {good}/{len(results)}", flush=True)
    for stage in STAGES:
        client.wait(name=stage_name(prefix, stage), timeout=WAIT)
    return 0 if good == len(results) == len(problems) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("socket", nargs="?", help="the kernel's socket (given by the kernel)")
    ap.add_argument("--stage", choices=STAGES, help="run as this stage (set by the driver)")
    ap.add_argument("--prefix", default="pipeline", help="stage name prefix")
    ap.add_argument("--report-to", type=int, help="the driver's id (set by the driver)")
    ap.add_argument("--problems", nargs="+", default=PROBLEMS, help="problems like '6 * 7'")
    args = ap.parse_args()
    client = CloveClient(args.socket, raise_on_error=True)
    try:
        if args.stage == "parser":
            parser(client, args.prefix)
        elif args.stage == "reasoner":
            reasoner(client, args.prefix)
        elif args.stage == "verifier":
            verifier(client, args.report_to)
        else:
            return drive(client, args.prefix, args.problems)
        return 0
    except (CloveError, TimeoutError) as e:
        print(f"pipeline {args.stage or 'driver'}: {e}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
