"""Safety layer between the policy and the robot: every action passes `SafetyFilter.filter`.

In order, per tick:
  1. shape / NaN / Inf: a bad action is rejected and the robot holds its last safe command;
  2. joint limits: clamp to the embodiment's `Dim.low/high` (joint dims, unit rad or m, shrunk by
     `limit_margin`; a gripper's 0..1 command keeps its full range, so "open" is not an intervention);
  3. velocity: |a_t - a_{t-1}| <= max_velocity * dt per dim;
  4. acceleration: |v_t - v_{t-1}| <= max_acceleration * dt per dim.
Holds (watchdog, e-stop, no plan yet) re-send the last safe command. Every intervention is
counted by kind and, for the per-dim kinds, by action name (`by_dim`: a gripper command a hair past
its range and an elbow at its limit read differently), logged (the first of each kind as a warning,
then at debug level) and kept as an event list for the run's timing log.

Velocity and acceleration limits are not part of the Embodiment spec: they come from the
launch file's [safety] section, as a number for every dim, a list (one per action dim), or a
table by action name with an optional `default`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from vla.spec import Embodiment, SpecError

log = logging.getLogger(__name__)

KINDS = ("nonfinite", "bad_shape", "position_limit", "velocity_limit", "acceleration_limit", "watchdog_hold", "estop")
MAX_EVENTS = 100_000
JOINT_UNITS = ("rad", "m")  # dims limit_margin applies to


@dataclass(frozen=True)
class SafetyConfig:
    max_velocity: float | list | dict = math.inf  # action units per second
    max_acceleration: float | list | dict = math.inf  # action units per second^2
    limit_margin: float = 0.0  # keep this far inside the embodiment's joint limits (dims in rad or m)
    watchdog_s: float = 0.5  # hold when a requested chunk is this late or the policy is unreachable
    estop_key: str = "e"  # key (in a terminal) that triggers the e-stop; SIGUSR1 does too

    def __post_init__(self):
        for name in ("max_velocity", "max_acceleration"):
            v = getattr(self, name)
            vals = list(v.values()) if isinstance(v, dict) else (v if isinstance(v, (list, tuple)) else [v])
            for x in vals:
                if not isinstance(x, (int, float)) or not x > 0:
                    raise SpecError(f"[safety] {name}: expected positive numbers, got {x!r}")
        if self.limit_margin < 0:
            raise SpecError(f"[safety] limit_margin must be >= 0, got {self.limit_margin}")
        if not self.watchdog_s > 0:
            raise SpecError(f"[safety] watchdog_s must be > 0, got {self.watchdog_s}")
        if len(self.estop_key) != 1:
            raise SpecError(f"[safety] estop_key must be one character, got {self.estop_key!r}")


def per_dim(value, emb: Embodiment, what: str) -> np.ndarray:
    """A scalar, list or {name: value, default: value} table -> float64 [a]."""
    names = [d.name for d in emb.actions]
    if isinstance(value, dict):
        unknown = set(value) - set(names) - {"default"}
        if unknown:
            raise SpecError(
                f"[safety] {what}: unknown action names {sorted(unknown)}; embodiment {emb.name!r} has {names}"
            )
        default = value.get("default", math.inf)
        return np.array([value.get(n, default) for n in names], np.float64)
    if isinstance(value, (list, tuple)):
        if len(value) != len(names):
            raise SpecError(
                f"[safety] {what}: expected {len(names)} values (one per action dim of {emb.name!r}), got {len(value)}"
            )
        return np.array(value, np.float64)
    return np.full(len(names), float(value))


@dataclass
class Intervention:
    tick: int
    kind: str
    dims: list = field(default_factory=list)
    detail: str = ""

    def to_dict(self) -> dict:
        return {"tick": self.tick, "kind": self.kind, "dims": self.dims, "detail": self.detail}


class SafetyFilter:
    def __init__(self, emb: Embodiment, cfg: SafetyConfig, dt: float, *, initial: np.ndarray | None = None):
        self.emb, self.cfg, self.dt = emb, cfg, float(dt)
        margin = np.array([cfg.limit_margin if d.unit in JOINT_UNITS else 0.0 for d in emb.actions])
        self.low = np.array([d.low for d in emb.actions], np.float64) + margin
        self.high = np.array([d.high for d in emb.actions], np.float64) - margin
        self.vmax = per_dim(cfg.max_velocity, emb, "max_velocity")
        self.amax = per_dim(cfg.max_acceleration, emb, "max_acceleration")
        self.counts = {k: 0 for k in KINDS}
        self.by_dim: dict[str, dict[str, int]] = {}  # kind -> action name -> ticks it acted on that dim
        self.events: list[Intervention] = []
        self.last: np.ndarray | None = (
            None if initial is None else np.clip(np.asarray(initial, np.float64), self.low, self.high)
        )
        self.vel = np.zeros(emb.action_dim)

    def _record(self, tick: int, kind: str, dims=(), detail: str = "") -> None:
        self.counts[kind] += 1
        for d in dims:
            per = self.by_dim.setdefault(kind, {})
            name = self.emb.actions[int(d)].name
            per[name] = per.get(name, 0) + 1
        if len(self.events) < MAX_EVENTS:
            self.events.append(Intervention(tick, kind, [int(d) for d in dims], detail))
        level = logging.WARNING if self.counts[kind] == 1 else logging.DEBUG
        log.log(
            level,
            "safety: %s at tick %d%s%s",
            kind,
            tick,
            f" dims {list(dims)}" if len(dims) else "",
            f" ({detail})" if detail else "",
        )

    @property
    def interventions(self) -> int:
        return sum(self.counts.values())

    def hold(self, tick: int, kind: str | None = None, detail: str = "") -> np.ndarray | None:
        """The command that keeps the robot where it was told to be (None before any command)."""
        if kind is not None:
            self._record(tick, kind, (), detail)
        self.vel = np.zeros_like(self.vel)
        return None if self.last is None else self.last.astype(np.float32)

    def filter(self, tick: int, action) -> np.ndarray | None:
        """Policy action -> safe action for this tick (None only if nothing safe was ever sent)."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.emb.action_dim,):
            self._record(tick, "bad_shape", (), f"expected ({self.emb.action_dim},), got {a.shape}")
            return self.hold(tick)
        bad = ~np.isfinite(a)
        if bad.any():
            self._record(tick, "nonfinite", np.flatnonzero(bad))
            return self.hold(tick)
        out = np.clip(a, self.low, self.high)
        moved = np.flatnonzero(out != a)
        if moved.size:
            self._record(tick, "position_limit", moved)
        if self.last is not None:
            dt = self.dt
            v = (out - self.last) / dt
            v_lim = np.clip(v, -self.vmax, self.vmax)
            over = np.flatnonzero(v_lim != v)
            if over.size:
                self._record(tick, "velocity_limit", over, f"max |v| {np.abs(v[over]).max():.3g}")
            acc = (v_lim - self.vel) / dt
            acc_lim = np.clip(acc, -self.amax, self.amax)
            over = np.flatnonzero(acc_lim != acc)
            if over.size:
                self._record(tick, "acceleration_limit", over, f"max |acc| {np.abs(acc[over]).max():.3g}")
                v_lim = self.vel + acc_lim * dt
                v_lim = np.clip(v_lim, -self.vmax, self.vmax)
            out = np.clip(self.last + v_lim * dt, self.low, self.high)
            self.vel = (out - self.last) / dt
        self.last = out
        return out.astype(np.float32)


def describe_interventions(counts: dict, by_dim: dict | None = None) -> str:
    """A run's `safety` and `safety_by_dim` in words: "4 (position limit 3: gripper 3; estop 1)", or "0"."""
    by_dim = by_dim or {}

    def one(kind: str, n: int) -> str:
        dims = ", ".join(f"{name} {c}" for name, c in sorted(by_dim.get(kind, {}).items(), key=lambda x: -x[1]))
        return f"{kind.replace('_', ' ')} {n}" + (f": {dims}" if dims else "")

    total = sum(counts.values())
    return f"{total} ({'; '.join(one(k, n) for k, n in counts.items() if n)})" if total else "0"
