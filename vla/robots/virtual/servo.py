"""One virtual servo: its control table memory and the firmware rules a client can observe.

The memory holds every register's bytes, little-endian, at the vendor's addresses (vla.robots.tables).
What a real servo does with them, and a client depends on:

- EEPROM vs RAM. Dynamixel: EEPROM writes are refused with an Access Error while torque is on.
  Feetech: EEPROM writes always take effect; with `Lock` = 1 they are not kept at power-off
  (`power_cycle()` restores the EEPROM as last written with `Lock` = 0).
- Read-only registers (model number, firmware, present values) refuse writes (Dynamixel: Access Error;
  Feetech: ignored, as its protocol has no error bit for it).
- Torque: with torque on, `Goal_Position` (clamped to the position limits) drives the joint; with torque
  off the joint is free. Enabling torque first sets the goal to the present position, so nothing jumps.
- Homing: Feetech  Present_Position = (Actual - Homing_Offset) mod resolution;
          Dynamixel Present_Position = sign * Actual + Homing_Offset  (sign = -1 with Drive_Mode bit 0).
  "Actual" is the encoder count of the output shaft; the arm (vla.robots.virtual.arm) converts it to the
  joint's angle, with a per-motor assembly offset, so a LeRobot calibration finds real-looking numbers.
- Present values are computed when read: position (plus Gaussian sensor noise in ticks), velocity, load,
  voltage, temperature, moving.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

from vla.robots.tables import DYNAMIXEL, EEPROM, ServoModel

# Status error codes (Dynamixel protocol 2.0 error numbers; Feetech replies carry 0).
OK, RESULT_FAIL, INSTRUCTION_ERROR, CRC_ERROR, DATA_RANGE, DATA_LENGTH, DATA_LIMIT, ACCESS = range(8)
POSITION_MODES = {"feetech": (0,), "dynamixel": (3, 4, 5)}  # modes in which the goal position drives the joint


@dataclass
class Shaft:
    """Where a servo's output shaft is, as the arm sees it (filled by the physics thread)."""

    ticks: float  # absolute encoder count (unwrapped)
    velocity: float  # ticks per second
    effort: float  # -1..1 of the actuator's force range


class VirtualServo:
    def __init__(self, model: ServoModel, motor_id: int, *, noise: float = 1.0, seed: int = 0, model_number=None):
        self.model = model
        self.noise = float(noise)
        self.rng = random.Random(seed)
        self.online = True  # False: the servo does not answer (unplugged, wrong id, dead)
        self.model_number = model.model_number if model_number is None else int(model_number)
        self.mem = bytearray(model.memory_size)
        self.saved = bytearray()  # Feetech: the EEPROM as kept at power-off
        self.pending: tuple[int, bytes] | None = None  # Reg Write, applied on Action
        self.shaft = Shaft(0.0, 0.0, 0.0)
        self.target_ticks: float | None = None  # actual encoder ticks the shaft is driven to; None = free
        self._t0 = time.monotonic()
        self._reset(motor_id)
        self._present_lo, self._present_hi = self._present_span()

    # ---- power ----
    def _reset(self, motor_id: int) -> None:
        m = self.model
        self.mem[:] = bytes(len(self.mem))
        for name, value in m.defaults.items():
            self._set(name, value)
        self._set("Model_Number", self.model_number)
        if m.vendor == DYNAMIXEL:
            self._set("Firmware_Version", m.firmware[0])
        else:
            self._set("Firmware_Major_Version", m.firmware[0])
            self._set("Firmware_Minor_Version", m.firmware[1])
        self._set("ID", motor_id)
        self.saved = bytearray(self.mem)
        self.target_ticks = None

    def power_cycle(self) -> None:
        """Off and on again: RAM back to defaults; the EEPROM as saved (Feetech: as written with Lock 0)."""
        keep = bytes(self.saved)
        self._reset(self.get("ID"))
        eeprom_end = min(r.address for r in self.model.registers.values() if r.area != EEPROM)
        self.mem[:eeprom_end] = keep[:eeprom_end]
        self.saved = bytearray(self.mem)
        self.power_on_goal()

    def power_on_goal(self) -> None:
        """A powered-up servo's goal is where it stands."""
        self.refresh()
        self._set_raw("Goal_Position", self._raw("Present_Position"))

    # ---- register access by name (decoded values) ----
    def get(self, name: str) -> int:
        return self.model.decode(name, self._raw(name))

    def _raw(self, name: str) -> int:
        a, n = self.model.address(name)
        return int.from_bytes(self.mem[a : a + n], "little")

    def _set(self, name: str, value: int) -> None:
        self._set_raw(name, self.model.encode(name, value))

    def _set_raw(self, name: str, raw: int) -> None:
        a, n = self.model.address(name)
        self.mem[a : a + n] = int(raw).to_bytes(n, "little")

    @property
    def id(self) -> int:
        return self.mem[self.model.address("ID")[0]]

    @property
    def return_delay_s(self) -> float:
        return self.get("Return_Delay_Time") * 2e-6

    def reply_level(self) -> int:
        """Which instructions get a reply. Dynamixel Status_Return_Level: 0 ping only, 1 + reads, 2 all.
        Feetech Response_Status_Level: 0 ping and reads, 1 all."""
        if self.model.vendor == DYNAMIXEL:
            return self.get("Status_Return_Level")
        return 1 + self.get("Response_Status_Level")

    # ---- protocol-level access (raw bytes) ----
    def read(self, address: int, length: int) -> tuple[bytes, int]:
        if address < 0 or length < 0 or address + length > len(self.mem):
            return b"", DATA_RANGE
        if address < self._present_hi and self._present_lo < address + length:
            self.refresh()
        return bytes(self.mem[address : address + length]), OK

    def write(self, address: int, data: bytes) -> int:
        """Write bytes as the firmware would; returns a status error code (OK when written)."""
        m = self.model
        end = address + len(data)
        if address < 0 or end > len(self.mem):
            return DATA_RANGE
        touched = [r for r in m.registers.values() if r.address < end and address < r.address + r.size]
        if m.readonly_span(address, len(data)):
            return ACCESS if m.vendor == DYNAMIXEL else OK
        eeprom = any(r.area == EEPROM for r in touched)
        if m.vendor == DYNAMIXEL and eeprom and self.get("Torque_Enable"):
            return ACCESS
        before = {r.name: self._raw(r.name) for r in touched}
        old = bytes(self.mem[address:end])
        self.mem[address:end] = data
        names = {r.name for r in touched}
        if "Goal_Position" in names and not self._goal_ok():
            self.mem[address:end] = old
            return DATA_LIMIT
        if "Torque_Enable" in names and self.get("Torque_Enable") and not before["Torque_Enable"]:
            self.refresh()
            self._set_raw("Goal_Position", self._raw("Present_Position"))  # hold where it stands
        if eeprom and (m.vendor == DYNAMIXEL or self.get("Lock") == 0):
            self.saved[address:end] = self.mem[address:end]
        self._drive()
        return OK

    # ---- firmware behaviour ----
    def _present_span(self) -> tuple[int, int]:
        regs = [r for r in self.model.registers.values() if r.name.startswith("Present_") or r.name == "Moving"]
        return min(r.address for r in regs), max(r.address + r.size for r in regs)

    def _sign(self) -> int:
        return -1 if self.model.vendor == DYNAMIXEL and self.get("Drive_Mode") & 1 else 1

    def present_from_actual(self, actual: float) -> int:
        res = self.model.resolution
        if self.model.vendor == DYNAMIXEL:
            return int(round(self._sign() * actual)) + self.get("Homing_Offset")
        return int(round(actual) - self.get("Homing_Offset")) % res

    def actual_from_present(self, present: int) -> float:
        if self.model.vendor == DYNAMIXEL:
            return self._sign() * (present - self.get("Homing_Offset"))
        res = self.model.resolution
        actual = (present + self.get("Homing_Offset")) % res
        # the shaft turns less than a turn: the goal is the encoder count nearest the present one
        return self.shaft.ticks + ((actual - self.shaft.ticks + res / 2) % res - res / 2)

    def _goal_ok(self) -> bool:
        """Dynamixel, position mode 3: a goal outside the position limits is refused (Data Limit Error)."""
        if self.model.vendor != DYNAMIXEL or self.get("Operating_Mode") != 3:
            return True
        return self.get("Min_Position_Limit") <= self.get("Goal_Position") <= self.get("Max_Position_Limit")

    def _drive(self) -> None:
        """Recompute where the shaft is driven from the torque, mode, goal and limits."""
        mode_ok = self.get("Operating_Mode") in POSITION_MODES[self.model.vendor]
        if not (self.get("Torque_Enable") and mode_ok):
            self.target_ticks = None
            return
        goal = self.get("Goal_Position")
        lo, hi = self.get("Min_Position_Limit"), self.get("Max_Position_Limit")
        if self.model.vendor != DYNAMIXEL and hi > lo:  # Feetech clamps the goal to its angle limits
            goal = min(max(goal, lo), hi)
        self.target_ticks = self.actual_from_present(goal)

    def refresh(self) -> None:
        """Present registers from the shaft, as the firmware updates them."""
        s = self.shaft
        noisy = s.ticks + (self.rng.gauss(0.0, self.noise) if self.noise > 0 else 0.0)
        self._set("Present_Position", self.present_from_actual(noisy))
        moving = abs(s.velocity) > 4.0  # ticks/s
        if self.model.vendor == DYNAMIXEL:
            rpm = self._sign() * s.velocity * 60.0 / self.model.resolution
            self._set("Present_Velocity", int(round(rpm / 0.229)))  # 0.229 rpm per unit
            limit = self.get("Current_Limit") or 1000
            self._set("Present_Current", int(round(s.effort * limit)))
            self._set("Present_PWM", int(round(s.effort * self.get("PWM_Limit"))))
            self._set("Realtime_Tick", int((time.monotonic() - self._t0) * 1000) % 32768)
            self._set("Moving", int(moving))
        else:
            self._set("Present_Velocity", max(-32767, min(32767, int(round(s.velocity)))))  # steps per second
            self._set("Present_Load", max(-1000, min(1000, int(round(s.effort * 1000)))))
            self._set("Moving", int(moving))
            self._set("Present_Current", int(abs(s.effort) * 500))


def ticks_per_radian(model: ServoModel) -> float:
    return model.resolution / (2 * math.pi)
