"""The arms vla drives, one registry: (robot, role) -> ArmSpec, built from the data modules so_arm and koch.

An ArmSpec says which servos sit on the bus (names in state / action order, ids, models), which joints
calibration treats as full turns, the drive modes it sets, where LeRobot files the arm's calibration, and
the servo settings for each role. It holds no connection; `vla.robots.arm.ServoArm` and the calibration
procedure take one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vla.robots import koch, so_arm
from vla.robots.tables import get_model
from vla.spec import SpecError

ROLES = ("follower", "leader")

# Unit modes, named as LeRobot's MotorNormMode values.
RANGE_M100_100, RANGE_0_100, DEGREES = "range_m100_100", "range_0_100", "degrees"


@dataclass(frozen=True)
class ArmSpec:
    robot: str  # so100, so101, koch
    role: str  # follower or leader
    vendor: str  # feetech or dynamixel
    motors: dict[str, tuple[int, str]]  # name -> (id, model), in vector order
    gripper: str
    full_turn: tuple[str, ...]
    lerobot_types: tuple[str, ...]  # LeRobot's type names for this arm, newest first
    prepare_calibration: Callable = field(repr=False)  # (bus) -> None: torque off, modes for calibrating
    configure: Callable = field(repr=False)  # (bus, calibration) -> None: the role's servo settings
    drive_modes: dict[str, int] = field(default_factory=dict)  # set during calibration

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.motors)

    @property
    def apply_drive_mode(self) -> bool:
        """Feetech servos have no direction register: LeRobot flips an inverted joint's sign in software.
        Dynamixel servos invert it themselves (Drive_Mode), so the software leaves the sign alone."""
        return self.vendor == "feetech"

    def resolution(self, name: str) -> int:
        """Encoder counts per turn (4096 on every servo these arms use)."""
        return get_model(self.motors[name][1]).resolution

    def norm_mode(self, name: str, use_degrees: bool) -> str:
        """LeRobot's units: the gripper in 0..100 always; the body in -100..100, or degrees."""
        if name == self.gripper:
            return RANGE_0_100
        return DEGREES if use_degrees else RANGE_M100_100

    @property
    def default_id(self) -> str:
        """The calibration id when none is given: `vla calibrate` and ServoArm agree on it."""
        return f"{self.robot}-{self.role}"

    @property
    def calibrate_command(self) -> str:
        role = "" if self.role == "follower" else f" --role {self.role}"
        return f"vla calibrate --robot {self.robot}{role} --port PORT"


def _so(robot: str, role: str) -> ArmSpec:
    return ArmSpec(
        robot=robot,
        role=role,
        vendor=so_arm.VENDOR,
        motors=dict(so_arm.MOTORS),
        gripper=so_arm.GRIPPER,
        full_turn=so_arm.FULL_TURN,
        lerobot_types=so_arm.LEROBOT_TYPES[(robot, role)],
        prepare_calibration=so_arm.prepare_calibration,
        configure=(lambda bus, cal: so_arm.configure_follower(bus)) if role == "follower" else so_arm.configure_leader,
        drive_modes=dict(so_arm.DRIVE_MODES),
    )


def _koch(role: str) -> ArmSpec:
    leader = role == "leader"
    drive_modes = dict(koch.LEADER_DRIVE_MODES) if leader else {}
    return ArmSpec(
        robot="koch",
        role=role,
        vendor=koch.VENDOR,
        motors=dict(koch.LEADER_MOTORS if leader else koch.FOLLOWER_MOTORS),
        gripper=koch.GRIPPER,
        full_turn=koch.FULL_TURN,
        lerobot_types=koch.LEROBOT_TYPES[("koch", role)],
        prepare_calibration=lambda bus: koch.prepare_calibration(bus, drive_modes),
        configure=koch.configure_leader if leader else (lambda bus, cal: koch.configure_follower(bus)),
        drive_modes=drive_modes,
    )


ARMS: dict[tuple[str, str], ArmSpec] = {
    ("so100", "follower"): _so("so100", "follower"),
    ("so100", "leader"): _so("so100", "leader"),
    ("so101", "follower"): _so("so101", "follower"),
    ("so101", "leader"): _so("so101", "leader"),
    ("koch", "follower"): _koch("follower"),
    ("koch", "leader"): _koch("leader"),
}
ROBOTS = tuple(dict.fromkeys(robot for robot, _ in ARMS))


def arm_spec(robot: str, role: str = "follower") -> ArmSpec:
    """The spec of a (robot, role); an unknown name is a SpecError listing the known ones."""
    if robot not in ROBOTS:
        raise SpecError(f"unknown robot {robot!r}: expected one of {', '.join(ROBOTS)}")
    if role not in ROLES:
        raise SpecError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    return ARMS[(robot, role)]
