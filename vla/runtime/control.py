"""The fixed-rate control loop: one safe action per tick, inference running beside it.

    loop = ControlLoop(robot, policy, ControlConfig(hz=50, mode="rtc"), SafetyConfig(...))
    result = loop.run()

Timing: absolute deadlines t0 + k / hz on the monotonic clock (no drift); the thread sleeps until
`spin_s` before a deadline, then spins. A tick that wakes more than a full period late skips the
missed ticks (counted) and stays on the grid. Per tick, in this order:
    1. install a chunk the inference worker finished (ChunkExecutor.on_chunk)
    2. watchdog: policy unreachable, or a moving plan whose next chunk is `watchdog_s` late -> hold
    3. send exactly one action: the plan's, through the SafetyFilter, or the hold command
    4. take the newest observation (read by the observer thread since the last tick, so a slow
       camera read never delays a command); record (that observation, this action)
    5. if the executor wants one and none is in flight, hand the observation to the worker
    6. ask the observer thread for a fresh observation
Inference runs in a worker thread (it waits on a socket for remote/isolated policies, so it
hardly holds the GIL). The e-stop (SIGUSR1 or the e-stop key) and Ctrl-C stop the robot at
once and close the recorded episode.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from vla.runtime.chunking import ChunkExecutor, ChunkingConfig
from vla.runtime.robot import DONE, SUCCESS, Robot
from vla.runtime.safety import SafetyConfig, SafetyFilter
from vla.runtime.timing import TimingLog, sleep_until
from vla.runtime.workers import InferenceWorker, Observer
from vla.spec import EMBODIMENT, TASK, SpecError

log = logging.getLogger(__name__)

_STATUS_KEYS = (SUCCESS, DONE, "sim_time")


@dataclass(frozen=True)
class ControlConfig:
    hz: float = 50.0
    duration_s: float = 30.0  # the whole run (all episodes); 0 = until stopped
    episodes: int = 1  # stop after this many finished episodes (the robot reports `done`)
    inject_delay_ms: float = 0.0  # added to every inference (benchmarks, delay-robustness tests)
    spin_s: float = 0.001  # busy-wait this long before each deadline
    miss_tolerance: float = 0.25  # a tick sent later than this fraction of a period after its deadline is a miss
    retry_s: float = 0.5  # wait between attempts while the policy is unreachable
    status_every_s: float = 1.0
    seed: int = 0  # first episode's reset seed (sim)
    task: str = ""  # instruction override (else the robot's)
    rt_priority: int = 0  # > 0: run the control thread SCHED_FIFO at this priority (Linux, needs root/CAP_SYS_NICE)

    def __post_init__(self):
        if not 0 < self.hz <= 1000:
            raise SpecError(f"[control] hz must be in (0, 1000], got {self.hz}")
        if not 0 <= self.rt_priority <= 99:
            raise SpecError(f"[control] rt_priority must be in 0..99 (0 = normal scheduling), got {self.rt_priority}")
        if self.duration_s < 0 or self.episodes < 1 or self.inject_delay_ms < 0:
            raise SpecError(
                "[control] duration_s and inject_delay_ms must be >= 0 and episodes >= 1; got "
                f"{self.duration_s}, {self.inject_delay_ms}, {self.episodes}"
            )


class _Link:
    """The control thread's side of the inference worker: the request in flight, the ones given up on, and
    whether the policy is down. Touched by the control thread only."""

    __slots__ = ("in_flight", "abandoned", "down_until", "down", "last_error", "holding", "first_chunk")

    def __init__(self) -> None:
        self.in_flight: tuple[int, float] | None = None  # (k_obs, time sent) of the request being computed
        self.abandoned: set[int] = set()  # k_obs given up on (watchdog, episode reset): their results are dropped
        self.down_until = 0.0  # no request before this: the last one failed (retry after retry_s)
        self.down = False  # the policy is unreachable (reported once per distinct error)
        self.last_error = ""
        self.holding = False  # the watchdog hold is on
        self.first_chunk = True  # an episode's first chunk starts from rest: not a chunk boundary

    def abandon(self) -> None:
        if self.in_flight is not None:
            self.abandoned.add(self.in_flight[0])
            self.in_flight = None


class ControlLoop:
    def __init__(
        self,
        robot: Robot,
        policy,
        cfg: ControlConfig,
        safety: SafetyConfig,
        chunking: ChunkingConfig,
        *,
        policy_embodiment: str | None = None,
        recorder=None,
        status=None,
    ):
        self.robot, self.policy, self.cfg = robot, policy, cfg
        self.safety_cfg, self.chunking_cfg = safety, chunking
        self.emb = robot.embodiment
        # The state is a joint-position command's layout: it seeds the safety filter's last command.
        self.same_layout = self.emb.action_mode == "joint_position" and self.emb.state_dim == self.emb.action_dim
        meta = getattr(policy, "metadata", {}) or {}
        self.policy_emb = policy_embodiment or self.emb.name
        embs = meta.get("embodiments") or {}
        if embs and self.policy_emb not in embs:
            raise SpecError(
                f"the policy has no embodiment {self.policy_emb!r} (it knows {sorted(embs)}); "
                "set [policy] embodiment in the launch file"
            )
        pe = embs.get(self.policy_emb) or {}
        if pe and len(pe.get("actions", [])) != self.emb.action_dim:
            raise SpecError(
                f"policy embodiment {self.policy_emb!r} has {len(pe['actions'])} action dims, "
                f"the robot {self.emb.name!r} has {self.emb.action_dim}"
            )
        self.policy_hz = float(pe.get("control_hz") or self.emb.control_hz)
        self.horizon = int(meta.get("action_horizon") or 0)
        self.noise_scale = meta.get("noise_scale")  # pi0 / pi0.5 servers say what they sample from
        self.recorder, self.status = recorder, status
        self.stop_requested = threading.Event()
        self.estop_requested = threading.Event()
        self.snapshot: dict = {}

    # ---- external triggers (signal handlers, key watcher, tests) ----
    def request_stop(self) -> None:
        self.stop_requested.set()

    def request_estop(self) -> None:
        self.estop_requested.set()

    def _policy_obs(self, obs: dict, task: str) -> dict:
        q = {k: v for k, v in obs.items() if k not in _STATUS_KEYS}
        q[EMBODIMENT] = self.policy_emb
        q[TASK] = task
        return q

    def _realtime(self, on: bool) -> None:
        """SCHED_FIFO for this (control) thread at rt_priority and for the process's other Python threads
        one below: a helper thread holding the GIL is then never descheduled by unrelated processes
        while the control thread waits for it (priority inversion through the GIL)."""
        import os

        if not self.cfg.rt_priority or not hasattr(os, "sched_setscheduler"):
            return
        me = threading.get_native_id()
        tids = {t.native_id for t in threading.enumerate() if t.native_id is not None} | {me}
        for tid in sorted(tids, key=lambda t: t != me):
            try:
                if on:
                    prio = self.cfg.rt_priority if tid == me else max(1, self.cfg.rt_priority - 1)
                    os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(prio))
                else:
                    os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            except OSError as e:
                if on and tid == me:
                    log.warning("cannot run the control thread SCHED_FIFO (%s); continuing with normal scheduling", e)
                    return

    def run(self) -> dict:
        try:
            return self._run()
        finally:
            self._realtime(False)

    def _run(self) -> dict:
        cfg, robot = self.cfg, self.robot
        period, watchdog_s = 1.0 / cfg.hz, self.safety_cfg.watchdog_s
        worker = InferenceWorker(self.policy, cfg.inject_delay_ms / 1000)
        observer = Observer(robot)
        self._realtime(True)
        timing = TimingLog(period, cfg.miss_tolerance * period)
        ex = ChunkExecutor(self.chunking_cfg, cfg.hz, self.policy_hz)
        obs = robot.reset(seed=cfg.seed)
        state = np.asarray(obs["observation/state"], np.float32)
        safety = SafetyFilter(self.emb, self.safety_cfg, period, initial=state if self.same_layout else None)
        task = cfg.task or obs.get(TASK) or ""
        episodes, outcome, link = [], "duration", _Link()
        prev_sent, prev_cmd = safety.last, None
        observer.latest = (-1, obs)
        t_start = time.monotonic() + period
        t_run0, k, ep_k0 = t_start, 0, 0
        try:
            while True:
                deadline = t_start + k * period
                now = sleep_until(deadline, cfg.spin_s)
                if now - deadline > period:  # woke a full period late or more: skip to the current tick
                    k_now = int((now - t_start) / period)
                    timing.skipped += k_now - k
                    k, deadline = k_now, t_start + k_now * period
                if self.estop_requested.is_set():
                    robot.stop()
                    safety.hold(k, "estop", "e-stop requested")
                    outcome = "estop"
                    break
                if self.stop_requested.is_set():
                    outcome = "interrupted"
                    break
                if cfg.duration_s and now - t_run0 >= cfg.duration_s:
                    break
                # 1. chunk arrivals
                switched = self._take_chunks(worker.results, link, ex, safety, timing, k, now)
                # 2. watchdog
                raw = ex.action(k)
                overdue = link.in_flight is not None and now - link.in_flight[1] > watchdog_s
                if link.down or (overdue and raw is not None):
                    self._watchdog_hold(link, ex, safety, k, now, overdue)
                    raw = None
                # 3. exactly one action
                a = safety.hold(k) if raw is None else safety.filter(k, raw)
                if a is not None:
                    robot.send_action(a)
                t_sent = time.monotonic()
                # Boundary jump: the new plan's first action against what the old plan (or the hold) commanded
                # last tick, both within the joint limits (a clamp is the safety layer's, not the chunking's).
                cmd = None if raw is None else np.clip(raw, safety.low, safety.high)
                ref = prev_cmd if prev_cmd is not None else prev_sent
                jump = (
                    float(np.max(np.abs(cmd - ref)))
                    if (switched and cmd is not None and ref is not None)
                    else float("nan")
                )
                prev_cmd = cmd if cmd is not None else a
                change = (
                    float(np.max(np.abs(a - prev_sent))) if (a is not None and prev_sent is not None) else float("nan")
                )
                timing.tick(k, t_sent - deadline, t_sent - t_run0, raw is None, switched, jump, change, k == ep_k0 > 0)
                prev_sent = a
                # 4. the newest observation, and the frame it makes with this action
                if observer.error is not None:
                    raise observer.error
                got = observer.take()
                if got is not None:
                    k_obs, obs = got
                    if self.recorder is not None and a is not None:
                        self.recorder.add(obs, a, max(0, k_obs - ep_k0 + 1) * period)
                    # 5. next request
                    if link.in_flight is None and now >= link.down_until and ex.want_request(k_obs):
                        self._request(worker, link, ex, obs, task, k_obs)
                # 6. a fresh observation for the next tick
                observer.trigger(k)
                self.snapshot = {
                    "t": now - t_run0,
                    "k": k,
                    "timing": timing,
                    "safety": safety.counts,
                    "delay_ticks": ex.delay_ticks,
                    "episodes": len(episodes),
                }
                # episode end (the robot says so)
                if got is not None and obs.get(DONE):
                    if self._episode_done(episodes, obs, task, k):  # the last one
                        outcome = "episodes"
                        break
                    obs, task = self._next_episode(observer, link, ex, safety, k, len(episodes), task)
                    prev_sent, prev_cmd = safety.last, None
                    # The reset took time: restart the grid so that tick k + 1 is one period from now.
                    t_start = time.monotonic() + period - (k + 1) * period
                    ep_k0 = k + 1
                k += 1
        finally:
            self._shut_down(outcome, worker, observer, task)
        self.timing, self.safety = timing, safety
        return self._summary(outcome, episodes, timing, safety, ex, observer, link.last_error)

    # ---- the loop's steps that need more than a few lines (called from _run) ----
    def _take_chunks(self, results: queue.Queue, link: _Link, ex: ChunkExecutor, safety, timing, k, now) -> bool:
        """Install the chunks the worker finished since the last tick; True when a new plan replaced a moving one."""
        switched = False
        while True:
            try:
                res = results.get_nowait()
            except queue.Empty:
                return switched
            ok = res.actions is not None
            timing.infer(res.k_obs, k, now - res.t_sent, res.server_ms, ok)
            if res.k_obs in link.abandoned:  # given up on (watchdog, episode reset); another may be in flight
                link.abandoned.discard(res.k_obs)
                continue
            link.in_flight = None
            if not ok:
                link.down_until = now + self.cfg.retry_s
                if not link.down or res.error != link.last_error:
                    log.warning("inference failed, holding position: %s", res.error)
                link.down, link.last_error = True, res.error
                continue
            if link.down:
                log.info("policy is back; resuming")
                link.down = False
            if res.actions.ndim != 2 or res.actions.shape[1] != self.emb.action_dim:
                safety.hold(k, "bad_shape", f"chunk of shape {res.actions.shape}")
                continue
            switched = ex.on_chunk(res.actions, res.k_obs, k)
            # An episode's first chunk starts from rest: not a chunk boundary.
            switched, link.first_chunk = switched and not link.first_chunk, link.first_chunk and not switched
            link.holding = False

    def _request(self, worker: InferenceWorker, link: _Link, ex: ChunkExecutor, obs, task, k_obs) -> None:
        extra = ex.request(k_obs, self.horizon)  # {} without a horizon in the policy's metadata
        try:
            worker.submit(self._policy_obs(obs, task), k_obs, extra)
            link.in_flight = (k_obs, time.monotonic())
        except queue.Full:
            pass

    def _episode_done(self, episodes: list, obs: dict, task: str, k: int) -> bool:
        """Count and record the episode the robot says is done; True when it was the run's last."""
        episodes.append({"success": bool(obs.get(SUCCESS)), "ticks": k})
        if self.recorder is not None:
            self.recorder.end_episode(task, bool(obs.get(SUCCESS)))
        return len(episodes) >= self.cfg.episodes

    def _watchdog_hold(self, link: _Link, ex: ChunkExecutor, safety, k: int, now: float, overdue: bool) -> None:
        """Hold position: the policy is unreachable, or the plan moves and its next chunk is overdue."""
        if not link.holding:
            why = (
                "policy unreachable"
                if link.down
                else f"no chunk for {now - link.in_flight[1]:.2f} s (watchdog {self.safety_cfg.watchdog_s} s)"
            )
            safety.hold(k, "watchdog_hold", why)
            link.holding = True
        if overdue:
            link.abandon()
        ex.drop()

    def _next_episode(self, observer, link: _Link, ex: ChunkExecutor, safety, k, episode_i, task):
        """Reset the robot for the next episode; the plan and the request in flight start over. -> (obs, task)"""
        with observer.lock:
            obs = self.robot.reset(seed=self.cfg.seed + episode_i)
            observer.latest = (k, obs)
        task = self.cfg.task or obs.get(TASK) or task
        link.first_chunk = True
        ex.drop()
        link.abandon()
        st = np.asarray(obs["observation/state"], np.float32)
        safety.last = st.astype(np.float64) if self.same_layout else safety.last
        return obs, task

    def _shut_down(self, outcome: str, worker: InferenceWorker, observer: Observer, task: str) -> None:
        if outcome in ("interrupted", "estop") or self.stop_requested.is_set():
            try:
                self.robot.stop()
            except Exception as e:  # the robot may be the thing that failed
                log.error("robot.stop() failed: %s", e)
        worker.stop()
        observer.stop()
        if self.recorder is not None and outcome != "episodes":
            self.recorder.end_episode(task, None)  # the episode in progress, outcome unknown

    def _summary(self, outcome, episodes, timing: TimingLog, safety, ex: ChunkExecutor, observer, last_error) -> dict:
        summary = timing.summary()
        summary["inference"]["last_error"] = last_error or None
        rec_error = getattr(self.recorder, "error", None)  # a failed recorder never stops the loop; report it
        summary.update(
            {
                "outcome": outcome,
                "mode": self.chunking_cfg.mode,
                "noise_scale": self.noise_scale,
                "hz": self.cfg.hz,
                "inject_delay_ms": self.cfg.inject_delay_ms,
                "episodes": episodes,
                "successes": sum(e["success"] for e in episodes),
                "safety": dict(safety.counts),
                "safety_by_dim": {k: dict(v) for k, v in safety.by_dim.items()},
                "interventions": safety.interventions,
                "executor": dict(ex.stats),
                "delay_estimate_ticks": ex.delay_ticks,
                "observer_busy_ticks": observer.busy,
                "recorder_error": None if rec_error is None else f"{type(rec_error).__name__}: {rec_error}",
            }
        )
        return summary
