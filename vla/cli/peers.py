"""`vla bench peers`: vla beside LeRobot's ACT and Diffusion Policy on a public suite."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vla.cli.common import bench_app, emit, fail, json_path, show_on_stdout, user_errors


@bench_app.command("peers")
def bench_peers(
    suite: str = typer.Option("aloha", help="Public suite: aloha (transfer-cube, insertion) or metaworld-mt10."),
    minutes: float = typer.Option(60.0, help="Training minutes for every policy (one after another)."),
    policies: str = typer.Option("vla,act,diffusion", help="Comma-separated: vla, act, diffusion."),
    episodes: Optional[int] = typer.Option(
        None, help="Held-out episodes per task and curve point [default: 50 for aloha, 20 for metaworld-mt10]."
    ),
    seed: Optional[int] = typer.Option(
        None, help="First held-out seed [default: the suite's, 1000000]; seeds the demos used are refused."
    ),
    eval_every_min: Optional[float] = typer.Option(
        None,
        "--eval-every-min",
        help="Also evaluate the checkpoint every this many minutes (the curve) [default: only the end].",
    ),
    out: Path = typer.Option(
        Path("runs/bench-peers"), help="Work folder: demos, export, checkpoints, evaluations, table, curves."
    ),
    peer_python: Optional[Path] = typer.Option(
        None,
        "--peer-python",
        help="Python of a LeRobot 0.4 environment [default: ~/.cache/vla/peers-venv, created with pip on first use].",
    ),
    demos: Optional[Path] = typer.Option(
        None, help="Episode store to train on [default: collect the suite's recipe into OUT/demos]."
    ),
    preset: str = typer.Option("pi0-tiny", help="vla's policy preset."),
    workers: int = typer.Option(2, help="Evaluation (and collection) worker processes."),
    threads: Optional[int] = typer.Option(None, help="torch threads while training [default: every core]."),
    json_out: Optional[Path] = typer.Option(
        None, "--json", help="Also write the results to this JSON file.", callback=json_path
    ),
):
    """Train vla's preset and LeRobot's own ACT and Diffusion Policy on the same demos of a public
    suite for the same CPU-minutes (LeRobot in its own environment), evaluate every one on the same
    held-out seeds with vla's harness, and write OUT/peers.json, OUT/peers.md and OUT/peers_curves.png.
    A benchmark: hours at the default 60 minutes."""
    from vla.bench.peers import run

    show_on_stdout("vla.bench.peers")
    try:
        result = run(
            out,
            suite=suite,
            minutes=minutes,
            policies=tuple(p.strip() for p in policies.split(",") if p.strip()),
            episodes=episodes,
            seed=seed,
            eval_every=eval_every_min,
            peer_python=peer_python,
            demos=demos,
            preset=preset,
            workers=workers,
            threads=threads,
        )
    except user_errors() as e:
        fail(str(e))
    emit(result, json_out)
