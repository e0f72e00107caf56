"""`vla bench learn`: does a tiny policy learn language-conditioned skills on a CPU in minutes?

1. collect scripted demos of every built-in task (recipe `datasets/builtin.toml`: reach with a
   free layout, reach-goal, pick-place and push on arm7 and arm5, the bimanual handover);
2. train one multi-task, multi-embodiment policy per preset within a wall-clock budget, keeping
   the checkpoint it had at each point of the curve (15 / 30 / 60 minutes by default);
3. evaluate every kept checkpoint on held-out seeds of the suite (`builtin`), and draw success
   vs CPU-minutes (learn_curves.png), with the issue's targets marked met or not;
4. language check, per task: the same checkpoint with each episode's instruction swapped for
   another instruction of the same task (another colour). Every built-in task names one of
   several objects, so a policy that uses language falls to about chance while one that
   ignores it does not move (reported where the task's success is high enough to tell);
5. reliance probe (offline, no simulation): the training loss on fixed demo windows as they
   are, with each window's camera images taken from another episode, and with its instruction
   taken from another episode. A loss that does not rise when an input is swapped says the
   policy does not use that input, long before success rates can tell; and the goal check:
   how far a chunk sampled at each demo's first frame ends from where the demo went, next to
   always answering the average end point.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import time
import zlib
from pathlib import Path

import numpy as np

from vla.outputs import claim_folder
from vla.spec import STATE, TASK, SpecError


class ShuffledInstructions:
    """PolicyLike wrapper: each episode gets a random instruction from `pool` instead of its own.

    The pick is a function of the episode's first observation (its instruction and state) and
    `seed`, so it does not depend on which worker process runs which episode."""

    def __init__(self, policy, pool: list[str], seed: int = 0):
        self.policy, self.pool, self.seed = policy, list(pool), seed
        self.current: str | None = None
        self.name = f"{getattr(policy, 'name', type(policy).__name__)}+shuffled-instructions"

    @classmethod
    def build(cls, factory, pool: list[str], seed: int = 0) -> "ShuffledInstructions":
        return cls(factory(), pool, seed)

    def reset(self) -> None:
        self.current = None
        self.policy.reset()

    def infer(self, obs: dict) -> dict:
        if self.current is None:
            key = zlib.crc32(str(obs.get(TASK, "")).encode() + np.asarray(obs.get(STATE, 0), np.float32).tobytes())
            self.current = str(np.random.default_rng([self.seed, key]).choice(self.pool))
        return self.policy.infer({**obs, TASK: self.current})


def language_check(
    ckpt: str | Path,
    suite: str,
    pool: list[str],
    *,
    episodes: int,
    workers: int = 1,
    normal: dict | None = None,
    chance: float = 1 / 3,
) -> dict:
    """Success with the right vs shuffled instructions on `suite`."""
    from vla.runtime.policy import load_policy
    from vla.sim import evaluate

    factory = functools.partial(load_policy, str(ckpt))
    if normal is None:
        normal = evaluate(factory, suite, episodes=episodes, workers=workers, progress=False)
    shuffled = evaluate(
        functools.partial(ShuffledInstructions.build, factory, pool, 7),
        suite,
        episodes=episodes,
        workers=workers,
        progress=False,
    )
    n, s = normal["overall"]["success_rate"], shuffled["overall"]["success_rate"]
    lo, hi = shuffled["overall"]["ci95"]
    passed = n - s >= 0.25 and lo <= chance + 0.1
    verdict = (
        "uses the instruction: success drops to about chance when it is shuffled"
        if passed
        else "does not clearly depend on the instruction"
        if n - s < 0.25
        else "shuffled success stays above chance"
    )
    return {
        "normal": n,
        "shuffled": s,
        "shuffled_ci95": [lo, hi],
        "chance": chance,
        "passed": passed,
        "verdict": verdict,
        "episodes_per_task": episodes,
    }


def reliance_probe(
    ckpt: str | Path, store: str | Path, *, windows: int = 256, batch_size: int = 32, seed: int = 0
) -> dict:
    """Mean training loss of `ckpt` on `windows` windows of `store`: as recorded, with the camera
    images of another episode (same embodiment), and with another episode's (different)
    instruction, taken from an episode of the same source (robot and task) where there is one.
    The noise and flow times are fixed, so the three losses differ only by input."""
    import torch

    from vla.data.sampler import WindowDataset, collate_windows
    from vla.data.store import EpisodeStore
    from vla.model.interop.checkpoint import Checkpoint, build_from_checkpoint
    from vla.spec import EMBODIMENT, SpecError

    model, tf, _ = build_from_checkpoint(Checkpoint(ckpt))
    model.eval()
    st = EpisodeStore.open(store)
    ds = WindowDataset([st], tf.horizon)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ds), min(windows, len(ds)), replace=False)
    picked, episode = [ds[int(i)] for i in idx], ds.episode_of(idx)
    infos = st.infos()
    source = [infos[int(e)].source for e in episode]  # e.g. "sim:expert:arm7/reach"
    donors_img, donors_txt = [], []
    for i, w in enumerate(picked):
        same = [j for j, o in enumerate(picked) if episode[j] != episode[i] and o[EMBODIMENT] == w[EMBODIMENT]]
        other_task = [j for j in same if picked[j][TASK] != w[TASK]]
        if not other_task:
            raise SpecError(
                f"reliance probe: {store} needs windows of at least two episodes with different "
                f"instructions per embodiment (embodiment {w[EMBODIMENT]!r} has not)"
            )
        # Prefer an instruction of the same task (same source), so the swap changes *which object*,
        # not which skill: "touch the red target" -> "reach the blue target", not -> "put the cube...".
        same_task = [j for j in other_task if source[j] == source[i]]
        donors_img.append(int(rng.choice(same)))
        donors_txt.append(int(rng.choice(same_task or other_task)))

    def variant(mode: str) -> list[dict]:
        out = []
        for i, w in enumerate(picked):
            w = dict(w)
            if mode == "other_images":
                d = picked[donors_img[i]]
                w.update(
                    {k: v for k, v in d.items() if k.startswith("observation/images/") or k.startswith("image_mask/")}
                )
            elif mode == "other_instruction":
                w[TASK] = picked[donors_txt[i]][TASK]
            out.append(w)
        return out

    losses = {}
    with torch.no_grad():
        for mode in ("as_recorded", "other_images", "other_instruction"):
            ws, total = variant(mode), 0.0
            for s in range(0, len(ws), batch_size):
                b = tf.from_windows(collate_windows(ws[s : s + batch_size], stack_images=False))
                g = torch.Generator().manual_seed(seed * 1_000_003 + s)
                if "actions" in b and hasattr(model, "sample_time"):  # flow matching: fix noise and times
                    b["noise"] = torch.randn(b["actions"].shape, generator=g)
                    b["time"] = model.sample_time(b["actions"].shape[0], g)
                total += float(model.compute_loss(b, g).sum())
            losses[mode] = total / len(ws)
    base = losses["as_recorded"]
    return {
        "loss": {k: round(v, 5) for k, v in losses.items()},
        "windows": len(picked),
        "rise_other_images": round(losses["other_images"] / base - 1, 4),
        "rise_other_instruction": round(losses["other_instruction"] / base - 1, 4),
    }


def goal_error(ckpt: str | Path, store: str | Path, *, episodes: int = 32, samples: int = 3, seed: int = 0) -> dict:
    """Does the policy know where an episode goes, from its first frame? For the first frame of
    up to `episodes` demos (per embodiment), `samples` chunks from the runtime policy, compared
    with the demo at the chunk's last step (or the demo's end if it is shorter), over the
    position dims (unit rad or m; grippers left out). Per embodiment, in robot units:
    `first`: error of the chunk's first action; `end`: error at its last step (mean over dims
    and samples); `spread`: std of the last step across samples (mean over dims; None for a
    checkpoint sampling from zero, noise_scale 0, which gives one chunk per observation);
    `end_if_average`: the error of always answering the average of those demo end points, the
    score of a policy that knows nothing about where this episode goes. `end` near it: the goal
    is not being read from the observation."""
    import torch

    from vla.data.store import EpisodeStore
    from vla.model.transforms import DELTA_UNITS
    from vla.runtime.policy import load_policy
    from vla.spec import ACTION, EMBODIMENT

    policy = load_policy(ckpt)
    noise_scale = getattr(policy.cfg, "noise_scale", None)
    if noise_scale == 0:
        samples = 1  # one chunk per observation: more draws would repeat it
    st = EpisodeStore.open(store)
    per: dict[str, list[tuple[float, float, float]]] = {}
    ends: dict[str, list[np.ndarray]] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i, info in enumerate(st.infos()):
            name = info.embodiment
            if len(per.setdefault(name, [])) >= episodes or name not in policy.ckpt.embodiments:
                continue
            emb = st.embodiments[name]
            dims = [k for k, d in enumerate(emb.actions) if d.unit in DELTA_UNITS]  # positions, not grippers
            if not dims:
                continue
            ep = st.episode(i)
            obs = {k: v[0] for k, v in ep.items() if k.startswith("observation/")}
            obs.update({TASK: ep[TASK], EMBODIMENT: name})
            chunks = np.stack([policy.infer(obs)["actions"] for _ in range(samples)])[:, :, dims]
            demo = ep[ACTION][:, dims]
            last = min(chunks.shape[1], len(demo)) - 1
            ends.setdefault(name, []).append(demo[last])
            per[name].append(
                (
                    float(np.abs(chunks[:, 0] - demo[0]).mean()),
                    float(np.abs(chunks[:, last] - demo[last]).mean()),
                    float(chunks[:, last].std(0).mean()),
                )
            )
    out = {
        n: {k: round(float(np.mean([r[j] for r in rows])), 4) for j, k in enumerate(("first", "end", "spread"))}
        | ({"spread": None} if samples == 1 else {})
        | {
            "end_if_average": round(float(np.abs(np.stack(ends[n]) - np.mean(ends[n], 0)).mean()), 4),
            "episodes": len(rows),
        }
        for n, rows in per.items()
        if rows
    }
    return {"per_embodiment": out, "samples": samples, "noise_scale": noise_scale}


def grounding_error(ckpt: str | Path, store: str | Path, *, windows: int = 48, seed: int = 0) -> dict:
    """How well a model with grounding tokens and an env-state head finds the named object and the
    goal, per task ("robot/task"): on `windows` random windows of the task in `store`, the mean
    xy distance (cm) between the predicted and the recorded ENV_STATE object and goal, next to
    `object_spread_cm` (the objects' own spread: the error of always guessing their mean). Run on
    the training demos and on demos of held-out scenes, it tells learning from memorizing."""
    import torch

    from vla.data.sampler import WindowDataset, collate_windows
    from vla.data.store import EpisodeStore
    from vla.model.interop.checkpoint import Checkpoint, build_from_checkpoint
    from vla.spec import ENV_STATE, SpecError

    model, tf, cfg = build_from_checkpoint(Checkpoint(ckpt))
    if not cfg.predicts_env_state:
        raise SpecError(f"{ckpt}: the model has no env-state head ([model.grounding] with env_state_loss > 0)")
    model.eval()
    st = EpisodeStore.open(store)
    size = model.cfg.backbone.image_size
    ds = WindowDataset([st], tf.horizon, image_size=(size, size))
    if ENV_STATE not in ds.lowdim(0):
        raise SpecError(f"{store}: no {ENV_STATE} recorded")
    rng = np.random.default_rng(seed)
    episode = ds.episode_of(np.arange(len(ds)))
    by_task: dict[str, list[int]] = {}
    for e, info in enumerate(st.infos()):
        by_task.setdefault(info.source.rsplit(":", 1)[-1], []).append(e)
    out = {}
    for task, eps in sorted(by_task.items()):
        idx = np.flatnonzero(np.isin(episode, eps))
        idx = rng.choice(idx, min(windows, len(idx)), replace=False)
        ws = [ds[int(i)] for i in idx]
        b = tf.from_windows(collate_windows(ws, stack_images=False))
        with torch.no_grad():
            pred = model.grounding.predict(model.observe(b)[1]).numpy()
        pred = tf.stats[b["embodiment"][0]][ENV_STATE].unnormalize(pred, "zscore")
        true = np.stack([w[ENV_STATE] for w in ws])
        out[task] = {
            "object_cm": round(100 * float(np.linalg.norm(pred[:, :2] - true[:, :2], axis=1).mean()), 2),
            "goal_cm": round(100 * float(np.linalg.norm(pred[:, 3:5] - true[:, 3:5], axis=1).mean()), 2),
            "object_spread_cm": round(100 * float(np.linalg.norm(true[:, :2] - true[:, :2].mean(0), axis=1).mean()), 2),
            "windows": len(ws),
        }
    return out


def task_pools(store: str) -> dict[str, list[str]]:
    """Instructions of the demos per task ("robot/task", from each episode's source)."""
    from vla.data.store import EpisodeStore

    pools: dict[str, set[str]] = {}
    for info in EpisodeStore.open(store).infos():
        key = info.source.rsplit(":", 1)[-1]  # "sim:expert:arm7/reach" -> "arm7/reach"
        pools.setdefault(key, set()).add(info.task)
    return {k: sorted(v) for k, v in pools.items()}


# The targets: (task or "average", minutes of training, least success); "language": the
# language check must pass as well.
TARGETS = (
    ("arm7/reach", 30, 0.8, True),
    ("arm5/reach", 30, 0.8, True),
    ("arm7/pick-place", 30, 0.6, False),
    ("arm5/pick-place", 30, 0.6, False),
    ("arm7/push", 30, 0.5, False),
    ("arm5/push", 30, 0.5, False),
    ("bimanual/handover", 60, 0.4, False),
    ("average", 60, 0.7, False),
)
HELDOUT_SEED = 5_000_000  # held-out demos start here (recipes at 0, evaluation suites at 1,000,000)
LANGUAGE_MIN_SUCCESS = 0.3  # below this a shuffled-instruction drop cannot be told from noise


def evaluate_point(ckpt: str | Path, suite, pools: dict, *, episodes: int, workers: int, out: Path) -> dict:
    """One checkpoint on every task of `suite` (held-out seeds), plus the per-task language check."""
    from dataclasses import replace

    from vla.runtime.policy import load_policy
    from vla.sim import evaluate
    from vla.sim.collect import SEED_STRIDE
    from vla.sim.suites import load_suite

    cfg = load_suite(suite)
    factory = functools.partial(load_policy, str(ckpt))
    factory.name = Path(ckpt).name  # shown in the eval JSON and chart
    res = evaluate(factory, cfg, episodes=episodes, workers=workers, progress=False, json_out=out)
    tasks = {f"{r['robot']}/{r['task']}": r for r in res["tasks"]}
    lang = {}
    for i, t in enumerate(cfg.tasks):
        key = f"{t.robot}/{t.task}"
        pool = pools.get(key, [])
        if tasks[key]["success_rate"] < LANGUAGE_MIN_SUCCESS or len(pool) < 2:
            lang[key] = {"normal": tasks[key]["success_rate"], "passed": None, "verdict": "success too low to tell"}
            continue
        one = replace(cfg, name=f"{cfg.name}-{t.robot}-{t.task}", tasks=(t,), seed=cfg.seed + i * SEED_STRIDE)
        normal = {"overall": tasks[key]}
        lang[key] = language_check(ckpt, one, pool, episodes=episodes, workers=workers, normal=normal)
    success = {k: round(r["success_rate"], 3) for k, r in tasks.items()}
    return {
        "success": success,
        "average": round(float(np.mean(list(success.values()))), 3),
        "language_check": lang,
    }


def judge_targets(curve: dict[float, dict]) -> list[dict]:
    """Each target against the curve point at its minutes (the nearest measured point at or below)."""
    rows = []
    for task, minutes, least, needs_language in TARGETS:
        at = [m for m in curve if m <= minutes]
        if not at:
            rows.append({"target": task, "minutes": minutes, "least": least, "met": None, "why": "not measured"})
            continue
        m = max(at)
        point = curve[m]
        got = point["average"] if task == "average" else point["success"].get(task)
        if got is None:
            rows.append({"target": task, "minutes": minutes, "least": least, "met": None, "why": "task not in suite"})
            continue
        lang_ok = point["language_check"].get(task, {}).get("passed") if needs_language else True
        met = bool(got >= least and lang_ok)
        rows.append(
            {"target": task, "minutes": minutes, "least": least, "measured_at": m, "success": got, "met": met}
            | ({"language_check_passed": lang_ok} if needs_language else {})
        )
    return rows


def plot_curves(curves: dict[str, dict[float, dict]], png: Path) -> None:
    """Success vs training minutes, one panel per preset: every task and the suite average."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(8.5 * len(curves), 4.5), squeeze=False)
    for ax, (name, curve) in zip(axes[0], curves.items()):
        xs = sorted(curve)
        tasks = sorted({t for p in curve.values() for t in p["success"]})
        colors = {}
        for t in tasks:
            (line,) = ax.plot(xs, [curve[x]["success"].get(t, np.nan) for x in xs], marker="o", lw=1, label=t)
            colors[t] = line.get_color()
        ax.plot(xs, [curve[x]["average"] for x in xs], marker="s", lw=2.5, color="k", label="average")
        colors["average"] = "k"
        for t, minutes, least, _ in TARGETS:  # the targets: hollow stars
            if t in colors:
                ax.scatter([minutes], [least], marker="*", s=140, facecolors="none", edgecolors=colors[t], lw=1.2)
        ax.scatter([], [], marker="*", s=140, facecolors="none", edgecolors="grey", label="target")
        ax.set_xlabel("training minutes (2 CPU cores)")
        ax.set_ylabel("success on held-out seeds")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xticks(xs)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the curves, not on them
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def run(
    out: str | Path = "runs/bench-learn",
    *,
    presets=("pi0-tiny",),
    minutes=(15.0, 30.0, 60.0),
    recipe: str = "datasets/builtin.toml",
    suite: str = "builtin",
    episodes: int = 20,
    workers: int = 2,
    steps: int | None = None,
    probe: bool = True,
) -> dict:
    from dataclasses import replace

    from vla.config import load_preset
    from vla.model.interop.checkpoint import Checkpoint
    from vla.sim import collect
    from vla.sim.collect import load_recipe
    from vla.sim.suites import load_suite
    from vla.train.trainer import snapshot_path, train

    minutes = sorted(float(m) for m in minutes)
    if not minutes or minutes[0] <= 0:
        raise ValueError(f"minutes must be positive, got {minutes}")
    for name in presets:  # every input checked before minutes of collection
        load_preset(name)
    load_recipe(recipe)
    load_suite(suite)
    if steps is not None and steps < 1:
        raise SpecError(f"steps must be >= 1, got {steps}")
    out = claim_folder(out, "bench learn", legacy=lambda p: (p / "demos" / "zarr.json").exists())
    data = out / "demos"
    t0 = time.perf_counter()
    if not data.exists():
        collect(recipe, str(data), workers=workers)
    heldout = out / "demos-heldout"  # a few demos of scenes training never saw, for grounding_error
    if not heldout.exists():
        r = load_recipe(recipe)
        few = tuple(replace(t, episodes=min(t.episodes, 20)) for t in r.tasks)
        collect(replace(r, seed=r.seed + HELDOUT_SEED, tasks=few), str(heldout), workers=workers, progress=False)
    collect_s = time.perf_counter() - t0
    pools = task_pools(str(data))
    results = {
        "benchmark": "learn",
        "recipe": recipe,
        "suite": suite,
        "collect_seconds": round(collect_s, 1),
        "minutes": minutes,
        "episodes_per_task": episodes,
        "policies": {},
    }
    curves = {}
    for name in presets:
        preset = load_preset(name)  # camera slots widen to the data's (the bimanual robot's 3) in train()
        ck = out / f"ckpt-{Path(name).stem}"
        t1 = time.perf_counter()
        budget = minutes[-1] * 60
        train(preset, [str(data)], ck, steps=steps, max_seconds=budget, progress=True, overwrite=True,
              snapshot_seconds=tuple(m * 60 for m in minutes[:-1]))  # fmt: skip
        train_s = time.perf_counter() - t1
        curve, steps_at = {}, {}
        for m in minutes:
            at = ck if m == minutes[-1] else snapshot_path(ck, m * 60)
            if not at.exists():  # a step cap ended the run first
                continue
            steps_at[m] = Checkpoint(at, verify=False).resolved.step
            tag = f"{Path(name).stem}-{m:g}min"
            curve[m] = evaluate_point(
                at, suite, pools, episodes=episodes, workers=workers, out=out / f"eval-{tag}.json"
            ) | {"steps": steps_at[m]}
            print(f"[bench learn] {name} @ {m:g} min ({steps_at[m]} steps): {json.dumps(curve[m]['success'])}")
        cfg = Checkpoint(ck, verify=False).resolved
        row = {
            "train_seconds": round(train_s, 1),
            "steps": cfg.step,
            "params": cfg.params,
            "camera_slots": cfg.model.cameras,
            "curve": {f"{m:g}": p for m, p in curve.items()},
            "targets": judge_targets(curve),
        }
        if probe:
            row["reliance_probe"] = reliance_probe(ck, data) | {"goal": goal_error(ck, data)}
        if cfg.model.predicts_env_state:
            row["grounding"] = {"demos": grounding_error(ck, data), "heldout": grounding_error(ck, heldout)}
        results["policies"][name] = row
        curves[Path(name).stem] = curve
    if curves:
        plot_curves(curves, out / "learn_curves.png")
        results["curves_png"] = str(out / "learn_curves.png")
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    (out / "learn.json").write_text(json.dumps(results, indent=2))
    return results
