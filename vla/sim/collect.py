"""Fill an episode store with scripted-expert demonstrations, following a recipe (datasets/*.toml).

    name = "quickstart"
    image_size = 64
    seed = 0
    keep_failed = false
    after_success = 0   # steps recorded after the first success (default 0)
    [[tasks]]
    robot = "arm7"
    task = "reach"
    episodes = 40
    noise = 0.02        # expert action noise, rad (see vla.sim.expert)

An episode ends at its first success; `after_success` > 0 records that many more steps, so a
demonstration ends with the robot settling at the goal rather than at the edge of the success
region (a chunk running past the end then learns "stay here" from real frames).

Episodes run in worker processes (or Ray actors, `ray=`: vla.sim.ray_jobs); the parent writes
each finished episode to the store, so a Ctrl-C (or a crash) keeps every episode committed so
far. Failed episodes are dropped unless `keep_failed`; a crashed episode is logged with its seed
and the rest go on.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vla.data.store import EpisodeStore
from vla.outputs import check_output, is_store
from vla.resources import load_toml
from vla.sim.ray_jobs import check_ray, run_jobs_ray
from vla.sim.registry import embodiment_for, make_env
from vla.sim.rollout import run_episode
from vla.sim.suites import parse_tasks
from vla.sim.workers import run_jobs
from vla.spec import SpecError

log = logging.getLogger(__name__)

SEED_STRIDE = 100_000  # seeds of task i are seed + i * SEED_STRIDE + episode
SEED_NOTE = "collect_next_seed"  # store note: robot/task -> the first seed not yet collected


@dataclass(frozen=True)
class RecipeTask:
    robot: str
    task: str
    episodes: int
    noise: float = 0.0


@dataclass(frozen=True)
class RecipeConfig:
    name: str
    tasks: tuple[RecipeTask, ...]
    image_size: int = 96
    seed: int = 0
    keep_failed: bool = False
    after_success: int = 0
    description: str = ""

    def __post_init__(self):
        if not self.tasks:
            raise SpecError(f"recipe {self.name!r}: needs at least one [[tasks]] entry")
        for t in self.tasks:
            if t.noise < 0:
                raise SpecError(f"recipe {self.name!r}: {t.robot}/{t.task}: noise must be >= 0, got {t.noise}")
        if self.after_success < 0:
            raise SpecError(f"recipe {self.name!r}: after_success must be >= 0, got {self.after_success}")


def load_recipe(name_or_path: str | Path) -> RecipeConfig:
    """A recipe by built-in name (datasets/<name>.toml) or TOML path."""
    d, p = load_toml(name_or_path, "recipe")
    known = {"name", "description", "image_size", "seed", "keep_failed", "after_success", "episodes", "noise", "tasks"}
    if set(d) - known:
        raise SpecError(f"{p}: unknown keys {sorted(set(d) - known)}; expected some of {sorted(known)}")
    name = d.get("name", p.stem)
    tasks = parse_tasks(name, d, "recipe", int(d.get("episodes", 50)))
    return RecipeConfig(
        name=name,
        image_size=int(d.get("image_size", 96)),
        seed=int(d.get("seed", 0)),
        keep_failed=bool(d.get("keep_failed", False)),
        after_success=int(d.get("after_success", 0)),
        description=d.get("description", ""),
        tasks=tuple(
            RecipeTask(t["robot"], t["task"], t["episodes"], float(t.get("noise", d.get("noise", 0.0)))) for t in tasks
        ),
    )


# ---- worker side ----
_ENVS: dict = {}


def _env(robot: str, task: str, image_size: int):
    key = (robot, task, image_size)
    if key not in _ENVS:
        _ENVS[key] = make_env(robot, task, image_size=image_size)
    return _ENVS[key]


def _collect_job(context: dict, job: dict) -> dict:
    from vla.sim.expert import make_expert

    env = _env(job["robot"], job["task"], context["image_size"])
    expert = make_expert(env, noise=job["noise"], seed=job["seed"])
    ep = run_episode(env, expert, seed=job["seed"], replan_every=1, record=True, after_success=context["after_success"])
    frames = ep.pop("frames")
    ep["arrays"] = {k: np.stack([f[k] for f in frames]) for k in frames[0]} if frames else {}
    return ep


# ---- parent side ----
def collect(
    recipe_or_spec,
    out_store,
    *,
    episodes: int | None = None,
    workers: int = 1,
    keep_failed: bool | None = None,
    progress: bool = True,
    seed: int | None = None,
    ray: str | None = None,
) -> dict:
    """Run a recipe (name, TOML path or RecipeConfig) into `out_store` (created, or appended to).

    Seeds: task i of the recipe runs seeds seed + i * SEED_STRIDE + k. Appending to a store goes on
    after the last seed collected into it for that robot/task (kept in the store's notes), so new
    episodes are new scenes; `seed` starts at that seed instead (the recipe's seed otherwise).
    ray: run the episodes as Ray tasks ("local" or a cluster address; vla.sim.ray_jobs), the same
    episodes as local workers give for the same seeds."""
    recipe = recipe_or_spec if isinstance(recipe_or_spec, RecipeConfig) else load_recipe(recipe_or_spec)
    if episodes is not None:
        if episodes < 1:
            raise SpecError(f"episodes must be >= 1, got {episodes}")
        recipe = replace(recipe, tasks=tuple(replace(t, episodes=episodes) for t in recipe.tasks))
    if workers < 1:
        raise SpecError(f"workers must be >= 1, got {workers}")
    if seed is not None and seed < 0:
        raise SpecError(f"seed must be >= 0, got {seed}")
    if ray is not None:  # before the store is created
        check_ray(ray)
    check_output(
        out_store, "an episode store", own=is_store, overwrite=True
    )  # append to a store, never to other things
    keep = recipe.keep_failed if keep_failed is None else keep_failed
    embs = {t.robot: embodiment_for(t.robot, recipe.image_size) for t in recipe.tasks}
    store = EpisodeStore.create(out_store, list(embs.values()), exist_ok=True)
    for emb in embs.values():
        store.add_embodiment(emb)
    done = store.notes().get(SEED_NOTE, {}) if seed is None else {}
    first = recipe.seed if seed is None else seed
    jobs = []
    for i, t in enumerate(recipe.tasks):
        start = max(first + i * SEED_STRIDE, int(done.get(f"{t.robot}/{t.task}", 0)))
        jobs += [{"robot": t.robot, "task": t.task, "noise": t.noise, "seed": start + k} for k in range(t.episodes)]
    next_seed = dict(store.notes().get(SEED_NOTE, {}))
    stats = {
        f"{t.robot}/{t.task}": {"attempted": 0, "succeeded": 0, "kept": 0, "crashed": 0, "frames": 0}
        for t in recipe.tasks
    }
    crashed: list[dict] = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(jobs), desc=f"collect {recipe.name}", unit="ep", disable=not progress)
    try:
        context = {"image_size": recipe.image_size, "after_success": recipe.after_success}
        run = run_jobs if ray is None else functools.partial(run_jobs_ray, address=ray)
        for job, ep, err in run(_collect_job, context, jobs, workers=workers):
            name = f"{job['robot']}/{job['task']}"
            s = stats[name]
            s["attempted"] += 1
            next_seed[name] = max(int(next_seed.get(name, 0)), job["seed"] + 1)
            bar.update(1)
            if err is not None:
                s["crashed"] += 1
                last = err.strip().splitlines()[-1]
                crashed.append({"robot": job["robot"], "task": job["task"], "seed": job["seed"], "error": last})
                log.error("episode %s/%s seed %d crashed: %s", job["robot"], job["task"], job["seed"], last)
                continue
            s["succeeded"] += int(ep["success"])
            if not (ep["success"] or keep) or not ep["arrays"]:
                continue
            arrays = ep["arrays"]
            n = len(arrays["action"])
            with store.writer(ep["embodiment"], source=f"sim:expert:{job['robot']}/{job['task']}") as w:
                for i in range(n):
                    w.add_frame({k: v[i] for k, v in arrays.items()})
                w.end_episode(task=ep["task"], success=bool(ep["success"]))
            store.set_note(SEED_NOTE, next_seed)
            s["kept"] += 1
            s["frames"] += n
            bar.set_postfix(kept=sum(x["kept"] for x in stats.values()))
    finally:
        bar.close()
        store.set_note(SEED_NOTE, next_seed)
    elapsed = time.perf_counter() - t0
    total = sum(x["attempted"] for x in stats.values())
    return {
        "recipe": recipe.name,
        "store": str(out_store),
        "episodes_attempted": total,
        "episodes_kept": sum(x["kept"] for x in stats.values()),
        "first_seed": {f"{j['robot']}/{j['task']}": j["seed"] for j in reversed(jobs)},
        "seconds": round(elapsed, 2),
        "episodes_per_min": round(60 * total / elapsed, 1) if elapsed > 0 else None,
        "per_task": stats,
        "crashed": crashed,
    }
