"""`vla bench peers`: vla's policy beside LeRobot's ACT and Diffusion Policy on a public suite.

1. demos: the suite's recipe (`datasets/aloha.toml`, `datasets/metaworld-mt10.toml`) collected into
   OUT/demos, or the store given as `demos`;
2. the same demos exported to LeRobot v3.0 (OUT/demos-lerobot; camera frames as PNG inside the
   parquet files, the cheapest for LeRobot's loader to read);
3. each policy trained for the same wall-clock minutes, one after another (never two at once),
   torch on every core: vla's preset (pi0-tiny) by vla's trainer, each peer by LeRobot's own code
   in its side environment (lerobot_side.py); each keeps a checkpoint at every `eval_every` minutes;
4. every checkpoint evaluated by vla's harness on the suite's held-out seeds (the same seeds for
   every policy; seeds that overlap the demos' are refused), peers through PeerPolicy (adapter.py);
5. OUT/peers.json (every row: policy, suite, task, minutes, success rate, episodes), OUT/peers.md
   (the side-by-side table) and OUT/peers_curves.png (success vs CPU-minutes).

Re-running with the same OUT reuses what is done: the demos, the export, a policy trained for the
same minutes and curve points, and an evaluation on the same seeds and episode count.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import subprocess
import time
from pathlib import Path

from vla.bench.peers.report import LABELS
from vla.bench.peers.venv import SIDE_SCRIPT
from vla.outputs import claim_folder, is_store
from vla.spec import SpecError

log = logging.getLogger(__name__)

SUITES = {"aloha": "datasets/aloha.toml", "metaworld-mt10": "datasets/metaworld-mt10.toml"}
EPISODES = {"aloha": 50, "metaworld-mt10": 20}  # per task: the protocol
POLICIES = ("vla", "act", "diffusion")
# What each suite counts as success and how long an episode may run (vla.sim.external.*).
PROTOCOLS = {
    "aloha": "gym-aloha: success = the task's top reward (4: cube lifted by the left gripper / peg in socket) at "
    "any step; at most 400 steps at 50 Hz (ACT's and LeRobot's episode length)",
    "metaworld-mt10": "Meta-World v3: success = the env's info['success'] at any step; at most max_path_length "
    "(500) steps, as LeRobot's Meta-World wrapper",
}
# LeRobot's own policies, with the fewest changes that let them run here: nothing is downloaded
# (ACT's default ImageNet backbone would be), and Diffusion Policy at its defaults (a 270.8M-parameter
# UNet, 100 DDPM steps per chunk) took 4.6 s per training step and ~90 s per action chunk on 2 cores.
PEER_CONFIGS = {
    "act": {"pretrained_backbone_weights": None},
    "diffusion": {"down_dims": [128, 256, 512], "noise_scheduler_type": "DDIM", "num_inference_steps": 10},
}
HELD_OUT_HINT = "the suites' held-out seeds start at 1000000"


def curve_points(minutes: float, every: float | None) -> list[float]:
    """Training minutes to evaluate at: every `every` minutes, and the end."""
    if every is None or every >= minutes:
        return [float(minutes)]
    n = int(minutes / every + 1e-9)
    pts = [round(every * (k + 1), 6) for k in range(n)]
    return pts if abs(pts[-1] - minutes) < 1e-6 else [*pts, float(minutes)]


def check_held_out(suite_cfg, recipe_cfg, seed: int, episodes: int, store=None) -> None:
    """Refuse evaluation seeds that a demo of the same task was collected from."""
    from vla.sim.collect import SEED_NOTE, SEED_STRIDE

    done = store.notes().get(SEED_NOTE, {}) if store is not None else {}
    recipe_index = {f"{t.robot}/{t.task}": (i, t.episodes) for i, t in enumerate(recipe_cfg.tasks)}
    for j, t in enumerate(suite_cfg.tasks):
        key = f"{t.robot}/{t.task}"
        if key not in recipe_index:
            continue
        i, n = recipe_index[key]
        lo = recipe_cfg.seed + i * SEED_STRIDE
        hi = max(lo + n, int(done.get(key, 0)))
        first = seed + j * SEED_STRIDE
        if first < hi and lo < first + episodes:
            raise SpecError(
                f"--seed {seed}: the evaluation seeds of {key} ({first}..{first + episodes - 1}) include seeds its "
                f"demos were collected from ({lo}..{hi - 1}); {HELD_OUT_HINT}"
            )


def _check_args(minutes, policies, episodes, seed, eval_every, workers, threads) -> None:
    bad = [p for p in policies if p not in POLICIES]
    if bad or not policies or len(set(policies)) != len(policies):
        raise SpecError(f"--policies: comma-separated, each once, from {list(POLICIES)}; got {list(policies)}")
    if not minutes > 0:
        raise SpecError(f"--minutes must be > 0, got {minutes}")
    if eval_every is not None and not eval_every > 0:
        raise SpecError(f"--eval-every-min must be > 0, got {eval_every}")
    if episodes < 1:
        raise SpecError(f"--episodes must be >= 1, got {episodes}")
    if seed is not None and seed < 0:
        raise SpecError(f"--seed must be >= 0, got {seed}")
    if workers < 1 or threads < 1:
        raise SpecError(f"--workers and --threads must be >= 1, got {workers} and {threads}")


def _open_demos(demos, suite_cfg):
    from vla.data.store import EpisodeStore
    from vla.sim.registry import embodiment_for

    if not is_store(demos):
        raise SpecError(f"--demos {demos}: not an episode store (make one with `vla collect`)")
    store = EpisodeStore.open(demos)
    have = {i.embodiment for i in store.infos()}
    for t in suite_cfg.tasks:
        name = embodiment_for(t.robot, suite_cfg.image_size).name
        if name not in have:
            raise SpecError(
                f"--demos {demos}: has no episodes of embodiment {name!r} (the suite's); it has {sorted(have)}"
            )
    return store


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (loader workers, peer trainers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _train_vla(preset, demos, out: Path, points, *, steps, threads, progress) -> dict:
    import torch

    from vla.config import load_preset
    from vla.model.interop.checkpoint import Checkpoint
    from vla.train.trainer import snapshot_path, train

    done_file = out / "train-vla.json"
    want = {"preset": preset, "demos": str(demos), "points": points, "steps_cap": steps}
    if done_file.exists() and json.loads(done_file.read_text()).get("request") == want:
        return json.loads(done_file.read_text())
    ck = out / "ckpt-vla"
    before, kept = _load_average(), torch.get_num_threads()
    torch.set_num_threads(threads)
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    try:
        train(load_preset(preset), [str(demos)], ck, steps=steps, max_seconds=points[-1] * 60, progress=progress,
              overwrite=True, snapshot_seconds=tuple(m * 60 for m in points[:-1]))  # fmt: skip
    finally:
        torch.set_num_threads(kept)
    at = {}
    for m in points:
        p = ck if m == points[-1] else snapshot_path(ck, m * 60)
        if p.exists():  # a step cap can end the run before a point
            at[f"{m:g}"] = {"checkpoint": str(p), "step": Checkpoint(p, verify=False).resolved.step}
    cfg = Checkpoint(ck, verify=False).resolved
    row = {
        "request": want,
        "label": f"vla {Path(preset).stem}",
        "params": cfg.params,
        "steps": cfg.step,
        "seconds": round(time.perf_counter() - t0, 1),
        "cpu_seconds": round(_cpu_seconds() - cpu0, 1),
        "points": at,
        "load_average": {"before": before, "after": _load_average()},
        "threads": threads,
    }
    done_file.write_text(json.dumps(row, indent=2) + "\n")
    return row


def _train_peer(
    name, python, script, lerobot_dir, out: Path, points, *, steps, threads, config, batch_size, demos
) -> dict:
    ck = out / f"ckpt-{name}"
    done_file = out / f"train-{name}.json"
    want = {
        "policy": name,
        "demos": demos,
        "points": points,
        "steps_cap": steps,
        "config": config,
        "batch_size": batch_size,
    }
    if done_file.exists() and json.loads(done_file.read_text()).get("request") == want:
        return json.loads(done_file.read_text())
    if ck.exists():
        import shutil

        shutil.rmtree(ck)
    cmd = [
        str(python), str(script), "train", "--policy", name, "--dataset", str(lerobot_dir), "--out", str(ck),
        "--seconds", str(points[-1] * 60), "--snapshots", ",".join(f"{m * 60:g}" for m in points[:-1]),
        "--config", json.dumps(config), "--threads", str(threads), "--batch-size", str(batch_size),
        "--workers", "2", "--steps", str(steps or 0),
    ]  # fmt: skip
    before = _load_average()
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    logf = out / f"train-{name}.log"
    with open(logf, "ab") as err:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    if r.returncode != 0 or not (ck / "train.json").exists():
        tail = " | ".join(logf.read_text(errors="replace").strip().splitlines()[-3:])
        raise RuntimeError(f"training LeRobot {name} failed (exit {r.returncode}); {logf} ends: {tail}")
    rep = json.loads((ck / "train.json").read_text())
    at = {}
    for m in points:
        p = ck / "final" if m == points[-1] else ck / "snapshots" / f"{int(round(m * 60))}s"
        if p.exists():
            snap = rep["snapshots"].get(str(int(round(m * 60))), {})
            at[f"{m:g}"] = {"checkpoint": str(p), "step": rep["steps"] if m == points[-1] else snap.get("step")}
    row = {
        "request": want,
        "label": LABELS[name],
        "params": rep["params"],
        "steps": rep["steps"],
        "seconds": round(time.perf_counter() - t0, 1),
        "cpu_seconds": round(_cpu_seconds() - cpu0, 1),
        "train_seconds": rep["seconds"],
        "step_seconds": rep["step_seconds"],
        "final_loss": rep["final_loss"],
        "versions": {k: rep[k] for k in ("lerobot", "torch", "python") if k in rep},
        "optimizer": rep.get("optimizer"),
        "points": at,
        "load_average": {"before": before, "after": _load_average()},
        "threads": threads,
    }
    done_file.write_text(json.dumps(row, indent=2) + "\n")
    return row


def _evaluate(
    name, minutes, ckpt, suite, *, episodes, seed, workers, threads, out: Path, python, script, progress
) -> dict:
    """One checkpoint on the suite; an earlier evaluation on the same seeds and episodes is reused."""
    from vla.sim import evaluate
    from vla.sim.suites import load_suite

    target = out / "eval" / f"{name}-{minutes}min.json"
    cfg = load_suite(suite)
    first = cfg.seed if seed is None else seed
    if target.exists():
        old = json.loads(target.read_text())
        if (
            old.get("seed") == first
            and all(t["episodes"] == episodes for t in old["tasks"])
            and old.get("ckpt") == str(ckpt)
        ):
            return old
    target.parent.mkdir(parents=True, exist_ok=True)
    common = {"episodes": episodes, "seed": seed, "workers": workers, "progress": progress, "json_out": target}
    if name == "vla":
        from vla.runtime.policy import load_policy

        factory = functools.partial(load_policy, str(ckpt))
        res = evaluate(factory, suite, **common)
    else:
        from vla.bench.peers.adapter import PeerPolicy

        kw = {"name": name, "threads": max(1, threads // workers), "log": out / f"serve-{name}.log", "script": script}
        if workers == 1:
            with PeerPolicy(python, ckpt, **kw) as p:
                res = evaluate(p, suite, replan_every=1, **common)
        else:
            res = evaluate(functools.partial(PeerPolicy, python, str(ckpt), **kw), suite, replan_every=1, **common)
    res["ckpt"] = str(ckpt)
    target.write_text(json.dumps(res, indent=2) + "\n")
    return res


def run(
    out: str | Path = "runs/bench-peers",
    *,
    suite: str = "aloha",
    minutes: float = 60.0,
    policies=POLICIES,
    episodes: int | None = None,
    seed: int | None = None,
    eval_every: float | None = None,
    peer_python: str | Path | None = None,
    demos: str | Path | None = None,
    preset: str = "pi0-tiny",
    workers: int = 2,
    threads: int | None = None,
    batch_size: int = 8,
    steps: int | None = None,
    recipe: str | Path | None = None,
    side_script: str | Path = SIDE_SCRIPT,
    peer_configs: dict | None = None,
    progress: bool = True,
) -> dict:
    """See the module docstring. `recipe`, `side_script`, `peer_configs` and `steps` (a step cap on
    every policy) exist for tests and experiments; the command line keeps the documented protocol."""
    from vla.config import load_preset
    from vla.sim import collect
    from vla.sim.collect import load_recipe
    from vla.sim.suites import load_suite

    policies = tuple(policies)
    threads = threads or os.cpu_count() or 1
    episodes = episodes if episodes is not None else EPISODES.get(suite, 20)
    if recipe is None and suite not in SUITES:
        raise SpecError(f"--suite must be one of {sorted(SUITES)}, got {suite!r}")
    _check_args(minutes, policies, episodes, seed, eval_every, workers, threads)
    if steps is not None and steps < 1:
        raise SpecError(f"steps must be >= 1, got {steps}")
    suite_cfg = load_suite(suite)
    recipe_cfg = load_recipe(recipe or SUITES[suite])
    if "vla" in policies:
        load_preset(preset)
    store = _open_demos(demos, suite_cfg) if demos is not None else None
    check_held_out(suite_cfg, recipe_cfg, suite_cfg.seed if seed is None else seed, episodes, store)
    peers = [p for p in policies if p != "vla"]
    configs = {**PEER_CONFIGS, **(peer_configs or {})}
    python, versions = (None, None)
    if peers:
        from vla.bench.peers.venv import check_python
        from vla.bench.peers.venv import peer_python as find_python

        python, versions = (
            find_python(peer_python)
            if side_script == SIDE_SCRIPT
            else (peer_python, check_python(peer_python, side_script))
        )
    points = curve_points(minutes, eval_every)
    out = claim_folder(out, "bench peers")
    t0 = time.perf_counter()
    data = Path(demos) if demos is not None else out / "demos"
    if demos is None and not is_store(data):
        collect(recipe_cfg, str(data), workers=workers, progress=progress)
        store = None
    if store is None:
        from vla.data.store import EpisodeStore

        store = EpisodeStore.open(data)
        check_held_out(suite_cfg, recipe_cfg, suite_cfg.seed if seed is None else seed, episodes, store)
    infos = store.infos()
    results = {
        "benchmark": "peers",
        "suite": suite_cfg.name,
        "protocol": PROTOCOLS.get(suite, ""),
        "recipe": recipe_cfg.name,
        "image_size": suite_cfg.image_size,
        "minutes": float(minutes),
        "points": points,
        "episodes_per_task": episodes,
        "seed": suite_cfg.seed if seed is None else seed,
        "demos": {"store": str(data), "episodes": len(infos), "frames": int(sum(i.length for i in infos))},
        "collect_seconds": round(time.perf_counter() - t0, 1),
        "policies": {},
    }
    lerobot_dir = out / "demos-lerobot"
    # What the export was made from. The peers get the demos without the training-only scene facts:
    # LeRobot's ACT and Diffusion Policy would take `observation.environment_state` as an input.
    source = {"store": str(Path(data).resolve()), "episodes": len(infos), "environment_state": False}
    made_from = out / "demos-lerobot.json"
    if peers and not (made_from.exists() and json.loads(made_from.read_text()) == source):
        import shutil

        from vla.data.lerobot_export import export_lerobot
        from vla.sim.registry import embodiment_for

        shutil.rmtree(lerobot_dir, ignore_errors=True)
        t1 = time.perf_counter()
        emb = embodiment_for(suite_cfg.tasks[0].robot, suite_cfg.image_size).name
        results["export"] = export_lerobot(
            data, lerobot_dir, embodiment=emb, images="image", env_state=False, progress=progress
        )
        results["export"]["seconds"] = round(time.perf_counter() - t1, 1)
        made_from.write_text(json.dumps(source) + "\n")
    if versions:
        results["peer_environment"] = {"python": str(python), **versions}
    for name in policies:  # one at a time: each has every core while it trains
        log.info("bench peers: training %s for %g minutes", name, minutes)
        if name == "vla":
            row = _train_vla(preset, data, out, points, steps=steps, threads=threads, progress=progress)
        else:
            row = _train_peer(name, python, side_script, lerobot_dir, out, points, steps=steps, threads=threads,
                              config=configs[name], batch_size=batch_size, demos=source)  # fmt: skip
            row["config"] = configs[name]
        results["policies"][name] = row
    rows = []
    for name in policies:
        for m, point in results["policies"][name]["points"].items():
            log.info("bench peers: evaluating %s at %s minutes", name, m)
            res = _evaluate(name, m, point["checkpoint"], suite, episodes=episodes, seed=seed, workers=workers,
                            threads=threads, out=out, python=python, script=side_script, progress=progress)  # fmt: skip
            for t in res["tasks"]:
                rows.append(
                    {
                        "policy": name,
                        "suite": suite_cfg.name,
                        "task": t["task"],
                        "minutes": float(m),
                        "success_rate": round(t["success_rate"], 4),
                        "episodes": t["episodes"],
                        "successes": t["successes"],
                        "ci95": [round(x, 4) for x in t["ci95"]],
                        "errors": len(t["errors"]),
                        "steps": point["step"],
                        "max_reward_counts": t.get("max_reward_counts"),
                    }
                )
    results["results"] = rows
    results["averages"] = averages(rows)
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "threads": threads}
    from vla.bench.peers.report import markdown, plot_curves

    (out / "peers.md").write_text(markdown(results) + "\n")
    results["table_md"] = str(out / "peers.md")
    if rows:
        plot_curves(results, out / "peers_curves.png")
        results["curves_png"] = str(out / "peers_curves.png")
    results["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "peers.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def averages(rows: list[dict]) -> list[dict]:
    """Mean success over the tasks, per policy and curve point."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["policy"], r["minutes"]), []).append(r)
    return [
        {
            "policy": p,
            "minutes": m,
            "success_rate": round(sum(r["success_rate"] for r in g) / len(g), 4),
            "tasks": len(g),
            "steps": g[0]["steps"],
        }
        for (p, m), g in groups.items()
    ]
