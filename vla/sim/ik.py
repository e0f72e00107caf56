"""Inverse kinematics on MuJoCo Jacobians: damped least squares, orientation in the null space.

Position is the primary objective; the site orientation (optional) is tracked only with the
joint motion that leaves the position unchanged, so a 5-DOF arm still hits its positions
exactly and points its gripper as well as it can.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np


@dataclass(frozen=True)
class IKConfig:
    iters: int = 12
    damping: float = 1e-3  # DLS damping (m^2)
    max_step: float = 0.15  # rad per iteration and joint
    rot_gain: float = 0.5  # null-space orientation gain
    tol: float = 5e-4  # m


class ArmIK:
    """IK for one arm's grip site over that arm's joints, on a scratch MjData (the sim is untouched)."""

    def __init__(
        self,
        model: mujoco.MjModel,
        joints: tuple[str, ...],
        site: str | None = None,
        cfg: IKConfig = IKConfig(),
        *,
        body: str | None = None,
        frame: np.ndarray | None = None,
    ):
        """Track a site, or (for models one cannot edit) a body whose axes map to the site convention
        by `frame` (columns: the site's x, y, z axes in body coordinates)."""
        self.model = model
        self.data = mujoco.MjData(model)
        self.cfg = cfg
        if (site is None) == (body is None):
            raise ValueError("ArmIK needs exactly one of site= or body=")
        self.site = model.site(site).id if site is not None else None
        self.body = model.body(body).id if body is not None else None
        self.frame = np.eye(3) if frame is None else np.asarray(frame, np.float64)
        jids = [model.joint(j).id for j in joints]
        self.qadr = np.array([model.jnt_qposadr[j] for j in jids])
        self.dadr = np.array([model.jnt_dofadr[j] for j in jids])
        self.lo = model.jnt_range[jids, 0].copy()
        self.hi = model.jnt_range[jids, 1].copy()
        self._jp = np.zeros((3, model.nv))
        self._jr = np.zeros((3, model.nv))

    def _pose(self) -> tuple[np.ndarray, np.ndarray]:
        d = self.data
        if self.site is not None:
            return d.site_xpos[self.site], d.site_xmat[self.site].reshape(3, 3)
        return d.xpos[self.body], d.xmat[self.body].reshape(3, 3) @ self.frame

    def _jac(self) -> None:
        if self.site is not None:
            mujoco.mj_jacSite(self.model, self.data, self._jp, self._jr, self.site)
        else:
            mujoco.mj_jacBody(self.model, self.data, self._jp, self._jr, self.body)

    def fk(self, qpos_full: np.ndarray, q: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Site position and rotation matrix for the full qpos with this arm's joints set to q."""
        self.data.qpos[:] = qpos_full
        if q is not None:
            self.data.qpos[self.qadr] = q
        mujoco.mj_kinematics(self.model, self.data)
        p, r = self._pose()
        return p.copy(), r.copy()

    def solve(
        self, qpos_full: np.ndarray, q0: np.ndarray, pos: np.ndarray, rot: np.ndarray | None = None
    ) -> np.ndarray:
        """Joint positions (this arm) that put the site at `pos` (and near rotation `rot`), starting from q0."""
        cfg, m, d = self.cfg, self.model, self.data
        d.qpos[:] = qpos_full
        q = np.clip(np.asarray(q0, np.float64).copy(), self.lo, self.hi)
        n = len(q)
        for _ in range(cfg.iters):
            d.qpos[self.qadr] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            cur_pos, cur = self._pose()
            err = pos - cur_pos
            self._jac()
            jp = self._jp[:, self.dadr]
            # Damped pseudo-inverse of the position Jacobian.
            jp_pinv = jp.T @ np.linalg.inv(jp @ jp.T + cfg.damping * np.eye(3))
            dq = jp_pinv @ err
            if rot is not None:
                # Rotation error as a rotation vector (small-angle form, summed over the axes).
                a, b = cur.T, rot.T  # rows: the three axes
                erot = 0.5 * (a[:, [1, 2, 0]] * b[:, [2, 0, 1]] - a[:, [2, 0, 1]] * b[:, [1, 2, 0]]).sum(axis=0)
                jr = self._jr[:, self.dadr]
                null = np.eye(n) - jp_pinv @ jp
                jrn = jr @ null
                dq += null @ (jrn.T @ np.linalg.solve(jrn @ jrn.T + 1e-2 * np.eye(3), cfg.rot_gain * erot - jr @ dq))
            q = np.clip(q + np.clip(dq, -cfg.max_step, cfg.max_step), self.lo, self.hi)
            if rot is None and np.linalg.norm(err) < cfg.tol:
                break
        return q


def down_rotation(yaw: float) -> np.ndarray:
    """Site rotation pointing the gripper straight down with its fingers closing along (-sin yaw, cos yaw, 0)."""
    y = np.array([-np.sin(yaw), np.cos(yaw), 0.0])
    z = np.array([0.0, 0.0, -1.0])
    x = np.cross(y, z)
    return np.stack([x, y, z], axis=1)


def site_yaw(rot: np.ndarray) -> float:
    """Yaw of the finger-closing axis (the site's y axis) projected on the table."""
    y = rot[:, 1]
    return float(np.arctan2(-y[0], y[1]))


def nearest_yaw(current: float, target: float, symmetry: float) -> float:
    """The angle equal to `target` modulo `symmetry` that is closest to `current`."""
    return target + symmetry * np.round((current - target) / symmetry)
