"""track: keep the gripper over a target that circles on a turntable, for one second.

A dynamic task, where acting on a stale plan fails. A grey turntable in the middle of the
workspace carries a coloured target on a circle of random radius and start angle; it turns
counter-clockwise at a fixed rim speed (a fraction of the robot's expert speed), so the target
never stops. Success: the grip site within `threshold` of the target (horizontally, and no
higher than `max_height` above it) for `hold_s` seconds in a row, in sim time.

The motion follows from one image: the direction and speed are fixed and the turntable's
centre and the target show where it goes next, so a policy that sees a single frame can plan
ahead (the scripted expert does the same: it aims where the target will be when it gets there,
then rides along). The rim speed is chosen so that 300 ms of staleness costs twice the threshold
(arm7: 0.24 m/s against 3.5 cm); a policy whose chunk starts 300 ms late trails the target by
that much. The turntable is a frictionless hinge spun up at reset: MuJoCo keeps it turning at
a constant rate, so the target moves without any per-step hook in the env.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from vla.sim.scene import COLORS, CYLINDER, GREY, pick_colors
from vla.sim.tasks.base import Segment, Task, TaskConfig, env_state, phrase

TEMPLATES = (
    "follow the {c} target",
    "keep the gripper over the {c} target",
    "track the moving {c} marker",
    "stay above the {c} disc as it turns",
    "chase the {c} target on the turntable",
)
TABLE_RGBA = (0.45, 0.45, 0.48, 1.0)


@dataclass(frozen=True)
class TrackConfig(TaskConfig):
    horizon_s: float = 6.0
    speed: float = 0.6  # rim speed of the target, as a fraction of the robot's expert speed (arm7: 0.24 m/s)
    radius: tuple[float, float] = (0.6, 0.85)  # circle radius range, fraction of the workspace's half width
    threshold: float = 1.75  # horizontal success distance, in cube half edges (arm7: 3.5 cm, arm5: 2.2 cm)
    max_height: float = 0.06  # m: the grip site may be at most this far above the target's top
    hold_s: float = 1.0  # success needs the grip site over the target this long, without a break
    hover: float = 0.025  # m above the target's top where the expert keeps the grip site
    home_noise: float = 0.2


class TrackTask(Task):
    name, env_name = "track", "Track"
    robots = ("arm7", "arm5")
    config_cls = TrackConfig

    # ---- geometry ----
    def _centre(self) -> np.ndarray:
        x0, x1, y0, y1 = self.robot.workspace
        return np.array([(x0 + x1) / 2, (y0 + y1) / 2])

    def _half_width(self) -> float:
        x0, x1, y0, y1 = self.robot.workspace
        return min(x1 - x0, y1 - y0) / 2

    def _marker(self) -> float:
        return 1.25 * self.robot.cube_half

    @property
    def rim_speed(self) -> float:
        """m/s of the target along its circle."""
        return self.cfg.speed * self.robot.speed

    @property
    def threshold(self) -> float:
        return self.cfg.threshold * self.robot.cube_half

    # ---- scene ----
    def build(self, spec):
        table = spec.worldbody.add_body(name="turntable", pos=[0, 0, 0.001])
        # Frictionless and undamped, whatever the robot's MJCF defaults say: it keeps its spin.
        table.add_joint(
            name="turntable", type=mujoco.mjtJoint.mjJNT_HINGE, axis=[0, 0, 1], damping=0, armature=0, frictionloss=0
        )
        geom = dict(type=CYLINDER, contype=0, conaffinity=0, mass=0.05)
        r = self._half_width()
        table.add_geom(name="turntable", size=[r, 0.001, 0], rgba=list(TABLE_RGBA), **geom)
        target = table.add_body(name="track_target", pos=[r * 0.7, 0, 0.004])
        target.add_geom(name="track_target", size=[self._marker(), 0.003, 0], rgba=list(GREY), **geom)
        target.add_site(name="track_target_top", pos=[0, 0, 0.003], size=[0.002, 0, 0])

    def bind(self, model):
        self.table_body = model.body("turntable").id
        self.table_geom = model.geom("turntable").id
        self.target_body = model.body("track_target").id
        self.target_geom = model.geom("track_target").id
        self.top = model.site("track_target_top").id
        self.grip = model.site(self.robot.arms[0].site).id
        j = model.joint("turntable").id
        self.qadr, self.dadr = model.jnt_qposadr[j], model.jnt_dofadr[j]

    # ---- episode ----
    def reset(self, model, data, rng):
        c, hw = self._centre(), self._half_width()
        radius = hw * rng.uniform(*self.cfg.radius)
        model.body_pos[self.table_body] = [c[0], c[1], 0.001]
        model.body_pos[self.target_body] = [radius, 0.0, 0.004]
        model.geom_size[self.table_geom][0] = radius + 1.6 * self._marker()
        color = pick_colors(rng, 1)[0]
        model.geom_rgba[self.target_geom] = COLORS[color]
        data.qpos[self.qadr] = rng.uniform(-np.pi, np.pi)
        data.qvel[self.dadr] = self.rim_speed / radius  # rad/s, counter-clockwise seen from above
        self.info = {"color": color, "centre": c, "radius": radius, "omega": self.rim_speed / radius}
        self.instruction = phrase(rng, TEMPLATES, c=color)
        self._since: float | None = None  # sim time since the grip site has been over the target
        return self.instruction

    def target_pos(self, data) -> np.ndarray:
        """The target's top centre now (world metres)."""
        return data.site_xpos[self.top].copy()

    def predict(self, data, dt: float) -> np.ndarray:
        """Where the target's top centre will be `dt` seconds from now."""
        p = self.target_pos(data)
        c = self.info["centre"]
        a = np.arctan2(p[1] - c[1], p[0] - c[0]) + self.info["omega"] * dt
        r = self.info["radius"]
        return np.array([c[0] + r * np.cos(a), c[1] + r * np.sin(a), p[2]])

    def over_target(self, data) -> bool:
        p, g = self.target_pos(data), data.site_xpos[self.grip]
        return bool(np.linalg.norm(g[:2] - p[:2]) < self.threshold and g[2] - p[2] < self.cfg.max_height)

    def success(self, model, data):
        # Counted in sim time, not calls: the env checks once per control step, the sim robot
        # once per physics tick.
        if not self.over_target(data):
            self._since = None
            return False
        if self._since is None:
            self._since = float(data.time)
        return float(data.time) - self._since >= self.cfg.hold_s - 1e-9

    def environment_state(self, model, data):
        p = self.target_pos(data)  # the target is object and goal at once
        return env_state(p, p)

    # ---- expert ----
    def plan(self, env, rng, noise):
        up = np.array([0.0, 0.0, self.cfg.hover])
        speed = rng.uniform(0.9, 1.1)
        lead = 0.1  # s: the arm's position servos lag the command by about this much

        def intercept(env):
            """Where to meet the target: the point it reaches when the command, at this segment's
            speed, could be there (a few fixed-point iterations)."""
            here = env.grip_pos(0)
            t = 0.0
            for _ in range(4):
                goal = self.predict(env.data, t + lead) + up
                t = float(np.linalg.norm(goal - here)) / (speed * self.robot.speed)
            return goal

        def ride(env):
            return self.predict(env.data, lead) + up

        segs = [
            Segment(intercept, speed=speed, tol=None, follow=True),
            # Rides along for the rest of the episode (the env ends it at success).
            Segment(ride, speed=1.5, tol=None, follow=True, hold=10_000, noise=0.2),
        ]
        return [segs]
