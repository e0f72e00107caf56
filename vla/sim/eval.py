"""The evaluation harness: a policy on a suite -> success rate per task (95% Wilson CI), mean
episode length, JSON, a bar chart and a few rollout videos.

`policy` is "expert" (the scripted expert of each env: a sanity baseline), a PolicyLike object
(`reset()`, `infer(obs) -> {"actions": [h, a]}`), or a picklable zero-arg factory returning one
(needed for workers > 1 or Ray: each worker process builds its own). The harness adds `embodiment` to
every observation and executes each chunk open-loop for `replan_every` steps (default: the
suite's setting, else half the chunk). This module imports nothing from runtime/model/train.

With an `executor` (vla.runtime.chunking.SimExecutor: a chunking mode of the control loop) and
`delay_ms`, chunks are scheduled as the real-time loop schedules them, with the inference delay
simulated in sim time (vla.sim.rollout): `vla eval CKPT --mode rtc-guided --delay-ms 300`. The
results then also give the chunk-boundary jumps (p50 / p90 / max of the largest change of any
action dim at a switch) and the requests per episode.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vla.sim.collect import SEED_STRIDE
from vla.sim.ray_jobs import check_ray, run_jobs_ray
from vla.sim.registry import make_env
from vla.sim.report import bar_chart, wilson, write_json, write_video
from vla.sim.rollout import run_episode
from vla.sim.suites import SuiteConfig, load_suite
from vla.sim.workers import run_jobs
from vla.spec import SpecError

log = logging.getLogger(__name__)

_ENVS: dict = {}


def _policy(context: dict, env, seed: int):
    p = context["policy"]
    if isinstance(p, str):
        if p != "expert":
            raise SpecError(f"policy string must be 'expert', got {p!r}")
        from vla.sim.expert import make_expert

        return make_expert(env, seed=seed)
    if hasattr(p, "infer"):
        return p
    # One policy per evaluate() call and process: `built` lives in this call's context, which each
    # worker process gets its own copy of, so a later evaluate() with another factory builds anew.
    built = context["built"]
    if "policy" not in built:
        built["policy"] = p()
    return built["policy"]


def _eval_job(context: dict, job: dict) -> dict:
    key = (job["robot"], job["task"], context["image_size"])
    if key not in _ENVS:
        _ENVS[key] = make_env(job["robot"], job["task"], image_size=context["image_size"])
    env = _ENVS[key]
    policy = _policy(context, env, job["seed"])
    ex = context.get("executor")
    delay = delay_steps(context.get("delay_ms", 0.0), env.unwrapped.embodiment.control_hz) if ex else 0
    ep = run_episode(
        env, policy, seed=job["seed"], replan_every=context["replan_every"], video=job["video"], executor=ex,
        delay_steps=delay,
    )  # fmt: skip
    ep["fps"] = int(env.metadata.get("render_fps", 20))
    ep["reward_stages"] = bool(getattr(env.unwrapped, "reward_stages", False))
    ep["noise_scale"] = _noise_scale(policy)
    return ep


def _noise_scale(policy) -> float | None:
    """What a pi0 / pi0.5 policy samples from: a checkpoint's config, or a server's metadata."""
    own = getattr(getattr(policy, "cfg", None), "noise_scale", None)
    if own is not None:
        return own
    meta = getattr(policy, "metadata", None)
    return meta.get("noise_scale") if isinstance(meta, dict) else None


def delay_steps(delay_ms: float, control_hz: float) -> int:
    """An injected delay in control steps of the env (rounded: 300 ms at 20 Hz is 6 steps)."""
    return int(round(delay_ms * control_hz / 1000))


def _check_scheduling(policy, cfg: SuiteConfig, executor, delay_ms: float) -> None:
    """--mode / --delay-ms: a delay needs a chunking mode, and the mode needs a chunk policy and robots
    that hold still by commanding their state."""
    from vla.sim.registry import embodiment_for

    if delay_ms < 0:
        raise SpecError(f"delay_ms must be >= 0, got {delay_ms}")
    if executor is None:
        if delay_ms:
            raise SpecError("an injected delay needs a chunking mode (--mode sync, async, rtc, ...)")
        return
    if isinstance(policy, str):
        raise SpecError(
            "the scripted expert acts step by step, it has no chunks to schedule: --mode and --delay-ms "
            "evaluate a checkpoint or a policy server"
        )
    for t in cfg.tasks:
        emb = embodiment_for(t.robot, cfg.image_size)
        if emb.action_mode != "joint_position" or emb.state_dim != emb.action_dim:
            raise SpecError(
                f"suite {cfg.name!r}: robot {t.robot!r} cannot hold still by commanding its state "
                f"({emb.action_mode}), which a chunking mode needs; evaluate it without --mode / --delay-ms"
            )


def _jump_stats(jumps: list[float]) -> dict:
    if not jumps:
        return {"p50": None, "p90": None, "max": None, "n": 0}
    a = np.asarray(jumps)
    return {
        "p50": round(float(np.percentile(a, 50)), 5),
        "p90": round(float(np.percentile(a, 90)), 5),
        "max": round(float(a.max()), 5),
        "n": len(jumps),
    }


def _policy_name(policy) -> str:
    """What the results call the policy: its name, or for a factory (functools.partial, as `vla eval`
    with workers and the benches pass) the checkpoint path or server URL it loads from."""
    if isinstance(policy, (str, Path)):
        return str(policy)
    if isinstance(policy, functools.partial):
        source = next((a for a in policy.args if isinstance(a, (str, Path))), None)
        return str(source) if source is not None else _policy_name(policy.func)
    return getattr(policy, "name", None) or getattr(policy, "__name__", None) or type(policy).__name__


def _keep_video(kept: dict, success: bool, limit: int) -> bool:
    """Keep this rollout's video (and count it in `kept`)? Per task: the first success and the
    first failure, then more of either up to `limit` videos, always leaving a slot for the
    outcome not yet seen."""
    mine, other = ("success", "fail") if success else ("fail", "success")
    if kept["n"] >= limit or (kept[mine] and kept["n"] >= limit - (0 if kept[other] else 1)):
        return False
    kept["n"] += 1
    kept[mine] = True
    return True


def check_policy_robots(known: dict, cfg: SuiteConfig, image_size: int) -> None:
    """Before the first episode: every robot of the suite is an embodiment the policy knows, with
    the cameras it was trained on. `known`: embodiment name -> Embodiment or its dict."""
    from vla.sim.registry import embodiment_for

    missing, sizes = [], []
    for robot in dict.fromkeys(t.robot for t in cfg.tasks):
        emb = embodiment_for(robot, image_size)
        if emb.name not in known:
            missing.append(emb.name)
            continue
        have = known[emb.name]
        cams = have.get("cameras", []) if isinstance(have, dict) else [vars(c) for c in have.cameras]
        want = {c.name: (c.height, c.width) for c in emb.cameras}
        got = {c["name"]: (c["height"], c["width"]) for c in cams if "name" in c}
        if want != got:
            sizes.append(f"{emb.name}: the suite renders {want}, the policy takes {got}")
    if missing:
        raise SpecError(
            f"suite {cfg.name!r} runs robots {missing} that the policy was not trained on (it knows "
            f"{sorted(known)}): evaluate it on a suite of those robots, or train on data of these"
        )
    if sizes:
        raise SpecError(f"camera sizes differ ({'; '.join(sizes)}): pass the policy's size with --image-size")


def _configure(policy, suite, *, episodes, workers, replan_every, seed, ray=None) -> SuiteConfig:
    """The suite to run, with the caller's seed and episode count; bad arguments refused."""
    cfg = suite if isinstance(suite, SuiteConfig) else load_suite(suite)
    if seed is not None:
        if seed < 0:
            raise SpecError(f"seed must be >= 0, got {seed}")
        cfg = replace(cfg, seed=seed)
    if episodes is not None:
        if episodes < 1:
            raise SpecError(f"episodes must be >= 1, got {episodes}")
        cfg = replace(cfg, tasks=tuple(replace(t, episodes=episodes) for t in cfg.tasks))
    if replan_every is not None and replan_every < 1:
        raise SpecError(f"replan_every must be >= 1, got {replan_every}")
    if workers > 1 and not isinstance(policy, str) and hasattr(policy, "infer"):
        raise SpecError("workers > 1 needs policy='expert' or a picklable zero-arg factory, not a policy object")
    if ray is not None:
        check_ray(ray)
        if not isinstance(policy, str) and hasattr(policy, "infer"):
            raise SpecError("ray needs policy='expert' or a picklable zero-arg factory, not a policy object")
    return cfg


def _task_row(r: dict) -> dict:
    """One task's tally -> its results row (success rate with a Wilson 95% interval)."""
    n, s = r["episodes"], r["successes"]
    sched = (
        {"boundary_jump": _jump_stats(r["jumps"]), "requests_per_episode": round(r["requests"] / n, 2) if n else None}
        if r.get("scheduled")
        else {}
    )
    return sched | {
        "robot": r["robot"],
        "task": r["task"],
        "episodes": n,
        "successes": s,
        "success_rate": s / n if n else 0.0,
        "ci95": list(wilson(s, n)),
        "mean_length": float(np.mean(r["lengths"])) if r["lengths"] else None,
        **_reward_stats(r.get("max_rewards", []), stages=r.get("reward_stages", False)),
        "errors": r["errors"],
    }


def _reward_stats(best: list[float], *, stages: bool = False) -> dict:
    """Partial progress: the mean over episodes of each one's highest reward, and, where the env
    declares its rewards stages (`reward_stages = True`, as gym-aloha's 0-4: touched, lifted, ...
    done), how many episodes got furthest to each stage. A dense reward that saturates at a whole
    number (Meta-World's 10) is not a stage."""
    if not best:
        return {}
    out = {"mean_max_reward": round(float(np.mean(best)), 4)}
    if stages and all(float(b).is_integer() for b in best):
        values, counts = np.unique(np.asarray(best, int), return_counts=True)
        out["max_reward_counts"] = {str(v): int(c) for v, c in zip(values, counts)}
    return out


def staged(counts: dict | None) -> bool:
    """Do these `max_reward_counts` show stages beyond success or not (gym-aloha's 0-4)?"""
    return bool(set(counts or {}) - {"0", "1"})


def _overall(rows: list[dict], per: dict | None = None) -> dict:
    n_all = sum(r["episodes"] for r in rows)
    s_all = sum(r["successes"] for r in rows)
    tallies = list((per or {}).values())
    sched = {}
    if tallies and tallies[0].get("scheduled"):
        lengths = [x for t in tallies for x in t["lengths"]]
        sched = {
            "boundary_jump": _jump_stats([j for t in tallies for j in t["jumps"]]),
            "requests_per_episode": round(sum(t["requests"] for t in tallies) / n_all, 2) if n_all else None,
            "mean_length": float(np.mean(lengths)) if lengths else None,
        }
    return sched | {
        "episodes": n_all,
        "successes": s_all,
        "success_rate": s_all / n_all if n_all else 0.0,
        "ci95": list(wilson(s_all, n_all)),
        "mean_task_success": float(np.mean([r["success_rate"] for r in rows])) if rows else 0.0,
    }


def evaluate(
    policy,
    suite: str | Path | SuiteConfig,
    *,
    episodes: int | None = None,
    workers: int = 1,
    replan_every: int | None = None,
    image_size: int | None = None,
    json_out: str | Path | None = None,
    chart: str | Path | None = None,
    videos: str | Path | None = None,
    num_videos: int = 2,
    progress: bool = True,
    seed: int | None = None,
    executor=None,
    delay_ms: float = 0.0,
    ray: str | None = None,
) -> dict:
    """Run `policy` on every task of `suite`; see the module docstring. Returns the results dict.

    seed: the first episode seed (default: the suite's, 1,000,000 unless it says otherwise; the
    collection recipes start at 0). Task i's episode k runs on seed + i * SEED_STRIDE + k, so
    another seed block is another set of held-out scenes.
    executor / delay_ms: schedule chunks with a chunking mode and a simulated inference delay (see
    the module docstring).
    ray: run the episodes as Ray tasks on `workers` actors ("local" or a cluster address;
    vla.sim.ray_jobs): the same results as local workers for the same seeds."""
    cfg = _configure(policy, suite, episodes=episodes, workers=workers, replan_every=replan_every, seed=seed, ray=ray)
    size = image_size or cfg.image_size
    meta = getattr(policy, "metadata", None)
    if isinstance(meta, dict) and isinstance(meta.get("embodiments"), dict):
        check_policy_robots(meta["embodiments"], cfg, size)
    _check_scheduling(policy, cfg, executor, delay_ms)
    context = {
        "policy": policy,
        "image_size": size,
        "replan_every": replan_every or cfg.replan_every,
        "built": {},
        "executor": executor,
        "delay_ms": float(delay_ms),
    }
    jobs = [
        {
            "robot": t.robot,
            "task": t.task,
            "seed": cfg.seed + i * SEED_STRIDE + k,
            "video": bool(videos) and num_videos > 0,
        }
        for i, t in enumerate(cfg.tasks)
        for k in range(t.episodes)
    ]
    per: dict[str, dict] = {
        f"{t.robot}/{t.task}": {
            "robot": t.robot,
            "task": t.task,
            "episodes": 0,
            "successes": 0,
            "lengths": [],
            "max_rewards": [],
            "reward_stages": False,
            "errors": [],
            "scheduled": executor is not None,
            "jumps": [],
            "requests": 0,
        }
        for t in cfg.tasks
    }
    video_files: list[str] = []
    noise_scales: set[float] = set()
    kept = {key: {"n": 0, "success": False, "fail": False} for key in per}
    t0 = time.perf_counter()
    bar = tqdm(total=len(jobs), desc=f"eval {cfg.name}", unit="ep", disable=not progress)
    try:
        run = run_jobs if ray is None else functools.partial(run_jobs_ray, address=ray)
        for job, ep, err in run(_eval_job, context, jobs, workers=workers):
            r = per[f"{job['robot']}/{job['task']}"]
            bar.update(1)
            if err is not None:
                last = err.strip().splitlines()[-1]
                r["errors"].append({"seed": job["seed"], "error": last})
                log.error("eval %s/%s seed %d failed: %s", job["robot"], job["task"], job["seed"], last)
                log.debug("traceback:\n%s", err)
                continue
            r["episodes"] += 1
            r["successes"] += int(ep["success"])
            r["lengths"].append(ep["length"])
            if ep.get("max_reward") is not None:
                r["max_rewards"].append(ep["max_reward"])
            r["reward_stages"] = r["reward_stages"] or ep.get("reward_stages", False)
            r["jumps"] += ep.get("boundary_jumps", [])
            r["requests"] += ep.get("requests", 0)
            if ep.get("noise_scale") is not None:
                noise_scales.add(ep["noise_scale"])
            if videos and ep["video"] and _keep_video(kept[f"{job['robot']}/{job['task']}"], ep["success"], num_videos):
                tag = "success" if ep["success"] else "fail"
                path = Path(videos) / f"{job['robot']}_{job['task']}_seed{job['seed']}_{tag}.mp4"
                video_files.append(str(write_video(ep["video"], path, ep["fps"])))
    finally:
        bar.close()
    rows = [_task_row(r) for r in per.values()]
    results = {
        "policy": _policy_name(policy),
        "suite": cfg.name,
        "image_size": size,
        "seed": cfg.seed,
        "replan_every": context["replan_every"],
        # what a pi0 / pi0.5 checkpoint sampled from (its own or --noise-scale's): one figure per run
        **(
            {"noise_scale": min(noise_scales) if len(noise_scales) == 1 else sorted(noise_scales)}
            if noise_scales
            else {}
        ),
        **(
            {"chunking": {"mode": getattr(executor, "mode", type(executor).__name__), "delay_ms": float(delay_ms)}}
            if executor is not None
            else {}
        ),
        "tasks": rows,
        "overall": _overall(rows, per),
        "seconds": round(time.perf_counter() - t0, 2),
        "videos": video_files,
    }
    if json_out:  # written before the chart, so a plotting problem never loses the numbers
        results["json"] = str(write_json(results, json_out))
    if chart or json_out:
        target = Path(chart) if chart else Path(json_out).with_suffix(".png")
        results["chart"] = str(bar_chart(results, target))
        if json_out:
            write_json(results, json_out)
    return results


def format_results(results: dict) -> str:
    """A plain-text table of the results."""
    lines = [
        f"policy {results['policy']}  suite {results['suite']}  seeds from {results.get('seed')}  ({results['seconds']} s)"
        + (f"  noise_scale {results['noise_scale']}" if "noise_scale" in results else ""),
        f"{'robot/task':<34} {'success':>9} {'rate':>6} {'95% CI':>15} {'mean len':>9} {'errors':>6}",
    ]
    for r in results["tasks"]:
        lo, hi = r["ci95"]
        ml = f"{r['mean_length']:.1f}" if r["mean_length"] is not None else "-"
        ci = f"[{lo:.2f}, {hi:.2f}]"
        name = r["robot"] + "/" + r["task"]
        lines.append(
            f"{name:<34} {r['successes']:>4}/{r['episodes']:<4} {r['success_rate']:>6.2f} "
            f"{ci:>15} {ml:>9} {len(r['errors']):>6}"
        )
    for r in results["tasks"]:  # staged rewards (gym-aloha's 0-4) say how far the failures got
        if staged(r.get("max_reward_counts")):
            got = ", ".join(f"{k}: {v}" for k, v in r["max_reward_counts"].items())
            lines.append(f"  {r['robot']}/{r['task']}: episodes by highest reward stage reached: {got}")
    o = results["overall"]
    ci = "[{:.2f}, {:.2f}]".format(*o["ci95"])
    lines.append(f"{'overall':<34} {o['successes']:>4}/{o['episodes']:<4} {o['success_rate']:>6.2f} {ci:>15}")
    if results.get("chunking"):
        c, j = results["chunking"], o["boundary_jump"]
        lines.append(
            f"mode {c['mode']}, injected delay {c['delay_ms']:g} ms (simulated in sim time): "
            f"{o['requests_per_episode']} requests per episode, boundary jump p50 {j['p50']} p90 {j['p90']} "
            f"max {j['max']} over {j['n']} switches"
        )
    return "\n".join(lines)
