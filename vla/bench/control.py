"""`vla bench control`: the real-time loop against a sim robot process, per chunking mode and delay.

Setup as the issue states: a pi0-tiny checkpoint served by a child `vla serve`, a `vla sim-robot`
child (arm7 reach, 64x64 cameras, physics in real time), the control loop at 50 Hz for
`seconds` per configuration, on this machine's 2 cores; every mode (sync, async, rtc) with
injected inference delays of 0, 100 and 300 ms. The same two child processes serve every
run, and every run starts from the same scene seeds. Velocity and acceleration limits are off
here (joint limits stay on), so the jumps measured are the chunking mode's, not the limiter's.

Reported per run: tick period p50/p99/max, jitter (|period - 20 ms|) p99, deadline misses
(a command later than 25% of a period, or a skipped tick), inference latency (request to
reply, injected delay included), the action jump at chunk boundaries (p50/p90/max over the
switches; the new plan's first action vs the previous tick's command, both within joint
limits; an episode's first chunk excluded), the change between consecutive commands (p99,
max), episodes and successes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import time
from pathlib import Path

from vla.outputs import claim_folder
from vla.spec import SpecError

log = logging.getLogger(__name__)

DEFAULT_CKPT = "runs/quickstart/ckpt"


def _row(r: dict) -> dict:
    eps = len(r["episodes"])
    return {
        "mode": r["mode"],
        "inject_delay_ms": r["inject_delay_ms"],
        "ticks": r["ticks"],
        "period_ms": r["period_ms"],
        "jitter_p99_ms": r["jitter_ms"]["p99"],
        "lateness_p99_ms": r["lateness_ms"]["p99"],
        "deadline_misses": r["deadline_misses"],
        "held_ticks": r["held_ticks"],
        "inference_ms": r["inference"]["latency_ms"],
        "server_infer_ms_p50": r["inference"]["server_infer_ms_p50"],
        "delay_ticks_p50": r["inference"]["delay_ticks"]["p50"],
        "chunks": r["inference"]["requests"],
        "boundary_jump": r["boundary_jump"],
        "action_change": r["action_change"],
        "episodes": eps,
        "successes": r["successes"],
        "success_rate": round(r["successes"] / eps, 3) if eps else None,
        "watchdog_holds": r["safety"]["watchdog_hold"],
        "observer_busy_ticks": r["observer_busy_ticks"],
    }


def _targets(rows: list[dict]) -> dict:
    smooth = [x for x in rows if x["mode"] in ("async", "rtc")]
    by = {(x["mode"], x["inject_delay_ms"]): x for x in rows}
    out = {
        "p99_jitter_le_2ms_async_rtc": all((x["jitter_p99_ms"] or 0) <= 2.0 for x in smooth),
        "zero_deadline_misses_async_rtc": all(x["deadline_misses"] == 0 for x in smooth),
    }
    for q in ("p50", "p90", "max"):
        wins = []
        for d in sorted({x["inject_delay_ms"] for x in rows}):
            jumps = {m: by[(m, d)]["boundary_jump"][q] for m in ("sync", "async", "rtc") if (m, d) in by}
            if "rtc" in jumps and all(v is not None for v in jumps.values()):
                wins.append(jumps["rtc"] <= min(jumps.values()))
        out[f"rtc_smallest_boundary_jumps_{q}"] = bool(wins) and all(wins)
    r0, r300 = by.get(("rtc", 0.0)), by.get(("rtc", 300.0))
    if r0 and r300 and r0["success_rate"] is not None and r300["success_rate"] is not None:
        out["rtc_success_kept_at_300ms"] = r300["success_rate"] >= r0["success_rate"] - 0.1
    return out


def _wait_for_server(url: str, server) -> dict:
    """Connect to the policy server child until it answers (or dies, or 300 s pass); -> its metadata."""
    from vla.runtime.client import RemotePolicy

    deadline = time.monotonic() + 300
    while True:
        try:
            with RemotePolicy(url, wait_s=1.0) as p:
                return p.metadata
        except ConnectionError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise


def _launch(name, url, rport, image_size, env, hz, mode, seconds, delay, rt_priority, record: Path) -> dict:
    """One run's deployment: the shared server and sim robot, this mode and injected delay."""
    return {
        "name": name,
        "policy": {"url": url},
        "robot": {"type": "sim", "spawn": False, "port": rport, "image_size": image_size, "env": env},
        "control": {
            "hz": hz,
            "mode": mode,
            "duration_s": seconds,
            "episodes": 10_000,
            "inject_delay_ms": delay,
            "rt_priority": rt_priority,
            "execute_s": 0.5,
        },
        "safety": {"watchdog_s": 1.0},
        "record": {"out": str(record)},
    }


def run(
    *,
    checkpoint: str | None = None,
    seconds: float = 60.0,
    delays=(0.0, 100.0, 300.0),
    modes=("sync", "async", "rtc"),
    env: str = "vla/Arm7-ReachGoal-v0",
    out: str | Path = "runs/bench/control",
    hz: float = 50.0,
    image_size: int = 64,
    rt_priority: int = 50,
) -> dict:
    from vla.runtime.run import child_process, free_port, run_deployment

    ckpt = checkpoint or DEFAULT_CKPT
    if not Path(ckpt).is_dir():
        raise SpecError(
            f"no checkpoint at {ckpt!r}: pass --ckpt, e.g. one made by `vla quickstart` or "
            "`vla train pi0-tiny --data <arm7 reach store> --out <dir>`"
        )
    out = claim_folder(out, "bench control", legacy=lambda p: (p / "policy_server.log").exists())
    rows, t0 = [], time.perf_counter()
    with contextlib.ExitStack() as stack:
        pport, rport = free_port(), free_port()
        server = stack.enter_context(
            child_process(["serve", str(ckpt), "--port", str(pport)], out / "policy_server.log", "policy server")
        )
        stack.enter_context(
            child_process(
                ["sim-robot", "--env", env, "--port", str(rport), "--image-size", str(image_size)],
                out / "sim_robot.log",
                "sim robot",
            )
        )
        url = f"ws://127.0.0.1:{pport}"
        meta = _wait_for_server(url, server)  # once, so every run starts warm
        for mode in modes:
            for delay in delays:
                name = f"{mode}-{int(delay)}ms"
                launch = _launch(name, url, rport, image_size, env, hz, mode, seconds, delay, rt_priority, out / name)
                log.info("bench control: %s for %.0f s", name, seconds)
                r = run_deployment(launch, status=False)
                row = _row(r)
                row["histogram_png"] = r["files"]["histogram_png"]
                rows.append(row)
                log.info(
                    "  %s: jitter p99 %s ms, misses %d, boundary jump p50/max %s/%s, success %s/%s",
                    name,
                    row["jitter_p99_ms"],
                    row["deadline_misses"],
                    row["boundary_jump"]["p50"],
                    row["boundary_jump"]["max"],
                    row["successes"],
                    row["episodes"],
                )
    return {
        "benchmark": "control",
        "setup": {
            "checkpoint": str(ckpt),
            "policy_type": meta.get("policy_type"),
            "action_horizon": meta.get("action_horizon"),
            "env": env,
            "image_size": image_size,
            "hz": hz,
            "seconds_per_run": seconds,
            "execute_s": 0.5,
            "rt_priority": rt_priority,
            "velocity_limits": "off (joint limits on)",
            "watchdog_s": 1.0,
        },
        "runs": rows,
        "targets": _targets(rows),
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        },
    }
