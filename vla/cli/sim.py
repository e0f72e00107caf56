"""`vla collect`, `vla eval` and `vla bench sim`."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Optional

import typer

from vla.cli.common import bench_app, check_noise_scale, emit, fail, json_path, local_store, user_errors

log = logging.getLogger(__name__)


RAY_HELP = (
    "Run the episodes as Ray tasks on --workers actors: 'local' (a Ray instance on this machine) or a "
    "cluster (auto, HOST:6379, ray://HOST:10001; see docs/scale.md). Needs pip install 'vla[ray]'."
)


def _sim_errors() -> tuple[type[BaseException], ...]:
    from vla.sim.env import ActionError

    return user_errors() + (ActionError,)


def collect_command(
    recipe: str = typer.Argument(..., help="Recipe TOML (datasets/*.toml) or a built-in recipe name."),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        help="Episode store to create or append to [default: data/<recipe name>].",
        callback=local_store,
    ),
    episodes: Optional[int] = typer.Option(None, help="Episodes per recipe task [default: the recipe's]."),
    workers: int = typer.Option(1, help="Worker processes (Ray actors with --ray)."),
    ray: Optional[str] = typer.Option(
        None,
        "--ray",
        metavar="ADDRESS",
        help=RAY_HELP,
    ),
    keep_failed: Optional[bool] = typer.Option(
        None, "--keep-failed/--drop-failed", help="Keep unsuccessful episodes [default: the recipe's, usually no]."
    ),
    seed: Optional[int] = typer.Option(
        None,
        help="First scene seed [default: the recipe's for a new store; after the last seed already "
        "collected into an existing one, so appended episodes are new scenes].",
    ),
    json_out: Optional[Path] = typer.Option(
        None, "--json", help="Also write the summary to this JSON file.", callback=json_path
    ),
):
    """Fill a store with scripted-expert demonstrations in simulation (a new store, or more
    episodes appended to one that collect wrote)."""
    from vla.sim.collect import collect, load_recipe

    try:
        _check_ray(ray)
        rec = load_recipe(recipe)
        out = out or Path("data") / rec.name
        r = collect(rec, out, episodes=episodes, workers=workers, keep_failed=keep_failed, seed=seed, ray=ray)
    except _sim_errors() as e:
        fail(str(e))
    for name, s in r["per_task"].items():
        typer.echo(
            f"{name:<24} attempted {s['attempted']:>5}  succeeded {s['succeeded']:>5}  kept {s['kept']:>5}  "
            f"frames {s['frames']:>7}  crashed {s['crashed']}"
        )
    for c in r["crashed"]:
        typer.echo(f"crashed: {c['robot']}/{c['task']} seed {c['seed']}: {c['error']}", err=True)
    seeds = ", ".join(f"{n} from {s}" for n, s in r["first_seed"].items())
    typer.echo(
        f"{r['episodes_kept']} episodes into {out} in {r['seconds']} s ({r['episodes_per_min']} episodes/min); "
        f"seeds: {seeds}"
    )
    if json_out:
        emit(r, json_out)


def _check_ray(address: Optional[str]) -> None:
    """--ray: Ray installed and an address it takes, before any work."""
    if address is not None:
        from vla.sim.ray_jobs import check_ray

        check_ray(address)


# Picklable policy factories, one per worker process (module-level: pickled by reference).
def _load_checkpoint(path: str, noise_scale: float | None = None):
    from vla.runtime.policy import load_policy

    return load_policy(path, noise_scale=noise_scale)


def _connect(url: str):
    from vla.runtime.client import RemotePolicy

    return RemotePolicy(url)


def resolve_policy(policy: str, workers: int, *, remote: bool = False, noise_scale: float | None = None):
    """'expert', a ws:// URL, or a checkpoint dir -> what `evaluate` takes (an object for 1 local worker,
    else a factory: `remote` for Ray actors). noise_scale: a checkpoint's sampling noise, overridden."""
    if noise_scale is not None and not Path(policy).is_dir():
        fail(f"--noise-scale sets a checkpoint's sampling noise; {policy!r} is not a checkpoint directory")
    if policy == "expert":
        return "expert"
    if policy.startswith(("ws://", "wss://")):
        module, factory = "vla.runtime.client", functools.partial(_connect, policy)
        what = "a policy server client (vla.runtime.client.RemotePolicy)"
    else:
        if not Path(policy).is_dir():
            fail(
                f"POLICY must be 'expert', a ws://host:port policy server, or a checkpoint directory; "
                f"{policy!r} is none of these (no such directory)"
            )
        module, factory = "vla.runtime.policy", functools.partial(_load_checkpoint, policy, noise_scale)
        what = "checkpoint loading (vla.runtime.policy.load_policy)"
    import importlib

    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        fail(f"{what} is not available in this install: {e}")
    if workers <= 1 and not remote:
        try:
            return factory()  # fail fast on a bad checkpoint or an unreachable server
        except user_errors() + (OSError, ConnectionError) as e:
            fail(f"cannot load policy {policy!r}: {e}")
    return factory


def eval_command(
    policy: str = typer.Argument(..., help="'expert', a checkpoint directory, or a ws://host:port policy server."),
    suite: str = typer.Option("quickstart", help="Suite name (envs/suites/*.toml) or TOML path."),
    episodes: Optional[int] = typer.Option(None, help="Episodes per task [default: the suite's]."),
    workers: int = typer.Option(1, help="Worker processes (each loads its own policy); Ray actors with --ray."),
    ray: Optional[str] = typer.Option(
        None,
        "--ray",
        metavar="ADDRESS",
        help=RAY_HELP,
    ),
    replan_every: Optional[int] = typer.Option(
        None,
        help="Execute this many actions of each chunk before replanning [default: the suite's, else half the chunk].",
    ),
    json_out: Optional[Path] = typer.Option(
        None, "--json", help="Write results JSON here (and the bar chart PNG beside it).", callback=json_path
    ),
    videos: Optional[Path] = typer.Option(None, help="Folder for mp4 videos of the first rollouts of each task."),
    num_videos: int = typer.Option(
        2, help="Videos per task: the first success and the first failure, then more of either up to this many."
    ),
    seed: Optional[int] = typer.Option(
        None,
        help="First episode seed: another block of held-out scenes (default: "
        "the suite's, 1000000; collection recipes use seeds from 0).",
    ),
    image_size: Optional[int] = typer.Option(
        None, help="Camera image size to render [default: the suite's]; must be what the policy was trained on."
    ),
    mode: Optional[str] = typer.Option(
        None,
        help="Schedule chunks as the control loop's [control] mode does: sync, async, rtc (= rtc-inpaint), "
        "rtc-guided, rtc-guided-nojac or rtc-trained; each runs --replan-every actions [default: 0.5 s].",
    ),
    delay_ms: float = typer.Option(
        0.0, help="Inference delay to inject with --mode, simulated in sim time (the env steps on meanwhile)."
    ),
    noise_scale: Optional[float] = typer.Option(
        None,
        help="pi0 / pi0.5 checkpoints: start each chunk's denoising from noise of this scale, in [0, 1] "
        "[default: the checkpoint's]: 1 samples as published, 0 gives one chunk per observation.",
    ),
):
    """Success rate per task (95% CI), mean episode length, a bar chart and videos. The suite's robots
    and camera sizes are checked against the policy before the first episode. With --mode (and
    --delay-ms) also the chunk-boundary jumps."""
    from vla.outputs import check_output
    from vla.sim.eval import check_policy_robots, evaluate, format_results
    from vla.sim.suites import load_suite

    if workers < 1:
        fail(f"--workers must be >= 1, got {workers}")
    if num_videos < 0:
        fail(f"--num-videos must be >= 0, got {num_videos}")
    if delay_ms < 0:
        fail(f"--delay-ms must be >= 0, got {delay_ms}")
    if delay_ms and mode is None:
        fail("--delay-ms needs a chunking --mode (sync, async, rtc, rtc-guided, ...)")
    check_noise_scale(noise_scale)
    try:
        _check_ray(ray)
        if videos:
            check_output(videos, "a folder of eval videos", own=_videos_folder, overwrite=True, flag="--videos")
        cfg = load_suite(suite)
        executor = _scheduling(mode, replan_every or cfg.replan_every, cfg, policy)
        if Path(policy).is_dir() and (workers > 1 or ray):  # loaded in the workers: check it here first
            from vla.model.interop.checkpoint import Checkpoint

            ck = Checkpoint(policy, verify=False)
            if noise_scale is not None and not hasattr(ck.resolved.model, "noise_scale"):
                fail(f"--noise-scale: this {ck.resolved.model_type} model samples from no noise")
            check_policy_robots(ck.embodiments, cfg, image_size or cfg.image_size)
    except _sim_errors() as e:
        fail(str(e))
    pol = resolve_policy(policy, workers, remote=ray is not None, noise_scale=noise_scale)
    try:
        r = evaluate(
            pol,
            suite,
            episodes=episodes,
            workers=workers,
            replan_every=replan_every,
            json_out=json_out,
            videos=videos,
            num_videos=num_videos,
            seed=seed,
            image_size=image_size,
            ray=ray,
            executor=executor,
            delay_ms=delay_ms,
        )
    except _sim_errors() as e:
        fail(str(e))
    typer.echo(format_results(r))
    if r.get("json"):
        typer.echo(f"results: {r['json']}  chart: {r['chart']}")
    if r["videos"]:
        typer.echo(f"videos: {len(r['videos'])} in {videos}")


def _scheduling(mode: Optional[str], execute_steps: Optional[int], cfg, policy: str):
    """--mode -> the chunk executor evaluate takes (None without --mode); bad combinations refused."""
    if mode is None:
        return None
    from vla.runtime.chunking import ChunkingConfig, SimExecutor
    from vla.sim.registry import embodiment_for
    from vla.spec import SpecError

    if policy == "expert":
        raise SpecError(
            "the scripted expert acts step by step, it has no chunks to schedule: --mode evaluates a "
            "checkpoint or a policy server"
        )
    hz = embodiment_for(cfg.tasks[0].robot).control_hz
    execute_s = execute_steps / hz if execute_steps else ChunkingConfig.execute_s
    return SimExecutor(ChunkingConfig(mode=mode, execute_s=execute_s))


def _videos_folder(p: Path) -> bool:
    return p.is_dir() and all(f.suffix == ".mp4" for f in p.iterdir())


@bench_app.command("sim")
def bench_sim(
    json_out: Optional[Path] = typer.Option(
        None, "--json", help="Also write the results to this JSON file.", callback=json_path
    ),
    quick: bool = typer.Option(False, help="Fewer iterations (a smoke run, not for reporting)."),
    external: bool = typer.Option(True, help="Include the Meta-World and ALOHA suites."),
    collect_episodes: int = typer.Option(100, help="arm7 reach episodes for the collection timing."),
):
    """Physics steps/s, renders/s per camera (96x96, 224x224), collection episodes/min."""
    from vla.bench.sim import run

    if collect_episodes < 1:
        fail(f"--collect-episodes must be >= 1, got {collect_episodes}")
    emit(run(quick=quick, external=external, collect_episodes=collect_episodes), json_out)
