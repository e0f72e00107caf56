"""Scripted experts: follow a task's Cartesian plan with IK, with noise for diverse data.

The task plans straight-line segments for each arm's grip site (with random via points and
speeds when asked); each control step the commanded site point advances along the current
segment and IK turns it into joint targets. `noise` (rad) is the standard deviation of a
temporally correlated (Ornstein-Uhlenbeck) perturbation of the joint targets during free-space
motion; segments that need precision (grasp, release, push) scale it down. The data records
the action actually executed, and the expert re-plans from the measured state at each segment,
so it recovers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vla.sim.ik import down_rotation, nearest_yaw, site_yaw
from vla.sim.tasks.base import Segment

YAW_RATE = 3.0  # rad/s
OU_DECAY = 0.8
MAX_WAIT = 40  # steps to wait for the real site to reach a segment's end before moving on


@dataclass
class _ArmState:
    cmd: np.ndarray
    q: np.ndarray
    yaw: float
    grip: float
    seg: int = 0
    target: np.ndarray | None = None
    yaw_target: float | None = None
    wait: int = 0
    held: int = 0
    rot: object = field(default=None)


class ScriptedExpert:
    """PolicyLike scripted expert for a SimEnv: `act(obs) -> action`, `infer(obs) -> {"actions": [1, a]}`."""

    def __init__(self, env, *, noise: float = 0.0, seed: int | None = None):
        self.env = env.unwrapped
        self.noise = float(noise)
        self.rng = np.random.default_rng(seed)
        self._episode = None

    def reset(self) -> None:
        self._episode = None

    def _start(self) -> None:
        e = self.env
        self.plan: list[list[Segment]] = e.task.plan(e, self.rng, self.noise)
        self.arms = [
            _ArmState(cmd=e.grip_pos(i), q=e.arm_q(i), yaw=site_yaw(e.grip_rot(i)), grip=e.gripper_state(i))
            for i in range(len(e.robot.arms))
        ]
        self._ou = np.zeros(e.action_space.shape, np.float64)
        self._episode = e.episode_id

    @property
    def done(self) -> bool:
        return self._episode is not None and all(a.seg >= len(p) for a, p in zip(self.arms, self.plan))

    def _advance(self, i: int, arm: _ArmState) -> None:
        e = self.env
        segs = self.plan[i]
        if arm.seg >= len(segs):
            return
        s = segs[arm.seg]
        if arm.target is None and s.start_when is not None and not s.start_when(e, tuple(a.seg for a in self.arms)):
            return
        if s.follow and arm.target is not None:  # a moving target: where it is (or will be) now
            arm.target = np.asarray(s.pos(e), np.float64)
        if arm.target is None:
            arm.target = np.asarray(s.pos(e) if callable(s.pos) else s.pos, np.float64)
            yaw = arm.yaw if s.yaw is None else float(s.yaw(e) if callable(s.yaw) else s.yaw)
            arm.yaw_target = arm.yaw + (yaw - arm.yaw + np.pi) % (2 * np.pi) - np.pi  # the same yaw, nearest turn
        arm.grip = s.grip
        step = e.robot.speed * s.speed / e.robot.control_hz
        delta = arm.target - arm.cmd
        dist = float(np.linalg.norm(delta))
        arm.cmd = arm.target.copy() if dist <= step else arm.cmd + delta / dist * step
        dy = arm.yaw_target - arm.yaw
        arm.yaw += float(np.clip(dy, -YAW_RATE / e.robot.control_hz, YAW_RATE / e.robot.control_hz))
        if dist > step or abs(dy) > 1e-6:
            return
        reached = s.tol is None or np.linalg.norm(e.grip_pos(i) - arm.target) < s.tol or arm.wait >= MAX_WAIT
        if not reached:
            arm.wait += 1
            return
        arm.held += 1
        if arm.held > s.hold:
            arm.seg += 1
            arm.target, arm.wait, arm.held = None, 0, 0

    def act(self, obs=None) -> np.ndarray:
        e = self.env
        if self._episode != e.episode_id:
            self._start()
        out, scale = [], []
        qpos = e.data.qpos.copy()
        for i, arm in enumerate(self.arms):
            self._advance(i, arm)
            arm.q = e.iks[i].solve(qpos, arm.q, arm.cmd, down_rotation(arm.yaw))
            out += [arm.q, [arm.grip]]
            segs = self.plan[i]
            s = segs[arm.seg].noise if arm.seg < len(segs) else 0.0
            scale += [np.full(len(arm.q), s), [0.0]]  # never perturb the gripper
        a = np.concatenate(out)
        if self.noise > 0:
            # Ornstein-Uhlenbeck noise with stationary standard deviation `noise`.
            self._ou = OU_DECAY * self._ou + np.sqrt(1 - OU_DECAY**2) * self.noise * self.rng.standard_normal(a.shape)
            a = a + np.concatenate(scale) * self._ou
        return np.clip(a, e.action_space.low, e.action_space.high).astype(np.float32)

    def infer(self, obs: dict) -> dict:
        return {"actions": self.act(obs)[None]}


def grasp_yaw(env, current: float, obj_yaw: float, symmetry: float = np.pi / 2) -> float:
    """Finger yaw aligned with an object's faces, the one closest to the gripper's current yaw."""
    return float(nearest_yaw(current, obj_yaw, symmetry))


def make_expert(env, *, noise: float = 0.0, seed: int | None = None):
    """The scripted expert for a built-in or external env (reset()/act(obs)/infer(obs))."""
    maker = getattr(env.unwrapped, "make_expert", None)
    if maker is not None:
        return maker(noise=noise, seed=seed)
    return ScriptedExpert(env, noise=noise, seed=seed)
