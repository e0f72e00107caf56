"""LeRobot's side of `vla bench peers`: runs inside a LeRobot 0.4 virtual environment, never inside vla's.

    python lerobot_side.py check
    python lerobot_side.py train --policy act --dataset DIR --out DIR --seconds S --snapshots 60,120 \
        --config '{"pretrained_backbone_weights": null}' --threads 2 --batch-size 8 --workers 2 --seed 0
    python lerobot_side.py serve --checkpoint DIR --threads 2

`train` trains one of LeRobot's own policies on a LeRobot v3.0 dataset folder for a wall-clock
budget (the time spent building the dataset and the model is not counted, as in vla's trainer),
with LeRobot's optimizer preset for the policy, and keeps the policy (weights, config, pre- and
post-processors, as LeRobot saves them) at each snapshot time under OUT/snapshots/<seconds>s and at
the end under OUT/final. A scheduler preset (Diffusion Policy's cosine with warm-up) follows the
share of the budget used, warm-up at most a tenth of the steps the budget is expected to allow.
OUT/train.json says what was trained, how many steps each snapshot had and how long steps took.

`serve` loads a saved policy and answers frames on stdin/stdout (wire.py beside this file):
{"cmd": "reset"} -> {"ok": true}; {"cmd": "infer", "task": str} with arrays "observation/state" and
"observation/images/<cam>" (uint8 HxWx3) -> {"ok": true} with array "actions" [1, A] from LeRobot's
`select_action`, so each policy executes its chunks as LeRobot's own evaluation does (ACT's
`n_action_steps`, Diffusion Policy's observation history); {"cmd": "close"} or end of input ->
exit. The first frame is the policy's metadata. Errors answer {"error": "..."} and serving goes on.

Only the standard library, numpy, torch and lerobot: vla is not installed here.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
import traceback
from pathlib import Path

import wire  # the frames; beside this file (a script's own folder is sys.path[0])

log = logging.getLogger("lerobot_side")


def _versions() -> dict:
    import lerobot
    import torch

    return {"lerobot": lerobot.__version__, "torch": torch.__version__, "python": sys.version.split()[0]}


def check(_args) -> None:
    print(json.dumps(_versions()))


def _save(policy, pre, post, path: Path) -> None:
    tmp = path.with_name(path.name + ".saving")
    policy.save_pretrained(tmp)
    pre.save_pretrained(tmp)
    post.save_pretrained(tmp)
    tmp.rename(path)


class _BudgetSchedule:
    """LR factor of a scheduler preset, on the share of the time budget used (cosine after a linear warm-up)."""

    def __init__(self, preset, budget: float):
        self.name = getattr(preset, "name", "constant")
        self.warmup = int(getattr(preset, "num_warmup_steps", 0) or 0)
        self.budget = budget

    def factor(self, step: int, elapsed: float, steps_expected: float) -> float:
        warm = min(self.warmup, max(1, int(steps_expected / 10)))
        if step < warm:
            return (step + 1) / warm
        if self.name != "cosine":
            return 1.0
        done = min(1.0, elapsed / self.budget)
        return 0.5 * (1.0 + math.cos(math.pi * done))


def train(args) -> None:
    import numpy as np
    import torch
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
    from lerobot.datasets.sampler import EpisodeAwareSampler
    from lerobot.policies.factory import make_policy, make_policy_config, make_pre_post_processors

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    out = Path(args.out)
    (out / "snapshots").mkdir(parents=True, exist_ok=True)
    overrides = json.loads(args.config or "{}")
    cfg = make_policy_config(args.policy, device="cpu", **overrides)
    meta = LeRobotDatasetMetadata("vla/peers", root=args.dataset)
    dataset = LeRobotDataset(
        "vla/peers",
        root=args.dataset,
        delta_timestamps=resolve_delta_timestamps(cfg, meta),
        video_backend="pyav",
    )
    policy = make_policy(cfg, ds_meta=meta)
    pre, post = make_pre_post_processors(cfg, dataset_stats=meta.stats)
    opt_preset = cfg.get_optimizer_preset()
    optimizer = opt_preset.build(policy.get_optim_params())
    schedule = _BudgetSchedule(cfg.get_scheduler_preset(), args.seconds)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    if hasattr(cfg, "drop_n_last_frames"):  # as LeRobot's trainer: no window starting in the last frames
        sampler = EpisodeAwareSampler(
            meta.episodes["dataset_from_index"],
            meta.episodes["dataset_to_index"],
            drop_n_last_frames=cfg.drop_n_last_frames,
            shuffle=True,
        )
    else:
        sampler = None
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=args.workers,
        drop_last=True,
        persistent_workers=args.workers > 0,
    )
    params = sum(p.numel() for p in policy.parameters())
    log.info("%s: %d parameters, %d frames, %d episodes", args.policy, params, meta.total_frames, meta.total_episodes)
    pending = sorted(float(s) for s in args.snapshots.split(",") if s) if args.snapshots else []
    snapshots, losses, step = {}, [], 0
    policy.train()
    t0 = time.perf_counter()
    done = False
    while not done:
        for batch in loader:
            elapsed = time.perf_counter() - t0
            steps_expected = step / elapsed * args.seconds if step >= 10 and elapsed > 0 else 1e9
            f = schedule.factor(step, elapsed, steps_expected)
            for g, lr in zip(optimizer.param_groups, base_lrs):
                g["lr"] = lr * f
            loss, _ = policy.forward(pre(batch))
            loss.backward()
            if opt_preset.grad_clip_norm and opt_preset.grad_clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(policy.parameters(), opt_preset.grad_clip_norm)
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            losses.append(float(loss.item()))
            elapsed = time.perf_counter() - t0
            while pending and elapsed >= pending[0]:
                sec = pending.pop(0)
                paused = time.perf_counter()
                _save(policy, pre, post, out / "snapshots" / f"{int(round(sec))}s")
                snapshots[f"{int(round(sec))}"] = {"step": step, "loss": float(np.mean(losses[-50:]))}
                t0 += time.perf_counter() - paused  # saving is not training time
                log.info("%s: snapshot at %.0f s, step %d, loss %.4f", args.policy, sec, step, losses[-1])
            if step % 50 == 0:
                log.info("%s: step %d, %.0f s, loss %.4f", args.policy, step, elapsed, float(np.mean(losses[-50:])))
            if elapsed >= args.seconds or (args.steps and step >= args.steps):
                done = True
                break
    seconds = time.perf_counter() - t0
    _save(policy, pre, post, out / "final")
    report = {
        "policy": args.policy,
        **_versions(),
        "params": params,
        "steps": step,
        "seconds": round(seconds, 1),
        "step_seconds": round(seconds / max(step, 1), 4),
        "batch_size": args.batch_size,
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "snapshots": snapshots,
        "config": overrides,
        "optimizer": {"lr": base_lrs, "schedule": schedule.name, "warmup_steps": schedule.warmup},
        "threads": args.threads,
    }
    (out / "train.json").write_text(json.dumps(report, indent=2) + "\n")


def _load(path: str):
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    cfg = PreTrainedConfig.from_pretrained(path)
    cfg.device = "cpu"
    policy = get_policy_class(cfg.type).from_pretrained(path, config=cfg)
    policy.eval()
    pre, post = make_pre_post_processors(cfg, pretrained_path=path)
    return cfg, policy, pre, post


def _observation(head: dict, arrays: dict):
    """Our observation frame -> LeRobot's batch of one (images float CHW in [0, 1], as its env wrapper)."""
    import torch

    batch = {"task": [str(head.get("task", ""))]}
    for k, a in arrays.items():
        t = torch.from_numpy(a.copy())
        if k.startswith("observation/images/"):
            batch["observation.images." + k.rsplit("/", 1)[1]] = t.permute(2, 0, 1)[None].float() / 255.0
        elif k == "observation/state":
            batch["observation.state"] = t[None].float()
        elif k == "observation/environment_state":
            batch["observation.environment_state"] = t[None].float()
    return batch


def serve(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    out = os.fdopen(os.dup(1), "wb")  # the protocol's channel; anything printed goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer
    cfg, policy, pre, post = _load(args.checkpoint)
    images = sorted(k for k in cfg.input_features if k.startswith("observation.images."))
    wire.write_msg(
        out,
        {
            "ready": True,
            "policy": cfg.type,
            "n_action_steps": getattr(cfg, "n_action_steps", 1),
            "cameras": [k.rsplit(".", 1)[1] for k in images],
            "params": sum(p.numel() for p in policy.parameters()),
            **_versions(),
        },
    )
    while True:
        try:
            head, arrays = wire.read_msg(inp)
        except EOFError:
            return
        cmd = head.get("cmd")
        try:
            if cmd == "close":
                wire.write_msg(out, {"ok": True})
                return
            if cmd == "reset":
                policy.reset()
                wire.write_msg(out, {"ok": True})
            elif cmd == "infer":
                with torch.inference_mode():
                    action = post(policy.select_action(pre(_observation(head, arrays))))
                wire.write_msg(out, {"ok": True}, {"actions": action.reshape(1, -1).float().numpy()})
            else:
                wire.write_msg(out, {"error": f"unknown command {cmd!r}"})
        except Exception as e:  # noqa: BLE001 - answered, and the server goes on
            traceback.print_exc()
            wire.write_msg(out, {"error": f"{type(e).__name__}: {e}"})


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check")
    t = sub.add_parser("train")
    t.add_argument("--policy", required=True)
    t.add_argument("--dataset", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--seconds", type=float, required=True)
    t.add_argument("--steps", type=int, default=0, help="also stop at this many steps (0: the clock alone)")
    t.add_argument("--snapshots", default="")
    t.add_argument("--config", default="{}")
    t.add_argument("--threads", type=int, default=os.cpu_count())
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--workers", type=int, default=2)
    t.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("serve")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args(argv)
    {"check": check, "train": train, "serve": serve}[args.cmd](args)


if __name__ == "__main__":
    main()
