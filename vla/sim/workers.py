"""Run independent jobs (episodes) in worker processes, naming the job of any worker that dies.

`run_jobs(fn, context, jobs, workers=K)` calls `fn(context, job)` for every job, in K spawned
processes (or inline for K <= 1), and yields `(job, result, error)` as jobs finish: `error` is
None on success, the traceback text when `fn` raised, or a line saying the worker died (a
segfault, an OOM kill) for the job it was running; a dead worker is replaced and the rest go
on. `context` is sent to each worker once (e.g. a picklable policy factory); `fn` must be a
module-level function. Ctrl-C stops the workers and propagates, after the caller has handled
every job that finished.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import traceback
from typing import Any, Callable, Iterable, Iterator

log = logging.getLogger(__name__)


def _worker(fn, context, tasks, results) -> None:
    import os

    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("LP_NUM_THREADS", "0")
    while True:
        item = tasks.get()
        if item is None:
            return
        i, job = item
        try:
            results.put((i, fn(context, job), None))
        except Exception:
            results.put((i, None, traceback.format_exc()))


def run_jobs(fn: Callable[[Any, Any], Any], context: Any, jobs: Iterable, *, workers: int = 1,
             poll_s: float = 0.5) -> Iterator[tuple[Any, Any, str | None]]:
    jobs = list(jobs)
    if workers <= 1:
        for job in jobs:
            try:
                yield job, fn(context, job), None
            except Exception:
                yield job, None, traceback.format_exc()
        return

    ctx = mp.get_context("spawn")  # no fork: GL contexts and torch threads do not survive it
    results = ctx.Queue()
    pending = list(enumerate(jobs))[::-1]  # pop() from the end keeps the original order
    procs: dict[int, tuple[Any, Any]] = {}  # slot -> (process, its task queue)
    running: dict[int, int] = {}  # slot -> job index
    done = 0
    next_slot = 0

    def start() -> int:
        nonlocal next_slot
        tq = ctx.Queue()
        p = ctx.Process(target=_worker, args=(fn, context, tq, results), daemon=True)
        p.start()
        procs[next_slot] = (p, tq)
        next_slot += 1
        return next_slot - 1

    def feed(slot: int) -> None:
        if pending:
            i, job = pending.pop()
            running[slot] = i
            procs[slot][1].put((i, job))

    try:
        for _ in range(min(workers, len(jobs))):
            feed(start())
        while done < len(jobs):
            try:
                i, result, err = results.get(timeout=poll_s)
            except queue.Empty:
                for slot, (p, _) in list(procs.items()):
                    if not p.is_alive() and slot in running:
                        i = running.pop(slot)
                        del procs[slot]
                        done += 1
                        yield jobs[i], None, f"worker process died (exit code {p.exitcode})"
                        feed(start())
                continue
            slot = next(s for s, j in running.items() if j == i)
            del running[slot]
            done += 1
            yield jobs[i], result, err
            feed(slot)
    finally:
        for p, tq in procs.values():
            try:
                tq.put(None)
            except Exception:
                pass
        for p, _ in procs.values():
            p.join(timeout=2)
            if p.is_alive():
                p.terminate()
                p.join(timeout=2)
