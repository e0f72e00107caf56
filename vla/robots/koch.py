"""Koch v1.1 arms: six Dynamixel servos on one bus (ids 1-6), protocol 2.0.

The follower has two XL430-W250 at the shoulder and XL330-M288 elsewhere; the leader is all XL330-M077.
Settings are LeRobot's (`KochFollower.configure`, `KochLeader.configure`): extended position mode so an arm
assembled at an encoder wrap still works, current-limited position control for the gripper (the follower
grasps without crushing; the leader's gripper springs back to open and acts as a trigger).
"""

from __future__ import annotations

VENDOR = "dynamixel"

# name -> (id, model), in the order of the state / action vector.
FOLLOWER_MOTORS = {
    "shoulder_pan": (1, "xl430-w250"),
    "shoulder_lift": (2, "xl430-w250"),
    "elbow_flex": (3, "xl330-m288"),
    "wrist_flex": (4, "xl330-m288"),
    "wrist_roll": (5, "xl330-m288"),
    "gripper": (6, "xl330-m288"),
}
LEADER_MOTORS = {name: (i, "xl330-m077") for name, (i, _) in FOLLOWER_MOTORS.items()}
GRIPPER = "gripper"
FULL_TURN = ("shoulder_pan", "wrist_roll")  # given the whole encoder turn, not recorded
# The leader's elbow is mounted the other way round: the servo inverts it (Dynamixel's Drive_Mode
# register), so LeRobot's Dynamixel bus never flips the sign in software.
LEADER_DRIVE_MODES = {"elbow_flex": 1}

EXTENDED_POSITION_MODE = 4
CURRENT_POSITION_MODE = 5
GRIPPER_OPEN = 50.0  # leader gripper rest position, in its 0..100 units (LeRobot's gripper_open_pos)

LEROBOT_TYPES = {("koch", "follower"): ("koch_follower",), ("koch", "leader"): ("koch_leader",)}


def prepare_calibration(bus, drive_modes: dict[str, int]) -> None:
    """Before the middle pose is taken: torque off, extended position mode, the inverted joints set."""
    bus.disable_torque()
    for name in FOLLOWER_MOTORS:
        bus.write("Operating_Mode", name, EXTENDED_POSITION_MODE)
    for name, mode in drive_modes.items():
        bus.write("Drive_Mode", name, mode)


def _modes(bus) -> None:
    for name in FOLLOWER_MOTORS:
        bus.write("Return_Delay_Time", name, 0)
        if name != GRIPPER:
            bus.write("Operating_Mode", name, EXTENDED_POSITION_MODE)
    bus.write("Operating_Mode", GRIPPER, CURRENT_POSITION_MODE)


def configure_follower(bus) -> None:
    """Servo settings for a follower (torque must be off); stiffer gains on the elbow, as LeRobot's."""
    _modes(bus)
    bus.write("Position_P_Gain", "elbow_flex", 1500)
    bus.write("Position_I_Gain", "elbow_flex", 0)
    bus.write("Position_D_Gain", "elbow_flex", 600)


def configure_leader(bus, calibration=None) -> None:
    """Torque off everywhere except the gripper, which holds GRIPPER_OPEN under a current limit."""
    bus.disable_torque()
    _modes(bus)
    if calibration is not None:
        bus.write("Goal_Position", GRIPPER, calibration[GRIPPER].unnormalize(GRIPPER_OPEN))
        bus.enable_torque([GRIPPER])
