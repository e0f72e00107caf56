"""Scripted bimanual experts for gym-aloha, after the ACT paper's description of its sim demos.

Transfer-cube: the right arm grasps the cube from above (tilted 15 degrees away from its base) and lifts it to a
meeting point; the left arm approaches horizontally with its fingers closing vertically, closes
on the free half of the cube, the right arm opens and backs away. Insertion: each arm grasps
its object from above (left: socket, right: peg), both lift them to a meeting point with their
axes aligned, and the right arm slides the peg into the socket, aiming from the measured poses.

Each arm follows time-stamped waypoints of its fingertip point (the `camera_focus` body of
gym-aloha's model, 15 cm along the gripper) with an orientation; waypoints may be functions of
the env, evaluated when the arm starts moving towards them (closed loop on measured object
poses). IK on MuJoCo Jacobians turns them into the 14-D joint action.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from vla.sim.ik import ArmIK, IKConfig

JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
# Site-convention axes (x, y = finger closing, z = approach) in gym-aloha's gripper body frame,
# whose x axis points along the gripper and y along the finger rail.
FRAME = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
OPEN, CLOSED = 1.0, 0.0
MEET = np.array([0.0, 0.5, 0.25])


def rot(approach, fingers) -> np.ndarray:
    z = np.asarray(approach, float) / np.linalg.norm(approach)
    y = np.asarray(fingers, float)
    y = y - z * np.dot(y, z)
    y /= np.linalg.norm(y)
    return np.stack([np.cross(y, z), y, z], axis=1)


DOWN = rot([0, 0, -1], [0, 1, 0])
HORIZONTAL_LEFT = rot([1, 0, 0], [0, 0, 1])  # left arm pointing right, fingers closing vertically


class AlohaExpert:
    def __init__(self, env, *, noise: float = 0.0, seed: int | None = None):
        self.env = env.unwrapped
        self.noise = float(noise)
        self.rng = np.random.default_rng(seed)
        m = self.env.model
        self.iks = [
            ArmIK(
                m,
                tuple(f"vx300s_{s}/{j}" for j in JOINTS),
                body=f"vx300s_{s}/camera_focus",
                frame=FRAME,
                cfg=IKConfig(iters=10),
            )
            for s in ("left", "right")
        ]
        self._episode = None

    def reset(self) -> None:
        self._episode = None

    # ---- scene facts ----
    def _pos(self, body: str) -> np.ndarray:
        return self.env.data.xpos[self.env.model.body(body).id].copy()

    def _tip(self, arm: int) -> tuple[np.ndarray, np.ndarray]:
        return self.iks[arm].fk(self.env.data.qpos)

    # ---- plans: per arm, a list of (t, pos, rot, gripper) ----
    def _plan_transfer(self):
        jitter = lambda s: self.rng.normal(0.0, s, 3) * (1 + 10 * self.noise)  # noqa: E731
        cube = self._pos("box")
        meet = MEET + jitter(0.01)
        # Tilt towards the right arm's base, fingers across that direction: the waist does the aiming.
        d = cube[:2] - self._pos("vx300s_right")[:2]
        d /= np.linalg.norm(d)
        tilt = rot([0.26 * d[0], 0.26 * d[1], -0.966], [-d[1], d[0], 0.0])
        grasp = cube + tilt[:, 2] * 0.012
        grasp[2] = max(grasp[2], 0.012)
        held = lambda e: self._tip(1)[0] - self._pos("box")  # noqa: E731  # tip relative to the cube
        right = [
            (90, grasp - tilt[:, 2] * 0.08 + jitter(0.01), tilt, OPEN),
            (130, grasp, tilt, OPEN),
            (160, grasp, tilt, CLOSED),
            (200, grasp + np.array([0, 0, 0.1]), tilt, CLOSED),
            (230, lambda e: meet + held(e), tilt, CLOSED),
            (320, lambda e: meet + held(e), tilt, CLOSED),
            (335, lambda e: self._tip(1)[0], tilt, OPEN),
            (380, lambda e: self._tip(1)[0] - tilt[:, 2] * 0.1, tilt, OPEN),
        ]
        left = [
            (150, meet + np.array([-0.12, 0, 0]) + jitter(0.01), HORIZONTAL_LEFT, OPEN),
            (250, lambda e: self._pos("box") + np.array([-0.12, 0, 0]), HORIZONTAL_LEFT, OPEN),
            (290, lambda e: self._pos("box") + np.array([0.004, 0, 0]), HORIZONTAL_LEFT, OPEN),
            (310, lambda e: self._tip(0)[0], HORIZONTAL_LEFT, CLOSED),
            (340, lambda e: self._tip(0)[0], HORIZONTAL_LEFT, CLOSED),
            (380, lambda e: self._tip(0)[0] + np.array([-0.08, 0, 0.03]), HORIZONTAL_LEFT, CLOSED),
        ]
        return [left, right]

    def _plan_insertion(self):
        jitter = lambda s: self.rng.normal(0.0, s, 3) * (1 + 10 * self.noise)  # noqa: E731
        peg, socket = self._pos("peg"), self._pos("socket")
        meet = MEET + jitter(0.01)
        s_grasp = socket.copy()
        s_grasp[2] = 0.006
        p_grasp = peg + np.array([0.03, 0, 0.0])
        p_grasp[2] = 0.004

        def socket_at_meet(e):  # left tip so that the socket centre sits 8 cm left of the meeting point
            return meet + np.array([-0.08, 0, 0]) + (self._tip(0)[0] - self._pos("socket"))

        def peg_before(gap):
            def target(e):  # right tip so that the peg's left end is `gap` short of the socket's right end
                p, s = self._pos("peg"), self._pos("socket")
                want = s + np.array([0.06 - gap + 0.06, 0, 0])
                return self._tip(1)[0] + (want - p)

            return target

        left = [
            (90, s_grasp + np.array([0, 0, 0.08]) + jitter(0.005), DOWN, OPEN),
            (130, s_grasp, DOWN, OPEN),
            (160, s_grasp, DOWN, CLOSED),
            (200, s_grasp + np.array([0, 0, 0.12]), DOWN, CLOSED),
            (240, socket_at_meet, DOWN, CLOSED),
            (400, socket_at_meet, DOWN, CLOSED),
        ]
        right = [
            (90, p_grasp + np.array([0, 0, 0.08]) + jitter(0.005), DOWN, OPEN),
            (130, p_grasp, DOWN, OPEN),
            (160, p_grasp, DOWN, CLOSED),
            (200, p_grasp + np.array([0, 0, 0.12]), DOWN, CLOSED),
            (250, lambda e: meet + np.array([0.12, 0, 0]) + (self._tip(1)[0] - self._pos("peg")), DOWN, CLOSED),
            (290, peg_before(0.03), DOWN, CLOSED),
            (340, peg_before(-0.035), DOWN, CLOSED),
            (400, peg_before(-0.035), DOWN, CLOSED),
        ]
        return [left, right]

    def _start(self) -> None:
        e = self.env
        plan = self._plan_transfer() if e.task_name == "transfer-cube" else self._plan_insertion()
        self.plans = []
        for i, wps in enumerate(plan):
            p, r = self._tip(i)
            self.plans.append([(0, p, r, OPEN)] + list(wps))
        self.resolved = [[w if i == 0 else None for i, w in enumerate(wps)] for wps in self.plans]
        self.q = [e.data.qpos[ik.qadr].copy() for ik in self.iks]
        self._ou = np.zeros(12)
        self._episode = e.episode_id

    def _target(self, arm: int, t: int):
        wps, res = self.plans[arm], self.resolved[arm]
        k = next((i for i in range(1, len(wps)) if t <= wps[i][0]), len(wps) - 1)
        for i in range(1, k + 1):
            if res[i] is None:  # resolve when the arm starts towards it
                tw, pos, r, g = wps[i]
                res[i] = (tw, np.asarray(pos(self.env) if callable(pos) else pos, float), r, g)
        (t0, p0, r0, _), (t1, p1, r1, g1) = res[k - 1], res[k]
        a = 1.0 if t1 <= t0 else float(np.clip((t - t0) / (t1 - t0), 0.0, 1.0))
        rr = r1 if np.allclose(r0, r1) else Slerp([0, 1], Rotation.from_matrix([r0, r1]))(a).as_matrix()
        return p0 + a * (p1 - p0), rr, g1 if a >= 1.0 or t >= t1 else res[k - 1][3]

    def act(self, obs=None) -> np.ndarray:
        e = self.env
        if self._episode != e.episode_id:
            self._start()
        t = e.steps + 1
        out = []
        for i in range(2):
            p, r, g = self._target(i, t)
            self.q[i] = self.iks[i].solve(e.data.qpos, self.q[i], p, r)
            out += [self.q[i], [g]]
        a = np.concatenate(out)
        if self.noise > 0:
            self._ou = 0.8 * self._ou + 0.6 * self.noise * self.rng.standard_normal(12)
            moving = [all(wp[3] == OPEN for wp in self.plans[i][:2]) for i in range(2)]  # free motion at the start
            idx = np.r_[0:6, 7:13]
            a[idx] += self._ou * (t < 80) * np.repeat(moving, 6)
        return np.clip(a, e.action_space.low, e.action_space.high).astype(np.float32)

    def infer(self, obs: dict) -> dict:
        return {"actions": self.act(obs)[None]}
