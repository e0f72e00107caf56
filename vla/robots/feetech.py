"""Feetech STS/SMS servos (SO-100, SO-101) on Feetech's SDK, `scservo_sdk` (PyPI: feetech-servo-sdk).

Protocol 0 (little-endian words, 8-bit checksum, sync read 0x82 / sync write 0x83). Torque follows
LeRobot: enabling it also sets `Lock` (EEPROM writes are then not kept at power-off), disabling it clears
`Lock`, so calibration written with torque off survives a power cycle.
"""

from __future__ import annotations

from vla.robots.bus import MotorBus, NameOrId
from vla.robots.tables import FEETECH


class FeetechBus(MotorBus):
    vendor = FEETECH

    def _sdk(self):
        import scservo_sdk

        return scservo_sdk

    def _packet_handler(self, sdk):
        return sdk.PacketHandler(0)  # protocol 0: STS/SMS series (protocol 1 is the big-endian SCS series)

    def firmware(self, motor: NameOrId) -> str:
        return f"{self.read('Firmware_Major_Version', motor)}.{self.read('Firmware_Minor_Version', motor)}"

    def enable_torque(self, motors=None) -> None:
        for name in self._names_of(motors):
            self.write("Torque_Enable", name, 1)
            self.write("Lock", name, 1)

    def disable_torque(self, motors=None) -> None:
        for name in self._names_of(motors):
            self.write("Torque_Enable", name, 0)
            self.write("Lock", name, 0)
