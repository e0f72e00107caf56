"""Virtual buses: Feetech and Dynamixel servos on a pseudo-terminal, backed by a MuJoCo arm, so that the
real-robot path (buses, calibration, teleoperation, recording) runs and is tested without hardware.

    servo.py     one servo's control table and firmware rules (EEPROM/RAM, Lock, torque, homing, noise)
    protocol.py  Feetech protocol 0 and Dynamixel protocol 2.0, server side
    pty.py       the pseudo-terminal and its link path
    arm.py       the MuJoCo arm: servo <-> joint mapping, real-time physics
    leader.py    the scripted hand that moves a leader arm
    camera.py    rendered camera frames in shared memory, and VirtualCamera to read them
    bus.py       VirtualBus: all of the above, started and stopped together
"""

from vla.robots.virtual.bus import VirtualBus
from vla.robots.virtual.camera import VirtualCamera

__all__ = ["VirtualBus", "VirtualCamera"]
