"""`vla convert` and `vla export-weights`: pi0 / pi0.5 weights in from and out to other projects;
`vla bench load`: the peak memory of loading a full-size pi0."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vla.cli.common import bench_app, emit, fail, user_errors


def convert_command(
    src: Path = typer.Argument(
        ...,
        help="A LeRobot pi0 / pi05 checkpoint dir, an openpi PyTorch checkpoint dir, or a "
        "transformers PI0 dir (model.safetensors or a sharded index).",
    ),
    out: Path = typer.Argument(..., help="The vla checkpoint dir to write (atomically; it must not exist)."),
    preset: Optional[str] = typer.Option(
        None, help="Geometry: a preset name or .toml path (default: pi0-paligemma or pi05-paligemma, from the source)."
    ),
    tokenizer: Optional[Path] = typer.Option(
        None,
        help="The text tokenizer: a tokenizer.json or a dir holding one "
        "(e.g. PaliGemma's) (default: SRC/tokenizer.json if present).",
    ),
    embodiment: Optional[str] = typer.Option(
        None,
        help="The robot the stats belong to (an embodiment name or TOML) "
        "(default: openpi's generic robot sized by the stats).",
    ),
    asset_id: Optional[str] = typer.Option(
        None, help="openpi: which assets/<id>/norm_stats.json, when there are several."
    ),
):
    """Convert published pi0 / pi0.5 weights into a vla checkpoint that vla train --init, eval, serve and run take.

    Every tensor's shape is checked against the preset; stats come from the source (LeRobot's
    policy_preprocessor.json or openpi's assets/<id>/norm_stats.json) when present."""
    from vla.model.interop.convert import convert

    if out.exists():
        fail(f"{out} exists: choose a new directory")
    try:
        ck = convert(src, out, preset=preset, tokenizer=tokenizer, embodiment=embodiment, asset_id=asset_id)
    except user_errors() as e:
        fail(str(e))
    typer.echo(f"checkpoint: {ck}")


def export_weights_command(
    ckpt: Path = typer.Argument(..., help="A vla pi0 / pi0.5 checkpoint dir."),
    out: Path = typer.Argument(..., help="The dir to write (it must not exist)."),
    embodiment: Optional[str] = typer.Option(None, help="With per-embodiment heads: whose heads to export."),
):
    """Write a checkpoint's weights for other tools: pi0 as a transformers PI0 dir
    (PI0ForConditionalGeneration.from_pretrained(OUT)), pi0.5 in LeRobot's pi05 layout."""
    from vla.model.interop.export import export_weights

    try:
        path = export_weights(ckpt, out, embodiment=embodiment)
    except user_errors() as e:
        fail(str(e))
    typer.echo(f"exported: {path}")


@bench_app.command("load")
def bench_load(
    out: Path = typer.Option(
        Path("runs/bench-load"),
        help="Work folder (made by this bench; the checkpoint is written under it and removed afterwards).",
    ),
    size: str = typer.Option(
        "full",
        help="full: transformers' default PI0Config (pi0_base: a 3.24B-parameter, 13 GB fp32 checkpoint); "
        "small / tiny: for tests.",
    ),
    via: str = typer.Option(
        "direct",
        help="direct: vla's model built at that geometry; convert: transformers' PI0 written and "
        "converted with vla convert (twice the disk; reports the conversion's peak too).",
    ),
    keep: bool = typer.Option(False, help="Keep the checkpoint under OUT/work."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results to this JSON file."),
):
    """Peak resident memory of loading a pi0 checkpoint with random weights (each step in a fresh
    process), against the target of 1.2x the checkpoint's bytes. Full size needs ~15 GB of RAM
    and ~15 GB of disk (~30 GB with --via convert), and minutes."""
    from vla.bench.load import run

    try:
        result = run(out, size=size, via=via, keep=keep)
    except user_errors() as e:
        fail(str(e))
    emit(result, json_out)
