"""Scene building blocks shared by the tasks: colours, objects added to a robot's MJCF, placement."""

from __future__ import annotations

import mujoco
import numpy as np

# Colours the instructions name. Distinct hues so they stay apart at 64x64 pixels.
COLORS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.1, 0.1, 1.0),
    "green": (0.1, 0.65, 0.15, 1.0),
    "blue": (0.12, 0.25, 0.9, 1.0),
    "yellow": (0.95, 0.85, 0.1, 1.0),
    "purple": (0.55, 0.15, 0.7, 1.0),
}
GREY = (0.6, 0.6, 0.6, 1.0)

BOX, CYLINDER, SPHERE = mujoco.mjtGeom.mjGEOM_BOX, mujoco.mjtGeom.mjGEOM_CYLINDER, mujoco.mjtGeom.mjGEOM_SPHERE


def add_free_box(
    spec: mujoco.MjSpec, name: str, half, *, mass: float = 0.05, rgba=GREY, slippery: bool = False
) -> None:
    """A free-floating box (cube or block) that the grippers can pick up.

    `slippery` boxes use their own low friction for every contact (priority over table and pads), so
    they slide when pushed instead of tipping over.
    """
    body = spec.worldbody.add_body(name=name, pos=[0, 0, 0.2])
    body.add_freejoint(name=name)
    friction, priority = ([0.4, 0.01, 0.001], 2) if slippery else ([1.2, 0.02, 0.001], 0)
    body.add_geom(
        name=name,
        type=BOX,
        size=list(half),
        mass=mass,
        rgba=list(rgba),
        condim=4,
        priority=priority,
        friction=friction,
        solref=[0.004, 1],
        solimp=[0.95, 0.99, 0.001, 0.5, 2],
    )


def add_marker(spec: mujoco.MjSpec, name: str, size, *, type=CYLINDER, rgba=GREY, collide: bool = False) -> None:
    """A static body on the table (reach target, goal marker); moved at reset through model.body_pos."""
    body = spec.worldbody.add_body(name=name, pos=[0, 0, 0])
    body.add_geom(
        name=name,
        type=type,
        size=(list(size) + [0, 0])[:3],
        rgba=list(rgba),
        contype=int(collide),
        conaffinity=int(collide),
    )


def set_free_pose(model: mujoco.MjModel, data: mujoco.MjData, name: str, pos, yaw: float = 0.0) -> None:
    adr = model.jnt_qposadr[model.joint(name).id]
    data.qpos[adr : adr + 3] = pos
    data.qpos[adr + 3 : adr + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
    dadr = model.jnt_dofadr[model.joint(name).id]
    data.qvel[dadr : dadr + 6] = 0.0


def free_yaw(data: mujoco.MjData, model: mujoco.MjModel, name: str) -> float:
    q = data.xquat[model.body(name).id]
    return float(np.arctan2(2 * (q[0] * q[3] + q[1] * q[2]), 1 - 2 * (q[2] ** 2 + q[3] ** 2)))


def sample_xy(
    rng: np.random.Generator, n: int, region, min_dist: float, avoid=(), max_reach: float = np.inf, tries: int = 2000
) -> np.ndarray:
    """n points in region (x_lo, x_hi, y_lo, y_hi) within max_reach of the origin, at least min_dist from
    each other and from `avoid`."""
    x0, x1, y0, y1 = region
    pts = [np.asarray(a, np.float64)[:2] for a in avoid]
    out = []
    for _ in range(tries):
        p = np.array([rng.uniform(x0, x1), rng.uniform(y0, y1)])
        if np.hypot(*p) <= max_reach and all(np.linalg.norm(p - q) >= min_dist for q in pts):
            pts.append(p)
            out.append(p)
            if len(out) == n:
                return np.stack(out)
    raise RuntimeError(f"could not place {n} objects {min_dist} m apart in region {region}")


def pick_colors(rng: np.random.Generator, n: int) -> list[str]:
    names = list(COLORS)
    return [names[i] for i in rng.choice(len(names), size=n, replace=False)]


def geom_contacts(model: mujoco.MjModel, data: mujoco.MjData, geom_a: int, geoms_b) -> bool:
    """True when geom_a touches any geom in geoms_b."""
    geoms_b = set(geoms_b)
    for i in range(data.ncon):
        c = data.contact[i]
        if (c.geom1 == geom_a and c.geom2 in geoms_b) or (c.geom2 == geom_a and c.geom1 in geoms_b):
            return True
    return False
