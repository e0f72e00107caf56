"""`vla serve`, `vla sim-robot`, `vla run`, `vla bench control` and `vla bench rtc`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from vla.cli.common import bench_app, check_noise_scale, emit, fail, json_path, show_on_stdout, user_errors

log = logging.getLogger(__name__)


def _runtime_errors() -> tuple[type[BaseException], ...]:
    from vla.runtime.client import PolicyUnavailable
    from vla.runtime.robot import RobotError

    return user_errors() + (PolicyUnavailable, RobotError)


def serve_command(
    checkpoint: str = typer.Argument(..., help="Checkpoint directory (from `vla train`)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind. 0.0.0.0 exposes it to the network: set --api-key."),
    port: int = typer.Option(8000, help="TCP port (0 picks a free one)."),
    api_key: Optional[str] = typer.Option(
        None, envvar="VLA_API_KEY", help="Require 'Authorization: Api-Key KEY' [env: VLA_API_KEY]."
    ),
    max_message_mb: float = typer.Option(16.0, help="Largest accepted observation message (MiB)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda ... [default: cpu]."),
    compile: bool = typer.Option(
        False,
        "--compile",
        help="torch.compile the pi0 denoising (about 2x faster on CPU); "
        "compiled before serving: minutes the first time, seconds once cached.",
    ),
    noise_scale: Optional[float] = typer.Option(
        None,
        help="pi0 / pi0.5: scale of each chunk's initial noise, in [0, 1] (1: pi0 as published, "
        "0: one chunk per observation) [default: the checkpoint's].",
    ),
):
    """Serve a checkpoint over websocket + msgpack-numpy (openpi wire protocol; GET /healthz)."""
    from vla.runtime.server import ServerConfig, serve

    check_noise_scale(noise_scale)
    try:
        cfg = ServerConfig(host=host, port=port, api_key=api_key, max_message_bytes=int(max_message_mb * 2**20))
        if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
            log.warning("serving on %s without an API key: anyone who can reach this port can drive the policy", host)
        serve(checkpoint, cfg, device=device, compile=compile, noise_scale=noise_scale)
    except (ValueError, *user_errors()) as e:
        fail(str(e))
    except OSError as e:  # the port was taken between the check and the bind
        fail(f"cannot serve on {host}:{port}: {e}; pick another --port")
    except KeyboardInterrupt:
        pass


def sim_robot_command(
    env: str = typer.Option("vla/Arm7-Reach-v0", help="Gymnasium id, vla/<Robot>-<Task>-v0."),
    port: int = typer.Option(9100, help="TCP port (0 picks a free one)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    image_size: int = typer.Option(
        96, help="Camera image size: the size the policy was trained on (the built-in recipes and pi0-tiny: 96)."
    ),
    seed: int = typer.Option(0, help="Seed of the first scene."),
    physics_hz: float = typer.Option(100.0, help="Real-time physics update rate."),
    seconds: Optional[float] = typer.Option(None, help="Exit after this long [default: run until stopped]."),
):
    """A simulated robot stepping in real time, served over a socket for `vla run`."""
    from vla.runtime.sim_robot import SimRobotServer

    try:
        server = SimRobotServer(env, host=host, port=port, image_size=image_size, seed=seed, physics_hz=physics_hz)
        server.serve_forever(max_seconds=seconds)
    except user_errors() as e:
        fail(str(e))
    except OSError as e:  # the port
        fail(f"cannot listen on {host}:{port} ({e.strerror or e}): pick another --port, or --port 0 for a free one")
    except KeyboardInterrupt:
        pass


def run_command(
    launch: str = typer.Argument(..., help="Launch file (launch/<name>.toml) or the name of one in launch/."),
    mode: Optional[str] = typer.Option(
        None,
        help="Override [control] mode: sync, async, rtc (= rtc-inpaint), rtc-guided, rtc-guided-nojac or rtc-trained.",
    ),
    duration: Optional[float] = typer.Option(None, help="Override [control] duration_s."),
    episodes: Optional[int] = typer.Option(None, help="Override [control] episodes."),
    checkpoint: Optional[str] = typer.Option(None, help="Override [policy]: run this checkpoint."),
    url: Optional[str] = typer.Option(None, help="Override [policy]: use the policy server at ws://host:port."),
    robot_port: Optional[int] = typer.Option(
        None, help="Override [robot]: connect to a running `vla sim-robot` on this port instead of starting one."
    ),
    out: Optional[Path] = typer.Option(None, help="Run folder [default: the launch file's record.out]."),
    json_out: Optional[Path] = typer.Option(
        None, "--json", help="Also write the summary to this JSON file.", callback=json_path
    ),
):
    """Run the real-time control loop of a deployment: robot + policy + safety, recorded."""
    from vla.runtime.run import run_deployment
    from vla.runtime.safety import describe_interventions

    ov: dict = {}
    control = {k: v for k, v in {"mode": mode, "duration_s": duration, "episodes": episodes}.items() if v is not None}
    if control:
        ov["control"] = control
    if checkpoint and url:
        fail("give --checkpoint or --url, not both")
    if checkpoint:
        ov["policy"] = {"checkpoint": checkpoint, "url": ""}
    if url:
        ov["policy"] = {"url": url, "checkpoint": ""}
    if robot_port is not None:
        ov["robot"] = {"spawn": False, "port": robot_port}
    try:
        r = run_deployment(launch, overrides=ov, out=out)
    except _runtime_errors() as e:
        fail(str(e))
    t = r
    typer.echo(f"{r['name']}: {r['outcome']} after {t['ticks']} ticks at {r['hz']:g} Hz ({r['mode']})")
    typer.echo(
        f"  tick period p50/p99/max {t['period_ms']['p50']}/{t['period_ms']['p99']}/{t['period_ms']['max']} ms, "
        f"jitter p99 {t['jitter_ms']['p99']} ms, deadline misses {t['deadline_misses']}"
    )
    inf = t["inference"]
    jump = t["boundary_jump"]
    typer.echo(
        f"  inference p50/p99 {inf['latency_ms']['p50']}/{inf['latency_ms']['p99']} ms over {inf['requests']} "
        f"chunks, delay {inf['delay_ticks']['p50']} ticks; chunk-boundary jump p50/max {jump['p50']}/{jump['max']}"
    )
    typer.echo(f"  safety interventions {describe_interventions(r['safety'], r.get('safety_by_dim'))}")
    typer.echo(
        f"  episodes {len(r['episodes'])} finished, {r['successes']} succeeded; recorded "
        f"{len(r['recorded'])} into {r['store']} ({r.get('recorder_dropped_frames', 0)} frames dropped)"
    )
    typer.echo(f"  timing log {r['files']['timing_json']}, histogram {r['files']['histogram_png']}")
    if json_out:
        emit(r, json_out)
    if inf["requests"] and inf["failed"] == inf["requests"]:
        fail(
            f"every one of the {inf['requests']} inference requests failed, so the robot only held "
            f"position; the last error: {inf.get('last_error')}"
        )
    if r.get("recorder_error"):
        fail(f"the episode recorder failed ({r['recorder_error']}): the run's episodes were not all recorded")


@bench_app.command("control")
def bench_control(
    json_out: Optional[Path] = typer.Option(
        None, "--json", help="Also write the results to this JSON file.", callback=json_path
    ),
    checkpoint: Optional[str] = typer.Option(
        None,
        "--ckpt",
        help="A pi0-tiny checkpoint trained on arm7 reach [default: the quickstart's, runs/quickstart/ckpt].",
    ),
    seconds: float = typer.Option(60.0, help="Length of each run."),
    delays: str = typer.Option("0,100,300", help="Injected inference delays (ms), comma-separated."),
    modes: str = typer.Option("sync,async,rtc", help="Chunk execution modes, comma-separated."),
    env: str = typer.Option(
        "vla/Arm7-ReachGoal-v0", help="Sim robot env (the quickstart checkpoint learned reach-goal)."
    ),
    out: Path = typer.Option(Path("runs/bench/control"), help="Folder for the runs' logs and plots."),
    rt_priority: int = typer.Option(50, help="SCHED_FIFO priority of the control thread (0 = normal scheduling)."),
):
    """Control loop at 50 Hz against a sim robot process: tick jitter, misses, latency, boundary jumps, success."""
    from vla.bench.control import run

    try:
        r = run(
            checkpoint=checkpoint,
            seconds=seconds,
            delays=[float(x) for x in delays.split(",") if x.strip()],
            modes=[m.strip() for m in modes.split(",") if m.strip()],
            env=env,
            out=out,
            rt_priority=rt_priority,
        )
    except _runtime_errors() as e:
        fail(str(e))
    emit(r, json_out)


@bench_app.command("rtc")
def bench_rtc(
    json_out: Optional[Path] = typer.Option(
        None, "--json", help="Also write the results to this JSON file.", callback=json_path
    ),
    out: Path = typer.Option(Path("runs/bench-rtc"), help="Work folder (demos, checkpoints, rtc.json, rtc.png)."),
    minutes: float = typer.Option(15.0, help="Training minutes for each of the two checkpoints (plain, RTC-trained)."),
    delays_ms: str = typer.Option("0,100,200,300", help="Injected inference delays (ms), comma-separated."),
    episodes: int = typer.Option(20, help="Evaluation episodes per mode and delay (the same held-out seeds)."),
    seed: int = typer.Option(0, help="Training seed; also picks the block of held-out evaluation seeds."),
    modes: str = typer.Option(
        "sync,async,rtc-inpaint,rtc-guided,rtc-guided-nojac,rtc-trained", help="Chunking modes, comma-separated."
    ),
    preset: str = typer.Option("pi0-tiny", help="Policy preset (name or .toml path)."),
    recipe: str = typer.Option("datasets/track.toml", help="Demo recipe (collected once into OUT/demos)."),
    suite: str = typer.Option("track", help="Evaluation suite (a dynamic task)."),
    demos: Optional[int] = typer.Option(None, help="Demo episodes per recipe task [default: the recipe's]."),
    steps: Optional[int] = typer.Option(None, help="Cap each training run at this many steps [default: the clock]."),
    workers: int = typer.Option(2, help="Collection and evaluation processes (1: evaluate in this process)."),
):
    """Collect demos of a dynamic task, train the preset for --minutes twice (plainly and with
    training-time RTC), then evaluate sync, async and the RTC modes at each injected inference delay
    (simulated in sim time) on the same held-out seeds: success and chunk-boundary jumps per mode
    and delay, OUT/rtc.png, and the targets judged."""
    from vla.bench.rtc import MODES, run

    try:
        delays = [float(x) for x in delays_ms.split(",") if x.strip()]
    except ValueError:
        fail(f"--delays-ms must be comma-separated numbers of milliseconds, got {delays_ms!r}")
    if not delays or min(delays) < 0:
        fail(f"--delays-ms must be >= 0, got {delays_ms!r}")
    if not minutes > 0:
        fail(f"--minutes must be > 0, got {minutes}")
    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in MODES]
    if unknown or not chosen:
        fail(f"--modes: unknown {unknown or modes!r}; choose from {','.join(MODES)}")
    if workers < 1:
        fail(f"--workers must be >= 1, got {workers}")
    show_on_stdout("vla.bench.rtc")
    try:
        r = run(
            out,
            minutes=minutes,
            delays=delays,
            episodes=episodes,
            seed=seed,
            modes=chosen,
            preset=preset,
            recipe=recipe,
            suite=suite,
            demos=demos,
            steps=steps,
            workers=workers,
        )
    except user_errors() as e:
        fail(str(e))
    emit(r, json_out)
