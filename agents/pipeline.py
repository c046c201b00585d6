#!/usr/bin/env python3
"""pipeline: three stages connected by the kernel's mailboxes: source -> upper -> sink.

    clove run agents/pipeline.py -- --items 20

Run as above, this script is the driver: it spawns itself three times as child agents (one per
stage, each with its own sandbox and limits nested under the driver's), waits for the sink to
finish, and prints what the sink received. Each stage reaches the next by its spawn name, so
no stage needs to know another's id.

    source   sends "item-<n>" to `upper`, then "<end>"
    upper    turns every message upper case and passes it to `sink`
    sink     collects messages until "<end>" and prints them

It needs the kernel's IPC (SEND and RECV with a wait); on a kernel without it, the driver says
so and exits with code 2.
"""

import argparse
import os
import sys

from clove_sdk import CloveClient, CloveError

END = "<end>"
STAGES = ["sink", "upper", "source"]  # started in reverse, so each stage's next one exists


def stage_name(prefix: str, stage: str) -> str:
    return f"{prefix}-{stage}"


def run_stage(client: CloveClient, stage: str, prefix: str, items: int) -> int:
    if stage == "source":
        target = stage_name(prefix, "upper")
        for n in range(items):
            client.send_message(f"item-{n}", to_name=target)
        client.send_message(END, to_name=target)
        return 0
    received = []
    while True:
        batch = client.recv_messages(max_messages=50, wait=30)
        if not batch["messages"]:
            print(f"{stage}: no message for 30 s, giving up", flush=True)
            return 1
        for m in batch["messages"]:
            text = m["message"]
            if stage == "upper":
                out = text if text == END else text.upper()
                client.send_message(out, to_name=stage_name(prefix, "sink"))
            elif text != END:
                received.append(text)
            if text == END:
                if stage == "sink":
                    print(f"sink received {len(received)} items: {received[:3]} ...", flush=True)
                return 0


def drive(client: CloveClient, prefix: str, items: int) -> int:
    features = client.hello()["features"]
    if not features.get("ipc"):
        print("pipeline: this kernel does not implement IPC (SEND/RECV) yet", flush=True)
        return 2
    script = os.path.abspath(__file__)
    for stage in STAGES:
        client.spawn(
            stage_name(prefix, stage),
            script,
            args=["--stage", stage, "--prefix", prefix, "--items", str(items)],
            limits={"memory": "64M", "max_pids": 16},
        )
    done = client.wait(name=stage_name(prefix, "sink"), timeout=60)
    print(client.logs(name=stage_name(prefix, "sink"))["text"], end="")
    return 0 if done.get("exit_code") == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", nargs="?", help="the kernel's socket (given by the kernel)")
    parser.add_argument("--stage", choices=STAGES, help="run as this stage (set by the driver)")
    parser.add_argument("--prefix", default=f"pipeline{os.getpid()}", help="stage name prefix")
    parser.add_argument("--items", type=int, default=10, help="items the source sends")
    args = parser.parse_args()
    client = CloveClient(args.socket, raise_on_error=True)
    try:
        if args.stage:
            return run_stage(client, args.stage, args.prefix, args.items)
        return drive(client, args.prefix, args.items)
    except CloveError as e:
        print(f"pipeline: {e}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
