"""Run independent jobs (episodes) in worker processes, naming the job of any worker that dies.

`run_jobs(fn, context, jobs, workers=K)` calls `fn(context, job)` for every job, in K spawned
processes (or inline for K <= 1), and yields `(job, result, error)` as jobs finish: `error` is
None on success, the traceback text when `fn` raised, or a line saying the worker died (a
segfault, an OOM kill) for the job it was running; a dead worker is replaced and the rest go
on. `context` is sent to each worker once (e.g. a picklable policy factory); `fn` must be a
module-level function. Ctrl-C stops the workers and propagates, after the caller has handled
every job that finished.

`vla.sim.ray_jobs.run_jobs_ray` keeps the same contract with Ray actors as the workers (on this
machine or a cluster), retrying a failed job once.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import sys
import traceback
from typing import Any, Callable, Iterable, Iterator

log = logging.getLogger(__name__)


def _worker(fn, context, tasks, results, threads: int) -> None:
    # Share the cores, do not oversubscribe them: torch, imported by the context or by a policy
    # factory during the first job, reads OMP_NUM_THREADS; one already imported is told directly.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    while True:
        item = tasks.recv()
        if item is None:
            return
        i, job = item
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
        try:
            out = (i, fn(context, job), None)
        except Exception:
            out = (i, None, traceback.format_exc())
        results.send(out)  # synchronous, on this worker's own pipe: a dying sibling cannot block it


def run_jobs(
    fn: Callable[[Any, Any], Any], context: Any, jobs: Iterable, *, workers: int = 1, poll_s: float = 1.0
) -> Iterator[tuple[Any, Any, str | None]]:
    jobs = list(jobs)
    if workers <= 1:
        for job in jobs:
            try:
                yield job, fn(context, job), None
            except Exception:
                yield job, None, traceback.format_exc()
        return

    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")  # no fork: GL contexts and torch threads do not survive it
    pending = list(enumerate(jobs))[::-1]  # pop() from the end keeps the original order
    slots: dict[int, tuple[Any, Any, Any]] = {}  # slot -> (process, task sender, result receiver)
    running: dict[int, int] = {}  # slot -> job index
    done = 0
    next_slot = 0

    def start() -> int:
        nonlocal next_slot
        task_r, task_w = ctx.Pipe(duplex=False)
        res_r, res_w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, args=(fn, context, task_r, res_w, threads), daemon=True)
        p.start()
        task_r.close()
        res_w.close()
        slots[next_slot] = (p, task_w, res_r)
        next_slot += 1
        return next_slot - 1

    def feed(slot: int) -> None:
        if pending:
            i, job = pending.pop()
            running[slot] = i
            slots[slot][1].send((i, job))

    try:
        for _ in range(min(workers, len(jobs))):
            feed(start())
        while done < len(jobs):
            waitables = {}
            for slot, (p, _, r) in slots.items():
                waitables[r] = slot
                waitables[p.sentinel] = slot
            ready = mp_connection.wait(list(waitables), timeout=poll_s)
            for slot in sorted({waitables[w] for w in ready}):
                p, _, r = slots[slot]
                if r.poll():
                    try:
                        i, result, err = r.recv()
                    except (EOFError, OSError):
                        i = None
                    if i is not None:
                        del running[slot]
                        done += 1
                        yield jobs[i], result, err
                        feed(slot)
                        continue
                if not p.is_alive():
                    p.join()
                    del slots[slot]
                    if slot in running:
                        i = running.pop(slot)
                        done += 1
                        yield jobs[i], None, f"worker process died (exit code {p.exitcode})"
                    if pending:
                        feed(start())
    finally:
        for _p, tw, _ in slots.values():
            try:
                tw.send(None)
            except Exception:
                pass
        for p, _, _ in slots.values():
            p.join(timeout=2)
            if p.is_alive():
                p.terminate()
                p.join(timeout=2)
