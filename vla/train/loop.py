"""The fit loop: one optimizer step per batch until the loader ends, the time budget runs out or a
stop signal arrives, with the learning-rate schedule, batch counters, metrics rows and a progress
bar; every checkpoint goes through the sink.

Exact resume: the flow-matching noise and times of step k (and the image shifts) are drawn by
generators seeded with (seed, k), drawn for the global batch and sliced per rank, as the batches
themselves are (vla.train.loader).
"""

from __future__ import annotations

import logging
import time

import torch

from vla.data.frame_files import StoreError
from vla.model.contract import COUNT_PREFIX
from vla.train.augment import random_shift
from vla.train.budget import Budget
from vla.train.config import TrainConfig, lr_at
from vla.train.processes import Processes
from vla.train.signals import StopSignals, interrupted
from vla.train.sink import CheckpointSink
from vla.train.trainee import Trainee

log = logging.getLogger(__name__)

MAX_CORRUPT_WINDOWS = 100  # windows skipped for corrupt frames before a run stops: the store is broken


def fit(
    trainee: Trainee,
    loader,
    sink: CheckpointSink,
    tcfg: TrainConfig,
    procs: Processes,
    budget: Budget,
    *,
    start: int = 0,
    name: str = "",
    progress: bool = True,
) -> int:
    """Trains from step `start` through the batches of `loader`; writes the checkpoint of the step
    reached (and any on the way: save_every, snapshots). Returns that step. A stop signal writes it
    and raises TrainingInterrupted; too many corrupt windows raise StoreError."""
    with StopSignals() as stop:
        trainee.model.train()
        bar = _progress_bar(name, tcfg, start, budget.max_seconds, enabled=progress and procs.main)
        t_last, n_last = time.perf_counter(), 0
        step = start
        budget.start()
        counts: dict[str, int] = {}  # batch counters (count/...): summed here, since workers only see copies
        for batch in loader:
            signum = stop.agreed(procs)
            if signum:
                sink.save(step)
                raise interrupted(signum, step, sink.out)
            elapsed = budget.elapsed()
            for at in budget.snapshots_due(elapsed):
                sink.snapshot(step, at)
            if budget.over(elapsed):
                log.info("time budget of %.0f s reached at step %d of %d", budget.max_seconds, step, tcfg.steps)
                break
            lr = lr_at(step, tcfg, budget.used(elapsed))
            _count(batch, counts)
            loss, gnorm = _step(trainee, batch, tcfg, procs, step, lr)
            step += 1
            n_last += tcfg.batch_size
            if procs.main and (step % tcfg.log_every == 0 or step == tcfg.steps):
                now = time.perf_counter()
                row = {"step": step, "loss": loss.item(), "lr": lr, "grad_norm": float(gnorm)}
                row["windows_per_s"] = n_last / max(now - t_last, 1e-9)
                row.update({k: v for k, v in counts.items() if v})
                row.update(trainee.model.loss_terms())
                sink.record(row)
                bar.set_postfix(step=step, loss=f"{row['loss']:.4f}", wps=f"{row['windows_per_s']:.0f}")
                t_last, n_last = now, 0
            if budget.max_seconds:
                bar.update(min(round(elapsed), bar.total) - bar.n)
            else:
                bar.update(1)
            if tcfg.save_every and step % tcfg.save_every == 0 and step < tcfg.steps:
                sink.save(step)
        bar.close()
        for counter, n in counts.items():
            if n:
                log.warning("%s: %d over this run (see metrics.jsonl)", counter, n)
        sink.save(step)
    return step


def _step(trainee: Trainee, batch: dict, tcfg: TrainConfig, procs: Processes, step: int, lr: float):
    """One optimizer step on this rank's rows of the global batch of `step` -> (loss, grad norm)."""
    dev, rank, world = procs.device, procs.rank, procs.world
    batch = {k: (v.to(dev, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
    gen = torch.Generator().manual_seed(int(tcfg.seed * 1_000_003 + step))
    for k, v in trainee.model.training_draws(tcfg.batch_size, batch, gen).items():  # global batch; this rank's rows
        batch[k] = v[rank::world].to(dev)
    if tcfg.image_shift and "images" in batch:
        shifts = torch.Generator().manual_seed(int(tcfg.seed * 1_000_003 + step) + 1)
        batch["images"] = random_shift(batch["images"], tcfg.image_shift, shifts, rank=rank, world=world)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda" and tcfg.bf16):
        loss = trainee.loss(batch, gen)
    return loss, trainee.step(loss, lr)


def _count(batch: dict, counts: dict[str, int]) -> None:
    """Moves the batch's counters (count/...) into `counts`; a store with too many corrupt windows
    stops the run."""
    for k in [k for k in batch if k.startswith(COUNT_PREFIX)]:
        counter = k[len(COUNT_PREFIX) :]
        counts[counter] = counts.get(counter, 0) + int(batch.pop(k))
    if counts.get("corrupt_windows", 0) > MAX_CORRUPT_WINDOWS:
        raise StoreError(
            f"{counts['corrupt_windows']} training windows had corrupt frames (more than "
            f"{MAX_CORRUPT_WINDOWS}): the store is broken; `vla data verify STORE` names the frames"
        )


def _progress_bar(name: str, tcfg: TrainConfig, start: int, max_seconds: float | None, *, enabled: bool):
    """Steps; or, with a time budget, its seconds: elapsed and "left" are then the run's time."""
    from tqdm import tqdm

    if max_seconds:
        return tqdm(
            total=round(max_seconds),
            desc=f"train {name}",
            unit="s",
            disable=not enabled,
            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining} left{postfix}]",
        )
    return tqdm(total=tcfg.steps, initial=start, desc=f"train {name}", unit="step", disable=not enabled)
