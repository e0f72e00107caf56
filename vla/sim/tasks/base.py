"""What every task provides: scene objects, a randomized reset with an instruction, success, an expert plan.

A task instance belongs to one env (one robot). Its expert plan is a list of segments per arm,
in world coordinates; `vla.sim.expert.ScriptedExpert` turns segments into joint targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from vla.sim.robots import RobotConfig


@dataclass(frozen=True)
class TaskConfig:
    horizon_s: float = 8.0  # episode time limit (seconds of sim time)
    home_noise: float = 0.0  # rad: uniform noise on every arm joint of the start pose


@dataclass
class Segment:
    """Move the grip site to `pos` (straight line, at speed * robot speed), set the gripper, then wait `hold` steps.

    `pos` may be a callable(env) -> xyz, evaluated when the segment starts (closed-loop targets), or
    at every step with `follow` (a moving target: the command chases it at the segment's speed and
    rides along once it has caught up).
    `yaw` is the finger-closing direction on the table (None: keep the current one).
    """

    pos: object
    grip: float = 0.0
    yaw: float | None = None
    speed: float = 1.0
    hold: int = 0
    tol: float = 0.01  # m: how close the real site must get before the hold starts (None: do not wait)
    # Two-arm coordination: the segment starts only once start_when(env, progress) holds, where
    # progress[i] is the index of the segment arm i is on.
    start_when: object = None
    noise: float = 1.0  # scale of the expert's action noise on this segment (0 for grasps and releases)
    follow: bool = False  # re-evaluate a callable `pos` at every step


class Task:
    name = ""  # registry key, e.g. "pick-place"
    env_name = ""  # CamelCase for gymnasium ids, e.g. "PickPlace"
    robots: tuple[str, ...] = ()  # robots this task supports
    config_cls = TaskConfig

    def __init__(self, robot: RobotConfig, config: TaskConfig | None = None):
        self.robot = robot
        self.cfg = config or self.config_cls()
        self.instruction = ""
        self.info: dict = {}  # privileged scene facts for the expert (target positions, names)

    # ---- scene ----
    def build(self, spec: mujoco.MjSpec) -> None:
        """Add this task's objects to the robot's MJCF spec before compiling."""

    def bind(self, model: mujoco.MjModel) -> None:
        """Look up ids in the compiled model."""

    # ---- episode ----
    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> str:
        """Randomize the scene in place (before mj_forward) and return the instruction."""
        raise NotImplementedError

    def success(self, model: mujoco.MjModel, data: mujoco.MjData) -> bool:
        raise NotImplementedError

    def plan(self, env, rng: np.random.Generator, noise: float) -> list[list[Segment]]:
        """Expert segments per arm for the episode that was just reset."""
        raise NotImplementedError

    def environment_state(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray | None:
        """Training-only scene facts, float32 [6] in vla.spec.ENV_STATE_LAYOUT (named object xyz, goal xyz,
        world metres), or None (nothing recorded). Policies never see it."""
        return None

    def max_steps(self) -> int:
        return int(round(self.cfg.horizon_s * self.robot.control_hz))


def env_state(obj, goal) -> np.ndarray:
    """ENV_STATE_LAYOUT: object xyz then goal xyz."""
    return np.concatenate([np.asarray(obj, np.float64)[:3], np.asarray(goal, np.float64)[:3]]).astype(np.float32)


def phrase(rng: np.random.Generator, templates, **kw) -> str:
    return templates[int(rng.integers(len(templates)))].format(**kw)


def via_point(rng: np.random.Generator, start, end, noise: float, lift: float = 0.06) -> np.ndarray:
    """A random point between start and end, raised and pushed sideways: varies the approach path."""
    start, end = np.asarray(start), np.asarray(end)
    t = rng.uniform(0.3, 0.7)
    p = start + t * (end - start)
    d = end[:2] - start[:2]
    side = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9)
    p[:2] += side * rng.normal(0.0, 0.03 + noise)
    p[2] = max(start[2], end[2]) + rng.uniform(0.0, lift)
    return p
