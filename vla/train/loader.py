"""The batches of a run: step k's global batch is a pure function of (seed, k), so a resumed run
draws what the uninterrupted one would; under DDP and FSDP each rank takes its slice of it.
Frames are decoded, resized and transformed to the model's inputs in the DataLoader workers."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vla.data.sampler import CORRUPT, collate_windows
from vla.model.contract import COUNT_PREFIX
from vla.model.transforms import Transforms
from vla.train.config import TrainConfig
from vla.train.processes import Processes
from vla.train.signals import ignore_stop_signals


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


def make_loader(ds: Dataset, tf: Transforms, tcfg: TrainConfig, start: int, procs: Processes) -> DataLoader:
    """This rank's batches of steps [start, tcfg.steps) of `ds` (a WindowDataset), through `tf`."""
    sampler = StepBatches(ds.sample_probs(), tcfg.batch_size, start, tcfg.steps, tcfg.seed, procs.rank, procs.world)
    if tcfg.workers > 0:
        torch.multiprocessing.set_sharing_strategy("file_system")
    return DataLoader(
        ds,
        batch_sampler=sampler,
        num_workers=tcfg.workers,
        collate_fn=_Collate(tf),
        persistent_workers=False,
        pin_memory=procs.device.type == "cuda",
        worker_init_fn=ignore_stop_signals,
    )
