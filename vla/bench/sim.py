"""`vla bench sim`: physics steps/s, renders/s per camera, and collection episodes/min.

Targets on 2 cores: >= 500 renders/s at 96x96 for single-arm built-in scenes, physics >= 20x
real time, 100 arm7 reach episodes collected in <= 2 minutes.
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import time

from vla.sim.gl import ensure_offscreen_gl

ensure_offscreen_gl()  # before mujoco is imported: it picks its GL backend then

import mujoco  # noqa: E402

log = logging.getLogger(__name__)

SCENES = (("arm7", "reach"), ("arm5", "reach"), ("arm7", "pick-place"), ("bimanual", "handover"))


def _physics(model, data, steps: int) -> dict:
    t0 = time.perf_counter()
    mujoco.mj_step(model, data, nstep=steps)
    dt = time.perf_counter() - t0
    return {"steps_per_s": round(steps / dt), "realtime_factor": round(steps * model.opt.timestep / dt, 1)}


def _renders(model, data, cameras, size: int, n: int) -> dict:
    r = mujoco.Renderer(model, size, size)
    out = {}
    try:
        for cam in cameras:
            r.update_scene(data, camera=cam)
            r.render()  # warm-up: first render compiles shaders
            t0 = time.perf_counter()
            for _ in range(n):
                r.update_scene(data, camera=cam)
                r.render()
            out[cam] = round(n / (time.perf_counter() - t0))
    finally:
        r.close()
    return out


def bench_scene(env, *, steps: int, renders: int) -> dict:
    """Physics and rendering figures for one env (its model and data after a reset)."""
    u = env.unwrapped
    model, data = u.model, u.data
    cams = [model.camera(i).name for i in range(model.ncam)] if not hasattr(u, "robot") else list(u.robot.cameras)
    cams = getattr(u, "bench_cameras", cams)
    res = {"physics": _physics(model, data, steps), "timestep_s": model.opt.timestep}
    for size in (96, 224):
        res[f"renders_per_s_{size}"] = _renders(model, data, cams, size, renders)
    return res


def bench_collect(episodes: int, workers: int = 2) -> dict:
    from vla.sim.collect import RecipeConfig, RecipeTask, collect

    recipe = RecipeConfig(
        name="bench-arm7-reach", image_size=96, tasks=(RecipeTask("arm7", "reach", episodes, noise=0.02),)
    )
    with tempfile.TemporaryDirectory() as tmp:
        r = collect(recipe, os.path.join(tmp, "store"), workers=workers, progress=False)
    return {
        "robot": "arm7",
        "task": "reach",
        "episodes": episodes,
        "workers": workers,
        "image_size": 96,
        "seconds": r["seconds"],
        "episodes_per_min": r["episodes_per_min"],
        "kept": r["episodes_kept"],
    }


def run(*, quick: bool = False, external: bool = True, collect_episodes: int = 100) -> dict:
    from vla.sim.registry import make_env

    steps, renders = (500, 20) if quick else (5000, 300)
    out = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "mujoco": mujoco.__version__,
            "gl": os.environ.get("MUJOCO_GL"),
        },
        "scenes": {},
    }
    for robot, task in SCENES:
        env = make_env(robot, task, image_size=96, seed=0)
        out["scenes"][f"{robot}/{task}"] = bench_scene(env, steps=steps, renders=renders)
        env.close()
    if external:
        for robot, task in (("metaworld", "reach-v3"), ("aloha", "transfer-cube")):
            try:
                env = make_env(robot, task, image_size=96, seed=0)
            except Exception as e:  # a missing optional suite is reported, not fatal
                out["scenes"][f"{robot}/{task}"] = {"error": str(e)}
                continue
            out["scenes"][f"{robot}/{task}"] = bench_scene(env, steps=steps, renders=renders)
            env.close()
    out["collect"] = bench_collect(min(collect_episodes, 10) if quick else collect_episodes)
    single = [v for k, v in out["scenes"].items() if k.split("/")[0] in ("arm7", "arm5")]
    out["targets"] = {
        "renders_96_single_arm_min": min(min(s["renders_per_s_96"].values()) for s in single),
        "renders_96_ok": all(min(s["renders_per_s_96"].values()) >= 500 for s in single),
        "physics_realtime_min": min(s["physics"]["realtime_factor"] for s in out["scenes"].values() if "physics" in s),
        "collect_100_arm7_reach_s": round(100 * 60 / out["collect"]["episodes_per_min"], 1),
        "collect_ok": 100 * 60 / out["collect"]["episodes_per_min"] <= 120,
    }
    return out
