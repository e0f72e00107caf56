"""Real robots: motor buses on the vendors' SDKs, calibration in LeRobot's format, the SO-100/SO-101 and
Koch arms behind `vla.runtime.robot.Robot`, cameras, teleoperated recording, and virtual buses (a
pseudo-terminal speaking the servo protocol, backed by a MuJoCo arm) for testing all of it without hardware.
"""

from vla.robots.calibration import load_calibration

__all__ = ["load_calibration"]
