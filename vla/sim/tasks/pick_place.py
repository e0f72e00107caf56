"""pick-place: put the named cube (one of three) in the bin."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla.sim.expert import grasp_yaw
from vla.sim.ik import site_yaw
from vla.sim.scene import BOX, COLORS, add_free_box, free_yaw, geom_contacts, pick_colors, sample_xy
from vla.sim.tasks.base import Segment, Task, TaskConfig, env_state, phrase, via_point

TEMPLATES = (
    "put the {c} cube in the bin",
    "pick up the {c} cube and place it in the bin",
    "place the {c} block into the bin",
    "move the {c} cube to the bin",
    "drop the {c} cube in the container",
)
BIN_RGBA = (0.35, 0.35, 0.4, 1.0)


@dataclass(frozen=True)
class PickPlaceConfig(TaskConfig):
    horizon_s: float = 10.0
    num_cubes: int = 3


def add_bin(spec, name: str, inner: float, height: float, wall: float = 0.005) -> None:
    """An open square bin: a floor and four walls, all static, moved through model.body_pos."""
    body = spec.worldbody.add_body(name=name, pos=[0, 0, 0])
    t = wall / 2
    body.add_geom(
        name=f"{name}_floor", type=BOX, size=[inner + wall, inner + wall, t], pos=[0, 0, t], rgba=list(BIN_RGBA)
    )
    for k, (dx, dy) in enumerate(((1, 0), (-1, 0), (0, 1), (0, -1))):
        size = [t, inner + wall, height / 2] if dx else [inner + wall, t, height / 2]
        body.add_geom(
            name=f"{name}_wall{k}",
            type=BOX,
            size=size,
            pos=[dx * (inner + t), dy * (inner + t), height / 2],
            rgba=list(BIN_RGBA),
        )


class PickPlaceTask(Task):
    name, env_name = "pick-place", "PickPlace"
    robots = ("arm7", "arm5")
    config_cls = PickPlaceConfig

    def _dims(self):
        h = self.robot.cube_half
        return h, 3.2 * h, 2.0 * h  # cube half edge, bin inner half width, bin wall height

    def build(self, spec):
        h, inner, height = self._dims()
        for i in range(self.cfg.num_cubes):
            add_free_box(spec, f"cube{i}", [h, h, h], mass=0.04)
        add_bin(spec, "bin", inner, height)

    def bind(self, model):
        n = self.cfg.num_cubes
        self.cube_bodies = [model.body(f"cube{i}").id for i in range(n)]
        self.cube_geoms = [model.geom(f"cube{i}").id for i in range(n)]
        self.bin_body = model.body("bin").id
        arm = self.robot.arms[0]
        self.pad_geoms = [
            model.geom(g).id for g in range(model.ngeom) if model.body(model.geom_bodyid[g]).name in arm.fingers
        ]

    def reset(self, model, data, rng):
        from vla.sim.scene import set_free_pose

        h, inner, _ = self._dims()
        n = self.cfg.num_cubes
        ws, reach = self.robot.workspace, self.robot.max_reach
        bin_xy = sample_xy(rng, 1, ws, 0.0, max_reach=reach - inner)[0]
        xy = sample_xy(rng, n, ws, min_dist=5 * h, avoid=[bin_xy], max_reach=reach)
        # sample_xy keeps min_dist from the bin centre only; keep cubes clear of the whole bin too.
        while any(np.max(np.abs(p - bin_xy)) < inner + 3 * h for p in xy):
            bin_xy = sample_xy(rng, 1, ws, 0.0, max_reach=reach - inner)[0]
            xy = sample_xy(rng, n, ws, min_dist=5 * h, avoid=[bin_xy], max_reach=reach)
        model.body_pos[self.bin_body] = [bin_xy[0], bin_xy[1], 0.0]
        colors = pick_colors(rng, n)
        for i in range(n):
            set_free_pose(model, data, f"cube{i}", [xy[i, 0], xy[i, 1], h + 0.001], yaw=rng.uniform(-0.6, 0.6))
            model.geom_rgba[self.cube_geoms[i]] = COLORS[colors[i]]
        k = int(rng.integers(n))
        self.info = {"cube": k, "color": colors[k], "bin_pos": np.array([bin_xy[0], bin_xy[1], 0.0])}
        self.instruction = phrase(rng, TEMPLATES, c=colors[k])
        return self.instruction

    def cube_pos(self, data) -> np.ndarray:
        return data.xpos[self.cube_bodies[self.info["cube"]]].copy()

    def environment_state(self, model, data):
        return env_state(self.cube_pos(data), self.info["bin_pos"])

    def success(self, model, data):
        h, inner, height = self._dims()
        p = self.cube_pos(data)
        b = self.info["bin_pos"]
        inside = np.all(np.abs(p[:2] - b[:2]) < inner) and p[2] < height + h
        released = not geom_contacts(model, data, self.cube_geoms[self.info["cube"]], self.pad_geoms)
        return bool(inside and released)

    def plan(self, env, rng, noise):
        h, inner, height = self._dims()
        arm = self.robot.arms[0]
        k = self.info["cube"]
        cube = self.cube_pos(env.data)
        yaw = grasp_yaw(env, site_yaw(env.grip_rot(0)), free_yaw(env.data, env.model, f"cube{k}"))
        grasp_z = max(h, arm.pad_half + 0.004)
        lift = 3 * height + 2 * h + 0.03
        above = np.array([cube[0], cube[1], grasp_z + rng.uniform(0.05, 0.09)])
        grasp = np.array([cube[0], cube[1], grasp_z])
        drop = self.info["bin_pos"] + np.array([0.0, 0.0, height + h + grasp_z + 0.015])
        drop[:2] += rng.uniform(-0.3, 0.3, 2) * (inner - h)
        carry = np.array([drop[0], drop[1], lift])
        sp = lambda: rng.uniform(0.8, 1.2)  # noqa: E731
        return [
            [
                Segment(via_point(rng, env.grip_pos(0), above, noise), yaw=yaw, tol=None, speed=sp()),
                Segment(above, yaw=yaw, speed=sp(), tol=0.02, noise=0.3),
                Segment(grasp, yaw=yaw, speed=0.5, tol=0.008, hold=2, noise=0.0),
                Segment(grasp, grip=1.0, yaw=yaw, tol=None, hold=8, noise=0.0),
                Segment(np.array([cube[0], cube[1], lift]), grip=1.0, speed=0.7, tol=None),
                Segment(carry, grip=1.0, speed=sp(), tol=0.02),
                Segment(drop, grip=1.0, speed=0.6, tol=0.015, hold=2, noise=0.3),
                Segment(drop, grip=0.0, tol=None, hold=10, noise=0.0),
                Segment(drop + np.array([0, 0, 0.05]), grip=0.0, tol=None, hold=20),
            ]
        ]
