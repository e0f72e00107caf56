"""Control tables of the servos vla drives: every register's address and size, and what the bus and the
virtual servo need to know about each model.

Register names are LeRobot's (`Present_Position`, `Goal_Position`, `Torque_Enable`, `Lock`,
`Homing_Offset`, `Min_Position_Limit`, ...), so calibration code and files map one to one. Addresses and
sizes are the vendors' (Feetech's STS/SMS manual, ROBOTIS's X-series e-manual); LeRobot's tables list the
same. Values on the wire are unsigned; `ServoModel.decode` / `encode` apply the register's sign encoding:
Feetech packs a sign bit above the magnitude (`Homing_Offset` bit 11, positions and velocities bit 15),
Dynamixel uses two's complement over the register's size.

Homing conventions (what the servo firmware does with `Homing_Offset`):
    Feetech:   Present_Position = Actual_Position - Homing_Offset   (12-bit, wraps at the resolution)
    Dynamixel: Present_Position = Actual_Position + Homing_Offset
`defaults` are the register values of a freshly powered virtual servo: the factory values, except the
ones LeRobot's setup writes to every motor (1 Mbps baud, zero return delay).

This module is plain data: the bus (vla.robots.bus) and the virtual servos (vla.robots.virtual) read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

FEETECH, DYNAMIXEL = "feetech", "dynamixel"
SIGN_MAGNITUDE, TWOS_COMPLEMENT = "sign_magnitude", "twos_complement"
EEPROM, RAM = "eeprom", "ram"


@dataclass(frozen=True)
class Register:
    name: str
    address: int
    size: int  # bytes: 1, 2 or 4, little-endian on both vendors' buses
    area: str  # EEPROM (kept across power cycles; Dynamixel: written only with torque off) or RAM
    readonly: bool = False


@dataclass(frozen=True)
class ServoModel:
    """One servo model: its control table and the facts a bus or a virtual servo needs."""

    name: str  # LeRobot's model name: "sts3215", "xl430-w250", ...
    vendor: str  # FEETECH or DYNAMIXEL
    protocol: float  # 0 (Feetech SCS/STS protocol 0) or 2.0 (Dynamixel protocol 2.0)
    model_number: int  # what the servo answers to ping (Feetech: the Model_Number register)
    firmware: tuple[int, ...]  # virtual servo's version: (major, minor) Feetech, (version,) Dynamixel
    resolution: int  # encoder ticks per turn
    registers: Mapping[str, Register]
    baudrates: Mapping[int, int]  # bits per second -> Baud_Rate register value
    signs: Mapping[str, tuple[str, int]]  # register -> (SIGN_MAGNITUDE, sign bit) or (TWOS_COMPLEMENT, bytes)
    defaults: Mapping[str, int] = field(default_factory=dict)  # decoded values at power-up
    memory_size: int = 256  # bytes of control table a read may reach

    def register(self, name: str) -> Register:
        try:
            return self.registers[name]
        except KeyError:
            raise ValueError(
                f"servo model {self.name!r} has no register {name!r}; its registers are {sorted(self.registers)}"
            ) from None

    def address(self, name: str) -> tuple[int, int]:
        """(address, size) of a register."""
        r = self.register(name)
        return r.address, r.size

    def encode(self, name: str, value: int) -> int:
        """A signed value as the unsigned integer the register holds; refuses what does not fit."""
        r = self.register(name)
        value = int(value)
        kind = self.signs.get(name)
        if kind is None:
            lo, hi = 0, (1 << (8 * r.size)) - 1
            if not lo <= value <= hi:
                raise ValueError(f"{name} = {value} does not fit the {r.size}-byte unsigned register ({lo}..{hi})")
            return value
        enc, n = kind
        if enc == SIGN_MAGNITUDE:
            top = (1 << n) - 1
            if abs(value) > top:
                raise ValueError(f"{name} = {value} exceeds the register's magnitude ({-top}..{top})")
            return (1 << n) | -value if value < 0 else value
        bits = 8 * n
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        if not lo <= value <= hi:
            raise ValueError(f"{name} = {value} does not fit the {n}-byte signed register ({lo}..{hi})")
        return value & ((1 << bits) - 1)

    def decode(self, name: str, raw: int) -> int:
        """The unsigned register content as the signed value it means."""
        kind = self.signs.get(name)
        if kind is None:
            return int(raw)
        enc, n = kind
        if enc == SIGN_MAGNITUDE:
            mag = raw & ((1 << n) - 1)
            return -mag if (raw >> n) & 1 else mag
        bits = 8 * n
        return raw - (1 << bits) if raw & (1 << (bits - 1)) else raw

    def readonly_span(self, address: int, size: int) -> list[str]:
        """Read-only registers a write of `size` bytes at `address` would touch."""
        end = address + size
        return [
            r.name for r in self.registers.values() if r.readonly and r.address < end and address < r.address + r.size
        ]


def _table(entries: list[tuple[str, int, int, str, bool]]) -> Mapping[str, Register]:
    return MappingProxyType({n: Register(n, a, s, area, ro) for n, a, s, area, ro in entries})


_E, _R = EEPROM, RAM

# Feetech STS/SMS series (STS3215 and kin): EEPROM below address 40, RAM from 40 (Feetech's STS manual).
_STS_TABLE = _table(
    [
        ("Firmware_Major_Version", 0, 1, _E, True),
        ("Firmware_Minor_Version", 1, 1, _E, True),
        ("Model_Number", 3, 2, _E, True),
        ("ID", 5, 1, _E, False),
        ("Baud_Rate", 6, 1, _E, False),
        ("Return_Delay_Time", 7, 1, _E, False),  # 2 us per unit
        ("Response_Status_Level", 8, 1, _E, False),
        ("Min_Position_Limit", 9, 2, _E, False),
        ("Max_Position_Limit", 11, 2, _E, False),
        ("Max_Temperature_Limit", 13, 1, _E, False),
        ("Max_Voltage_Limit", 14, 1, _E, False),
        ("Min_Voltage_Limit", 15, 1, _E, False),
        ("Max_Torque_Limit", 16, 2, _E, False),
        ("Phase", 18, 1, _E, False),
        ("Unloading_Condition", 19, 1, _E, False),
        ("LED_Alarm_Condition", 20, 1, _E, False),
        ("P_Coefficient", 21, 1, _E, False),
        ("D_Coefficient", 22, 1, _E, False),
        ("I_Coefficient", 23, 1, _E, False),
        ("Minimum_Startup_Force", 24, 2, _E, False),
        ("CW_Dead_Zone", 26, 1, _E, False),
        ("CCW_Dead_Zone", 27, 1, _E, False),
        ("Protection_Current", 28, 2, _E, False),
        ("Angular_Resolution", 30, 1, _E, False),
        ("Homing_Offset", 31, 2, _E, False),
        ("Operating_Mode", 33, 1, _E, False),
        ("Protective_Torque", 34, 1, _E, False),
        ("Protection_Time", 35, 1, _E, False),
        ("Overload_Torque", 36, 1, _E, False),
        ("Velocity_closed_loop_P_proportional_coefficient", 37, 1, _E, False),
        ("Over_Current_Protection_Time", 38, 1, _E, False),
        ("Velocity_closed_loop_I_integral_coefficient", 39, 1, _E, False),
        ("Torque_Enable", 40, 1, _R, False),
        ("Acceleration", 41, 1, _R, False),
        ("Goal_Position", 42, 2, _R, False),
        ("Goal_Time", 44, 2, _R, False),
        ("Goal_Velocity", 46, 2, _R, False),
        ("Torque_Limit", 48, 2, _R, False),
        ("Lock", 55, 1, _R, False),  # 1: EEPROM writes take effect but are not kept at power-off
        ("Present_Position", 56, 2, _R, True),
        ("Present_Velocity", 58, 2, _R, True),
        ("Present_Load", 60, 2, _R, True),
        ("Present_Voltage", 62, 1, _R, True),
        ("Present_Temperature", 63, 1, _R, True),
        ("Status", 65, 1, _R, True),
        ("Moving", 66, 1, _R, True),
        ("Present_Current", 69, 2, _R, True),
        ("Goal_Position_2", 71, 2, _R, True),
        ("Moving_Velocity", 80, 1, _E, False),  # factory area: two names for one byte, as LeRobot lists it
        ("Moving_Velocity_Threshold", 80, 1, _E, False),
        ("DTs", 81, 1, _E, False),
        ("Velocity_Unit_factor", 82, 1, _E, False),
        ("Hts", 83, 1, _E, False),
        ("Maximum_Velocity_Limit", 84, 1, _E, False),
        ("Maximum_Acceleration", 85, 1, _E, False),
        ("Acceleration_Multiplier", 86, 1, _E, False),
    ]
)
_STS_BAUDS = MappingProxyType(
    {1_000_000: 0, 500_000: 1, 250_000: 2, 128_000: 3, 115_200: 4, 57_600: 5, 38_400: 6, 19_200: 7}
)
_STS_SIGNS = MappingProxyType(
    {
        "Homing_Offset": (SIGN_MAGNITUDE, 11),
        "Goal_Position": (SIGN_MAGNITUDE, 15),
        "Goal_Velocity": (SIGN_MAGNITUDE, 15),
        "Present_Position": (SIGN_MAGNITUDE, 15),
        "Present_Velocity": (SIGN_MAGNITUDE, 15),
        "Present_Load": (SIGN_MAGNITUDE, 10),
    }
)
_STS_DEFAULTS = MappingProxyType(
    {
        "Firmware_Major_Version": 3,
        "Firmware_Minor_Version": 10,
        "Baud_Rate": 0,
        "Return_Delay_Time": 0,
        "Response_Status_Level": 1,
        "Min_Position_Limit": 0,
        "Max_Position_Limit": 4095,
        "Max_Temperature_Limit": 70,
        "Max_Voltage_Limit": 140,
        "Min_Voltage_Limit": 40,
        "Max_Torque_Limit": 1000,
        "Phase": 12,
        "Unloading_Condition": 44,
        "LED_Alarm_Condition": 47,
        "P_Coefficient": 32,
        "D_Coefficient": 32,
        "I_Coefficient": 0,
        "Minimum_Startup_Force": 16,
        "CW_Dead_Zone": 1,
        "CCW_Dead_Zone": 1,
        "Protection_Current": 500,
        "Angular_Resolution": 1,
        "Homing_Offset": 0,
        "Operating_Mode": 0,
        "Protective_Torque": 20,
        "Protection_Time": 200,
        "Overload_Torque": 80,
        "Velocity_closed_loop_P_proportional_coefficient": 10,
        "Over_Current_Protection_Time": 200,
        "Velocity_closed_loop_I_integral_coefficient": 200,
        "Torque_Enable": 0,
        "Acceleration": 0,
        "Torque_Limit": 1000,
        "Lock": 1,
        "Present_Voltage": 120,
        "Present_Temperature": 30,
        "Maximum_Velocity_Limit": 254,
        "Maximum_Acceleration": 254,
    }
)

# Dynamixel X series (XL330, XL430, XM430, ...): EEPROM below address 64, RAM from 64 (ROBOTIS e-manual).
_X_TABLE = _table(
    [
        ("Model_Number", 0, 2, _E, True),
        ("Model_Information", 2, 4, _E, True),
        ("Firmware_Version", 6, 1, _E, True),
        ("ID", 7, 1, _E, False),
        ("Baud_Rate", 8, 1, _E, False),
        ("Return_Delay_Time", 9, 1, _E, False),  # 2 us per unit
        ("Drive_Mode", 10, 1, _E, False),
        ("Operating_Mode", 11, 1, _E, False),
        ("Secondary_ID", 12, 1, _E, False),
        ("Protocol_Type", 13, 1, _E, False),
        ("Homing_Offset", 20, 4, _E, False),
        ("Moving_Threshold", 24, 4, _E, False),
        ("Temperature_Limit", 31, 1, _E, False),
        ("Max_Voltage_Limit", 32, 2, _E, False),
        ("Min_Voltage_Limit", 34, 2, _E, False),
        ("PWM_Limit", 36, 2, _E, False),
        ("Current_Limit", 38, 2, _E, False),
        ("Acceleration_Limit", 40, 4, _E, False),
        ("Velocity_Limit", 44, 4, _E, False),
        ("Max_Position_Limit", 48, 4, _E, False),
        ("Min_Position_Limit", 52, 4, _E, False),
        ("Shutdown", 63, 1, _E, False),
        ("Torque_Enable", 64, 1, _R, False),
        ("LED", 65, 1, _R, False),
        ("Status_Return_Level", 68, 1, _R, False),
        ("Registered_Instruction", 69, 1, _R, True),
        ("Hardware_Error_Status", 70, 1, _R, True),
        ("Velocity_I_Gain", 76, 2, _R, False),
        ("Velocity_P_Gain", 78, 2, _R, False),
        ("Position_D_Gain", 80, 2, _R, False),
        ("Position_I_Gain", 82, 2, _R, False),
        ("Position_P_Gain", 84, 2, _R, False),
        ("Feedforward_2nd_Gain", 88, 2, _R, False),
        ("Feedforward_1st_Gain", 90, 2, _R, False),
        ("Bus_Watchdog", 98, 1, _R, False),
        ("Goal_PWM", 100, 2, _R, False),
        ("Goal_Current", 102, 2, _R, False),
        ("Goal_Velocity", 104, 4, _R, False),
        ("Profile_Acceleration", 108, 4, _R, False),
        ("Profile_Velocity", 112, 4, _R, False),
        ("Goal_Position", 116, 4, _R, False),
        ("Realtime_Tick", 120, 2, _R, True),
        ("Moving", 122, 1, _R, True),
        ("Moving_Status", 123, 1, _R, True),
        ("Present_PWM", 124, 2, _R, True),
        ("Present_Current", 126, 2, _R, True),
        ("Present_Velocity", 128, 4, _R, True),
        ("Present_Position", 132, 4, _R, True),
        ("Velocity_Trajectory", 136, 4, _R, True),
        ("Position_Trajectory", 140, 4, _R, True),
        ("Present_Input_Voltage", 144, 2, _R, True),
        ("Present_Temperature", 146, 1, _R, True),
    ]
)
_X_BAUDS = MappingProxyType({9_600: 0, 57_600: 1, 115_200: 2, 1_000_000: 3, 2_000_000: 4, 3_000_000: 5, 4_000_000: 6})
_X_SIGNS = MappingProxyType(
    {
        name: (TWOS_COMPLEMENT, _X_TABLE[name].size)
        for name in (
            "Homing_Offset",
            "Goal_PWM",
            "Goal_Current",
            "Goal_Velocity",
            "Goal_Position",
            "Present_Position",
            "Present_PWM",
            "Present_Current",
            "Present_Velocity",
            "Velocity_Trajectory",
            "Position_Trajectory",
        )
    }
)


def _x_defaults(**model_specific: int) -> Mapping[str, int]:
    base = {
        "Baud_Rate": 3,  # 1 Mbps, as LeRobot's motor setup leaves every servo (factory: 57,600)
        "Return_Delay_Time": 0,  # LeRobot's configure_motors value (factory: 250 = 500 us)
        "Drive_Mode": 0,
        "Operating_Mode": 3,  # position control
        "Secondary_ID": 255,
        "Protocol_Type": 2,
        "Homing_Offset": 0,
        "Moving_Threshold": 10,
        "Temperature_Limit": 70,
        "PWM_Limit": 885,
        "Acceleration_Limit": 32767,
        "Max_Position_Limit": 4095,
        "Min_Position_Limit": 0,
        "Shutdown": 52,
        "Torque_Enable": 0,
        "Status_Return_Level": 2,
        "Velocity_I_Gain": 1000,
        "Velocity_P_Gain": 100,
        "Position_P_Gain": 800,
        "Goal_PWM": 885,
        "Present_Temperature": 30,
        "Present_Input_Voltage": 120,
    }
    base.update(model_specific)
    return MappingProxyType(base)


def _feetech(name: str, number: int) -> ServoModel:
    return ServoModel(
        name=name,
        vendor=FEETECH,
        protocol=0,
        model_number=number,
        firmware=(3, 10),
        resolution=4096,
        registers=_STS_TABLE,
        baudrates=_STS_BAUDS,
        signs=_STS_SIGNS,
        defaults=_STS_DEFAULTS,
        memory_size=128,
    )


def _dynamixel(name: str, number: int, **defaults: int) -> ServoModel:
    return ServoModel(
        name=name,
        vendor=DYNAMIXEL,
        protocol=2.0,
        model_number=number,
        firmware=(52,),
        resolution=4096,
        registers=_X_TABLE,
        baudrates=_X_BAUDS,
        signs=_X_SIGNS,
        defaults=_x_defaults(**defaults),
        memory_size=700,  # X series tables run to the indirect data near address 661
    )


MODELS: Mapping[str, ServoModel] = MappingProxyType(
    {
        "sts3215": _feetech("sts3215", 777),
        "sts3250": _feetech("sts3250", 2825),
        "xl330-m077": _dynamixel(
            "xl330-m077",
            1190,
            Max_Voltage_Limit=70,
            Min_Voltage_Limit=35,
            Current_Limit=1750,
            Velocity_Limit=445,
            Present_Input_Voltage=50,
        ),
        "xl330-m288": _dynamixel(
            "xl330-m288",
            1200,
            Max_Voltage_Limit=70,
            Min_Voltage_Limit=35,
            Current_Limit=1750,
            Velocity_Limit=445,
            Present_Input_Voltage=50,
        ),
        "xl430-w250": _dynamixel(
            "xl430-w250",
            1060,
            Temperature_Limit=72,
            Max_Voltage_Limit=140,
            Min_Voltage_Limit=60,
            Velocity_Limit=265,
            Present_Input_Voltage=120,
        ),
        "xm430-w350": _dynamixel("xm430-w350", 1020, Max_Voltage_Limit=160, Min_Voltage_Limit=95, Velocity_Limit=200),
        "xm540-w270": _dynamixel("xm540-w270", 1120, Max_Voltage_Limit=160, Min_Voltage_Limit=95, Velocity_Limit=128),
        "xc430-w150": _dynamixel("xc430-w150", 1070, Max_Voltage_Limit=160, Min_Voltage_Limit=60, Velocity_Limit=460),
    }
)


def get_model(name: str) -> ServoModel:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown servo model {name!r}; known models are {sorted(MODELS)}") from None


def models_for(vendor: str) -> list[str]:
    return sorted(n for n, m in MODELS.items() if m.vendor == vendor)
