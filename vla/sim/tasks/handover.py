"""handover (bimanual): the left arm picks up the named block and passes it to the right arm.

The blocks are bars (12 x 3.2 x 4 cm) so that two grippers can hold one from above at once:
the left gripper holds the left half, the right gripper takes the right half, the left lets go.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla.sim.ik import nearest_yaw, site_yaw
from vla.sim.scene import COLORS, add_free_box, free_yaw, geom_contacts, pick_colors, sample_xy, set_free_pose
from vla.sim.tasks.base import Segment, Task, TaskConfig, env_state, phrase, via_point

TEMPLATES = (
    "hand the {c} block from the left arm to the right arm",
    "pass the {c} block to the right gripper",
    "pick up the {c} block with the left arm and give it to the right arm",
    "hand over the {c} block from left to right",
    "transfer the {c} block to the right hand",
)
BAR = (0.06, 0.016, 0.02)  # half extents: along the bar, across, up
OFFSET = 0.035  # where each gripper holds the bar, from its centre
MEET = np.array([0.0, 0.08, 0.17])  # bar centre during the handover


@dataclass(frozen=True)
class HandoverConfig(TaskConfig):
    horizon_s: float = 14.0
    num_blocks: int = 2
    lift: float = 0.06  # the bar counts as held once its centre is this high
    settle_steps: int = 5  # the handover state must hold this many control steps in a row


class HandoverTask(Task):
    name, env_name = "handover", "Handover"
    robots = ("bimanual",)
    config_cls = HandoverConfig

    def build(self, spec):
        for i in range(self.cfg.num_blocks):
            add_free_box(spec, f"bar{i}", list(BAR), mass=0.05)

    def bind(self, model):
        n = self.cfg.num_blocks
        self.bar_bodies = [model.body(f"bar{i}").id for i in range(n)]
        self.bar_geoms = [model.geom(f"bar{i}").id for i in range(n)]
        self.right_grip = model.site(self.robot.arms[1].site).id  # where the bar must end up
        self.pads = []
        for arm in self.robot.arms:
            self.pads.append([g for g in range(model.ngeom) if model.body(model.geom_bodyid[g]).name in arm.fingers])

    def reset(self, model, data, rng):
        n = self.cfg.num_blocks
        xy = sample_xy(rng, n, self.robot.workspace, min_dist=0.12)
        colors = pick_colors(rng, n)
        for i in range(n):
            set_free_pose(model, data, f"bar{i}", [xy[i, 0], xy[i, 1], BAR[2] + 0.001], yaw=rng.uniform(-0.35, 0.35))
            model.geom_rgba[self.bar_geoms[i]] = COLORS[colors[i]]
        k = int(rng.integers(n))
        self.info = {"bar": k, "color": colors[k]}
        self._held = 0
        self.instruction = phrase(rng, TEMPLATES, c=colors[k])
        return self.instruction

    def bar_pose(self, data, model) -> tuple[np.ndarray, float]:
        k = self.info["bar"]
        return data.xpos[self.bar_bodies[k]].copy(), free_yaw(data, model, f"bar{k}")

    def environment_state(self, model, data):
        return env_state(data.xpos[self.bar_bodies[self.info["bar"]]], data.site_xpos[self.right_grip])

    def success(self, model, data):
        k = self.info["bar"]
        g = self.bar_geoms[k]
        held_right = geom_contacts(model, data, g, self.pads[1][:1]) and geom_contacts(model, data, g, self.pads[1][1:])
        free_left = not geom_contacts(model, data, g, self.pads[0])
        ok = held_right and free_left and data.xpos[self.bar_bodies[k]][2] > self.cfg.lift
        self._held = self._held + 1 if ok else 0  # contacts flicker for a step: ask for a steady state
        return self._held >= self.cfg.settle_steps

    def plan(self, env, rng, noise):
        left, right = self.robot.arms
        pos, yaw = self.bar_pose(env.data, env.model)
        axis = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        z = max(BAR[2], left.pad_half + 0.004)
        grasp = pos - OFFSET * axis
        grasp[2] = z
        above = grasp + np.array([0, 0, rng.uniform(0.06, 0.1)])
        lyaw = float(nearest_yaw(site_yaw(env.grip_rot(0)), yaw, np.pi))
        meet = MEET + np.array([rng.uniform(-0.03, 0.03), rng.uniform(-0.04, 0.04), rng.uniform(-0.02, 0.03)])
        l_hold = meet - np.array([OFFSET, 0.0, 0.0])
        meet_yaw = float(nearest_yaw(lyaw, 0.0, np.pi))
        sp = lambda: rng.uniform(0.8, 1.2)  # noqa: E731
        left_segs = [
            Segment(via_point(rng, env.grip_pos(0), above, noise), yaw=lyaw, tol=None, speed=sp()),
            Segment(above, yaw=lyaw, tol=0.02),
            Segment(grasp, yaw=lyaw, speed=0.5, tol=0.008, hold=2, noise=0.0),
            Segment(grasp, grip=1.0, tol=None, hold=8, noise=0.0),
            Segment(grasp + np.array([0, 0, 0.1]), grip=1.0, speed=0.6, tol=None),
            Segment(l_hold, grip=1.0, yaw=meet_yaw, speed=0.7, tol=0.015, hold=5, noise=0.0),  # 5: at the meeting point
            Segment(l_hold, grip=1.0, tol=None, start_when=lambda e, p: p[1] >= 5, noise=0.0),  # right has closed
            Segment(l_hold, grip=0.0, tol=None, hold=8, noise=0.0),
            Segment(l_hold + np.array([-0.1, 0.0, 0.06]), grip=0.0, tol=None, hold=5),  # 9: done
        ]

        def r_grasp(e):
            p, y = self.bar_pose(e.data, e.model)
            g = p + OFFSET * np.array([np.cos(y), np.sin(y), 0.0])
            return g

        def r_above(e):
            return r_grasp(e) + np.array([0.0, 0.0, 0.08])

        def r_yaw(e):
            _, y = self.bar_pose(e.data, e.model)
            return float(nearest_yaw(site_yaw(e.grip_rot(1)), y, np.pi))

        right_segs = [
            Segment(
                meet + np.array([OFFSET + 0.05, 0.0, 0.1]), tol=None, speed=sp(), start_when=lambda e, p: p[0] >= 4
            ),
            Segment(r_above, yaw=r_yaw, tol=0.01, start_when=lambda e, p: p[0] >= 6, noise=0.0),
            Segment(r_grasp, yaw=r_yaw, speed=0.4, tol=0.008, hold=2, noise=0.0),
            Segment(r_grasp, grip=1.0, tol=None, hold=8, noise=0.0),
            Segment(lambda e: e.grip_pos(1), grip=1.0, tol=None, hold=1, noise=0.0),
            Segment(lambda e: e.grip_pos(1), grip=1.0, tol=None, start_when=lambda e, p: p[0] >= 8, noise=0.0),
            Segment(lambda e: e.grip_pos(1) + np.array([0.08, 0.0, 0.03]), grip=1.0, speed=0.5, tol=None, hold=20),
        ]
        return [left_segs, right_segs]
