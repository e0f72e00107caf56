"""`vla bench rtc`: chunking modes against inference delay on a dynamic task, self-contained.

1. collect the recipe's scripted demos (default `datasets/track.toml`: arm7 keeps its gripper over
   a target circling on a turntable for one second; the target moves twice the success distance
   in 300 ms) into OUT/demos;
2. train the preset (pi0-tiny) for `minutes` twice: plainly (OUT/ckpt-plain), and with
   training-time RTC (`[train] rtc_max_delay` = the largest delay in policy steps; OUT/ckpt-rtc);
3. evaluate every mode at every injected delay on the same held-out seeds of the suite (`track`),
   through `vla eval --mode M --delay-ms D`'s harness: the delay is simulated in sim time (the
   env keeps stepping on the old plan, or holds for sync, while a chunk is computed; the RTC
   paper's simulated-delay protocol), so the figures do not depend on this machine's load.
   Modes: sync, async, rtc-inpaint, rtc-guided, rtc-guided-nojac on the plain checkpoint,
   rtc-trained on the RTC-trained one;
4. write OUT/rtc.json (one row per mode and delay: success rate with its 95% interval, episodes,
   boundary jumps p50 / p90 / max over the chunk switches) and OUT/rtc.png (success vs delay per
   mode, and the jumps), with the targets judged.

A preset whose trainer has no `rtc_max_delay` gets rtc-trained rows marked missing, never
another mode's figures.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

from vla.outputs import claim_folder
from vla.spec import SpecError

log = logging.getLogger(__name__)

MODES = ("sync", "async", "rtc-inpaint", "rtc-guided", "rtc-guided-nojac", "rtc-trained")
RTC = ("rtc-inpaint", "rtc-guided", "rtc-guided-nojac", "rtc-trained")
DELAYS_MS = (0.0, 100.0, 200.0, 300.0)
SEED_BLOCK = 1000  # --seed S evaluates on the suite's seeds + S * SEED_BLOCK


def _trains_rtc() -> bool:
    """Does the trainer take `[train] rtc_max_delay` (training-time RTC)?"""
    from vla.train.trainer import TrainConfig

    return "rtc_max_delay" in {f.name for f in fields(TrainConfig)}


def _plan(preset: str, recipe: str, suite: str, delays, episodes: int, modes) -> dict:
    """Every input checked before minutes of collection; -> what the run needs to know."""
    from vla.config import load_preset
    from vla.sim.collect import load_recipe
    from vla.sim.registry import embodiment_for
    from vla.sim.suites import load_suite

    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise SpecError(f"modes must be some of {list(MODES)}, got {list(modes)}")
    if not delays or min(delays) < 0:
        raise SpecError(f"delays must be >= 0 ms, got {list(delays)}")
    if not 1 <= episodes <= SEED_BLOCK:
        raise SpecError(f"episodes must be in 1..{SEED_BLOCK}, got {episodes}")
    p = load_preset(preset)
    horizon = int(p.model.get("horizon", 0))
    rec, cfg = load_recipe(recipe), load_suite(suite)
    hz = {embodiment_for(t.robot).control_hz for t in cfg.tasks}
    if len(hz) != 1:
        raise SpecError(f"suite {cfg.name!r}: its robots run at different rates {sorted(hz)}; use one rate")
    hz = hz.pop()
    steps = {d: round(d * hz / 1000) for d in delays}
    longest = max(steps.values())
    execute = min(cfg.replan_every or horizon // 2, horizon - longest)
    if execute < 1:
        raise SpecError(
            f"a chunk of {horizon} steps cannot cover a delay of {longest} steps at {hz:g} Hz and still run "
            "an action of its own: use shorter delays or a preset with a longer horizon"
        )
    return {"preset": p, "recipe": rec, "suite": cfg, "hz": hz, "delay_steps": steps, "execute": execute}


def _train(preset, data: Path, out: Path, minutes: float, steps, seed: int, rtc_max_delay: int | None) -> dict:
    from vla.config import load_preset
    from vla.model.interop.checkpoint import Checkpoint
    from vla.train.trainer import train

    extra = {"seed": seed} | ({"rtc_max_delay": rtc_max_delay} if rtc_max_delay is not None else {})
    p = load_preset(preset, {"train": extra})
    t0 = time.perf_counter()
    train(p, [str(data)], out, steps=steps, max_seconds=minutes * 60, progress=True, overwrite=True)
    return {
        "path": str(out),
        "steps": Checkpoint(out, verify=False).resolved.step,
        "seconds": round(time.perf_counter() - t0, 1),
        "rtc_max_delay": rtc_max_delay,
    }


def _jumps(res: dict) -> dict:
    j = res["overall"].get("boundary_jump") or {}
    return {k: j.get(k) for k in ("p50", "p90", "max", "n")}


def _row(mode: str, delay: float, steps: int, res: dict, ckpt: str, seconds: float) -> dict:
    o = res["overall"]
    return {
        "mode": mode,
        "delay_ms": delay,
        "delay_steps": steps,
        "success_rate": round(o["success_rate"], 4),
        "successes": o["successes"],
        "episodes": o["episodes"],
        "ci95": [round(x, 4) for x in o["ci95"]],
        "boundary_jump": _jumps(res),
        "mean_length": o.get("mean_length"),
        "requests_per_episode": o.get("requests_per_episode"),
        "checkpoint": ckpt,
        "eval_seconds": round(seconds, 1),
    }


def judge(rows: list[dict]) -> dict:
    """The issue's targets, at the largest delay measured (300 ms in the default run)."""
    by = {(r["mode"], r["delay_ms"]): r["success_rate"] for r in rows if r.get("success_rate") is not None}
    delays = sorted({d for _, d in by})
    if not delays:
        return {}
    lo, hi = delays[0], delays[-1]
    out: dict = {"at_delay_ms": hi, "from_delay_ms": lo}
    rtc = {m: by[(m, hi)] for m in RTC if (m, hi) in by}
    if rtc:
        best = max(rtc, key=lambda m: (rtc[m], -RTC.index(m)))
        base = by.get((best, lo))
        out["best_rtc_mode"] = best
        out["best_rtc_success"] = rtc[best]
        out["best_rtc_keeps_80pct_of_its_0ms"] = None if not base else bool(rtc[best] >= 0.8 * base)
        if (("sync", hi)) in by:
            out["best_rtc_beats_sync_by_20_points"] = bool(rtc[best] - by[("sync", hi)] >= 0.2 - 1e-9)
    g, n = by.get(("rtc-guided", hi)), by.get(("rtc-guided-nojac", hi))
    if g is not None and n is not None:
        out["guided_jacobian_at_least_nojac"] = bool(g >= n)
    out["trained_reported"] = ("rtc-trained", hi) in by
    return out


def plot(rows: list[dict], png: Path, title: str) -> Path:
    """Success vs delay per mode (left) and chunk-boundary jumps p50 (solid) / p90 (dotted) (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.8))
    span = max([r["delay_ms"] for r in rows] + [1.0])
    for i, mode in enumerate(MODES):
        rs = sorted(
            (r for r in rows if r["mode"] == mode and r.get("success_rate") is not None), key=lambda r: r["delay_ms"]
        )
        if not rs:
            continue
        shift = (i - (len(MODES) - 1) / 2) * 0.006 * span  # modes side by side where they coincide
        xs = [r["delay_ms"] + shift for r in rs]
        (line,) = a1.plot(xs, [r["success_rate"] for r in rs], marker="o", label=mode)
        lo = [r["success_rate"] - r["ci95"][0] for r in rs]
        hi = [r["ci95"][1] - r["success_rate"] for r in rs]
        a1.errorbar(xs, [r["success_rate"] for r in rs], yerr=[lo, hi], fmt="none", ecolor=line.get_color(), alpha=0.3)
        for q, style in (("p50", "-"), ("p90", ":")):
            ys = [np.nan if r["boundary_jump"][q] is None else r["boundary_jump"][q] for r in rs]
            a2.plot(xs, ys, style, marker="o", color=line.get_color(), label=f"{mode} {q}" if q == "p50" else None)
    a1.set_xlabel("injected inference delay (ms, simulated)")
    a1.set_ylabel("success on held-out seeds")
    a1.set_ylim(-0.03, 1.03)
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8)
    a2.set_xlabel("injected inference delay (ms, simulated)")
    a2.set_ylabel("boundary jump, max |change| over action dims")
    a2.set_title("p50 solid, p90 dotted", fontsize=9)
    a2.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def run(
    out: str | Path = "runs/bench-rtc",
    *,
    minutes: float = 15.0,
    delays=DELAYS_MS,
    episodes: int = 20,
    seed: int = 0,
    modes=MODES,
    preset: str = "pi0-tiny",
    recipe: str = "datasets/track.toml",
    suite: str = "track",
    demos: int | None = None,
    steps: int | None = None,
    workers: int = 2,
) -> dict:
    """See the module docstring. demos: episodes per recipe task [the recipe's]; steps: cap each training
    run at this many steps [the clock ends it]; workers: evaluation processes (1: in this process)."""
    from dataclasses import replace

    from vla.runtime.chunking import ChunkingConfig, SimExecutor
    from vla.runtime.policy import load_policy
    from vla.sim import collect, evaluate

    if not minutes > 0:
        raise SpecError(f"minutes must be > 0, got {minutes}")
    if seed < 0:
        raise SpecError(f"seed must be >= 0, got {seed}")
    if steps is not None and steps < 1:
        raise SpecError(f"steps must be >= 1, got {steps}")
    delays = sorted(float(d) for d in delays)
    plan = _plan(preset, recipe, suite, delays, episodes, modes)
    out = claim_folder(out, "bench rtc")
    t0 = time.perf_counter()
    data = out / "demos"
    if not data.exists():
        collect(plan["recipe"], str(data), episodes=demos, workers=workers, progress=False)
    collect_s = time.perf_counter() - t0

    ckpts: dict[str, dict] = {}
    plain_modes = [m for m in modes if m != "rtc-trained"]
    if plain_modes:
        ckpts["plain"] = _train(preset, data, out / "ckpt-plain", minutes, steps, seed, None)
    missing = None
    if "rtc-trained" in modes:
        if _trains_rtc():
            d = max(1, max(plan["delay_steps"].values()))
            ckpts["rtc"] = _train(preset, data, out / "ckpt-rtc", minutes, steps, seed, d)
        else:
            missing = "this trainer has no [train] rtc_max_delay (training-time RTC): not measured"
            log.warning("bench rtc: rtc-trained %s", missing)

    cfg = replace(plan["suite"], seed=plan["suite"].seed + SEED_BLOCK * seed)
    execute_s = plan["execute"] / plan["hz"]
    rows = []
    policies: dict[str, object] = {}
    for mode in modes:
        which = "rtc" if mode == "rtc-trained" else "plain"
        for delay in delays:
            if which not in ckpts:
                rows.append({"mode": mode, "delay_ms": delay, "success_rate": None, "missing": missing})
                continue
            path = ckpts[which]["path"]
            if workers > 1:  # each worker process loads its own
                policy = functools.partial(load_policy, path)
            else:
                if which not in policies:
                    policies[which] = load_policy(path)
                policy = policies[which]
            sched = SimExecutor(ChunkingConfig(mode=mode, execute_s=execute_s))
            t1 = time.perf_counter()
            res = evaluate(
                policy, cfg, episodes=episodes, workers=workers, progress=False, executor=sched, delay_ms=delay
            )
            row = _row(mode, delay, plan["delay_steps"][delay], res, which, time.perf_counter() - t1)
            rows.append(row)
            log.info(
                "bench rtc: %s at %g ms: success %d/%d, boundary jump p50 %s",
                mode,
                delay,
                row["successes"],
                row["episodes"],
                row["boundary_jump"]["p50"],
            )
    targets = judge(rows)
    result = {
        "benchmark": "rtc",
        "setup": {
            "preset": plan["preset"].name,
            "recipe": plan["recipe"].name,
            "suite": cfg.name,
            "minutes": minutes,
            "delays_ms": delays,
            "delay_steps": {f"{d:g}": s for d, s in plan["delay_steps"].items()},
            "control_hz": plan["hz"],
            "execute_steps": plan["execute"],
            "episodes": episodes,
            "eval_seed": cfg.seed,
            "seed": seed,
            "delay_protocol": "sim time: the env steps on the old plan (sync: holds) until the chunk arrives",
        },
        "checkpoints": ckpts,
        "results": rows,
        "targets": targets,
        "collect_seconds": round(collect_s, 1),
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        },
    }
    title = f"{plan['preset'].name}, {minutes:g} min training, {cfg.name}, {episodes} episodes per point"
    result["plot"] = str(plot(rows, out / "rtc.png", title))
    (out / "rtc.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


__all__ = ["DELAYS_MS", "MODES", "judge", "plot", "run"]
