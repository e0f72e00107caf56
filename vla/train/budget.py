"""A run's clock: its wall-clock budget (training stops at the first step past it, and the learning
rate follows the share of it used) and the training times at which snapshots are kept. Under DDP
every rank reads rank 0's clock, so all use the same learning rate and stop at the same step."""

from __future__ import annotations

import time

from vla.train.processes import Processes


class Budget:
    """max_seconds: the budget (None: none); snapshot_seconds: training times to keep snapshots at."""

    def __init__(self, max_seconds: float | None, snapshot_seconds: tuple[float, ...], procs: Processes):
        self.max_seconds = max_seconds
        self.pending = sorted(float(x) for x in snapshot_seconds)
        self.procs = procs
        self.t_start = time.perf_counter()

    def start(self) -> None:
        self.t_start = time.perf_counter()

    def elapsed(self) -> float:
        """Training seconds so far (rank 0's); 0 when neither the budget nor a snapshot needs them."""
        if not (self.max_seconds or self.pending):
            return 0.0
        return self.procs.rank0(time.perf_counter() - self.t_start)

    def snapshots_due(self, elapsed: float) -> list[float]:
        """The snapshot times passed by `elapsed`, each once."""
        due = []
        while self.pending and elapsed >= self.pending[0]:
            due.append(self.pending.pop(0))
        return due

    def over(self, elapsed: float) -> bool:
        return bool(self.max_seconds) and elapsed > self.max_seconds

    def used(self, elapsed: float) -> float:
        """The share of the budget used (0 without one), for the learning-rate schedule."""
        return elapsed / self.max_seconds if self.max_seconds else 0.0
