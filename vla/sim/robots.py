"""Built-in simulated robots: where their MJCF lives and how actions map onto actuators.

Every robot's action (and state) is, per arm, its joint positions in radians followed by one
gripper value in [0, 1] (0 = open, 1 = closed); arms are concatenated in `arms` order. The
Embodiment TOML of the same name (envs/embodiments/<name>.toml) states the same layout with
units and limits; `check_embodiment` keeps the two in agreement.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vla.resources import content_dir, load_embodiment
from vla.spec import Embodiment, SpecError

ENVS_DIR = content_dir("envs")  # MJCF in robots/, embodiment TOMLs in embodiments/ (installed with the package)


@dataclass(frozen=True)
class ArmConfig:
    """One arm: its joints (each driven by a position actuator of the same name) and gripper."""

    joints: tuple[str, ...]
    fingers: tuple[str, str]  # finger slide joints, each with a position actuator of the same name
    finger_open: float  # finger joint position (m) when open
    finger_closed: float  # ... and when closed on nothing
    site: str  # grip site: z axis = approach direction, y axis = finger closing direction
    pad_half: float = 0.02  # half length of the finger pads along the approach axis (m)
    side: str = ""  # "left" / "right" for two-armed robots, used in instructions


@dataclass(frozen=True)
class RobotConfig:
    name: str  # registry key, embodiment name, MJCF file stem
    env_name: str  # CamelCase, used in gymnasium ids: vla/<env_name>-<Task>-v0
    arms: tuple[ArmConfig, ...]
    cameras: tuple[str, ...]
    control_hz: float
    # Table region (x_lo, x_hi, y_lo, y_hi) in metres where tasks put objects.
    workspace: tuple[float, float, float, float]
    cube_half: float  # half edge of the cubes this robot's gripper handles
    speed: float = 0.35  # expert's Cartesian speed (m/s)
    max_reach: float = 10.0  # objects are placed at most this far (m, horizontally) from the base

    def __post_init__(self):
        x0, x1, y0, y1 = self.workspace
        if not (x0 < x1 and y0 < y1):
            raise SpecError(f"robot {self.name!r}: workspace must be (x_lo, x_hi, y_lo, y_hi), got {self.workspace}")
        if not self.arms:
            raise SpecError(f"robot {self.name!r}: needs at least one arm")

    @property
    def mjcf(self) -> Path:
        return ENVS_DIR / "robots" / f"{self.name}.xml"

    @property
    def action_dim(self) -> int:
        return sum(len(a.joints) + 1 for a in self.arms)

    def embodiment(self, image_size: int | tuple[int, int] | None = None) -> Embodiment:
        """The robot's Embodiment (from its TOML), with camera images resized to `image_size`."""
        emb = load_embodiment(ENVS_DIR / "embodiments" / f"{self.name}.toml")
        check_embodiment(self, emb)
        if image_size is not None:
            h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
            from dataclasses import replace

            from vla.spec import Camera

            emb = replace(emb, cameras=tuple(Camera(c.name, h, w) for c in emb.cameras))
        return emb


def check_embodiment(robot: RobotConfig, emb: Embodiment) -> None:
    if emb.name != robot.name:
        raise SpecError(f"robot {robot.name!r}: embodiment TOML names {emb.name!r}")
    if emb.action_dim != robot.action_dim or emb.state_dim != robot.action_dim:
        raise SpecError(
            f"robot {robot.name!r}: expected {robot.action_dim} action and state dims in its embodiment "
            f"TOML, got {emb.action_dim} actions and {emb.state_dim} states"
        )
    if emb.camera_names != robot.cameras:
        raise SpecError(f"robot {robot.name!r}: expected cameras {robot.cameras}, TOML has {emb.camera_names}")
    if emb.control_hz != robot.control_hz:
        raise SpecError(f"robot {robot.name!r}: control_hz {robot.control_hz} in code, {emb.control_hz} in TOML")


_PANDA = ArmConfig(
    joints=tuple(f"joint{i}" for i in range(1, 8)),
    fingers=("finger_left", "finger_right"),
    finger_open=0.04,
    finger_closed=0.0,
    site="grip",
    pad_half=0.024,
)
_SO100 = ArmConfig(
    joints=("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll"),
    fingers=("finger_left", "finger_right"),
    finger_open=0.03,
    finger_closed=0.0,
    site="grip",
    pad_half=0.02,
)


def _vx300(side: str) -> ArmConfig:
    joints = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
    return ArmConfig(
        joints=tuple(f"{side}/{j}" for j in joints),
        fingers=(f"{side}/finger_left", f"{side}/finger_right"),
        finger_open=0.037,
        finger_closed=0.0,
        site=f"{side}/grip",
        pad_half=0.022,
        side=side,
    )


ROBOTS: dict[str, RobotConfig] = {
    "arm7": RobotConfig(
        name="arm7",
        env_name="Arm7",
        arms=(_PANDA,),
        cameras=("front", "wrist"),
        control_hz=20.0,
        workspace=(0.38, 0.68, -0.25, 0.25),
        cube_half=0.02,
        speed=0.4,
    ),
    "arm5": RobotConfig(
        name="arm5",
        env_name="Arm5",
        arms=(_SO100,),
        cameras=("front", "wrist"),
        control_hz=20.0,
        workspace=(0.12, 0.25, -0.15, 0.15),
        cube_half=0.0125,
        speed=0.25,
        max_reach=0.25,
    ),
    "bimanual": RobotConfig(
        name="bimanual",
        env_name="Bimanual",
        arms=(_vx300("left"), _vx300("right")),
        cameras=("front", "wrist_left", "wrist_right"),
        control_hz=20.0,
        workspace=(-0.22, -0.07, -0.06, 0.2),
        cube_half=0.02,
        speed=0.4,
    ),
}


def get_robot(name: str) -> RobotConfig:
    try:
        return ROBOTS[name]
    except KeyError:
        raise SpecError(f"unknown robot {name!r}; built-in robots are {sorted(ROBOTS)}") from None
