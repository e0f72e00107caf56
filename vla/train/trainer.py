"""`vla train`: episode stores -> a policy checkpoint.

AdamW, linear warmup + cosine decay, gradient clipping, EMA weights, bf16 autocast on CUDA
(float32 on the CPU), optional gradient checkpointing, mixture weights over stores, a progress
bar with loss and throughput, metrics.jsonl + loss.png, atomic checkpoints, exact resume, DDP
through torchrun (gloo on CPU, nccl on GPU) or FSDP2 with `fsdp=True` (HSDP across nodes with
`fsdp="hybrid"`; vla.train.fsdp), on one machine or many (docs/scale.md), and
fine-tuning from a checkpoint (`init`) in full, with frozen parts or with LoRA
(vla.train.trainee, freeze, lora).

A run is planned first, then looped: `train` checks the request, plans the run (vla.train.plan:
fresh, --init or --resume), builds the model, its Trainee and the loader (vla.train.loader), and
runs the fit loop (vla.train.loop) into a checkpoint sink (vla.train.sink).

Exact resume: the batch of step k is a pure function of (seed, k) (indices drawn by a
generator seeded with both), and so are the flow-matching noise and times. So a run
interrupted at step k and resumed from its checkpoint equals the uninterrupted run (for
step-limited runs; a wall-clock budget makes the learning rate depend on elapsed time).
Under DDP and FSDP each rank takes its slice of the same global batch; gradients are averaged,
so N processes train the same weights as one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vla.config import Preset
from vla.model.registry import model_type
from vla.outputs import check_output, check_parent, is_checkpoint
from vla.spec import SpecError
from vla.train.budget import Budget
from vla.train.config import TrainConfig, lr_at, train_config
from vla.train.fsdp import fsdp_mode, require_torchrun
from vla.train.init import load_init_weights
from vla.train.loader import make_loader
from vla.train.loop import fit
from vla.train.plan import RunPlan, plan_fresh, plan_from_init, plan_resume
from vla.train.processes import Processes
from vla.train.signals import TrainingInterrupted
from vla.train.sink import CheckpointSink, snapshot_path
from vla.train.trainee import Trainee

__all__ = ["TrainConfig", "TrainingInterrupted", "lr_at", "snapshot_path", "train"]


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
    fsdp: bool | str = False,
    lora_rank: int | None = None,
    snapshot_seconds: tuple[float, ...] = (),
    overwrite: bool = False,
) -> Path:
    """Train `preset` on the stores `data`; write the checkpoint to `out`. Returns its path.

    init: start from that checkpoint's weights, geometry, tokenizer and stats (vla.train.init).
    fsdp: shard with FSDP2 over the processes torchrun started (True or "full"), or "hybrid": HSDP,
    sharded within each node and replicated across nodes. lora_rank: LoRA at that base rank
    (the preset's [train.lora] gives stacks, targets and per-stack scales; vla.train.lora).

    max_seconds: a wall-clock budget; training stops (and checkpoints) at the first step past it.
        Without `steps` the preset's step count does not cap it: the run takes the whole budget
        (the progress bar then counts time).
    snapshot_seconds: at the first step past each of these training times a copy of the
        checkpoint is kept beside `out`, named `<out>@<seconds>s` (learning curves from one run).
    overwrite: replace a checkpoint already at `out` (never anything else: vla.outputs).

    SIGINT/SIGTERM write the checkpoint of the step reached, then raise TrainingInterrupted.
    """
    _check_request(out, steps, max_seconds, resume=resume, overwrite=overwrite)
    fsdp = fsdp_mode(fsdp)
    if fsdp:
        require_torchrun()
    procs = Processes.join(device, fsdp=fsdp is not None)
    tcfg = train_config(preset, steps=steps, max_seconds=max_seconds, lora_rank=lora_rank, world=procs.world)
    shown = progress and procs.main
    if resume:
        plan = plan_resume(preset, tcfg, out, data, weights, lora_rank=lora_rank, init=init)
    elif init:
        plan = plan_from_init(preset, tcfg, init, data, weights, progress=shown)
    else:
        plan = plan_fresh(preset, tcfg, data, weights, progress=shown)
    trainee, params = _trainee(plan, procs, fsdp)
    loader = make_loader(plan.dataset, plan.transforms(), plan.train, plan.start, procs)
    config = plan.checkpoint_config(params)
    files = {"stats": plan.stats, "text": plan.text, "assets": plan.assets}
    with CheckpointSink(out, trainee, config, **files, rank=procs.rank, resume=resume, on_save=on_save) as sink:
        budget = Budget(max_seconds, snapshot_seconds, procs)
        fit(trainee, loader, sink, plan.train, procs, budget, start=plan.start, name=preset.name, progress=progress)
    procs.barrier()
    return Path(out)


def _check_request(out, steps: int | None, max_seconds: float | None, *, resume: bool, overwrite: bool) -> None:
    """The numbers, and OUT (vla.outputs): a checkpoint to continue, or a place a new one may go."""
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


def _trainee(plan: RunPlan, procs: Processes, fsdp: str | None) -> tuple[Trainee, int]:
    """The planned model (seeded; with --init the checkpoint's weights in it) as a Trainee, and its
    parameter count as served (LoRA merged)."""
    torch.manual_seed(plan.train.seed)
    model = model_type(plan.preset.type).build(plan.model, text_vocab=plan.text_vocab, assets=plan.assets)
    if plan.init is not None:
        load_init_weights(model, plan.init)
    params = sum(p.numel() for p in model.parameters())
    ranks = {"rank": procs.rank, "world": procs.world}
    trainee = Trainee(model, plan.train, procs.device, **ranks, fsdp=fsdp, kind=plan.preset.type, state=plan.state)
    return trainee, params
