"""SO-100, SO-101 and Koch arms behind the control loop's `Robot` interface.

    arm = ServoArm("/dev/ttyACM0", robot="so101", calibration="my-follower", cameras={"front": "0"})
    arm.connect()                      # bus handshake, calibration checked / written, servos configured
    obs = arm.observe()                # {"observation/state": float32[6], "observation/images/front": uint8 HxWx3}
    arm.send_action(obs["observation/state"])   # follower: joint targets in the embodiment's units
    arm.close()                        # torque off, port and cameras closed

In a launch file: `[robot] driver = "vla.robots.arm:ServoArm"`, `options = { port = ..., robot = "so101",
calibration = ..., cameras = { front = "0" } }` (launch/so101-real.toml).

Units are LeRobot's (vla.robots.calibration): by default "%" of the calibrated range, -100..100 for the
body and 0..100 for the gripper: the embodiment is envs/embodiments/<robot>.toml, whose limits are the
calibrated range itself. With `use_degrees` the body is in degrees and the embodiment is built here, named
"<robot>-deg", its limits the calibrated range in degrees (they depend on the calibration, so no TOML can
state them). Either way the safety layer clamps actions to the calibrated range.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from vla.resources import load_embodiment
from vla.robots.bus import Motor, bus_class
from vla.robots.calibration import (
    Calibration,
    load_calibration,
    mismatched_motors,
    resolve_calibration,
    write_calibration,
)
from vla.robots.cameras import Camera, CameraError, make_camera, parse_cameras
from vla.robots.specs import ArmSpec, arm_spec
from vla.runtime.robot import Robot, RobotError
from vla.spec import STATE, Dim, Embodiment, SpecError, image_key
from vla.spec import Camera as CameraSpec

log = logging.getLogger(__name__)

DEFAULT_IMAGE = (480, 640)  # what LeRobot asks of an OpenCV camera by default


def arm_embodiment(
    spec: ArmSpec,
    *,
    use_degrees: bool = False,
    calibration: Calibration | None = None,
    cameras: dict[str, tuple[int, int]] | None = None,
) -> Embodiment:
    """The embodiment of an arm: envs/embodiments/<robot>.toml with the cameras actually attached; with
    `use_degrees`, "<robot>-deg" with the body in degrees, limited to the calibrated range (the whole turn,
    +-180, before a calibration is known)."""
    base = load_embodiment(spec.robot)
    cams = base.cameras if cameras is None else tuple(CameraSpec(n, h, w) for n, (h, w) in cameras.items())
    if not use_degrees:
        return replace(base, cameras=cams)
    if calibration is not None:
        lows, highs = calibration.with_units(True).limits()
    else:
        lows, highs = np.full(len(spec.names), -180.0), np.full(len(spec.names), 180.0)

    def dims(src: tuple[Dim, ...]) -> tuple[Dim, ...]:
        return tuple(
            d if d.name == spec.gripper else Dim(d.name, "deg", float(lo), float(hi))
            for d, lo, hi in zip(src, lows, highs, strict=True)
        )

    return replace(
        base,
        name=f"{base.name}-deg",
        state=dims(base.state),
        actions=dims(base.actions),
        cameras=cams,
        description=base.description.replace("LeRobot units", "LeRobot units, body in degrees"),
    )


def _image_size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        return (image_size, image_size)
    try:
        h, w = (int(x) for x in image_size)
    except (TypeError, ValueError):
        raise SpecError(f"image_size: expected a number or [height, width], got {image_size!r}") from None
    if h <= 0 or w <= 0:
        raise SpecError(f"image_size: expected positive sizes, got {image_size!r}")
    return (h, w)


class ServoArm(Robot):
    """A leader or follower SO-100 / SO-101 / Koch arm on one motor bus, with optional cameras.

    `calibration`: a LeRobot calibration file, or its id under LeRobot's calibration folder
    (`<robot>-<role>` when None). `cameras`: {name: spec} or "name=spec,..." (vla.robots.cameras).
    `max_relative_target`: a follower moves at most this far (in its units) from where it is per action,
    a number for every joint or {joint: number}, as LeRobot's option. `image_size`: the size of the images
    in observations (a number or [height, width]) [default: each camera's TOML size, else 480x640].
    """

    def __init__(
        self,
        port: str,
        *,
        robot: str = "so101",
        role: str = "follower",
        calibration: str | Path | None = None,
        cameras: dict[str, str] | str | None = None,
        use_degrees: bool = False,
        max_relative_target: float | dict | None = None,
        image_size: int | list | tuple | None = None,
        camera_fps: float = 30.0,
        baudrate: int | None = None,
        disable_torque_on_close: bool = True,
    ):
        self.spec = arm_spec(robot, role)
        self.port = str(port)
        self.calibration_ref = calibration
        self.use_degrees = bool(use_degrees)
        self.baudrate = baudrate
        self.disable_torque_on_close = disable_torque_on_close
        self.max_relative_target = self._relative_target(max_relative_target)
        size = _image_size(image_size)
        toml_sizes = {c.name: (c.height, c.width) for c in load_embodiment(self.spec.robot).cameras}
        self.cameras: dict[str, Camera] = {}
        sizes = {}
        for name, cam_spec in parse_cameras(cameras).items():
            h, w = size or toml_sizes.get(name, DEFAULT_IMAGE)
            self.cameras[name] = make_camera(cam_spec, name=name, height=h, width=w, fps=camera_fps)
            sizes[name] = (h, w)
        self._camera_sizes = sizes
        self.calibration: Calibration | None = None
        self.bus = None
        self.embodiment = arm_embodiment(self.spec, use_degrees=self.use_degrees, cameras=sizes)

    def __repr__(self) -> str:
        return f"ServoArm({self.port!r}, robot={self.spec.robot!r}, role={self.spec.role!r})"

    @property
    def is_follower(self) -> bool:
        return self.spec.role == "follower"

    @property
    def is_connected(self) -> bool:
        return self.bus is not None and self.bus.is_connected

    def _relative_target(self, value) -> np.ndarray | None:
        if value is None:
            return None
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(self.spec.names))
            if unknown:
                raise SpecError(f"max_relative_target: unknown joints {unknown}; joints are {list(self.spec.names)}")
            out = np.array([value.get(n, np.inf) for n in self.spec.names], np.float64)
        else:
            out = np.full(len(self.spec.names), float(value))
        if not (out > 0).all():
            raise SpecError(f"max_relative_target: expected positive numbers, got {value!r}")
        return out

    # ---- connection ----
    def connect(self) -> None:
        if self.is_connected:
            raise RobotError(f"{self!r} is already connected")
        spec = self.spec
        # The calibration first: a missing file is reported before any hardware is touched.
        path = resolve_calibration(self.calibration_ref, spec, port=self.port)
        cal = load_calibration(path, spec.robot, self.use_degrees, role=spec.role)
        motors = {name: Motor(i, model) for name, (i, model) in spec.motors.items()}
        bus = bus_class(spec.vendor)(self.port, motors, baudrate=self.baudrate)
        bus.connect(handshake=True)
        self.bus, self.calibration = bus, cal
        try:
            bus.disable_torque()
            stale = mismatched_motors(bus, cal, spec)
            if stale:
                log.info("writing the calibration %s into %s", path, ", ".join(stale))
                write_calibration(bus, cal, spec)
            spec.configure(bus, cal)
            if self.is_follower:
                # Torque on holds the arm where it is: the goal register may hold an old target.
                bus.sync_write("Goal_Position", bus.sync_read("Present_Position"))
                bus.enable_torque()
            for name, cam in self.cameras.items():
                try:
                    cam.connect()
                except RobotError:
                    raise
                except (OSError, ValueError, TimeoutError, RuntimeError) as e:  # other camera kinds' errors
                    raise CameraError(f"camera {name!r}: {e}") from None
        except BaseException:
            self.close()
            raise
        self.embodiment = arm_embodiment(
            spec, use_degrees=self.use_degrees, calibration=cal, cameras=self._camera_sizes
        )
        log.info("%s %s connected on %s (calibration %s)", spec.robot, spec.role, self.port, path)

    def _need_bus(self):
        if self.bus is None or self.calibration is None:
            raise RobotError(f"{self!r} is not connected: call connect() first")
        return self.bus

    # ---- the Robot interface ----
    def read_joints(self) -> np.ndarray:
        """Joint positions, float32 [6] in the embodiment's units."""
        raw = self._need_bus().sync_read("Present_Position")
        return self.calibration.normalize(raw).astype(np.float32)

    def observe(self) -> dict:
        obs = {STATE: self.read_joints()}
        for name, cam in self.cameras.items():
            obs[image_key(name)] = cam.read()
        return obs

    def send_action(self, action: np.ndarray) -> None:
        if not self.is_follower:
            raise RobotError(f"the {self.spec.robot} leader is moved by hand and takes no actions; drive a follower")
        bus = self._need_bus()
        a = np.asarray(action, np.float64).reshape(-1)
        n = len(self.spec.names)
        if a.shape != (n,):
            raise RobotError(
                f"{self.spec.robot} action: expected {n} values ({', '.join(self.spec.names)}), got {a.shape}"
            )
        if not np.isfinite(a).all():
            raise RobotError(f"{self.spec.robot} action: non-finite values {a.tolist()}")
        if self.max_relative_target is not None:
            present = self.calibration.normalize(bus.sync_read("Present_Position"))
            step = np.clip(a - present, -self.max_relative_target, self.max_relative_target)
            if (step != a - present).any():
                log.debug("max_relative_target: goal %s capped to %s", a.tolist(), (present + step).tolist())
            a = present + step
        bus.sync_write("Goal_Position", self.calibration.unnormalize(a))

    def stop(self) -> None:
        """Hold where the arm is now (the follower's goal := its present position)."""
        if self.is_follower and self.is_connected:
            self.bus.sync_write("Goal_Position", self.bus.sync_read("Present_Position"))

    def close(self) -> None:
        """Torque off (unless disable_torque_on_close=False; LeRobot does it for leaders too: the Koch
        leader's gripper holds under torque), then the port and the cameras."""
        errors = []
        for cam in self.cameras.values():
            try:
                cam.close()
            except Exception as e:  # noqa: BLE001  (close everything, report once)
                errors.append(e)
        bus, self.bus = self.bus, None
        if bus is not None:
            try:
                bus.close(disable_torque=self.disable_torque_on_close and bus.is_connected)
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        if errors:
            log.warning("closing %r: %s", self, "; ".join(str(e) for e in errors))


def make_arm(robot: str, role: str, port: str, **kw) -> ServoArm:
    """A (not yet connected) arm: make_arm("so101", "leader", "/dev/ttyACM1", calibration="my-leader")."""
    return ServoArm(port, robot=robot, role=role, **kw)
