"""Chunk execution: which action each control tick sends, and when to ask for the next chunk.

Time is counted in control ticks k (the loop rate). A chunk computed from the observation of
tick k_obs has its first action at tick k_obs + 1; it is resampled from the policy's rate (the
embodiment's `control_hz`, the rate its training data was recorded at) to the loop rate by
linear interpolation, so a 20 Hz policy drives a 50 Hz loop at the speed it was trained at.

Modes (ChunkingConfig.mode):
  sync   execute `execute_s` of a chunk, then hold while the next one is computed; the new
         chunk starts from its first action (the robot stood still, so it is still valid).
  async  ask for the next chunk early (so it lands when `execute_s` of the current one has
         run, using the measured delay); on arrival skip the actions whose time has passed
         and cross-fade from the old plan to the new one over `blend_s`.
  rtc    real-time chunking (Black et al. 2025) by inpainting (alias `rtc-inpaint`): as async,
         but the request carries the current plan as a guide (`guide`, `guide_weights`): weight
         1 for the first d actions (d = measured inference delay, they will execute while the
         chunk is computed), exponentially decaying weights over the rest of the overlap, 0
         after it. The policy inpaints the new chunk to agree with it, so switching at tick
         k_obs + d needs no blending.
  rtc-guided        as rtc, but the request carries `rtc={...}` (the previous plan from the new
                    chunk's first step, the delay d and the execution horizon in policy steps,
                    the weight schedule and the guidance clamp) and the policy steers its flow
                    by PiGDM guidance through the denoiser (vla.model.rtc)
  rtc-guided-nojac  the same without the Jacobian (LeRobot's RTCProcessor): cheaper, weaker
  rtc-trained       the same request for a model trained with `rtc_max_delay`: the first d
                    actions are given to it as already executed, no guidance pass
         All rtc modes switch the new chunk in at tick k_obs + 1 + d, skipping what has run,
         with no blending.
The inference delay is measured online: the ticks between a request's observation and the
tick its chunk is first used, the maximum of the last `delay_window` requests. In policy steps
(what `rtc={...}` carries) it is the number of the new chunk's steps that will have run from
the old plan when it arrives.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from vla.spec import SpecError

MODES = ("sync", "async", "rtc", "rtc-inpaint", "rtc-guided", "rtc-guided-nojac", "rtc-trained")
# The policy-side RTC mode of each chunking mode that has one (Policy.infer(obs, rtc={"mode": ...})).
RTC_MODES = {
    "rtc": "inpaint",
    "rtc-inpaint": "inpaint",
    "rtc-guided": "guided",
    "rtc-guided-nojac": "guided-nojac",
    "rtc-trained": "trained",
}
SCHEDULES = ("zeros", "ones", "linear", "exp")  # as vla.model.rtc (not imported: the loop stays torch-free)


@dataclass(frozen=True)
class ChunkingConfig:
    mode: str = "rtc"
    execute_s: float = 0.5  # run this much of each chunk before the next one takes over
    blend_s: float = 0.2  # async: cross-fade length
    delay_margin: int = 1  # ticks added to the measured delay when timing requests and RTC guides
    delay_window: int = 10  # requests over which the delay estimate is the maximum
    # rtc-guided / -nojac / -trained: what the request's rtc={...} says besides the plan and delay.
    execution_horizon: int = 0  # policy steps of the new chunk guided towards the old plan (0: all it overlaps)
    schedule: str = "linear"  # guidance weights between the delay and the execution horizon
    max_guidance_weight: float = 10.0  # the clamp on the guidance weight (the paper's beta)

    def __post_init__(self):
        if self.mode not in MODES:
            raise SpecError(f"[control] mode: expected one of {list(MODES)}, got {self.mode!r}")
        if not self.execute_s > 0:
            raise SpecError(f"[control] execute_s must be > 0, got {self.execute_s}")
        if self.blend_s < 0 or self.delay_margin < 0 or self.delay_window < 1:
            raise SpecError(
                "[control] blend_s and delay_margin must be >= 0 and delay_window >= 1; got "
                f"{self.blend_s}, {self.delay_margin}, {self.delay_window}"
            )
        if self.schedule not in SCHEDULES:
            raise SpecError(f"[control] schedule: expected one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.execution_horizon < 0 or not self.max_guidance_weight > 0:
            raise SpecError(
                "[control] execution_horizon must be >= 0 (0: the whole overlap) and max_guidance_weight > 0; "
                f"got {self.execution_horizon}, {self.max_guidance_weight}"
            )

    @property
    def rtc(self) -> str | None:
        """The policy-side RTC mode ("inpaint", "guided", "guided-nojac", "trained"), None for sync/async."""
        return RTC_MODES.get(self.mode)


def resample(chunk: np.ndarray, policy_hz: float, loop_hz: float) -> np.ndarray:
    """[h, a] at policy_hz -> [n, a] at loop_hz (same start, linear interpolation)."""
    h = chunk.shape[0]
    if h == 1 or math.isclose(policy_hz, loop_hz):
        return chunk.astype(np.float32)
    r = loop_hz / policy_hz
    n = int(math.floor((h - 1) * r + 1e-9)) + 1
    t = np.arange(n) / r  # in policy steps
    i0 = np.minimum(np.floor(t).astype(int), h - 2)
    f = (t - i0)[:, None]
    return ((1 - f) * chunk[i0] + f * chunk[i0 + 1]).astype(np.float32)


def rtc_weights(h: int, d: int, overlap: int) -> np.ndarray:
    """Guidance weights [h]: 1 for the first d steps, exponential decay until `overlap`, 0 after."""
    w = np.zeros(h, np.float32)
    overlap = min(overlap, h)
    d = min(d, overlap)
    w[:d] = 1.0
    if overlap > d:
        j = np.arange(d, overlap)
        c = (overlap - j) / (overlap - d + 1)
        w[d:overlap] = c * np.expm1(c) / (math.e - 1)
    return w


class ChunkExecutor:
    """Owned by the control thread (not thread-safe). Call order per tick k:
    on_chunk(...) for a chunk that arrived -> action(k) -> (after observing) request(k)."""

    def __init__(self, cfg: ChunkingConfig, loop_hz: float, policy_hz: float):
        self.cfg = cfg
        self.loop_hz, self.policy_hz = float(loop_hz), float(policy_hz)
        self.r = self.loop_hz / self.policy_hz  # loop ticks per policy step
        self.plan: np.ndarray | None = None  # [n, a] at loop rate
        self.t0 = 0  # tick of plan[0]
        self.exec_ticks = max(1, round(cfg.execute_s * self.loop_hz))
        self.blend_ticks = round(cfg.blend_s * self.loop_hz)
        self.delays: deque[int] = deque(maxlen=cfg.delay_window)
        self.resync = True  # the next chunk starts from its first action (start, after a hold)
        self.stats = {"chunks": 0, "stale": 0, "switches": 0}

    # ---- delay estimate ----
    @property
    def delay_ticks(self) -> int:
        return (max(self.delays) if self.delays else 0) + self.cfg.delay_margin

    # ---- what to send ----
    def action(self, k: int) -> np.ndarray | None:
        """The planned action for tick k, or None (nothing planned: the loop holds)."""
        if self.plan is None:
            return None
        i = k - self.t0
        limit = self.exec_ticks if self.cfg.mode == "sync" else len(self.plan)
        if 0 <= i < min(limit, len(self.plan)):
            return self.plan[i]
        return None

    def remaining(self, k: int) -> int:
        """Planned actions left after tick k."""
        return 0 if self.plan is None else max(0, self.t0 + len(self.plan) - (k + 1))

    # ---- when to ask, and with what guide ----
    def want_request(self, k: int) -> bool:
        """Should a request go out with the observation of tick k (none is in flight)?"""
        if self.plan is None or self.resync:
            return True
        ran = k + 1 - self.t0  # actions of the current plan sent by the end of tick k
        if self.cfg.mode == "sync":
            return ran >= min(self.exec_ticks, len(self.plan))
        # The chunk asked for now is first used delay_ticks later, after ran - 1 + delay_ticks actions of this
        # plan: ask when that makes exec_ticks (or the plan is about to run out).
        return ran + self.delay_ticks - 1 >= self.exec_ticks or self.remaining(k) <= self.delay_ticks

    @property
    def inference_delay(self) -> int:
        """Policy steps of a new chunk that will have run from the old plan when it arrives: it is
        first used at tick k_obs + delay_ticks, its step j is meant for tick k_obs + 1 + j * r."""
        return math.ceil(max(0, self.delay_ticks - 1) / self.r - 1e-9)

    def _old_plan_at(self, k: int, horizon: int) -> tuple[np.ndarray, int] | None:
        """The current plan sampled at the policy steps of a chunk requested at tick k ([horizon, a],
        held at its last action past its end), and how many of those steps it covers."""
        if self.plan is None or self.resync:
            return None
        # Policy step j of the new chunk happens at tick k + 1 + j * r; sample the old plan there.
        pos = (k + 1 + np.arange(horizon) * self.r) - self.t0
        n = len(self.plan)
        overlap = int(np.sum(pos <= n - 1))
        if overlap == 0:
            return None
        p = np.clip(pos, 0, n - 1)
        i0 = np.minimum(np.floor(p).astype(int), max(n - 2, 0))
        f = (p - i0)[:, None] if n > 1 else np.zeros((horizon, 1))
        i1 = np.minimum(i0 + 1, n - 1)
        return ((1 - f) * self.plan[i0] + f * self.plan[i1]).astype(np.float32), overlap

    def guide(self, k: int, horizon: int) -> tuple[np.ndarray, np.ndarray] | None:
        """rtc (inpainting): (guide [horizon, a] at policy rate, weights [horizon]) for a request at tick k."""
        if self.cfg.rtc != "inpaint":
            return None
        old = self._old_plan_at(k, horizon)
        if old is None:
            return None
        guide, overlap = old
        d = math.ceil(self.delay_ticks / self.r)
        return guide, rtc_weights(horizon, d, overlap)

    def request(self, k: int, horizon: int) -> dict:
        """Keyword arguments for policy.infer with the observation of tick k: {} (sync, async, or no
        plan to agree with), guide / guide_weights (rtc), or rtc={...} (rtc-guided, -nojac, -trained)."""
        mode = self.cfg.rtc
        if mode is None or horizon < 1:
            return {}
        if mode == "inpaint":
            g = self.guide(k, horizon)
            return {} if g is None else {"guide": g[0], "guide_weights": g[1]}
        old = self._old_plan_at(k, horizon)
        if old is None:
            return {}
        plan, overlap = old
        return {
            "rtc": {
                "mode": mode,
                "prev_chunk": plan[:overlap],
                "inference_delay": min(self.inference_delay, overlap),
                "execution_horizon": min(self.cfg.execution_horizon or overlap, overlap),
                "schedule": self.cfg.schedule,
                "max_guidance_weight": float(self.cfg.max_guidance_weight),
            }
        }

    # ---- a chunk arrived ----
    def on_chunk(self, chunk: np.ndarray, k_obs: int, k_now: int) -> bool:
        """Install a chunk computed from tick k_obs's observation; it is first used at tick k_now.
        Returns False when it came too late to be used (stale)."""
        new = resample(np.asarray(chunk, np.float32), self.policy_hz, self.loop_hz)
        self.stats["chunks"] += 1
        self.delays.append(k_now - k_obs)
        if self.resync or self.plan is None or self.cfg.mode == "sync":
            self.plan, self.t0, self.resync = new, k_now, False
            self.stats["switches"] += 1
            return True
        offset = k_now - (k_obs + 1)
        if offset >= len(new):
            self.stats["stale"] += 1
            return False
        new = new[offset:]
        if self.cfg.mode == "async" and self.blend_ticks > 0:
            new = new.copy()
            for i in range(min(self.blend_ticks, len(new))):
                old = self.action(k_now + i)
                if old is None:
                    break
                w = (i + 1) / (self.blend_ticks + 1)
                new[i] = (1 - w) * old + w * new[i]
        self.plan, self.t0 = new, k_now
        self.stats["switches"] += 1
        return True

    def drop(self) -> None:
        """Forget the plan (watchdog hold, e-stop): the next chunk starts fresh."""
        self.plan, self.resync = None, True


@dataclass(frozen=True)
class SimExecutor:
    """What vla.sim.rollout and vla.sim.eval take as `executor`: `SimExecutor(cfg)(hz, delay_steps)`
    makes a ChunkExecutor for a simulated delay. The loop and the policy both run at the env's rate
    `hz` and every chunk arrives `delay_steps` ticks late. The delay is exact there, so no margin
    is added, and the estimate starts at it (where a real loop's online estimate settles after its
    first request). Picklable, for evaluation worker processes."""

    cfg: ChunkingConfig

    @property
    def mode(self) -> str:
        return self.cfg.mode

    def __call__(self, hz: float, delay_steps: int) -> ChunkExecutor:
        ex = ChunkExecutor(replace(self.cfg, delay_margin=0), hz, hz)
        ex.delays.append(delay_steps + 1)  # the chunk of tick k is first used at tick k + 1 + delay
        return ex
