"""Where a run's output goes: the checkpoint at OUT (vla.model.interop.checkpoint.save_checkpoint: atomic),
its snapshots `<out>@<s>s`, and the files each checkpoint carries (metrics.jsonl, loss.png, the
LoRA adapter). Those live in a private scratch folder until each save copies them into the
checkpoint, and the folder goes with the run: nothing is ever left beside OUT.

    with CheckpointSink(out, trainee, config, stats=, text=, assets=) as sink:
        sink.record({"step": ..., "loss": ...})   # a metrics.jsonl row (rank 0)
        sink.save(step)                           # every rank (FSDP gathers the shards)
        sink.snapshot(step, seconds)              # save, then keep a copy at <out>@<seconds>s
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable

from vla.data.stats import NormStats
from vla.model.interop.checkpoint import CheckpointConfig, save_checkpoint
from vla.model.text import TextTokenizer
from vla.train.trainee import Trainee


def snapshot_path(out: str | Path, seconds: float) -> Path:
    """Where `train(..., snapshot_seconds=...)` keeps the checkpoint it had after `seconds`."""
    out = Path(out)
    return out.with_name(f"{out.name}@{int(round(seconds))}s")


class CheckpointSink:
    """out: the checkpoint folder; config: its config.json (each save sets the step); stats, text,
    assets: saved with every checkpoint. rank: only rank 0 writes. resume: metrics.jsonl continues
    the one at `out`. on_save(step, out): called after each checkpoint is written."""

    def __init__(
        self,
        out: str | Path,
        trainee: Trainee,
        config: CheckpointConfig,
        *,
        stats: NormStats,
        text: TextTokenizer | None,
        assets: dict,
        rank: int = 0,
        resume: bool = False,
        on_save: Callable[[int, Path], None] | None = None,
    ):
        self.out, self.trainee, self.config = Path(out), trainee, config
        self.stats, self.text, self.assets = stats, text, assets
        self.rank, self.resume, self.on_save = rank, resume, on_save
        self.work: Path | None = None

    def __enter__(self) -> "CheckpointSink":
        self.work = Path(tempfile.mkdtemp(prefix="vla-train-"))
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            before = self.out / "metrics.jsonl"
            self.metrics.write_text(before.read_text() if self.resume and before.exists() else "")
        return self

    def __exit__(self, *exc) -> bool:
        shutil.rmtree(self.work, ignore_errors=True)
        return False

    @property
    def metrics(self) -> Path:
        return self.work / "metrics.jsonl"

    def record(self, row: dict) -> None:
        """One row of metrics.jsonl."""
        with open(self.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")

    def save(self, step: int) -> None:
        """The checkpoint of `step` at OUT. Every rank calls it (under FSDP the tensors are gathered)."""
        scratch = self.work / "adapter"
        payload = self.trainee.checkpoint(step, scratch)
        if payload is None:  # not rank 0
            return
        served, train_state, extra = payload
        plot = self.work / "loss.png"
        loss_plot(self.metrics, plot)
        save_checkpoint(
            self.out,
            weights=served,
            config=replace(self.config, step=step),
            stats=self.stats,
            text=self.text,
            assets=self.assets,
            train_state=train_state,
            extra_files={"metrics.jsonl": self.metrics, "loss.png": plot, **extra},
        )
        shutil.rmtree(scratch, ignore_errors=True)
        if self.on_save is not None:
            self.on_save(step, self.out)

    def snapshot(self, step: int, seconds: float) -> None:
        """The checkpoint of `step`, kept also at `<out>@<seconds>s` (learning curves from one run)."""
        self.save(step)
        if self.rank == 0:
            keep = snapshot_path(self.out, seconds)
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(self.out, keep)


def loss_plot(metrics: Path, png: Path) -> None:
    """The training loss of `metrics` (metrics.jsonl) over steps, log scale, to `png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()] if metrics.exists() else []
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
