"""reach: touch the named coloured target among three.

Two layouts of the same scene:
    reach       the three targets lie anywhere in the workspace, in random colours: the
                policy must find the named colour in the image (visual grounding).
    reach-goal  red, green and blue always lie on their own spot, jittered a little (as
                LIBERO-Goal: one scene, the instruction alone decides the goal): the policy
                must read the instruction; where the named target is follows from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla.sim.scene import COLORS, CYLINDER, add_marker, pick_colors, sample_xy
from vla.sim.tasks.base import Segment, Task, TaskConfig, env_state, phrase, via_point
from vla.spec import SpecError

TEMPLATES = (
    "touch the {c} target",
    "reach the {c} target",
    "move the gripper to the {c} marker",
    "go to the {c} one",
    "put the gripper on the {c} target",
)


@dataclass(frozen=True)
class ReachConfig(TaskConfig):
    horizon_s: float = 5.0
    num_targets: int = 3
    threshold: float = 0.035  # m between grip site and the target's top centre
    # Start poses vary, so the arm's state mid-reach does not tell which target it is heading
    # for: a policy has to look and read the instruction all the way, not only at the start.
    home_noise: float = 0.2


class ReachTask(Task):
    name, env_name = "reach", "Reach"
    robots = ("arm7", "arm5")
    config_cls = ReachConfig

    def _radius(self) -> float:
        return 1.25 * self.robot.cube_half

    def build(self, spec):
        r = self._radius()
        for i in range(self.cfg.num_targets):
            add_marker(spec, f"target{i}", [r, 0.005], type=CYLINDER)

    def bind(self, model):
        self.bodies = [model.body(f"target{i}").id for i in range(self.cfg.num_targets)]
        self.geoms = [model.geom(f"target{i}").id for i in range(self.cfg.num_targets)]
        self.grip = model.site(self.robot.arms[0].site).id

    def layout(self, rng) -> tuple[np.ndarray, list[str]]:
        """Where the targets go ([n, 2] x/y) and their colours."""
        n = self.cfg.num_targets
        xy = sample_xy(rng, n, self.robot.workspace, min_dist=4 * self._radius(), max_reach=self.robot.max_reach)
        return xy, pick_colors(rng, n)

    def reset(self, model, data, rng):
        n = self.cfg.num_targets
        xy, colors = self.layout(rng)
        for i in range(n):
            model.body_pos[self.bodies[i]] = [xy[i, 0], xy[i, 1], 0.005]
            model.geom_rgba[self.geoms[i]] = COLORS[colors[i]]
        k = int(rng.integers(n))
        self.info = {"target": k, "color": colors[k], "target_pos": np.array([xy[k, 0], xy[k, 1], 0.01])}
        self.instruction = phrase(rng, TEMPLATES, c=colors[k])
        return self.instruction

    def success(self, model, data):
        return bool(np.linalg.norm(data.site_xpos[self.grip] - self.info["target_pos"]) < self.cfg.threshold)

    def environment_state(self, model, data):
        p = data.xpos[self.bodies[self.info["target"]]]  # the named target is object and goal at once
        return env_state(p, p)

    def plan(self, env, rng, noise):
        goal = self.info["target_pos"] + np.array([0, 0, 0.012])
        start = env.grip_pos(0)
        above = goal + np.array([0, 0, rng.uniform(0.05, 0.1)])
        segs = [
            Segment(via_point(rng, start, above, noise), tol=None, speed=rng.uniform(0.8, 1.2)),
            Segment(above, tol=None, speed=rng.uniform(0.8, 1.2)),
            Segment(goal, speed=0.6, hold=20, noise=0.2),
        ]
        return [segs]


@dataclass(frozen=True)
class ReachGoalConfig(ReachConfig):
    # Each target lies within +-jitter * (the workspace's shorter side) of its spot, in x and y.
    jitter: float = 0.08


class ReachGoalTask(ReachTask):
    name, env_name = "reach-goal", "ReachGoal"
    config_cls = ReachGoalConfig
    COLOR_ORDER = ("red", "green", "blue")  # spot 0, 1, 2: left to right along y

    def __init__(self, robot, config=None):
        super().__init__(robot, config)
        if self.cfg.num_targets > len(self.COLOR_ORDER):
            raise SpecError(
                f"reach-goal has spots for {len(self.COLOR_ORDER)} colours, got num_targets={self.cfg.num_targets}"
            )

    def spots(self) -> np.ndarray:
        """[num_targets, 2] x/y of each colour's spot: a row across the middle of the workspace."""
        x0, x1, y0, y1 = self.robot.workspace
        n = self.cfg.num_targets
        ys = np.linspace(y0 + 0.2 * (y1 - y0), y1 - 0.2 * (y1 - y0), n)
        return np.stack([np.full(n, (x0 + x1) / 2), ys], 1)

    def layout(self, rng):
        x0, x1, y0, y1 = self.robot.workspace
        j = self.cfg.jitter * min(x1 - x0, y1 - y0)
        n = self.cfg.num_targets
        return self.spots() + rng.uniform(-j, j, size=(n, 2)), list(self.COLOR_ORDER[:n])
