"""The jobs of `vla.sim.workers.run_jobs` as Ray actor tasks: `vla collect --ray` and `vla eval --ray`.

`run_jobs_ray(fn, context, jobs, workers=K, address=A)` keeps run_jobs' contract: it calls
`fn(context, job)` for every job and yields `(job, result, error)` as jobs finish, `error` None on
success, the traceback text when `fn` raised, or a line saying the worker died. Here K actors
(one CPU each) take one job at a time; each gets `context` once, and `fn`'s module-level caches
(the env of a robot/task, the policy a factory built) live in the actor's process, so every
worker builds them once and reuses them, as a local worker process does. A job that raises, or
whose worker dies, runs once more (on a fresh actor when the old one died) before its error is
yielded; the other jobs go on. Results come back to the caller's process, which alone writes
(the episode store, videos), exactly as with local workers.

address: "local" starts a private Ray instance on this machine (no dashboard, a small object
store, K CPUs) and stops it afterwards; anything else ("auto", "HOST:6379", "ray://HOST:10001")
joins that running cluster (`ray start --head` on one machine, `ray start --address HOST:6379` on
the others), which every node must run with this vla installed. A caller that already called
`ray.init` keeps its session. Ray's own servers take their addresses from Ray (token
authentication guards them in Ray >= 2.5x); vla opens no port of its own.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import traceback
from collections import deque
from typing import Any, Callable, Iterable, Iterator

from vla.spec import SpecError

log = logging.getLogger(__name__)

RAY_HINT = "--ray needs Ray: pip install 'vla[ray]'"
LOCAL = "local"
RETRIES = 1  # a failed job runs once more before its error is reported
OBJECT_STORE_BYTES = 256 * 1024**2
CONNECT_S = (
    5.0  # how long a cluster's address may take to answer  # a local instance: episodes pass through it one at a time
)


def require_ray():
    """The `ray` module, or a SpecError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise SpecError(RAY_HINT) from None
    return ray


def check_address(address: str) -> str:
    """'local', 'auto', HOST:PORT or ray://HOST:PORT; anything else is refused before any work."""
    a = address.strip()
    host, _, port = a.removeprefix("ray://").rpartition(":")
    if a in (LOCAL, "auto") or (host and port.isdigit()):
        return a
    raise SpecError(
        f"--ray takes 'local' (a Ray instance on this machine), 'auto' (the cluster this machine joined), "
        f"HOST:PORT or ray://HOST:PORT; got {address!r}"
    )


def check_ray(address: str) -> str:
    """Everything --ray needs, checked before any work: Ray installed, an address it takes, and a
    cluster that answers there (ray.init retries an unreachable address for many minutes)."""
    require_ray()
    address = check_address(address)
    if address == LOCAL:
        return address
    target = address
    if address == "auto":  # the address Ray would join: RAY_ADDRESS, a cluster running here, `ray start`'s record
        target = _auto_address()
        if not target:
            return address  # Ray's lookup is not importable here: ray.init says what it finds
    host, _, port = target.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_S).close()
    except (OSError, ValueError) as e:
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise SpecError(
            f"cannot reach the Ray cluster at {target!r} ({why}): start its head with "
            "`ray start --head --port 6379`, or pass --ray local"
        ) from None
    return address


def _auto_address() -> str | None:
    try:  # Ray's own lookup (a private function: if it moves, the check is skipped)
        from ray._private.services import get_ray_address_from_environment
    except ImportError:
        return None
    try:
        return get_ray_address_from_environment("auto", None)
    except ConnectionError:
        raise SpecError(
            "--ray auto: this machine has joined no Ray cluster: run `ray start --head` (or "
            "`ray start --address HEAD:6379`) first, or pass --ray local"
        ) from None


class _Worker:
    """One Ray actor: runs jobs one at a time in its own process (see the module docstring)."""

    def __init__(self, fn: Callable, context: Any, threads: int):
        self.fn, self.context, self.threads = fn, context, threads
        os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch when a policy factory first imports it

    def ready(self) -> bool:
        return True

    def run(self, job: Any) -> tuple[Any, str | None]:
        if "torch" in sys.modules:  # share the cores, as local workers do
            sys.modules["torch"].set_num_threads(self.threads)
        try:
            return self.fn(self.context, job), None
        except Exception:
            return None, traceback.format_exc()


def _connect(ray, address: str, workers: int) -> bool:
    """Joins or starts Ray; True when this call started it (and so must stop it)."""
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address == LOCAL:
        ray.init(address=LOCAL, num_cpus=workers, object_store_memory=OBJECT_STORE_BYTES, **quiet)
        return True
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpecError(
            f"cannot join the Ray cluster at {address!r}: {msg} (start one with `ray start --head`)"
        ) from None
    return True


def _last_line(e: Exception) -> str:
    """The line of a Ray error that says what happened (its last; the first names the actor)."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip() and not set(x.strip()) <= set("^~")]
    return lines[-1] if lines else type(e).__name__


def _died(e: Exception) -> str:
    return f"worker process died (Ray {type(e).__name__}: {_last_line(e)})"


def run_jobs_ray(
    fn: Callable[[Any, Any], Any],
    context: Any,
    jobs: Iterable,
    *,
    workers: int = 1,
    address: str = LOCAL,
    poll_s: float = 1.0,
) -> Iterator[tuple[Any, Any, str | None]]:
    ray = require_ray()
    address = check_address(address)
    jobs = list(jobs)
    if not jobs:
        return
    workers = max(1, workers)
    started = _connect(ray, address, workers)
    threads = max(1, (os.cpu_count() or 1) // workers) if address == LOCAL else 1
    actor_cls = ray.remote(num_cpus=1, max_restarts=0)(_Worker)
    actors: dict[int, Any] = {}  # slot -> actor
    running: dict[Any, tuple[int, int]] = {}  # result ref -> (slot, job index)
    pending = deque(range(len(jobs)))
    attempts = [0] * len(jobs)
    done = 0
    try:
        ctx_ref = ray.put(context)  # sent once; every actor gets the value

        def feed(slot: int) -> None:
            if pending:
                i = pending.popleft()
                attempts[i] += 1
                running[actors[slot].run.remote(jobs[i])] = (slot, i)

        for slot in range(min(workers, len(jobs))):
            actors[slot] = actor_cls.remote(fn, ctx_ref, threads)
        try:  # an actor that cannot even start (vla missing on a node, a context that does not unpickle) stops all
            ray.get([a.ready.remote() for a in actors.values()])
        except ray.exceptions.RayError as e:
            raise SpecError(
                f"Ray workers cannot start (is this vla installed on every node?): {_last_line(e)}"
            ) from None
        for slot in actors:
            feed(slot)
        while done < len(jobs):
            ready, _ = ray.wait(list(running), num_returns=1, timeout=poll_s)
            for ref in ready:
                slot, i = running.pop(ref)
                try:
                    result, err = ray.get(ref)
                except ray.exceptions.RayActorError as e:  # the process died: a fresh actor in its slot
                    result, err = None, _died(e)
                    ray.kill(actors[slot], no_restart=True)
                    actors[slot] = actor_cls.remote(fn, ctx_ref, threads)
                except ray.exceptions.RayError as e:  # e.g. a result that would not serialize
                    result, err = None, f"{type(e).__name__}: {_last_line(e)}"
                if err is not None and attempts[i] <= RETRIES:
                    log.warning("job %r failed (%s); running it once more", jobs[i], err.strip().splitlines()[-1])
                    pending.appendleft(i)
                else:
                    done += 1
                    if err is not None:
                        err = f"failed {attempts[i]} times; the last time:\n{err}"
                    yield jobs[i], result, err
                feed(slot)
    finally:
        for a in actors.values():
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
        if started:
            ray.shutdown()
