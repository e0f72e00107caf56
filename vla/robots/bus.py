"""Motor buses: a daisy chain of servos on one serial port, driven through the vendor's own SDK.

    with FeetechBus("/dev/ttyACM0", {"shoulder_pan": Motor(1, "sts3215"), ...}) as bus:
        bus.sync_read("Present_Position")                    # {"shoulder_pan": 2047, ...}
        bus.sync_write("Goal_Position", {"shoulder_pan": 2100})

The bus is the only code that knows register addresses (from vla.robots.tables). Values are raw integers,
already decoded from the register's sign encoding; units and calibration live above the bus. `connect()`
does LeRobot's handshake: every motor must answer a ping with its model's number, and all motors of one
model must run one firmware version. Every failure raises `BusError` with the port, the motor, its id and
what was expected against what came back.

Both vendors' SDKs (scservo_sdk, dynamixel_sdk) share one shape (PortHandler, PacketHandler, GroupSyncRead,
GroupSyncWrite), so this base class does the work and the vendor classes (vla.robots.feetech,
vla.robots.dynamixel) supply the SDK and the vendor's quirks. One lock serialises transactions, so the
control loop's observer and control threads may share a bus.
"""

from __future__ import annotations

import importlib
import logging
import os
import select
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from vla.robots.tables import DYNAMIXEL, FEETECH, MODELS, ServoModel, get_model
from vla.runtime.robot import RobotError

log = logging.getLogger(__name__)

DEFAULT_BAUDRATE = 1_000_000
# Per-packet reply timeout on top of the bytes' transmission time. The SDKs use 34 ms (two 16 ms USB latency
# timer periods + 2); LeRobot patches Feetech's to 50 ms. A USB-serial adapter answers within a few ms.
DEFAULT_TIMEOUT_MS = 35
PORT_HINT = "is the arm plugged in and powered? (ls /dev/ttyACM* /dev/ttyUSB*)"
HANDSHAKE_PAUSE_S = (0.2, 0.5)  # waits before the 2nd and 3rd round of pings of a motor that stayed silent


class BusError(RobotError):
    """A motor bus failed: the port, a motor, or the handshake. The message names what and where."""


class PortNotFound(BusError):
    """No serial device at the bus's port."""


class MotorNotAnswering(BusError):
    """A motor sent no (valid) reply within the timeout, after every retry."""


class WrongModel(BusError):
    """A motor answered with another model number than the one configured for it."""


@dataclass(frozen=True)
class Motor:
    """One servo on a bus: its id on the chain and its model (a key of vla.robots.tables.MODELS)."""

    id: int
    model: str

    def __post_init__(self):
        if not isinstance(self.id, int) or not 0 <= self.id <= 252:
            raise ValueError(f"motor id must be an integer in 0..252, got {self.id!r}")
        if self.model not in MODELS:
            raise ValueError(f"unknown servo model {self.model!r}; known models are {sorted(MODELS)}")


NameOrId = str | int


def standard_motors(robot: str, role: str = "follower") -> dict[str, Motor]:
    """The motors of a stock arm, as LeRobot configures them (so100/so101: six STS3215; koch: Dynamixel X)."""
    names = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
    if role not in ("leader", "follower"):
        raise ValueError(f"role must be 'leader' or 'follower', got {role!r}")
    if robot in ("so100", "so101"):
        models = ["sts3215"] * 6
    elif robot == "koch":
        models = ["xl330-m077"] * 6 if role == "leader" else ["xl430-w250"] * 2 + ["xl330-m288"] * 4
    else:
        raise ValueError(f"unknown robot {robot!r}; known robots are ['koch', 'so100', 'so101']")
    return {n: Motor(i + 1, m) for i, (n, m) in enumerate(zip(names, models))}


def _port_class(base: type) -> type:
    """The SDK's PortHandler with two changes: the reply timeout is the bus's, and waiting for reply bytes
    sleeps in select() instead of spinning on a non-blocking read (the SDKs poll, burning a core)."""

    class QuietPortHandler(base):
        timeout_ms: float = DEFAULT_TIMEOUT_MS

        def setPacketTimeout(self, packet_length):  # noqa: N802 (the SDK's name)
            self.packet_start_time = self.getCurrentTime()
            self.packet_timeout = self.tx_time_per_byte * packet_length + self.timeout_ms

        def readPort(self, length):  # noqa: N802
            ser = self.ser
            if ser.in_waiting == 0:
                left_ms = self.packet_timeout - self.getTimeSinceStart()
                if left_ms > 0:
                    select.select([ser.fileno()], [], [], left_ms / 1000.0)
            return ser.read(length)

    return QuietPortHandler


class MotorBus(ABC):
    """Servos of one vendor on one serial port. Subclasses name the SDK and the vendor's conventions."""

    vendor: str = ""

    def __init__(
        self,
        port: str,
        motors: dict[str, Motor],
        *,
        baudrate: int | None = None,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        retries: int = 2,
    ):
        if not motors:
            raise ValueError("a bus needs at least one motor")
        ids = [m.id for m in motors.values()]
        if len(set(ids)) != len(ids):
            raise ValueError(f"motor ids must be unique on a bus, got {ids}")
        self.models: dict[str, ServoModel] = {}
        for name, m in motors.items():
            if not isinstance(m, Motor):
                raise ValueError(f"motor {name!r} must be a Motor(id, model), got {m!r}")
            model = get_model(m.model)
            if model.vendor != self.vendor:
                raise ValueError(f"motor {name!r} is a {model.vendor} {m.model}, not a {self.vendor} servo")
            self.models[name] = model
        self.baudrate = int(baudrate or DEFAULT_BAUDRATE)
        for name, model in self.models.items():
            if self.baudrate not in model.baudrates:
                raise ValueError(
                    f"motor {name!r} ({model.name}) cannot run at {self.baudrate} baud; "
                    f"it supports {sorted(model.baudrates)}"
                )
        if timeout_ms <= 0 or retries < 0:
            raise ValueError(f"timeout_ms must be > 0 and retries >= 0, got {timeout_ms} and {retries}")
        self.port = str(port)
        self.motors = dict(motors)
        self.timeout_ms = timeout_ms
        self.retries = int(retries)
        self._names = {m.id: name for name, m in self.motors.items()}
        self._lock = threading.RLock()
        self._port: Any = None
        self._packet: Any = None
        self._readers: dict[tuple, Any] = {}

    # ---- what a vendor supplies ----
    @abstractmethod
    def _sdk(self):
        """The vendor SDK module (imported lazily: importing vla.robots needs neither SDK)."""

    @abstractmethod
    def _packet_handler(self, sdk):
        """The SDK's packet handler for this vendor's protocol."""

    @abstractmethod
    def firmware(self, motor: NameOrId) -> str:
        """The motor's firmware version, as text."""

    def _status_error(self, error: int) -> str | None:
        """The error a reply's status byte reports, or None when the reply's data is valid."""
        return self._packet.getRxPacketError(error) if error else None

    # ---- connection ----
    @property
    def is_connected(self) -> bool:
        return self._port is not None and bool(self._port.is_open)

    def connect(self, handshake: bool = True) -> None:
        """Open the port; with `handshake`, check every motor's model number and firmware."""
        with self._lock:
            if self.is_connected:
                raise BusError(f"{self.vendor} bus on {self.port} is already connected")
            if not os.path.exists(self.port):
                raise PortNotFound(f"no serial port at {self.port}: {PORT_HINT}")
            sdk = self._sdk()
            port = _port_class(sdk.PortHandler)(self.port)
            port.timeout_ms = float(self.timeout_ms)
            try:
                ok = port.setBaudRate(self.baudrate)  # opens the port
            except Exception as e:  # pyserial raises SerialException (an OSError) or OSError itself
                hint = " (on Linux, add yourself to the dialout group)" if "ermission" in str(e) else ""
                raise BusError(f"cannot open the serial port {self.port}: {e}{hint}") from None
            if not ok:
                raise BusError(f"{self.port}: the {self.vendor} SDK refused {self.baudrate} baud")
            self._port, self._packet = port, self._packet_handler(sdk)
            self._readers.clear()
            if handshake:
                try:
                    self.handshake()
                except BaseException:
                    self.close()
                    raise

    def handshake(self) -> None:
        """Every motor answers a ping with its model's number; each model runs one firmware version."""
        missing, wrong = [], []
        for name, m in self.motors.items():
            got = None
            # A silent motor gets two more rounds, HANDSHAKE_PAUSE_S apart, before it counts as missing: the
            # first packets after a port opens can go unanswered (a servo board still powering up, a USB
            # adapter's first transfer, a busy computer), and a handshake that fails there fails the session.
            for pause in (0.0, *HANDSHAKE_PAUSE_S):
                time.sleep(pause)
                try:
                    got = self.ping(name)
                    break
                except MotorNotAnswering:
                    self._recover()
            if got is None:
                missing.append(name)
                continue
            want = self.models[name].model_number
            if got != want:
                wrong.append(f"{name!r} (id {m.id}): expected {m.model} (model number {want}), got model number {got}")
        if missing:
            who = ", ".join(f"{n!r} (id {self.motors[n].id})" for n in missing)
            answered = [n for n in self.motors if n not in missing]
            raise MotorNotAnswering(
                f"{self.vendor} bus on {self.port}: no answer from {who} (answered: {answered}); check its power, "
                "the cable chain and its id"
            )
        if wrong:
            raise WrongModel(f"{self.vendor} bus on {self.port}: wrong servo model for " + "; ".join(wrong))
        by_model: dict[str, dict[str, str]] = {}
        for name, m in self.motors.items():
            by_model.setdefault(m.model, {})[name] = self.firmware(name)
        for model, versions in by_model.items():
            if len(set(versions.values())) > 1:
                raise BusError(
                    f"{self.vendor} bus on {self.port}: the {model} motors run different firmware versions "
                    f"{versions}; update them to one version with the vendor's tool"
                )

    def close(self, disable_torque: bool = False) -> None:
        """Close the port (first disabling torque when asked). Closing a closed bus does nothing."""
        with self._lock:
            if not self.is_connected:
                self._port = None
                return
            try:
                if disable_torque:
                    self.disable_torque()
            finally:
                self._port.closePort()
                self._port = None
                self._readers.clear()

    def __enter__(self) -> MotorBus:
        if not self.is_connected:
            self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.port!r}, {len(self.motors)} motors)"

    # ---- single-motor transactions ----
    def ping(self, motor: NameOrId) -> int:
        """The model number the motor answers with."""
        name, m = self._motor(motor)
        with self._lock:
            self._need_port()
            return self._retry(lambda: self._packet.ping(self._port, m.id), f"ping {name!r} (id {m.id})")

    def read(self, register: str, motor: NameOrId) -> int:
        name, m = self._motor(motor)
        model = self.models[name]
        addr, size = self._address(model, register)
        fn = {1: "read1ByteTxRx", 2: "read2ByteTxRx", 4: "read4ByteTxRx"}[size]
        with self._lock:
            self._need_port()
            op = getattr(self._packet, fn)
            raw = self._retry(lambda: op(self._port, m.id, addr), f"read {register} of {name!r} (id {m.id})")
        return model.decode(register, raw)

    def write(self, register: str, motor: NameOrId, value: int) -> None:
        """Write one register and wait for the motor's acknowledgement."""
        name, m = self._motor(motor)
        model = self.models[name]
        addr, size = self._address(model, register, writing=True)
        data = _le_bytes(self._encode(model, register, value), size)
        with self._lock:
            self._need_port()
            self._retry(
                lambda: (None, *self._packet.writeTxRx(self._port, m.id, addr, size, data)),
                f"write {register}={value} to {name!r} (id {m.id})",
            )

    # ---- group transactions ----
    def sync_read(self, register: str, motors: Iterable[NameOrId] | None = None) -> dict[str, int]:
        """One register of several motors in one round trip: {name: value}."""
        names = self._names_of(motors)
        addr, size = self._shared_address(names, register)
        ids = tuple(self.motors[n].id for n in names)
        with self._lock:
            self._need_port()
            sdk = self._sdk()
            key = (addr, size, ids)
            reader = self._readers.get(key)
            if reader is None:
                reader = sdk.GroupSyncRead(self._port, self._packet, addr, size)
                for i in ids:
                    reader.addParam(i)
                self._readers = {key: reader}  # keep the last one: a loop reads the same register each tick
            for _ in range(self.retries + 1):
                comm = reader.txRxPacket()
                if comm == sdk.COMM_SUCCESS:
                    break
                self._recover()
            if comm != sdk.COMM_SUCCESS:
                silent = [n for n in names if len(reader.data_dict.get(self.motors[n].id) or ()) < size]
                who = ", ".join(f"{n!r} (id {self.motors[n].id})" for n in silent[:1]) or "a motor"
                raise MotorNotAnswering(
                    f"{self.vendor} bus on {self.port}: sync read of {register} failed at {who} after "
                    f"{self.retries + 1} tries ({self._packet.getTxRxResult(comm)}); check its power, cable and id"
                )
            return {n: self.models[n].decode(register, reader.getData(i, addr, size)) for n, i in zip(names, ids)}

    def sync_write(self, register: str, values: dict[str, int]) -> None:
        """One register of several motors in one packet. Motors do not acknowledge it (fast, unconfirmed)."""
        names = self._names_of(values)
        addr, size = self._shared_address(names, register, writing=True)
        data = {self.motors[n].id: _le_bytes(self._encode(self.models[n], register, values[n]), size) for n in names}
        with self._lock:
            self._need_port()
            sdk = self._sdk()
            writer = sdk.GroupSyncWrite(self._port, self._packet, addr, size)
            for i, d in data.items():
                writer.addParam(i, d)
            for _ in range(self.retries + 1):
                comm = writer.txPacket()
                if comm == sdk.COMM_SUCCESS:
                    return
                self._recover()
            raise BusError(
                f"{self.vendor} bus on {self.port}: sync write of {register} could not be sent "
                f"({self._packet.getTxRxResult(comm)}); {PORT_HINT}"
            )

    # ---- torque ----
    def enable_torque(self, motors: Iterable[NameOrId] | NameOrId | None = None) -> None:
        for name in self._names_of(motors):
            self.write("Torque_Enable", name, 1)

    def disable_torque(self, motors: Iterable[NameOrId] | NameOrId | None = None) -> None:
        for name in self._names_of(motors):
            self.write("Torque_Enable", name, 0)

    # ---- helpers ----
    def _motor(self, motor: NameOrId) -> tuple[str, Motor]:
        if isinstance(motor, str):
            if motor not in self.motors:
                raise BusError(f"no motor named {motor!r} on the bus at {self.port}; motors are {list(self.motors)}")
            return motor, self.motors[motor]
        if isinstance(motor, int) and motor in self._names:
            name = self._names[motor]
            return name, self.motors[name]
        raise BusError(f"no motor with id {motor!r} on the bus at {self.port}; ids are {sorted(self._names)}")

    def _names_of(self, motors) -> list[str]:
        if motors is None:
            return list(self.motors)
        if isinstance(motors, str | int):
            motors = [motors]
        names = [self._motor(m)[0] for m in motors]
        if not names:
            raise BusError("no motors given")
        return names

    def _address(self, model: ServoModel, register: str, writing: bool = False) -> tuple[int, int]:
        try:
            reg = model.register(register)
        except ValueError as e:
            raise BusError(str(e)) from None
        if writing and reg.readonly:
            raise BusError(f"{register} is read-only on the {model.name}")
        return reg.address, reg.size

    def _shared_address(self, names: list[str], register: str, writing: bool = False) -> tuple[int, int]:
        places = {self._address(self.models[n], register, writing) for n in names}
        if len(places) > 1:
            raise BusError(f"{register} sits at different addresses on these motors' models; read them one by one")
        return places.pop()

    @staticmethod
    def _encode(model: ServoModel, register: str, value: int) -> int:
        try:
            return model.encode(register, value)
        except ValueError as e:
            raise BusError(f"{model.name}: {e}") from None

    def _need_port(self) -> None:
        if not self.is_connected:
            raise BusError(f"{self.vendor} bus on {self.port} is not connected: call connect() first")

    def _recover(self) -> None:
        """Between tries: free the SDK's busy flag and drop stray bytes of a late or broken reply."""
        self._port.is_using = False
        try:
            self._port.ser.reset_input_buffer()
        except Exception:  # noqa: BLE001  (a vanished port shows up on the next try)
            pass

    def _retry(self, op: Callable[[], tuple], what: str) -> Any:
        """Run one SDK transaction (-> value, comm result, status byte), retrying on communication errors."""
        sdk = self._sdk()
        ok = sdk.COMM_SUCCESS
        for attempt in range(self.retries + 1):
            try:
                value, comm, error = op()
            except IndexError:  # the SDK took a late reply to an earlier try for this one and indexed past it
                value, comm, error = None, sdk.COMM_RX_CORRUPT, 0
            if comm == ok:
                break
            log.debug("%s on %s: try %d failed: %s", what, self.port, attempt + 1, self._packet.getTxRxResult(comm))
            self._recover()
        else:
            if not os.path.exists(self.port):
                raise PortNotFound(f"{what}: the serial port {self.port} is gone: {PORT_HINT}")
            raise MotorNotAnswering(
                f"{what} on {self.port}: no valid reply after {self.retries + 1} tries "
                f"({self._packet.getTxRxResult(comm)}); check the motor's power, cable and id"
            )
        problem = self._status_error(error)
        if problem:
            raise BusError(f"{what} on {self.port}: the motor reports an error: {problem}")
        return value


def _le_bytes(value: int, size: int) -> list[int]:
    return [(value >> (8 * k)) & 0xFF for k in range(size)]


# The vendor buses, by vendor. Resolved on first use: the vendor modules import this one, so it names them
# rather than importing them (the same module:Class form as a launch file's robot driver).
BUS_CLASSES = {FEETECH: "vla.robots.feetech:FeetechBus", DYNAMIXEL: "vla.robots.dynamixel:DynamixelBus"}
ROBOT_VENDORS = {"so100": FEETECH, "so101": FEETECH, "koch": DYNAMIXEL}


def bus_class(vendor: str) -> type[MotorBus]:
    try:
        module, cls = BUS_CLASSES[vendor].split(":")
    except KeyError:
        raise ValueError(f"unknown servo vendor {vendor!r}; known vendors are {sorted(BUS_CLASSES)}") from None
    return getattr(importlib.import_module(module), cls)


def make_bus(protocol_or_robot: str | float, port: str, motors: dict[str, Motor] | None = None, **kw) -> MotorBus:
    """A bus by vendor ("feetech", "dynamixel"), protocol (0 -> Feetech, 2.0 -> Dynamixel) or robot
    ("so100", "so101", "koch"; motors default to that robot's follower motors)."""
    key = protocol_or_robot
    if key in ROBOT_VENDORS:
        vendor = ROBOT_VENDORS[key]
        motors = motors if motors is not None else standard_motors(key)
    elif key in (0, "0"):
        vendor = FEETECH
    elif key in (2, 2.0, "2", "2.0"):
        vendor = DYNAMIXEL
    else:
        vendor = str(key)
    if motors is None:
        raise ValueError(f"make_bus({key!r}, ...) needs motors")
    return bus_class(vendor)(port, motors, **kw)
