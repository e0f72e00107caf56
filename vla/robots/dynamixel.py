"""Dynamixel X-series servos (Koch arms) on ROBOTIS's SDK, `dynamixel_sdk` (PyPI: dynamixel-sdk).

Protocol 2.0 (CRC16, byte stuffing, sync read 0x82 / sync write 0x83). The servo refuses EEPROM writes
(Operating_Mode, Homing_Offset, limits, ...) while its torque is on: disable torque first.
"""

from __future__ import annotations

import logging

from vla.robots.bus import MotorBus, NameOrId
from vla.robots.tables import DYNAMIXEL

log = logging.getLogger(__name__)

ACCESS_ERROR = 7  # protocol 2.0 error number
ALERT = 0x80  # status bit: a hardware error is latched (Hardware_Error_Status says which); the data is valid


class DynamixelBus(MotorBus):
    vendor = DYNAMIXEL

    def _sdk(self):
        import dynamixel_sdk

        return dynamixel_sdk

    def _packet_handler(self, sdk):
        return sdk.PacketHandler(2.0)

    def firmware(self, motor: NameOrId) -> str:
        return str(self.read("Firmware_Version", motor))

    def _status_error(self, error: int) -> str | None:
        if error & ALERT and not error & ~ALERT:
            log.warning("%s: a Dynamixel reports a hardware alert; read its Hardware_Error_Status", self.port)
        if not error & ~ALERT:
            return None
        text = self._packet.getRxPacketError(error)
        if error & ~ALERT == ACCESS_ERROR:
            text += " (EEPROM registers take writes only with torque disabled; some registers are read-only)"
        return text
