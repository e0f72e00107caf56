"""The `vla` command. Thin: each submodule parses arguments and calls library functions.

One module per area registers its commands here: data (stores, LeRobot), sim (collect, eval),
train, weights (convert, export-weights), runtime (serve, run), robots (calibrate). Nothing in the
package imports `vla.cli`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from vla.cli import data, peers, robots, runtime, sim, train, weights  # noqa: F401 (peers registers `vla bench peers`)
from vla.cli.common import bench_app, fail, show_on_stdout, user_errors

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts as written: Rich markup would eat every "[default: ...]"
    context_settings={"help_option_names": ["-h", "--help"]},
    help="vla: vision-language-action robotics stack. Data, training, simulation, deployment.",
)


def _version(value: bool) -> None:
    if value:
        import vla

        typer.echo(f"vla {vla.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """vla: vision-language-action robotics stack. Data, training, simulation, deployment."""


app.add_typer(data.app, name="data")
app.add_typer(bench_app, name="bench")
app.command("collect")(sim.collect_command)
app.command("eval")(sim.eval_command)
app.command("train")(train.train_command)
app.add_typer(train.tokenizer_app, name="tokenizer")
app.command("convert")(weights.convert_command)
app.command("export-weights")(weights.export_weights_command)
app.command("serve")(runtime.serve_command)
app.command("sim-robot")(runtime.sim_robot_command)
app.command("run")(runtime.run_command)
app.command("calibrate")(robots.calibrate_command)
app.command("virtual-bus")(robots.virtual_bus_command)
app.command("record")(robots.record_command)


@app.command("quickstart")
def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), help="Run folder."),
    force: bool = typer.Option(False, help="Redo steps that already finished."),
    train_minutes: float = typer.Option(10.0, help="Wall-clock training budget for pi0-tiny."),
    steps: int = typer.Option(12000, help="Upper bound on training steps (a fast machine stops here)."),
    episodes: int = typer.Option(10, help="Evaluation episodes per task."),
    deploy_seconds: float = typer.Option(20.0, help="Length of the real-time deployment run."),
):
    """Collect demos, train pi0-tiny, evaluate it against the expert, deploy it in a real-time loop,
    and write runs/<name>/report.html. Finished steps are skipped on re-runs."""
    from vla.quickstart import run_quickstart

    show_on_stdout("vla.quickstart")
    try:
        run_quickstart(
            out, force=force, train_minutes=train_minutes, steps=steps, episodes=episodes, deploy_seconds=deploy_seconds
        )
    except user_errors() as e:
        fail(str(e))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    app()
