"""SO-100 and SO-101 arms: six Feetech STS3215 servos on one bus (ids 1-6), the same for leader and follower.

The two differ in their printed parts only; LeRobot drives both with one class and so does vla. The
follower's servo settings are LeRobot's (`SOFollower.configure`), so a policy sees the same servo response
whichever stack set the arm up.
"""

from __future__ import annotations

VENDOR = "feetech"

# name -> (id, model), in the order of the state / action vector.
MOTORS = {
    "shoulder_pan": (1, "sts3215"),
    "shoulder_lift": (2, "sts3215"),
    "elbow_flex": (3, "sts3215"),
    "wrist_flex": (4, "sts3215"),
    "wrist_roll": (5, "sts3215"),
    "gripper": (6, "sts3215"),
}
GRIPPER = "gripper"
# Joints whose range is not recorded during calibration: LeRobot gives them the whole encoder turn.
FULL_TURN = ("wrist_roll",)
# Drive modes set during calibration (none: the SO arms are built so every joint turns the same way).
DRIVE_MODES: dict[str, int] = {}

POSITION_MODE = 0  # Feetech Operating_Mode: position servo

# LeRobot's robot / teleoperator type names, newest first: where its calibration files live
# (<calibration dir>/robots/<type>/<id>.json, teleoperators/<type>/<id>.json). LeRobot 0.4 files SO-100
# and SO-101 under one type, so_follower / so_leader; earlier releases used so100_* and so101_*.
LEROBOT_TYPES = {
    ("so100", "follower"): ("so_follower", "so100_follower"),
    ("so101", "follower"): ("so_follower", "so101_follower"),
    ("so100", "leader"): ("so_leader", "so100_leader"),
    ("so101", "leader"): ("so_leader", "so101_leader"),
}


def prepare_calibration(bus) -> None:
    """Before the middle pose is taken: torque off, every joint in position mode."""
    bus.disable_torque()
    for name in MOTORS:
        bus.write("Operating_Mode", name, POSITION_MODE)


def configure_follower(bus) -> None:
    """Servo settings for a follower (torque must be off): fast replies, LeRobot's gains, a gentle gripper."""
    for name in MOTORS:
        bus.write("Return_Delay_Time", name, 0)  # 2 us instead of the factory 500 us
        bus.write("Maximum_Acceleration", name, 254)
        bus.write("Acceleration", name, 254)
        bus.write("Operating_Mode", name, POSITION_MODE)
        bus.write("P_Coefficient", name, 16)  # factory 32 shakes under load
        bus.write("I_Coefficient", name, 0)
        bus.write("D_Coefficient", name, 32)
    bus.write("Max_Torque_Limit", GRIPPER, 500)  # half torque: a closed gripper does not burn out
    bus.write("Protection_Current", GRIPPER, 250)
    bus.write("Overload_Torque", GRIPPER, 25)


def configure_leader(bus, calibration=None) -> None:
    """A leader is moved by hand: torque off, position mode."""
    bus.disable_torque()
    for name in MOTORS:
        bus.write("Return_Delay_Time", name, 0)
        bus.write("Maximum_Acceleration", name, 254)
        bus.write("Acceleration", name, 254)
        bus.write("Operating_Mode", name, POSITION_MODE)
