"""A stand-in for lerobot_side.py with the same command line and frames, run by vla's own Python: no LeRobot.

train: reads the LeRobot dataset's actions (pyarrow), "trains" for --steps steps (no clock), and saves
a policy that always answers the mean action, at every snapshot and at the end. serve: answers as
the real side does. A checkpoint's fake.json can ask for misbehaviour: {"error_on_infer": true},
{"exit_on_infer": 3}, {"hang_on_infer": true}, {"garbage": true} (a non-protocol first frame).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from vla.bench.peers.wire import read_msg, write_msg


def train(a) -> None:
    root, out = Path(a.dataset), Path(a.out)
    acts = np.concatenate(
        [
            np.stack(pq.read_table(f, columns=["action"])["action"].to_numpy(zero_copy_only=False))
            for f in sorted(root.glob("data/*/*.parquet"))
        ]
    )
    steps = a.steps or 3
    policy = {"mean": acts.mean(0).tolist(), "policy": a.policy, "config": json.loads(a.config)}
    snaps = {}
    for k, sec in enumerate(float(s) for s in a.snapshots.split(",") if s):
        d = out / "snapshots" / f"{int(round(sec))}s"
        d.mkdir(parents=True)
        (d / "fake.json").write_text(json.dumps(policy))
        snaps[str(int(round(sec)))] = {"step": k + 1, "loss": 1.0}
    (out / "final").mkdir(parents=True)
    (out / "final" / "fake.json").write_text(json.dumps(policy))
    print(f"fake {a.policy}: {steps} steps", file=sys.stderr)
    report = {"policy": a.policy, "lerobot": "fake", "torch": "none", "python": sys.version.split()[0], "params": 7,
              "steps": steps, "seconds": 0.1, "step_seconds": 0.01, "final_loss": 0.5, "snapshots": snaps}  # fmt: skip
    (out / "train.json").write_text(json.dumps(report))


def serve(a) -> None:
    spec = json.loads((Path(a.checkpoint) / "fake.json").read_text())
    out, inp = sys.stdout.buffer, sys.stdin.buffer
    if spec.get("garbage"):
        out.write(b"\xff\xff\xff\xffnot a frame")
        out.flush()
        return
    write_msg(out, {"ready": True, "policy": spec.get("policy", "fake"), "n_action_steps": 1})
    mean, resets = np.asarray(spec["mean"], np.float32), 0
    while True:
        try:
            head, arrays = read_msg(inp)
        except EOFError:
            return
        if head["cmd"] == "close":
            return
        if head["cmd"] == "reset":
            resets += 1
            write_msg(out, {"ok": True})
        elif head["cmd"] == "infer":
            if spec.get("exit_on_infer"):
                print("fake peer: exiting as asked", file=sys.stderr)
                sys.exit(spec["exit_on_infer"])
            if spec.get("hang_on_infer"):
                time.sleep(30)
            if spec.get("error_on_infer"):
                write_msg(out, {"error": "ValueError: asked to fail"})
                continue
            shapes = {k: list(v.shape) for k, v in arrays.items()}
            write_msg(out, {"ok": True, "task": head.get("task"), "shapes": shapes, "resets": resets},
                      {"actions": mean[None]})  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check")
    t = sub.add_parser("train")
    for flag in ("--policy", "--dataset", "--out", "--seconds", "--snapshots", "--config", "--threads",
                 "--batch-size", "--workers", "--seed"):  # fmt: skip
        t.add_argument(flag, default="")
    t.add_argument("--steps", type=int, default=0)
    s = sub.add_parser("serve")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--threads", default="1")
    a = p.parse_args()
    if a.cmd == "check":
        print(json.dumps({"lerobot": "fake", "torch": "none", "python": sys.version.split()[0]}))
    else:
        {"train": train, "serve": serve}[a.cmd](a)


if __name__ == "__main__":
    main()
