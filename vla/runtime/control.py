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
from vla.runtime.timing import TimingLog
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

    @staticmethod
    def _wait(deadline: float, spin_s: float) -> float:
        now = time.monotonic()
        if deadline - now > spin_s:
            time.sleep(deadline - now - spin_s)
        while True:
            now = time.monotonic()
            if now >= deadline:
                return now

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
        cfg = self.cfg
        period = 1.0 / cfg.hz
        robot = self.robot
        worker = InferenceWorker(self.policy, cfg.inject_delay_ms / 1000)
        observer = Observer(robot)
        self._realtime(True)
        timing = TimingLog(period, cfg.miss_tolerance * period)
        ex = ChunkExecutor(self.chunking_cfg, cfg.hz, self.policy_hz)
        obs = robot.reset(seed=cfg.seed)
        state = np.asarray(obs["observation/state"], np.float32)
        same_layout = self.emb.action_mode == "joint_position" and self.emb.state_dim == self.emb.action_dim
        safety = SafetyFilter(self.emb, self.safety_cfg, period, initial=state if same_layout else None)
        task = cfg.task or obs.get(TASK) or ""
        episodes, outcome = [], "duration"
        episode_i, in_flight, abandoned = 0, None, set()
        policy_down_until, down_reported, watchdog_active = 0.0, False, False
        prev_sent, last_error, first_chunk = safety.last, "", True
        prev_cmd = None
        observer.latest = (-1, obs)
        t_start = time.monotonic() + period
        t_run0, k, ep_k0 = t_start, 0, 0
        try:
            while True:
                deadline = t_start + k * period
                now = self._wait(deadline, cfg.spin_s)
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
                switched = False
                while True:
                    try:
                        res = worker.results.get_nowait()
                    except queue.Empty:
                        break
                    ok = res.actions is not None
                    timing.infer(res.k_obs, k, now - res.t_sent, res.server_ms, ok)
                    if res.k_obs in abandoned:  # given up on (watchdog, episode reset); another may be in flight
                        abandoned.discard(res.k_obs)
                        continue
                    in_flight = None
                    if not ok:
                        policy_down_until = now + cfg.retry_s
                        if not down_reported or res.error != last_error:
                            log.warning("inference failed, holding position: %s", res.error)
                        down_reported, last_error = True, res.error
                        continue
                    if down_reported:
                        log.info("policy is back; resuming")
                        down_reported = False
                    if res.actions.ndim != 2 or res.actions.shape[1] != self.emb.action_dim:
                        safety.hold(k, "bad_shape", f"chunk of shape {res.actions.shape}")
                        continue
                    switched = ex.on_chunk(res.actions, res.k_obs, k)
                    # An episode's first chunk starts from rest: not a chunk boundary.
                    switched, first_chunk = switched and not first_chunk, first_chunk and not switched
                    watchdog_active = False
                # 2. watchdog
                raw = ex.action(k)
                overdue = in_flight is not None and now - in_flight[1] > self.safety_cfg.watchdog_s
                if down_reported or (overdue and raw is not None):
                    if not watchdog_active:
                        why = (
                            "policy unreachable"
                            if down_reported
                            else f"no chunk for {now - in_flight[1]:.2f} s (watchdog {self.safety_cfg.watchdog_s} s)"
                        )
                        safety.hold(k, "watchdog_hold", why)
                        watchdog_active = True
                    if overdue and in_flight is not None:
                        abandoned.add(in_flight[0])
                        in_flight = None
                    ex.drop()
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
                    if in_flight is None and now >= policy_down_until and ex.want_request(k_obs):
                        guide = ex.guide(k_obs, self.horizon) if self.horizon else None
                        try:
                            worker.submit(self._policy_obs(obs, task), k_obs, guide)
                            in_flight = (k_obs, time.monotonic())
                        except queue.Full:
                            pass
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
                    episodes.append({"success": bool(obs.get(SUCCESS)), "ticks": k})
                    if self.recorder is not None:
                        self.recorder.end_episode(task, bool(obs.get(SUCCESS)))
                    episode_i += 1
                    if episode_i >= cfg.episodes:
                        outcome = "episodes"
                        break
                    with observer.lock:
                        obs = robot.reset(seed=cfg.seed + episode_i)
                        observer.latest = (k, obs)
                    task = cfg.task or obs.get(TASK) or task
                    first_chunk = True
                    ex.drop()
                    if in_flight is not None:
                        abandoned.add(in_flight[0])
                        in_flight = None
                    st = np.asarray(obs["observation/state"], np.float32)
                    safety.last = st.astype(np.float64) if same_layout else safety.last
                    prev_sent, prev_cmd = safety.last, None
                    # The reset took time: restart the grid so that tick k + 1 is one period from now.
                    t_start = time.monotonic() + period - (k + 1) * period
                    ep_k0 = k + 1
                k += 1
        finally:
            if outcome in ("interrupted", "estop") or self.stop_requested.is_set():
                try:
                    robot.stop()
                except Exception as e:  # the robot may be the thing that failed
                    log.error("robot.stop() failed: %s", e)
            worker.stop()
            observer.stop()
            if self.recorder is not None and outcome != "episodes":
                self.recorder.end_episode(task, None)  # the episode in progress, outcome unknown
        summary = timing.summary()
        summary["inference"]["last_error"] = last_error or None
        rec_error = getattr(self.recorder, "error", None)  # a failed recorder never stops the loop; report it
        summary.update(
            {
                "outcome": outcome,
                "mode": self.chunking_cfg.mode,
                "hz": cfg.hz,
                "inject_delay_ms": cfg.inject_delay_ms,
                "episodes": episodes,
                "successes": sum(e["success"] for e in episodes),
                "safety": dict(safety.counts),
                "interventions": safety.interventions,
                "executor": dict(ex.stats),
                "delay_estimate_ticks": ex.delay_ticks,
                "observer_busy_ticks": observer.busy,
                "recorder_error": None if rec_error is None else f"{type(rec_error).__name__}: {rec_error}",
            }
        )
        self.timing, self.safety = timing, safety
        return summary
