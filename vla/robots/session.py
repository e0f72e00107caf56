"""A recording session: episodes by teleoperation into a store, with reset pauses between them.

    result = record_session(leader, follower, "demos", task="pick up the cube", episodes=10, seconds=20)

Each episode runs `seconds` (or until a key ends it: vla.robots.keys), then the follower keeps
following the leader, unrecorded, for `reset_seconds` while the operator puts the scene back (a
key ends the pause early). Without a terminal every episode runs its fixed length. Re-record (left
arrow) drops the episode and records it again; stop (esc) keeps it and ends the session; Ctrl-C or
SIGTERM ends it and drops the episode in progress, as a kill would. Each kept episode is committed
by the recorder's thread while the next one (or the reset pause) runs.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from dataclasses import replace

from vla.robots.keys import HELP, INTERRUPT, RERECORD, STOP, KeyControl
from vla.robots.recorder import StoreRecorder
from vla.robots.teleop import EpisodeStats, FrameFeed, TeleopLoop, quiet_gc, realtime

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _signals(keys: KeyControl):
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, lambda *_: keys.send(INTERRUPT)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _f(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def episode_line(i: int, n: int, st: EpisodeStats) -> str:
    """The progress line of one kept episode."""
    te, lag = st.tracking_error, st.tracking_error_lagged
    return (
        f"episode {i + 1}/{n}: {st.ticks} frames in {st.seconds:g} s (ended by {st.ended_by}), "
        f"dropped frames {st.dropped_frames}, jitter p99 {_f(st.jitter_ms.get('p99'))} ms, "
        f"tracking error p50/p99 {_f(te.get('p50'))}/{_f(te.get('p99'))} "
        f"({lag['lag_ticks']} ticks behind: {_f(lag['error'].get('p50'))}/{_f(lag['error'].get('p99'))})"
    )


def record_session(
    leader,
    follower,
    out,
    *,
    task: str,
    episodes: int,
    seconds: float,
    fps: float,
    cameras: list[FrameFeed] = (),
    reset_seconds: float = 0.0,
    keys: KeyControl | None = None,
    recorder: StoreRecorder | None = None,
    switch_interval_s: float = 0.0005,
    rt_priority: int = 0,
    settle_seconds: float = 1.0,
) -> dict:
    """Record `episodes` episodes of `follower` driven by `leader` into the store at `out`.

    `follower.embodiment` names the joints and the cameras actually recording; its rate becomes `fps`.
    `recorder`: an open StoreRecorder for it (else one is opened here). `rt_priority` > 0: the loop runs
    SCHED_FIFO at that priority (vla.robots.teleop.realtime). The follower follows the leader, unrecorded,
    for `settle_seconds` before the first episode (it starts wherever it was). Returns the summary."""
    emb = replace(follower.embodiment, control_hz=float(fps))
    rec = recorder or StoreRecorder.open(out, emb)
    keys = keys or KeyControl().start()
    loop = TeleopLoop(leader, follower, fps=fps, cameras=cameras, poll=keys.poll)
    kept: list[EpisodeStats] = []
    rerecorded, outcome = 0, "done"
    # Short GIL slices: the loop thread gets the interpreter back within ~0.5 ms from the writer thread.
    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(switch_interval_s)
    log.info(
        HELP if keys.active else "no terminal: each episode runs %g s, then a %g s reset pause", seconds, reset_seconds
    )
    t_start = time.monotonic()
    try:
        with _signals(keys), quiet_gc(), realtime(rt_priority):
            loop.wait_for_cameras()
            ended = loop.run(settle_seconds, None).ended_by if settle_seconds > 0 else "time"
            if ended in (STOP, INTERRUPT):
                outcome = "stopped" if ended == STOP else "interrupted"
            while len(kept) < episodes and outcome == "done":
                st = loop.run(seconds, rec)
                if st.ended_by == "error":
                    break
                if st.ended_by == INTERRUPT:
                    rec.discard_episode()
                    outcome = "interrupted"
                    break
                if st.ended_by == RERECORD:
                    rec.discard_episode()
                    rerecorded += 1
                    log.info("episode %d dropped: record it again", len(kept) + 1)
                else:
                    rec.end_episode(task)
                    kept.append(st)
                    log.info("%s", episode_line(len(kept) - 1, episodes, st))
                    if st.ended_by == STOP:
                        outcome = "stopped"
                        break
                if len(kept) < episodes and reset_seconds > 0:
                    log.info(
                        "reset the scene (%g s%s)", reset_seconds, "; right arrow when ready" if keys.active else ""
                    )
                    pause = loop.run(reset_seconds, None)
                    if pause.ended_by in (STOP, INTERRUPT):
                        outcome = "stopped" if pause.ended_by == STOP else "interrupted"
                        break
    finally:
        sys.setswitchinterval(old_switch)
        keys.stop()
        committed = rec.close()
    if rec.error is not None:
        outcome = "error"
    rows = []
    for ep, st in zip(committed, kept):
        rows.append({"index": ep.index, "frames": ep.frames, **st.to_dict()})
    return {
        "store": str(out),
        "embodiment": emb.name,
        "fps": fps,
        "task": task,
        "cameras": [f"{c.name} {c.height}x{c.width}" for c in emb.cameras],
        "episodes": rows,
        "rerecorded": rerecorded,
        "outcome": outcome,
        "keys": keys.active,
        "error": None if rec.error is None else f"{type(rec.error).__name__}: {rec.error}",
        "seconds": round(time.monotonic() - t_start, 2),
        "dropped_frames": sum(st.dropped_frames for st in kept),
    }


def _check_numbers(episodes: int, seconds: float, fps: float | None, reset_seconds: float) -> None:
    from vla.spec import SpecError

    if episodes < 1:
        raise SpecError(f"--episodes must be >= 1, got {episodes}")
    if not seconds > 0:
        raise SpecError(f"--seconds must be > 0, got {seconds}")
    if fps is not None and not 0 < fps <= 1000:
        raise SpecError(f"--fps must be in (0, 1000], got {fps}")
    if not reset_seconds >= 0:
        raise SpecError(f"--reset-seconds must be >= 0, got {reset_seconds}")


def record(
    robot: str,
    leader_port: str,
    follower_port: str,
    out,
    *,
    task: str,
    episodes: int,
    seconds: float,
    fps: float | None = None,
    reset_seconds: float = 0.0,
    cameras: str | dict | None = None,
    camera_size: tuple[int, int] | None = None,
    leader_calibration: str | None = None,
    follower_calibration: str | None = None,
    rt_priority: int = 0,
    keys: KeyControl | None = None,
) -> dict:
    """`vla record`: connect a leader and a follower arm (vla.robots.arm), record by teleoperation, close
    them (the follower's torque off). The store at `out` is checked before any hardware is touched."""
    from vla.outputs import check_parent
    from vla.robots.arm import make_arm
    from vla.robots.recorder import check_store
    from vla.robots.teleop import CameraFeed
    from vla.spec import SpecError

    _check_numbers(episodes, seconds, fps, reset_seconds)
    if not task.strip():
        raise SpecError('--task must name what the episodes show, e.g. --task "pick up the red cube"')
    check_parent(out, "--out")
    follower = make_arm(
        robot, "follower", follower_port, calibration=follower_calibration, cameras=cameras, image_size=camera_size
    )
    leader = make_arm(robot, "leader", leader_port, calibration=leader_calibration)
    fps = float(fps or follower.embodiment.control_hz)
    check_store(out, replace(follower.embodiment, control_hz=fps))  # before any hardware is touched
    try:
        leader.connect()
        follower.connect()
        feeds = [CameraFeed(c) for c in follower.cameras.values()]
        return record_session(
            leader,
            follower,
            out,
            task=task,
            episodes=episodes,
            seconds=seconds,
            fps=fps,
            cameras=feeds,
            reset_seconds=reset_seconds,
            keys=keys,
            rt_priority=rt_priority,
        )
    finally:
        follower.close()
        leader.close()
