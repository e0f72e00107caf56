"""`vla bench learn`: does a tiny policy learn language-conditioned skills on a CPU in minutes?

1. collect scripted demos from two embodiments (recipe `datasets/learn.toml`);
2. train `pi0-tiny` (and `fast-tiny`) within a wall-clock budget;
3. evaluate on held-out seeds: the language-conditioned reach suite and pick-place;
4. language check: the same checkpoint with instructions shuffled across episodes. On
   reach-goal the named colour is the only cue to which of 3 targets to touch, so a policy
   that uses language falls to about chance (1/3) while a policy that ignores it does not move.
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

from vla.spec import STATE, TASK


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
    from vla.model.checkpoint import Checkpoint, build_from_checkpoint
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
    and samples); `spread`: std of the last step across samples (mean over dims);
    `end_if_average`: the error of always answering the average of those demo end points, the
    score of a policy that knows nothing about where this episode goes. `end` near it: the goal
    is not being read from the observation."""
    import torch

    from vla.data.store import EpisodeStore
    from vla.model.transforms import DELTA_UNITS
    from vla.runtime.policy import load_policy
    from vla.spec import ACTION, EMBODIMENT

    policy = load_policy(ckpt)
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
        | {
            "end_if_average": round(float(np.abs(np.stack(ends[n]) - np.mean(ends[n], 0)).mean()), 4),
            "episodes": len(rows),
        }
        for n, rows in per.items()
        if rows
    }
    return {"per_embodiment": out, "samples": samples}


def _instruction_pool(store: str) -> list[str]:
    from vla.data.store import EpisodeStore

    return EpisodeStore.open(store).tasks


def run(
    out: str | Path = "runs/bench-learn",
    *,
    presets=("pi0-tiny", "fast-tiny"),
    minutes: float = 15.0,
    recipe: str = "datasets/learn.toml",
    reach_suite: str = "reach-goal",
    pick_suite: str = "pick-place",
    episodes: int = 30,
    workers: int = 2,
    steps: int | None = None,
) -> dict:
    from vla.config import load_preset
    from vla.model.checkpoint import Checkpoint
    from vla.runtime.policy import load_policy
    from vla.sim import collect, evaluate
    from vla.train.trainer import train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "demos"
    t0 = time.perf_counter()
    if not data.exists():
        collect(recipe, str(data), workers=workers)
    collect_s = time.perf_counter() - t0
    pool = _instruction_pool(str(data))
    results = {
        "benchmark": "learn",
        "recipe": recipe,
        "collect_seconds": round(collect_s, 1),
        "budget_minutes": minutes,
        "policies": {},
    }
    for name in presets:
        preset = load_preset(name)
        ck = out / f"ckpt-{name}"
        t1 = time.perf_counter()
        train(preset, [str(data)], ck, steps=steps, max_seconds=minutes * 60, progress=True)
        train_s = time.perf_counter() - t1
        cfg = Checkpoint(ck, verify=False).resolved
        factory = functools.partial(load_policy, str(ck))
        factory.name = name
        reach = evaluate(
            factory,
            reach_suite,
            episodes=episodes,
            workers=workers,
            progress=False,
            json_out=out / f"eval-{name}-{reach_suite}.json",
        )
        pick = evaluate(
            factory,
            pick_suite,
            episodes=max(10, episodes // 2),
            workers=workers,
            progress=False,
            json_out=out / f"eval-{name}-{pick_suite}.json",
        )
        lang = language_check(ck, reach_suite, pool, episodes=episodes, workers=workers, normal=reach)
        probe = reliance_probe(ck, data) | {"goal": goal_error(ck, data)}
        results["policies"][name] = {
            "train_seconds": round(train_s, 1),
            "steps": cfg.step,
            "params": cfg.params,
            "reach": {f"{r['robot']}/{r['task']}": round(r["success_rate"], 3) for r in reach["tasks"]},
            "reach_overall": reach["overall"],
            "pick_place": {f"{r['robot']}/{r['task']}": round(r["success_rate"], 3) for r in pick["tasks"]},
            "language_check": lang,
            "reliance_probe": probe,
        }
    results["targets"] = {"reach_success": 0.8, "language_shuffled": "about chance (1/3)"}
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    (out / "learn.json").write_text(json.dumps(results, indent=2))
    return results
