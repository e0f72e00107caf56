"""Teleoperation: the follower arm follows the leader arm at a fixed rate, optionally recorded.

    loop = TeleopLoop(leader, follower, fps=30, cameras=feeds)
    stats = loop.run(seconds=20, recorder=rec)            # one episode; rec: vla.robots.recorder.StoreRecorder

Timing: absolute deadlines t0 + k / fps on the monotonic clock; the thread sleeps until `spin_s`
before a deadline, then spins; a tick that wakes more than a period late skips to the current one
(counted). Per tick, in this order:
    1. read the leader's joints (one sync read)              -> the action
    2. send them to the follower (one sync write)
    3. read the follower's joints (one sync read)             -> the state
    4. take each camera's newest frame (already captured by the camera's own thread: never waits)
    5. hand (state, action, frames, t) to the recorder's queue (never waits: a full queue drops it)
Encoding and disk writes happen on the recorder's thread, never here.

Dropped frames, per episode: a camera that delivered no new frame since the previous tick drops
that tick's frame (the previous frame is recorded again, so the episode keeps one frame per tick),
and a frame the writer queue had no room for is dropped whole. A camera and the loop at the same
rate would keep missing frames if the ticks fell where the frames arrive, so at the start of each
episode the loop measures when each camera's frames arrive and puts its ticks half a frame period
away from them (as far as the cameras' phases allow).

Tracking error: max over joints of |follower state - leader command| of the same tick, in the
arms' units ([-100, 100], gripper [0, 100]), over the episode's ticks after the first
`settle_ticks`. A servo takes a tick or two to reach a new goal, so the same figure is also given
against the command of `lag` ticks earlier, for the lag (0-5 ticks) that fits best: how closely the
follower reproduces the leader's motion, apart from its delay.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

import numpy as np

from vla.runtime.timing import TimingLog, sleep_until

log = logging.getLogger(__name__)

SETTLE_TICKS = 10
MISS_TOLERANCE = 0.25  # a tick later than this fraction of a period after its deadline is a miss


class FrameFeed(Protocol):
    """A camera as the loop sees it: the newest frame and a mark that changes with every new frame."""

    name: str

    def latest(self) -> tuple[float, np.ndarray] | None:
        """(the newest frame's mark, e.g. frames delivered so far, the frame uint8 HxWx3), or None before
        the first frame. Must not wait for a frame."""
        ...


class CameraFeed:
    """A FrameFeed over a connected camera of vla.robots.cameras (a reader thread keeps its newest frame and
    counts `frames_read`) or vla.robots.virtual.VirtualCamera (`read_latest()`; each frame has its `stamp`)."""

    def __init__(self, camera):
        self.camera = camera
        self.name = camera.name
        self._virtual = hasattr(camera, "read_latest")

    def latest(self) -> tuple[float, np.ndarray] | None:
        cam = self.camera
        # The frame's mark first, then the frame: the frame is at least as new as its mark.
        if self._virtual:
            mark = cam.stamp
            return None if mark == 0.0 else (mark, cam.read_latest())
        mark = cam.frames_read
        return None if mark == 0 else (mark, cam.read())


class Leader(Protocol):
    def read_joints(self) -> np.ndarray: ...


class Follower(Protocol):
    def read_joints(self) -> np.ndarray: ...

    def send_action(self, action: np.ndarray) -> None: ...


@dataclass
class EpisodeStats:
    """What one teleoperated episode (or reset pause) measured."""

    ticks: int = 0
    seconds: float = 0.0
    ended_by: str = "time"  # time | error | the event that ended it early (vla.robots.keys)
    period_ms: dict = field(default_factory=dict)  # p50 / p99 / max / min
    jitter_ms: dict = field(default_factory=dict)  # |period - nominal|: p50 / p99 / max
    deadline_misses: int = 0
    skipped_ticks: int = 0
    dropped_frames: int = 0  # camera frames, all causes, all cameras (a queue drop loses one per camera)
    stale_frames: dict = field(default_factory=dict)  # camera -> ticks it had no new frame
    queue_drops: int = 0  # frames the writer queue had no room for
    tracking_error: dict = field(default_factory=dict)  # p50 / p99 / max over ticks after settle_ticks
    tracking_error_lagged: dict = field(default_factory=dict)  # {"lag_ticks": lag, "error": {p50, p99, max}}
    loop_work_ms: dict = field(default_factory=dict)  # time from wake-up to the frame handed over: p50 / p99 / max

    def to_dict(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def realtime(priority: int):
    """SCHED_FIFO at `priority` for the calling thread and one below for the process's other threads (a
    helper thread holding the GIL must not be descheduled while the loop waits for it), for the duration;
    nothing when priority is 0, and a warning where the OS refuses (needs root or CAP_SYS_NICE)."""
    if not priority or not hasattr(os, "sched_setscheduler"):
        yield False
        return
    me = threading.get_native_id()
    tids = sorted({t.native_id for t in threading.enumerate() if t.native_id is not None} | {me}, key=lambda t: t != me)
    done = []
    try:
        for tid in tids:
            try:
                os.sched_setscheduler(
                    tid, os.SCHED_FIFO, os.sched_param(priority if tid == me else max(1, priority - 1))
                )
                done.append(tid)
            except OSError as e:
                if tid == me:
                    log.warning("cannot run the teleoperation loop SCHED_FIFO (%s); normal scheduling", e)
                    break
        yield bool(done)
    finally:
        for tid in done:
            try:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            except OSError:  # the thread has ended
                pass


@contextlib.contextmanager
def quiet_gc():
    """Leave every object alive now (modules, arms, the store) out of the garbage collector's later passes
    (gc.freeze): a full collection over a process that imported the CLI took up to 30 ms here, a stall of
    a whole tick; passes over what the loop allocates take well under a millisecond."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def grid_phase(arrivals: list[float], period: float, candidates: int = 64) -> float:
    """A phase in [0, period) as far as possible (circularly) from every camera's frame-arrival phase."""
    if not arrivals:
        return 0.0
    a = np.mod(np.asarray(arrivals, np.float64), period)
    c = np.arange(candidates) * period / candidates
    d = np.abs(c[:, None] - a[None, :])
    d = np.minimum(d, period - d).min(axis=1)
    return float(c[int(np.argmax(d))])


def _q(x: list[float], nd: int = 3) -> dict:
    if not x:
        return {"p50": None, "p99": None, "max": None}
    v = np.asarray(x, np.float64)
    return {
        "p50": round(float(np.quantile(v, 0.5)), nd),
        "p99": round(float(np.quantile(v, 0.99)), nd),
        "max": round(float(v.max()), nd),
    }


def tracking_errors(commands: list, states: list, skip: int, lags=range(6)) -> tuple[int | None, dict]:
    """(lag, {p50, p99, max}) of max over joints |state[k] - command[k - lag]| for k >= skip, at the lag of
    `lags` with the smallest median."""
    if len(commands) <= skip:
        return None, _q([])
    c, s = np.asarray(commands, np.float64), np.asarray(states, np.float64)
    best = None
    for lag in lags:
        start = max(skip, lag)
        if start >= len(c):
            continue
        err = np.abs(s[start:] - c[start - lag : len(c) - lag]).max(axis=1)
        if best is None or np.median(err) < best[0]:
            best = (float(np.median(err)), lag, err)
    return best[1], _q(best[2].tolist())


class TeleopLoop:
    """Leader -> follower at `fps`, with the follower's cameras; see the module docstring."""

    def __init__(
        self,
        leader: Leader,
        follower: Follower,
        *,
        fps: float,
        cameras: list[FrameFeed] = (),
        spin_s: float = 0.002,
        settle_ticks: int = SETTLE_TICKS,
        poll: Callable[[], str | None] | None = None,
    ):
        """`poll()`: called once per tick; an event it returns (vla.robots.keys) ends the episode."""
        if not 0 < fps <= 1000:
            raise ValueError(f"fps must be in (0, 1000], got {fps}")
        self.leader, self.follower = leader, follower
        self.fps, self.period = float(fps), 1.0 / fps
        self.cameras = list(cameras)
        self.spin_s, self.settle_ticks = spin_s, settle_ticks
        self.poll = poll or (lambda: None)
        self._last: dict[str, tuple[int, np.ndarray] | None] = {c.name: None for c in self.cameras}
        self.last_command: np.ndarray | None = None

    # ---- camera phase ----
    def _arrivals(self, timeout_s: float) -> list[float]:
        """Monotonic times at which each camera delivered a new frame (polled every 0.5 ms)."""
        seen = {c.name: (c.latest() or (None,))[0] for c in self.cameras}
        got: dict[str, float] = {}
        end = time.monotonic() + timeout_s
        while len(got) < len(self.cameras) and time.monotonic() < end:
            for c in self.cameras:
                if c.name in got:
                    continue
                x = c.latest()
                if x is not None and x[0] != seen[c.name]:
                    got[c.name] = time.monotonic()
            time.sleep(0.0005)
        return list(got.values())

    def _grid_start(self) -> float:
        """The first deadline of an episode: one period or so from now, half a frame from the cameras'."""
        now = time.monotonic()
        if not self.cameras:
            return now + self.period
        phase = grid_phase(self._arrivals(2.5 * self.period), self.period)
        now = time.monotonic()
        k = np.ceil((now + self.period - phase) / self.period)
        return float(phase + k * self.period)

    def wait_for_cameras(self, timeout_s: float = 10.0) -> None:
        """Until every camera has delivered a frame; TimeoutError naming those that did not."""
        end = time.monotonic() + timeout_s
        while True:
            missing = [c.name for c in self.cameras if c.latest() is None]
            if not missing:
                return
            if time.monotonic() > end:
                raise TimeoutError(f"cameras {missing} delivered no frame within {timeout_s:g} s")
            time.sleep(0.01)

    # ---- the loop ----
    def _frames(self, stale: dict[str, int]) -> dict[str, np.ndarray]:
        out = {}
        for c in self.cameras:
            x = c.latest()
            last = self._last[c.name]
            if x is None or (last is not None and x[0] == last[0]):
                stale[c.name] += 1
                if last is None:  # no frame at all yet (wait_for_cameras prevents this)
                    raise RuntimeError(f"camera {c.name!r} has delivered no frame")
                out[c.name] = last[1]
            else:
                self._last[c.name] = x
                out[c.name] = x[1]
        return out

    def run(self, seconds: float, recorder=None) -> EpisodeStats:
        """One episode of `seconds` (or until `poll()` ends it), recorded when `recorder` is given.
        The caller commits or discards the recorder's episode after it."""
        period = self.period
        timing = TimingLog(period, MISS_TOLERANCE * period)
        stale = {c.name: 0 for c in self.cameras}
        commands, states = [], []
        work: list[float] = []
        queue_drops = 0
        ended_by = "time"
        for c in self.cameras:  # a frame from before the episode is stale at its first tick
            self._last[c.name] = c.latest()
        t0 = self._grid_start()
        n_ticks = max(1, int(round(seconds * self.fps)))
        k = 0
        while k < n_ticks:
            deadline = t0 + k * period
            now = sleep_until(deadline, self.spin_s)
            if now - deadline > period:  # a full period late: skip to the current tick, stay on the grid
                k_now = int((now - t0) / period)
                timing.skipped += k_now - k
                k, deadline = k_now, t0 + k_now * period
                if k >= n_ticks:
                    break
            command = np.asarray(self.leader.read_joints(), np.float32)
            self.follower.send_action(command)
            t_sent = time.monotonic()
            state = np.asarray(self.follower.read_joints(), np.float32)
            frames = self._frames(stale)
            if recorder is not None and not recorder.add(state, command, frames, k * period):
                queue_drops += 1
            work.append((time.monotonic() - now) * 1000)
            self.last_command = command
            commands.append(command)
            states.append(state)
            timing.tick(k, t_sent - deadline, t_sent - t0, False, False, float("nan"), float("nan"))
            event = self.poll()
            if event is not None:
                ended_by = event
                break
            if recorder is not None and recorder.error is not None:
                ended_by = "error"
                break
            k += 1
        s = timing.summary()
        return EpisodeStats(
            ticks=s["ticks"],
            seconds=round(s["ticks"] * period, 3),
            ended_by=ended_by,
            period_ms=s["period_ms"],
            jitter_ms=s["jitter_ms"],
            deadline_misses=s["deadline_misses"],
            skipped_ticks=s["skipped_ticks"],
            dropped_frames=sum(stale.values()) + queue_drops * max(1, len(self.cameras)),
            stale_frames=stale,
            queue_drops=queue_drops,
            tracking_error=tracking_errors(commands, states, self.settle_ticks, lags=(0,))[1],
            tracking_error_lagged=dict(
                zip(("lag_ticks", "error"), tracking_errors(commands, states, self.settle_ticks))
            ),
            loop_work_ms=_q(work),
        )
