"""`vla train`: episode stores -> a policy checkpoint.

AdamW, linear warmup + cosine decay, gradient clipping, EMA weights, bf16 autocast on CUDA
(float32 on the CPU), optional gradient checkpointing, mixture weights over stores, a progress
bar with loss and throughput, metrics.jsonl + loss.png, atomic checkpoints, exact resume, DDP
through torchrun (gloo on CPU, nccl on GPU) or FSDP2 with `fsdp=True` (vla.train.fsdp), and
fine-tuning from a checkpoint (`init`) in full, with frozen parts or with LoRA
(vla.train.trainee, freeze, lora).

Exact resume: the batch of step k is a pure function of (seed, k) (indices drawn by a
generator seeded with both), and so are the flow-matching noise and times. So a run
interrupted at step k and resumed from its checkpoint equals the uninterrupted run (for
step-limited runs; a wall-clock budget makes the learning rate depend on elapsed time).
Under DDP and FSDP each rank takes its slice of the same global batch; gradients are averaged,
so N processes train the same weights as one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from vla.config import Preset
from vla.data.frame_files import StoreError
from vla.data.sampler import CORRUPT, WindowDataset, collate_windows
from vla.data.stats import compute_norm_stats
from vla.data.store import EpisodeStore
from vla.model.checkpoint import Checkpoint, CheckpointConfig, save_checkpoint
from vla.model.contract import COUNT_PREFIX
from vla.model.device import resolve_device
from vla.model.registry import model_type
from vla.model.text import TextTokenizer
from vla.model.transforms import Transforms, build_transforms
from vla.outputs import check_output, check_parent, is_checkpoint
from vla.spec import SpecError
from vla.train.augment import random_shift
from vla.train.freeze import check_mode
from vla.train.fsdp import require_torchrun
from vla.train.init import check_same_type, init_config, init_inputs, load_init_weights
from vla.train.lora import LoraSpec
from vla.train.trainee import Trainee

log = logging.getLogger(__name__)

UNCAPPED_STEPS = 10**9  # the step count of a run limited by time alone
MAX_CORRUPT_WINDOWS = 100  # windows skipped for corrupt frames before a run stops: the store is broken


class TrainingInterrupted(SpecError):
    """SIGINT/SIGTERM stopped training; the checkpoint at the step reached was written first."""


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-4
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    clip: float = 1.0
    ema: float = 0.99  # 0 disables
    workers: int = 2
    seed: int = 0
    log_every: int = 10
    save_every: int = 0  # 0: only at the end
    bf16: bool = True  # autocast on CUDA only
    grad_checkpoint: bool = False
    fast_fit_chunks: int = 2000
    freeze: str = "none"  # vla.train.freeze: "none", "vision", "vlm" (expert-only, as SmolVLA)
    frozen_bf16: bool = True  # on CUDA with bf16: frozen weights stored in bfloat16 (vla.train.trainee)
    lora: LoraSpec = field(default_factory=LoraSpec)  # vla.train.lora; rank 0 = off
    image_shift: int = 0  # pixels of random shift of every training image (vla.train.augment); 0 = off

    def __post_init__(self):
        object.__setattr__(self, "betas", tuple(self.betas))
        if isinstance(self.lora, dict):
            try:
                object.__setattr__(self, "lora", LoraSpec(**self.lora))
            except TypeError as e:
                raise SpecError(f"train.lora: {e}") from None
        check_mode(self.freeze)
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise SpecError(
                f"train: steps, batch_size and lr must be positive (got {self.steps}, {self.batch_size}, {self.lr})"
            )
        if self.image_shift < 0:
            raise SpecError(f"train: image_shift must be >= 0, got {self.image_shift}")
        if not 0 <= self.ema < 1:
            raise SpecError(f"train: ema must be in [0, 1), got {self.ema}")


def lr_at(step: int, cfg: TrainConfig, time_frac: float = 0.0) -> float:
    """Warmup then cosine to min_lr_ratio * lr. time_frac: the share of a wall-clock budget used so
    far; the cosine follows whichever is further along, steps or time, so a time-limited run
    still ends at the low learning rate."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = max((step - cfg.warmup) / max(1, cfg.steps - cfg.warmup), time_frac)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


class StepBatches(Sampler):
    """Yields, for steps [start, steps), this rank's slice of the global batch of that step."""

    def __init__(
        self, probs: np.ndarray, batch_size: int, start: int, steps: int, seed: int, rank: int = 0, world: int = 1
    ):
        self.probs, self.bs, self.start, self.steps = probs, batch_size, start, steps
        self.seed, self.rank, self.world = seed, rank, world

    def batch_indices(self, step: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, step])
        return rng.choice(len(self.probs), size=self.bs, p=self.probs)

    def __iter__(self):
        for step in range(self.start, self.steps):
            yield self.batch_indices(step)[self.rank :: self.world].tolist()

    def __len__(self):
        return max(0, self.steps - self.start)


class _Collate:
    """Runs in the DataLoader workers: collate windows, then the model's input transforms. Windows
    that stood in for ones with a corrupt frame (WindowDataset, skip_corrupt) are counted."""

    def __init__(self, tf: Transforms):
        self.tf = tf

    def __call__(self, samples):
        skipped = sum(int(s.pop(CORRUPT, 0)) for s in samples)
        batch = self.tf.from_windows(collate_windows(samples, stack_images=False))
        batch[COUNT_PREFIX + "corrupt_windows"] = torch.tensor(skipped)
        return batch


def _ignore_stop_signals(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C (sent to the whole process group) to the trainer, which
    finishes its step and writes a checkpoint while they keep serving batches."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _StopSignals:
    """SIGINT/SIGTERM set a flag the loop reads at the next step (a checkpoint is written there);
    a second signal stops at once."""

    def __init__(self):
        self.signum = 0
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum:  # the second one: the user insists
            signal.signal(signum, signal.SIG_DFL)
            raise KeyboardInterrupt
        self.signum = signum
        log.warning(
            "%s: stopping after this step and writing a checkpoint (again to stop now)", signal.Signals(signum).name
        )

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False

    def agreed(self, world: int, dev: torch.device) -> int:
        """The signal number if any rank got one (every rank stops at the same step)."""
        if world == 1:
            return self.signum
        x = torch.tensor([self.signum], dtype=torch.int64, device=dev)
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
        return int(x.item())


def _dist_info(fsdp: bool = False) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if (world > 1 or fsdp) and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def train(
    preset: Preset,
    data: list[str],
    out: str | Path,
    *,
    steps: int | None = None,
    weights: list[float] | None = None,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    on_save=None,
    max_seconds: float | None = None,
    init: str | Path | None = None,
    fsdp: bool = False,
    lora_rank: int | None = None,
    snapshot_seconds: tuple[float, ...] = (),
    overwrite: bool = False,
) -> Path:
    """Train `preset` on the stores `data`; write the checkpoint to `out`. Returns its path.

    init: start from that checkpoint's weights, geometry, tokenizer and stats (vla.train.init).
    fsdp: shard with FSDP2 (processes started by torchrun). lora_rank: LoRA at that base rank
    (the preset's [train.lora] gives stacks, targets and per-stack scales; vla.train.lora).

    max_seconds: a wall-clock budget; training stops (and checkpoints) at the first step past it.
        Without `steps` the preset's step count does not cap it: the run takes the whole budget
        (the progress bar then counts time).
    snapshot_seconds: at the first step past each of these training times a copy of the
        checkpoint is kept beside `out`, named `<out>@<seconds>s` (learning curves from one run).
    overwrite: replace a checkpoint already at `out` (never anything else: vla.outputs).

    SIGINT/SIGTERM write the checkpoint of the step reached, then raise TrainingInterrupted.
    """
    from tqdm import tqdm

    if steps is not None and steps < 1:
        raise SpecError(f"steps must be >= 1, got {steps} (leave it out for the preset's)")
    if max_seconds is not None and max_seconds <= 0:
        raise SpecError(f"the time budget must be > 0 seconds, got {max_seconds}")
    check_parent(out)
    if resume:
        if not is_checkpoint(out):
            raise SpecError(f"--resume: {out} is not a vla checkpoint to continue (no checkpoint config.json there)")
    else:
        check_output(out, "a vla checkpoint", own=is_checkpoint, overwrite=overwrite, more="--resume to continue it")
    if fsdp:
        require_torchrun()
    rank, world = _dist_info(fsdp)
    if max_seconds and not steps:
        steps = UNCAPPED_STEPS  # the clock ends the run
    unknown = sorted(set(preset.train) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise SpecError(
            f"preset {preset.name}: unknown [train] keys {unknown}; known: {sorted(f.name for f in fields(TrainConfig))}"
        )
    tcfg = TrainConfig(**{**preset.train, **({"steps": steps} if steps else {})})
    if lora_rank is not None:
        tcfg = replace(tcfg, lora=replace(tcfg.lora, rank=lora_rank))
    if tcfg.batch_size % world:
        raise SpecError(f"batch_size {tcfg.batch_size} must be divisible by the {world} processes")
    mt = model_type(preset.type)
    out = Path(out)
    # Where the model's geometry comes from: the run being resumed, the --init checkpoint, or the preset.
    source = Checkpoint(out) if resume else Checkpoint(init) if init else None
    if source is not None:
        check_same_type(source, preset)
    if resume:
        tcfg = _resumed_finetune(tcfg, source, lora_rank, preset.train.get("freeze"))
    # sizes checked before any data; --init: the checkpoint's geometry, which must agree with the preset's
    base_cfg = (
        source.resolved.model if resume else init_config(source, preset, mt) if init else mt.make_config(preset.model)
    )
    norm_mode = source.resolved.norm_mode if source else preset.norm_mode
    dev = resolve_device(device)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    stores = [EpisodeStore.open(p) for p in data]
    # Frames decoded and resized to the model's input in the DataLoader workers (issue 16).
    ds = WindowDataset(
        stores, base_cfg.horizon, weights=weights, image_size=(base_cfg.backbone.image_size,) * 2, skip_corrupt=True
    )
    embodiments = ds.embodiments
    cams = max(len(e.cameras) for e in embodiments.values())
    if not (resume or init) and cams > base_cfg.cameras:  # a new model: as many camera slots as the data needs
        wide = sorted(n for n, e in embodiments.items() if len(e.cameras) == cams)
        log.info("camera slots: %d (the preset has %d; %s has %d cameras)", cams, base_cfg.cameras, wide, cams)
        base_cfg = replace(base_cfg, cameras=cams)
    model_cfg = replace(
        base_cfg,
        grad_checkpoint=tcfg.grad_checkpoint,
        embodiments={n: (e.state_dim, e.action_dim) for n, e in embodiments.items()},
    )

    state = None
    if resume:
        stats, text, assets = source.stats(), source.text(), source.assets()
        state = source.train_state()
    elif init:
        text, assets, stats = init_inputs(source, preset, embodiments)
        new = sorted(set(embodiments) - set(stats))
        if new:
            log.info("--init: norm stats for %s from the data", new)
            computed = compute_norm_stats(stores, progress=progress and rank == 0)
            stats = {**stats, **{n: computed[n] for n in new}}
    else:
        stats = compute_norm_stats(stores, progress=progress and rank == 0)
        text = (
            TextTokenizer.load(preset.text.pretrained)
            if preset.text.pretrained
            else TextTokenizer.train([i.task for s in stores for i in s.infos()], preset.text.vocab_size)
        )
        assets = mt.model.fit_assets(model_cfg, ds, stats, norm_mode, seed=tcfg.seed, chunks=tcfg.fast_fit_chunks)
    text_vocab = source.resolved.text_vocab if source and source.resolved.text_vocab else text.vocab_size
    tf = build_transforms(
        mt.model,
        model_cfg,
        embodiments=embodiments,
        stats=stats,
        norm_mode=norm_mode,
        text=text,
        assets=assets,
        text_vocab=text_vocab,
    )

    torch.manual_seed(tcfg.seed)
    model = mt.build(model_cfg, text_vocab=text_vocab, assets=assets)
    if init and not resume:
        load_init_weights(model, source)
    n_params = sum(p.numel() for p in model.parameters())  # as served (LoRA merged)
    trainee = Trainee(model, tcfg, dev, rank=rank, world=world, fsdp=fsdp, kind=preset.type, state=state)
    model = trainee.model
    start = 0
    if state is not None:
        start = state["step"]
        if start >= tcfg.steps:
            log.info("checkpoint %s is already at step %d >= %d", out, start, tcfg.steps)

    sampler = StepBatches(ds.sample_probs(), tcfg.batch_size, start, tcfg.steps, tcfg.seed, rank, world)
    if tcfg.workers > 0:
        torch.multiprocessing.set_sharing_strategy("file_system")
    loader = DataLoader(
        ds,
        batch_sampler=sampler,
        num_workers=tcfg.workers,
        collate_fn=_Collate(tf),
        persistent_workers=False,
        pin_memory=dev.type == "cuda",
        worker_init_fn=_ignore_stop_signals,
    )

    config = CheckpointConfig(
        preset.type,
        model_cfg,
        norm_mode,
        embodiments,
        preset=preset.to_dict(),
        train=asdict(tcfg),
        data=[str(p) for p in data],
        weights=weights,
        params=n_params,
        text_vocab=text_vocab,
        source={"init": str(init)} if init else {},
    )
    # The log and the adapter files live in a private scratch folder until each save copies them
    # into the checkpoint: nothing is ever left beside OUT.
    work = Path(tempfile.mkdtemp(prefix="vla-train-"))
    metrics_path = work / "metrics.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    if resume and (out / "metrics.jsonl").exists() and rank == 0:
        metrics_path.write_text((out / "metrics.jsonl").read_text())
    elif rank == 0:
        metrics_path.write_text("")

    def save(step: int) -> None:
        scratch = work / "adapter"
        payload = trainee.checkpoint(step, scratch)  # every rank: FSDP gathers the shards
        if payload is None:
            return
        served, train_state, extra = payload
        _loss_plot(metrics_path, work / "loss.png")
        save_checkpoint(
            out,
            weights=served,
            config=replace(config, step=step),
            stats=stats,
            text=text,
            assets=assets,
            train_state=train_state,
            extra_files={"metrics.jsonl": metrics_path, "loss.png": work / "loss.png", **extra},
        )
        shutil.rmtree(scratch, ignore_errors=True)
        if on_save is not None:
            on_save(step, out)

    try:
        with _StopSignals() as stop:
            autocast = dev.type == "cuda" and tcfg.bf16
            model.train()
            if max_seconds:  # the bar counts seconds of the budget: elapsed and "left" are the run's time
                bar = tqdm(
                    total=round(max_seconds),
                    desc=f"train {preset.name}",
                    unit="s",
                    disable=not progress or rank != 0,
                    bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining} left{postfix}]",
                )
            else:
                bar = tqdm(
                    total=tcfg.steps,
                    initial=start,
                    desc=f"train {preset.name}",
                    unit="step",
                    disable=not progress or rank != 0,
                )
            t_last, n_last = time.perf_counter(), 0
            step = start
            t_start = time.perf_counter()
            counts: dict[str, int] = {}  # batch counters (count/...): summed here, since workers only see copies
            snapshots = sorted(float(x) for x in snapshot_seconds)
            for batch in loader:
                signum = stop.agreed(world, dev)
                if signum:
                    save(step)
                    raise TrainingInterrupted(
                        f"{signal.Signals(signum).name} at step {step}: checkpoint written to {out}; continue with --resume"
                    )
                elapsed = _elapsed(t_start, world, dev) if max_seconds or snapshots else 0.0
                while snapshots and elapsed >= snapshots[0]:
                    at = snapshots.pop(0)
                    save(step)
                    if rank == 0:
                        snapshot_path(out, at).parent.mkdir(parents=True, exist_ok=True)
                        shutil.rmtree(snapshot_path(out, at), ignore_errors=True)
                        shutil.copytree(out, snapshot_path(out, at))
                if max_seconds and elapsed > max_seconds:
                    log.info("time budget of %.0f s reached at step %d of %d", max_seconds, step, tcfg.steps)
                    break
                lr = lr_at(step, tcfg, elapsed / max_seconds if max_seconds else 0.0)
                for k in [k for k in batch if k.startswith(COUNT_PREFIX)]:
                    name = k[len(COUNT_PREFIX) :]
                    counts[name] = counts.get(name, 0) + int(batch.pop(k))
                if counts.get("corrupt_windows", 0) > MAX_CORRUPT_WINDOWS:
                    raise StoreError(
                        f"{counts['corrupt_windows']} training windows had corrupt frames (more than "
                        f"{MAX_CORRUPT_WINDOWS}): the store is broken; `vla data verify STORE` names the frames"
                    )
                batch = {k: (v.to(dev, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
                gen = torch.Generator().manual_seed(int(tcfg.seed * 1_000_003 + step))
                for k, v in model.training_draws(tcfg.batch_size, batch, gen).items():  # global batch; this rank's rows
                    batch[k] = v[rank::world].to(dev)
                if tcfg.image_shift and "images" in batch:
                    shifts = torch.Generator().manual_seed(int(tcfg.seed * 1_000_003 + step) + 1)
                    batch["images"] = random_shift(batch["images"], tcfg.image_shift, shifts, rank=rank, world=world)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                    loss = trainee.loss(batch, gen)
                gnorm = trainee.step(loss, lr)
                step += 1
                n_last += tcfg.batch_size
                if rank == 0 and (step % tcfg.log_every == 0 or step == tcfg.steps):
                    now = time.perf_counter()
                    rec = {
                        "step": step,
                        "loss": loss.item(),
                        "lr": lr,
                        "grad_norm": float(gnorm),
                        "windows_per_s": n_last / max(now - t_last, 1e-9),
                    }
                    rec.update({k: v for k, v in counts.items() if v})
                    rec.update(trainee.model.loss_terms())
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(rec) + "\n")
                    bar.set_postfix(step=step, loss=f"{rec['loss']:.4f}", wps=f"{rec['windows_per_s']:.0f}")
                    t_last, n_last = now, 0
                if max_seconds:
                    bar.update(min(round(elapsed), bar.total) - bar.n)
                else:
                    bar.update(1)
                if tcfg.save_every and step % tcfg.save_every == 0 and step < tcfg.steps:
                    save(step)
            bar.close()
            for name, n in counts.items():
                if n:
                    log.warning("%s: %d over this run (see metrics.jsonl)", name, n)
            save(step)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if world > 1:
        dist.barrier()
    return out


def _resumed_finetune(tcfg: TrainConfig, ck: Checkpoint, lora_rank: int | None, freeze: str | None) -> TrainConfig:
    """A resumed run keeps the LoRA and freezing of the run it continues (they shape the weights in
    its train_state.pt); asking for others is an error naming both."""
    rec = ck.resolved.train or {}
    rec_lora = LoraSpec(**rec["lora"]) if rec.get("lora") else LoraSpec()
    rec_freeze = rec.get("freeze", "none")
    if lora_rank is not None and lora_rank != rec_lora.rank:
        raise SpecError(
            f"--resume: {ck.path} was trained with LoRA rank {rec_lora.rank}, this run asks for {lora_rank}"
        )
    if freeze is not None and freeze != rec_freeze:
        raise SpecError(f"--resume: {ck.path} was trained with freeze={rec_freeze!r}, this run asks for {freeze!r}")
    return replace(tcfg, lora=rec_lora, freeze=rec_freeze)


def snapshot_path(out: str | Path, seconds: float) -> Path:
    """Where `train(..., snapshot_seconds=...)` keeps the checkpoint it had after `seconds`."""
    out = Path(out)
    return out.with_name(f"{out.name}@{int(round(seconds))}s")


def _elapsed(t_start: float, world: int, dev: torch.device) -> float:
    """Seconds since t_start; under DDP rank 0's clock, so every rank uses the same learning
    rate and stops at the same step."""
    t = time.perf_counter() - t_start
    if world > 1:
        x = torch.tensor([t], dtype=torch.float64, device=dev)
        dist.broadcast(x, 0)
        t = float(x.item())
    return t


def _loss_plot(metrics: Path, png: Path) -> None:
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
