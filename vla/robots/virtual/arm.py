"""The MuJoCo arm behind a virtual bus: which joint each servo turns, and the physics stepped in real time.

SO-100/SO-101 use envs/robots/arm5.xml (SO-100 kinematics); the gripper servo sets the opening of its two
finger slides. Koch uses envs/robots/koch.xml; its gripper servo turns the jaw hinge. A servo's encoder
count maps to its joint linearly: joint = shaft_zero + scale * shaft angle, the shaft angle counted from the
encoder's centre (2048) plus a per-motor assembly offset (seeded), so no two virtual arms read alike and a
calibration has something to find.

Follower: a servo with torque on drives its joint's position actuator; with torque off the actuator is
slack (the links are gravity-compensated, so a free arm stays where it is, as a back-drivable arm held by
friction would). Leader: a scripted hand moves the joints (kinematically: nothing a client writes moves
a leader, as a person's grip overrides the servos).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vla.resources import content_dir
from vla.robots.bus import Motor, standard_motors
from vla.sim.gl import ensure_offscreen_gl

ensure_offscreen_gl()  # before anything here imports mujoco: headless EGL unless the user chose otherwise


@dataclass(frozen=True)
class MotorJoint:
    motor: str
    joints: tuple[str, ...]  # MuJoCo joints the servo turns, each with a position actuator of the same name
    scale: float = 1.0  # joint units (rad or m) per radian of the servo shaft
    shaft_zero: float = 0.0  # joint value when the shaft sits at the encoder's centre count


@dataclass(frozen=True)
class ArmSpec:
    robot: str
    mjcf: str  # file in envs/robots
    joints: tuple[MotorJoint, ...]
    cameras: tuple[str, ...]
    cube_half: float = 0.0125  # a cube on the table, for the cameras to see (0: none)

    def motors(self, role: str) -> dict[str, Motor]:
        return standard_motors(self.robot, role)


_BODY = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")
_SO = ArmSpec(
    robot="so101",
    mjcf="arm5.xml",
    # the gripper's shaft turns +-0.8 rad around half open: finger opening 0 .. 0.03 m each side
    joints=tuple(MotorJoint(j, (j,)) for j in _BODY)
    + (MotorJoint("gripper", ("finger_left", "finger_right"), scale=0.015 / 0.8, shaft_zero=0.015),),
    cameras=("front", "wrist"),
)
ARMS: dict[str, ArmSpec] = {
    "so100": ArmSpec("so100", _SO.mjcf, _SO.joints, _SO.cameras),
    "so101": _SO,
    "koch": ArmSpec(
        robot="koch",
        mjcf="koch.xml",
        joints=tuple(MotorJoint(j, (j,)) for j in _BODY) + (MotorJoint("gripper", ("gripper",), shaft_zero=0.75),),
        cameras=("front", "wrist"),
        cube_half=0.012,
    ),
}


def get_arm(robot: str) -> ArmSpec:
    try:
        return ARMS[robot]
    except KeyError:
        raise ValueError(f"unknown robot {robot!r}; virtual buses exist for {sorted(ARMS)}") from None


def build_model(spec: ArmSpec, max_image: tuple[int, int] = (480, 640)):
    """(MuJoCo model, home qpos of the arm's joints): the arm plus a cube on the table. Deterministic: the
    camera process builds the same model and only copies the joint state over."""
    import mujoco

    from vla.sim.scene import add_free_box

    mj = mujoco.MjSpec.from_file(str(content_dir("envs") / "robots" / spec.mjcf))
    key = next(k for k in mj.keys if k.name == "home")
    home = np.array(key.qpos)
    key.delete()  # it covers the arm's joints only; the cube's free joint comes after them
    if spec.cube_half:
        h = spec.cube_half
        add_free_box(mj, "cube", [h, h, h], rgba=(0.2, 0.5, 0.9, 1.0))
    hgt, wid = max_image
    mj.visual.global_.offheight = max(mj.visual.global_.offheight, hgt)
    mj.visual.global_.offwidth = max(mj.visual.global_.offwidth, wid)
    return mj.compile(), home


def place_home(model, data, spec: ArmSpec, home: np.ndarray) -> None:
    import mujoco

    from vla.sim.scene import set_free_pose

    mujoco.mj_resetData(model, data)
    data.qpos[: len(home)] = home
    if spec.cube_half:
        set_free_pose(model, data, "cube", [0.2, 0.06, spec.cube_half])
    mujoco.mj_forward(model, data)


class PhysicsArm:
    """The MuJoCo state of one virtual arm, with servo-facing accessors. Not thread-safe: the virtual bus
    calls it under its lock."""

    def __init__(self, spec: ArmSpec, *, seed: int = 0):
        import mujoco

        self._mj = mujoco
        self.spec = spec
        self.model, home = build_model(spec)
        self.data = mujoco.MjData(self.model)
        m, d = self.model, self.data
        place_home(m, d, spec, home)
        self.t0 = d.time
        self.qadr = {mj.motor: np.array([m.jnt_qposadr[m.joint(j).id] for j in mj.joints]) for mj in spec.joints}
        self.dadr = {mj.motor: np.array([m.jnt_dofadr[m.joint(j).id] for j in mj.joints]) for mj in spec.joints}
        self.act = {mj.motor: np.array([m.actuator(j).id for j in mj.joints]) for mj in spec.joints}
        self.range = {mj.motor: m.jnt_range[m.joint(mj.joints[0]).id].copy() for mj in spec.joints}
        self.map = {mj.motor: mj for mj in spec.joints}
        # first joint / dof / actuator of each motor as plain ints: the physics thread reads them 200 times a second
        self._q0 = {k: int(v[0]) for k, v in self.qadr.items()}
        self._d0 = {k: int(v[0]) for k, v in self.dadr.items()}
        self._a0 = {k: int(v[0]) for k, v in self.act.items()}
        rng = np.random.default_rng(seed)
        # assembly: where the encoder's centre sits against the joint (a real arm's horns are not aligned)
        self.assembly = {mj.motor: int(rng.integers(-120, 121)) for mj in spec.joints}
        self._gain = m.actuator_gainprm[:, 0].copy()  # position actuators: force = kp * (ctrl - q) - kv * qdot
        self._bias = m.actuator_biasprm[:, 1:3].copy()
        self.force_max = {k: float(np.max(np.abs(m.actuator_forcerange[a]))) or 1.0 for k, a in self.act.items()}

    # ---- joint value <-> encoder ticks ----
    def ticks_of(self, motor: str, q: float, resolution: int) -> float:
        mj = self.map[motor]
        return resolution / 2 + self.assembly[motor] + (q - mj.shaft_zero) / mj.scale * resolution / (2 * math.pi)

    def joint_of(self, motor: str, ticks: float, resolution: int) -> float:
        mj = self.map[motor]
        shaft = (ticks - resolution / 2 - self.assembly[motor]) * 2 * math.pi / resolution
        return mj.shaft_zero + mj.scale * shaft

    def q(self, motor: str) -> float:
        return float(self.data.qpos[self._q0[motor]])

    def qdot(self, motor: str) -> float:
        return float(self.data.qvel[self._d0[motor]])

    def effort(self, motor: str) -> float:
        return float(self.data.actuator_force[self._a0[motor]]) / self.force_max[motor]

    # ---- follower: actuators and physics ----
    def drive(self, motor: str, q: float | None) -> None:
        """Position target for the motor's joint(s); None leaves the joint free (the actuator exerts nothing)."""
        m, a = self.model, self.act[motor]
        if q is None:
            m.actuator_gainprm[a, 0] = 0.0
            m.actuator_biasprm[a, 1:3] = 0.0
        else:
            m.actuator_gainprm[a, 0] = self._gain[a]
            m.actuator_biasprm[a, 1:3] = self._bias[a]
            lo, hi = self.range[motor]
            self.data.ctrl[a] = min(max(q, lo), hi)

    def step_until(self, t: float) -> None:
        """Advance the simulation to `t` seconds since start (no more than 50 ms in one call)."""
        m, d = self.model, self.data
        n = int((t - (d.time - self.t0)) / m.opt.timestep)
        if n > 0:
            self._mj.mj_step(m, d, nstep=min(n, int(0.05 / m.opt.timestep)))

    # ---- leader: a hand moves the joints ----
    def pose(self, q: dict[str, float], qdot: dict[str, float]) -> None:
        for motor, v in q.items():
            self.data.qpos[self.qadr[motor]] = v
            self.data.qvel[self.dadr[motor]] = qdot.get(motor, 0.0)
        self._mj.mj_kinematics(self.model, self.data)
