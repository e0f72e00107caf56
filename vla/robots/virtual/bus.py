"""The virtual bus: servos that speak the vendor's protocol on a pseudo-terminal, backed by a MuJoCo arm.

    with VirtualBus("so101", "follower", link="/tmp/so101") as vb:
        ...  # FeetechBus("/tmp/so101", ...) or LeRobot's FeetechMotorsBus drive it as a real arm

Three threads (and, with cameras, one renderer process): the protocol thread answers packets (after the
bus latency and the bytes' transmission time at the servo's baud rate); the physics thread steps the arm in
real time (follower: goal positions drive the joints; leader: the scripted hand moves them) and updates
each servo's shaft; the renderer publishes camera frames (vla.robots.virtual.camera).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import select
import threading
import time
from pathlib import Path

import numpy as np

from vla.robots.bus import Motor
from vla.robots.tables import FEETECH, get_model
from vla.robots.virtual import protocol
from vla.robots.virtual.arm import PhysicsArm, get_arm
from vla.robots.virtual.camera import camera_path, create_frame_file, render_loop
from vla.robots.virtual.leader import Trajectory, expert_trajectory, wander_trajectory
from vla.robots.virtual.pty import PseudoTerminal, check_link_free
from vla.robots.virtual.servo import Shaft, VirtualServo

log = logging.getLogger(__name__)

ROLES = ("leader", "follower")
DEFAULT_NOISE = 1.0  # ticks, standard deviation of a present position reading (a 12-bit magnetic encoder)
DEFAULT_LATENCY_MS = 0.5  # USB-serial adapter turnaround on top of the bytes' time on the wire


class VirtualBus:
    def __init__(
        self,
        robot: str = "so101",
        role: str = "follower",
        link: str | Path | None = None,
        *,
        cameras: tuple[str, ...] | list[str] = (),
        camera_size: tuple[int, int] = (480, 640),
        camera_fps: float = 30.0,
        noise: float = DEFAULT_NOISE,
        latency_ms: float = DEFAULT_LATENCY_MS,
        seed: int = 0,
        motors: dict[str, Motor] | None = None,
        trajectory: Trajectory | None = None,
        physics_hz: float = 200.0,
    ):
        self.spec = get_arm(robot)
        if role not in ROLES:
            raise ValueError(f"role must be one of {list(ROLES)}, got {role!r}")
        unknown = [c for c in cameras if c not in self.spec.cameras]
        if unknown:
            raise ValueError(f"{robot} has no camera {unknown[0]!r}; its cameras are {list(self.spec.cameras)}")
        h, w = camera_size
        if not (16 <= h <= 2160 and 16 <= w <= 3840):
            raise ValueError(f"camera size must be HxW between 16x16 and 2160x3840, got {h}x{w}")
        if noise < 0 or latency_ms < 0 or camera_fps <= 0:
            raise ValueError("noise and latency must be >= 0 and camera fps > 0")
        self.robot, self.role = robot, role
        self.motors = motors if motors is not None else self.spec.motors(role)
        missing = set(self.motors) - {j.motor for j in self.spec.joints}
        if missing:
            raise ValueError(f"the virtual {robot} has no joint for motors {sorted(missing)}")
        self.cameras = tuple(cameras)
        self.camera_size, self.camera_fps = (int(h), int(w)), float(camera_fps)
        self.noise, self.latency = float(noise), latency_ms / 1000.0
        self.seed = int(seed)
        self.physics_dt = 1.0 / physics_hz
        self.pty = PseudoTerminal(link)
        self._link = link
        self._trajectory = trajectory
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._camera_proc = None
        self._camera_files: list[Path] = []
        self.servos: dict[str, VirtualServo] = {}
        self.arm: PhysicsArm | None = None
        self.transactions = 0
        self._driven: dict[str, float | None] = {}

    # ---- lifecycle ----
    @property
    def link(self) -> str:
        return self.pty.path

    def camera_paths(self) -> dict[str, Path]:
        return {c: camera_path(self.link, c) for c in self.cameras}

    def start(self) -> VirtualBus:
        if self._link is not None:  # refuse before making anything
            check_link_free(self._link)
            for c in self.cameras:
                check_link_free(camera_path(self._link, c), "camera file")
        self.arm = PhysicsArm(self.spec, seed=self.seed)
        vendor = get_model(next(iter(self.motors.values())).model).vendor
        self.proto = protocol.Feetech if vendor == FEETECH else protocol.Dynamixel
        for k, (name, m) in enumerate(self.motors.items()):
            self.servos[name] = VirtualServo(get_model(m.model), m.id, noise=self.noise, seed=self.seed * 100 + k)
        if self.role == "leader" and self._trajectory is None:
            self._trajectory = self._leader_trajectory()
        self._t0 = time.monotonic()
        self._physics_tick(0.0)
        for s in self.servos.values():
            s.power_on_goal()
        self.pty.open()
        try:
            if self.cameras:
                self._start_cameras()
            for fn, name in ((self._serve, "protocol"), (self._physics, "physics")):
                t = threading.Thread(target=fn, name=f"virtual-bus-{name}", daemon=True)
                t.start()
                self._threads.append(t)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2.0)
        self._threads.clear()
        if self._camera_proc is not None:
            self._camera_stop.set()
            self._camera_proc.join(timeout=3.0)
            if self._camera_proc.is_alive():
                self._camera_proc.terminate()
                self._camera_proc.join(timeout=2.0)
            self._camera_proc = None
        for p in self._camera_files:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        self._camera_files.clear()
        self.pty.close()

    def __enter__(self) -> VirtualBus:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- for tests and tools ----
    def servo(self, motor: str | int) -> VirtualServo:
        if isinstance(motor, int):
            return next(s for s in self.servos.values() if s.id == motor)
        return self.servos[motor]

    def joint(self, motor: str) -> float:
        """The joint value (rad, or m for SO finger slides) of a motor's first joint now."""
        with self._lock:
            return self.arm.q(motor)

    def set_online(self, motor: str | int, online: bool) -> None:
        with self._lock:
            self.servo(motor).online = online

    # ---- internals ----
    def _leader_trajectory(self) -> Trajectory:
        arm = self.arm
        names = [j.motor for j in self.spec.joints]
        if self.spec.mjcf == "arm5.xml":
            try:
                return expert_trajectory(self.seed)
            except Exception as e:  # noqa: BLE001  (no GL for the sim env: move smoothly instead)
                log.warning("scripted expert unavailable (%s); the leader wanders smoothly instead", e)
        ranges = np.array([arm.range[n] for n in names])
        home = np.array([arm.q(n) for n in names])
        return wander_trajectory(ranges, home, seed=self.seed)

    def _start_cameras(self) -> None:
        ctx = mp.get_context("spawn")
        nq = self.arm.model.nq
        self._qpos = ctx.RawArray("d", nq)
        np.frombuffer(self._qpos, np.float64)[:] = self.arm.data.qpos
        files = {}
        for name, path in self.camera_paths().items():
            create_frame_file(path, *self.camera_size, self.camera_fps)
            self._camera_files.append(path)
            files[name] = str(path)
        self._camera_stop = ctx.Event()
        self._camera_proc = ctx.Process(
            target=render_loop,
            args=(self.robot, self._qpos, files, self.camera_size, self.camera_fps, self._camera_stop),
            name="virtual-bus-cameras",
            daemon=True,
        )
        self._camera_proc.start()

    def _physics_tick(self, t: float) -> None:
        arm = self.arm
        if self.role == "leader":
            q, qd = self._trajectory.at(t)
            names = [j.motor for j in self.spec.joints]
            arm.pose(dict(zip(names, q)), dict(zip(names, qd)))
        else:
            for name, s in self.servos.items():
                target = s.target_ticks
                if target != self._driven.get(name, 0.5):  # 0.5: never a target, so the first tick drives all
                    self._driven[name] = target
                    arm.drive(name, None if target is None else arm.joint_of(name, target, s.model.resolution))
            arm.step_until(t)
        for name, s in self.servos.items():
            res = s.model.resolution
            per = res / (2 * np.pi) / arm.map[name].scale  # ticks per joint unit
            s.shaft = Shaft(arm.ticks_of(name, arm.q(name), res), arm.qdot(name) * per, arm.effort(name))

    def _physics(self) -> None:
        nxt = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                self._physics_tick(now - self._t0)
                if self._camera_proc is not None:
                    np.frombuffer(self._qpos, np.float64)[:] = self.arm.data.qpos
            nxt += self.physics_dt
            delay = nxt - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                nxt = time.monotonic()

    def _serve(self) -> None:
        master, buf = self.pty.master, bytearray()
        while not self._stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:  # the terminal went away
                return
            received = time.monotonic()
            buf += chunk
            for motor_id, inst, params in self.proto.packets(buf):
                try:
                    with self._lock:
                        by_id = {s.id: s for s in self.servos.values() if s.online}
                        replies = protocol.handle(self.proto, by_id, motor_id, inst, params)
                        delay = max((s.return_delay_s for s in by_id.values()), default=0.0)
                except Exception:  # noqa: BLE001  (one bad packet must not take the bus down)
                    log.exception("virtual bus: packet id=%s inst=%s failed", motor_id, inst)
                    continue
                self.transactions += 1
                if not replies:
                    continue
                out = b"".join(replies)
                wait = self.latency + delay + len(out) * 10 / self._baud() - (time.monotonic() - received)
                if wait > 0:
                    time.sleep(wait)
                try:
                    os.write(master, out)
                except BlockingIOError:
                    log.debug("virtual bus: nobody reads the port; a reply was dropped")
                except OSError:
                    return
                received = time.monotonic()

    def _baud(self) -> int:
        s = next(iter(self.servos.values()))
        code = s.get("Baud_Rate")
        return next((b for b, c in s.model.baudrates.items() if c == code), 1_000_000)
