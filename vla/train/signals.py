"""Ctrl-C and SIGTERM stop a run cleanly: the loop finishes its step, writes the checkpoint of the
step reached and raises `TrainingInterrupted`; a second signal stops at once."""

from __future__ import annotations

import logging
import signal
import threading

from vla.spec import SpecError
from vla.train.processes import Processes

log = logging.getLogger(__name__)


class TrainingInterrupted(SpecError):
    """SIGINT/SIGTERM stopped training; the checkpoint at the step reached was written first."""


def ignore_stop_signals(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C (sent to the whole process group) to the trainer, which
    finishes its step and writes a checkpoint while they keep serving batches."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StopSignals:
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

    def agreed(self, procs: Processes) -> int:
        """The signal number if any rank got one (every rank stops at the same step)."""
        return procs.largest(self.signum)


def interrupted(signum: int, step: int, out) -> TrainingInterrupted:
    return TrainingInterrupted(
        f"{signal.Signals(signum).name} at step {step}: checkpoint written to {out}; continue with --resume"
    )
