"""`vla data ...` and `vla bench data`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from vla.cli.common import bench_app, emit, fail, json_path, user_errors

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Episode stores: inspect, compute stats, edit, migrate, LeRobot import/export.",
)


def _fmt(v) -> str:
    return "[" + ", ".join(f"{x:.3g}" for x in v) + "]"


@app.command("info")
def data_info(
    store: str = typer.Argument(..., help="Path or fsspec URL of an episode store."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary (with norm stats) as JSON."),
    sheet: Optional[Path] = typer.Option(
        None, help="Where to write the contact sheet PNG [default: ./<store>_contact.png]."
    ),
    no_sheet: bool = typer.Option(False, "--no-sheet", help="Do not write a contact sheet."),
):
    """What is in a store: episodes, frames, embodiments, tasks, shapes, norm stats, and a contact sheet."""
    from vla.data.stats import compute_norm_stats, stats_to_json
    from vla.data.store import EpisodeStore
    from vla.data.viz import contact_sheet
    from vla.outputs import check_file_output

    try:
        if sheet is not None and not no_sheet:
            check_file_output(sheet, "--sheet", (".png",))
        s = EpisodeStore.open(store)
        summary = s.summary()
        summary["norm_stats"] = stats_to_json(compute_norm_stats(s)) if s.num_episodes else {}
        if not no_sheet and s.num_episodes:
            name = Path(store.rstrip("/")).name or "store"
            out = contact_sheet(s, sheet or Path(f"{name}_contact.png"))
            summary["contact_sheet"] = str(out) if out else None
    except user_errors() as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"store      {summary['path']}")
    typer.echo(
        f"episodes   {summary['episodes']}    frames {summary['frames']}    "
        f"success yes/no/unknown {summary['success']['yes']}/{summary['success']['no']}/{summary['success']['unknown']}"
    )
    typer.echo(f"sources    {', '.join(summary['sources']) or '-'}")
    if summary.get("format_version") != 2:
        typer.echo(
            f"format     version {summary.get('format_version')}: read-only, one file per frame; "
            f"`vla data migrate {store} NEW` rewrites it in the current format"
        )
    for name, e in summary["embodiments"].items():
        typer.echo(
            f"embodiment {name}: {e['episodes']} episodes, {e['frames']} frames, {e['control_hz']} Hz, "
            f"{e['action_mode']}"
        )
        for key, spec in e["keys"].items():
            cam = key.rsplit("/", 1)[-1] if key.startswith("observation/images/") else None
            codec = f"  codec {e['codecs'][cam]}" if cam in e.get("codecs", {}) else ""
            typer.echo(f"    {key:<32} {str(tuple(spec['shape'])):<16} {spec['dtype']}{codec}")
    typer.echo("tasks")
    for task, n in sorted(summary["tasks"].items(), key=lambda kv: -kv[1]):
        typer.echo(f"    {n:>5}  {task}")
    for emb, per in summary["norm_stats"].items():
        typer.echo(f"norm stats [{emb}]")
        for key, st in per.items():
            typer.echo(f"    {key}  (n={st['count']})")
            for stat in ("mean", "std", "min", "max", "q01", "q99"):
                typer.echo(f"        {stat:<5} {_fmt(st[stat])}")
    if summary.get("contact_sheet"):
        typer.echo(f"contact sheet: {summary['contact_sheet']}")


@app.command("stats")
def data_stats(
    store: str = typer.Argument(..., help="Path or URL of an episode store."),
    out: Optional[Path] = typer.Option(None, help="Output JSON [default: <store>/norm_stats.json, also for a URL]."),
):
    """Compute norm stats (mean, std, min, max, q01, q99) per embodiment and key, streaming."""
    from vla.data.remote import is_url, join
    from vla.data.stats import compute_norm_stats, save_stats, stats_to_json
    from vla.data.store import EpisodeStore
    from vla.outputs import check_file_output

    try:
        target = out or join(store, "norm_stats.json")
        if not is_url(target):
            check_file_output(target, "--out", (".json",))
        s = EpisodeStore.open(store)
        stats = compute_norm_stats(s, progress=True)
        save_stats(stats, target)
    except user_errors() as e:
        fail(str(e))
    for emb, per in stats_to_json(stats).items():
        for key, st in per.items():
            typer.echo(f"{emb} {key}: n={st['count']} mean={_fmt(st['mean'])} std={_fmt(st['std'])}")
    typer.echo(f"wrote {target}")


@app.command("verify")
def data_verify(
    store: str = typer.Argument(..., help="Path or fsspec URL of an episode store."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Read every frame of every episode (low-dim arrays and each camera frame) and name the corrupt
    ones. Exits 1 when any is found; training skips such frames (and stops past a cap)."""
    from vla.data.verify import verify_store

    try:
        r = verify_store(store, progress=not as_json)
    except user_errors() as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(r, indent=2))
    else:
        for c in r["corrupt"]:
            where = f"frame {c['frame']}" if c["frame"] is not None else "all frames"
            typer.echo(f"corrupt: episode {c['episode']} [{c['embodiment']}] {c['key']} {where}: {c['error']}")
        typer.echo(
            f"{r['store']}: {r['episodes']} episodes, {r['frames']} frames, {r['images_checked']} images read, "
            f"{r['problems']} corrupt"
        )
    if r["problems"]:
        raise typer.Exit(1)


@app.command("import-lerobot")
def data_import_lerobot(
    src: Path = typer.Argument(..., help="LeRobot dataset folder (format v3.0 or v2.1)."),
    dst: str = typer.Argument(..., help="New episode store to create (path or URL)."),
    embodiment: Optional[str] = typer.Option(
        None,
        help="Built-in embodiment name / TOML path to map onto "
        "(dims must match), or a new name [default: the dataset's robot_type].",
    ),
    codec: Optional[str] = typer.Option(
        None,
        help="Image codec for every camera: lossless, jpeg or jpeg:QUALITY "
        "[default: per camera, jpeg at the smallest quality reaching --psnr for video features, lossless for "
        "PNG features].",
    ),
    psnr: float = typer.Option(
        38.0, help="Target PSNR (dB) of each video camera against its decoded source; picks its JPEG quality."
    ),
):
    """Import a LeRobot dataset (v3.0 or v2.1; images in parquet or mp4 video) into a new store."""
    from vla.data.lerobot_import import import_lerobot

    try:
        r = import_lerobot(src, dst, embodiment=embodiment, codec=codec, psnr=psnr)
    except user_errors() as e:
        fail(str(e))
    from vla.data.camera_quality import describe

    spec = "spec restored from the export" if r["restored_spec"] else "spec from the features"
    typer.echo(
        f"imported {r['episodes']} episodes, {r['frames']} frames (LeRobot {r['version']}, embodiment "
        f"{r['embodiment']}, {spec}) into {dst} at {r['frames_per_s']:.0f} frames/s"
    )
    for cam, rep in r["cameras"].items():
        typer.echo("    " + describe(cam, rep))


@app.command("export-lerobot")
def data_export_lerobot(
    store: str = typer.Argument(..., help="Episode store to export."),
    dst: Path = typer.Argument(..., help="New LeRobot v3.0 dataset folder."),
    embodiment: Optional[str] = typer.Option(
        None, help="Which embodiment to export (needed if the store has several)."
    ),
    robot_type: Optional[str] = typer.Option(None, help="robot_type in info.json [default: the embodiment name]."),
    images: str = typer.Option("auto", help="auto: AV1 video where the size allows, else PNG; video; image (PNG)."),
    env_state: bool = typer.Option(
        True,
        help="Export the simulator's training-only scene facts as observation.environment_state (LeRobot's "
        "policies take that feature as an input; --no-env-state leaves it out).",
    ),
):
    """Export a store to LeRobot v3.0 (loadable by LeRobotDataset(repo_id, root=DST))."""
    from vla.data.lerobot_export import export_lerobot

    if images not in ("auto", "video", "image"):
        fail(f"--images must be auto, video or image, got {images!r}")
    try:
        r = export_lerobot(store, dst, embodiment=embodiment, robot_type=robot_type, images=images, env_state=env_state)
    except user_errors() as e:
        fail(str(e))
    typer.echo(
        f"exported {r['episodes']} episodes, {r['frames']} frames to {dst} "
        f"(video: {r['video_cameras'] or '-'}, png: {r['image_cameras'] or '-'})"
    )


# ---- editing (each writes a new store; see vla.data.edit) ----
_EPISODES = typer.Option(None, "--episodes", help="Episode indices, e.g. 0,3,5-9.")
_TASK = typer.Option(None, "--task", help="Episodes with this task (repeatable).")
_SUCCESS = typer.Option(None, "--success", help="Episodes with this outcome: yes, no or unknown (repeatable).")


def _filter(episodes, task, success):
    from vla.data.edit import EpisodeFilter, parse_indices

    return EpisodeFilter(
        parse_indices(episodes) if episodes else None,
        tuple(task) if task else None,
        tuple(success) if success else None,
    )


def _edited(r: dict) -> None:
    typer.echo(f"wrote {r['path']}: {r['episodes']} episodes, {r['frames']} frames")


@app.command("keep")
def data_keep(
    src: str = typer.Argument(..., help="Store to read."),
    dst: str = typer.Argument(..., help="New store: a path or URL (s3://bucket/prefix)."),
    episodes: Optional[str] = _EPISODES,
    task: Optional[list[str]] = _TASK,
    success: Optional[list[str]] = _SUCCESS,
):
    """A new store with only the matching episodes (criteria combine with AND)."""
    from vla.data.edit import keep_episodes

    try:
        _edited(keep_episodes(src, dst, _filter(episodes, task, success), progress=True))
    except user_errors() as e:
        fail(str(e))


@app.command("delete")
def data_delete(
    src: str = typer.Argument(..., help="Store to read."),
    dst: str = typer.Argument(..., help="New store: a path or URL (s3://bucket/prefix)."),
    episodes: Optional[str] = _EPISODES,
    task: Optional[list[str]] = _TASK,
    success: Optional[list[str]] = _SUCCESS,
):
    """A new store without the matching episodes (criteria combine with AND)."""
    from vla.data.edit import delete_episodes

    try:
        _edited(delete_episodes(src, dst, _filter(episodes, task, success), progress=True))
    except user_errors() as e:
        fail(str(e))


@app.command("merge")
def data_merge(
    dst: str = typer.Argument(..., help="New store: a path or URL (s3://bucket/prefix)."),
    srcs: list[str] = typer.Argument(..., help="Stores to merge (an embodiment in several must match)."),
):
    """One new store with every episode of each source, in order."""
    from vla.data.edit import merge_stores

    try:
        _edited(merge_stores(srcs, dst, progress=True))
    except user_errors() as e:
        fail(str(e))


@app.command("split")
def data_split(
    src: str = typer.Argument(..., help="Store to split."),
    train: str = typer.Argument(..., help="New store (path or URL): the training episodes."),
    val: str = typer.Argument(..., help="New store (path or URL): the validation episodes."),
    val_fraction: float = typer.Option(0.1, help="Fraction of episodes for validation (at least one)."),
    seed: int = typer.Option(0, help="Seed of the random episode split."),
):
    """Split by episode into two new stores (train / val)."""
    from vla.data.edit import split_store

    try:
        r = split_store(src, train, val, val_fraction=val_fraction, seed=seed, progress=True)
    except user_errors() as e:
        fail(str(e))
    _edited(r["train"])
    _edited(r["val"])


@app.command("migrate")
def data_migrate(
    src: str = typer.Argument(..., help="Store to rewrite (e.g. one written by an older vla)."),
    dst: str = typer.Argument(..., help="New store in the current format (path or URL)."),
    codec: Optional[str] = typer.Option(
        None, help="Re-encode every camera: lossless, jpeg or jpeg:Q [default: keep each camera's codec]."
    ),
):
    """Rewrite a store in the current format (frames sharded into few files)."""
    from vla.data.edit import migrate_store

    try:
        r = migrate_store(src, dst, codec=codec, progress=True)
    except user_errors() as e:
        fail(str(e))
    typer.echo(f"migrated version-{r['from_version']} store {src}:")
    _edited(r)


@bench_app.command("data")
def bench_data(
    json_out: Optional[Path] = typer.Option(
        None, "--json", help="Also write the results to this JSON file.", callback=json_path
    ),
    workload: str = typer.Option(
        "sim",
        help="sim: 2 cams 96x96 sim-like frames (lossless); camera: 2 cams 480x640 "
        "camera-like frames per codec and quality, against LeRobot's AV1 format.",
    ),
    episodes: Optional[int] = typer.Option(None, help="Episodes in the generated store [sim 20, camera 8]."),
    length: Optional[int] = typer.Option(None, help="Frames per episode [sim 200, camera 128]."),
    qualities: str = typer.Option("60,70,75,80,90", help="camera: JPEG qualities of the trade-off curve."),
    store: Optional[str] = typer.Option(
        None,
        help="Measure this store on object storage (s3://bucket/prefix) instead of a generated one: "
        "windows/s without the local read cache, cold and warm, against a local copy of it.",
    ),
    batches: int = typer.Option(100, help="--store: batches per measurement (32 windows each)."),
):
    """Loader windows/s, store bytes/files, write and import speed (JSON)."""
    from vla.bench import data as bench

    if store is not None:
        if batches < 1:
            fail(f"--batches must be at least 1, got {batches}")
        try:
            result = bench.run_store(store, batches=batches)
        except user_errors() as e:
            fail(str(e))
        emit(result, json_out)
    elif workload == "sim":
        emit(bench.run(episodes=episodes or 20, length=length or 200), json_out)
    elif workload == "camera":
        try:
            qs = [int(q) for q in qualities.split(",") if q.strip()]
        except ValueError:
            fail(f"--qualities must be integers like 60,75,90, got {qualities!r}")
        emit(bench.run_camera(episodes=episodes or 8, length=length or 128, qualities=qs), json_out)
    else:
        fail(f"--workload must be sim or camera, got {workload!r}")
