"""The Robot interface the control loop drives, and its implementations.

A robot is anything with an Embodiment that can be observed and commanded at a fixed rate:
the simulated robot process (`vla sim-robot`, reached over a socket by `SimRobotClient`) or a
user's hardware driver, a `Robot` subclass named in the launch file:

    [robot]
    driver = "my_lab.arm:MyArm"        # module:Class, imported from the Python path
    options = { port = "/dev/ttyUSB0" } # keyword arguments for MyArm(...)

Imports numpy and msgpack only (no torch, no MuJoCo): the control process stays light.
"""

from __future__ import annotations

import importlib
import logging
import socket
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from vla.runtime.wire import WireError, recv_frame, send_frame, str_keys
from vla.spec import Embodiment, SpecError

log = logging.getLogger(__name__)

# Optional episode-status keys a robot may add to an observation (the sim robot does).
SUCCESS, DONE = "success", "done"


class RobotError(RuntimeError):
    """The robot refused a command or its connection failed."""


class Robot(ABC):
    """What the control loop needs from a robot. Subclass it for your hardware.

    `observe()` returns the frame keys of `embodiment` (`observation/state` float32 [s], one
    `observation/images/<cam>` uint8 HxWx3 per camera) plus `task` (the instruction, if the robot
    knows it) and optionally `success` / `done` (episode status, when the robot can tell).
    `send_action(a)` commands float32 [a] in the embodiment's units; it must not block for long
    (the loop calls it once per tick). `stop()` must stop motion at once (e-stop, Ctrl-C).

    Threads: the control loop calls `observe()` from an observer thread and everything else
    from the control thread, so `observe()` may run while `send_action()` does; `reset()` is
    never called while an `observe()` is in progress.
    """

    embodiment: Embodiment

    def connect(self) -> None:
        """Open the hardware / connection (called once before the loop)."""

    @abstractmethod
    def observe(self) -> dict: ...

    @abstractmethod
    def send_action(self, action: np.ndarray) -> None: ...

    def reset(self, seed: int | None = None) -> dict:
        """Start an episode (sim: new scene; hardware: usually nothing). Returns an observation."""
        return self.observe()

    def stop(self) -> None:
        """Stop moving now. The default holds the last observed joint positions when those are the actions."""
        emb = self.embodiment
        if emb.action_mode == "joint_position" and emb.state_dim == emb.action_dim:
            self.send_action(np.asarray(self.observe()["observation/state"], np.float32))

    def close(self) -> None:
        """Release the hardware / connection."""

    @property
    def control_hz(self) -> float:
        return self.embodiment.control_hz

    @property
    def limits(self) -> tuple[np.ndarray, np.ndarray]:
        e = self.embodiment
        return (np.array([d.low for d in e.actions], np.float32), np.array([d.high for d in e.actions], np.float32))


@dataclass(frozen=True)
class RobotConfig:
    """The launch file's [robot] section."""

    type: str = "sim"  # "sim" (a `vla sim-robot` process) or "driver" (your Robot subclass)
    host: str = "127.0.0.1"
    port: int = 9100
    spawn: bool = True  # sim: start the sim robot process ourselves
    env: str = "vla/Arm7-Reach-v0"
    image_size: int = 64
    seed: int = 0
    physics_hz: float = 100.0
    connect_timeout_s: float = 60.0
    driver: str = ""  # "module:Class"
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.type not in ROBOT_TYPES:
            raise SpecError(f"[robot] type: expected one of {list(ROBOT_TYPES)}, got {self.type!r}")
        if self.type == "driver" and ":" not in self.driver:
            raise SpecError(f"[robot] driver: expected 'module:Class' (your Robot subclass), got {self.driver!r}")
        if not 0 <= self.port <= 65535:
            raise SpecError(f"[robot] port must be in 0..65535, got {self.port}")


class SimRobotClient(Robot):
    """The control process's side of a `vla sim-robot` process (length-prefixed msgpack over TCP)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9100,
        *,
        connect_timeout_s: float = 60.0,
        io_timeout_s: float = 10.0,
        alive=None,
    ):
        """`alive`: optional callable; connecting gives up early when it returns False (process died)."""
        self.host, self.port = host, port
        self.alive = alive
        self.connect_timeout_s, self.io_timeout_s = connect_timeout_s, io_timeout_s
        self.sock: socket.socket | None = None  # commands (control thread)
        self.obs_sock: socket.socket | None = None  # observations (observer thread)
        self.info: dict = {}

    def _open(self) -> socket.socket:
        deadline = time.monotonic() + self.connect_timeout_s
        while True:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.io_timeout_s)
                break
            except OSError as e:
                if time.monotonic() >= deadline or (self.alive is not None and not self.alive()):
                    raise RobotError(
                        f"no sim robot at {self.host}:{self.port} after {self.connect_timeout_s} s: {e}"
                    ) from None
                time.sleep(0.1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hello = self._recv(sock)
        if "error" in hello:
            sock.close()
            raise RobotError(f"sim robot {self.host}:{self.port}: {hello['error']}")
        self.info = hello
        return sock

    def connect(self) -> None:
        self.sock = self._open()
        self.obs_sock = self._open()
        self.embodiment = Embodiment.from_dict(self.info["embodiment"])
        log.info("connected to sim robot %s at %s:%d", self.info.get("env"), self.host, self.port)

    def _recv(self, sock) -> dict:
        try:
            return str_keys(recv_frame(sock))
        except (OSError, ConnectionError, WireError) as e:
            raise RobotError(f"sim robot {self.host}:{self.port}: connection failed: {e}") from None

    def _send(self, cmd: str, sock=None, **kw) -> None:
        sock = sock or self.sock
        if sock is None:
            raise RobotError("sim robot: not connected (call connect() first)")
        try:
            send_frame(sock, {"cmd": cmd, **kw})
        except OSError as e:
            raise RobotError(f"sim robot {self.host}:{self.port}: connection failed: {e}") from None

    def _call(self, cmd: str, sock=None, **kw) -> dict:
        sock = sock or self.sock
        self._send(cmd, sock, **kw)
        reply = self._recv(sock)
        if "error" in reply:
            raise RobotError(f"sim robot refused {cmd!r}: {reply['error']}")
        return reply

    def observe(self) -> dict:
        return self._call("observe", self.obs_sock or self.sock)["obs"]

    def send_action(self, action: np.ndarray) -> None:
        # No reply (like a motor bus write); a refused action is reported by the next call.
        self._send("act", action=np.asarray(action, np.float32))

    def reset(self, seed: int | None = None) -> dict:
        return self._call("reset", seed=seed)["obs"]

    def stop(self) -> None:
        self._call("stop")

    def close(self) -> None:
        for s in (self.sock, self.obs_sock):
            if s is not None:
                s.close()
        self.sock = self.obs_sock = None


def _load_driver(spec: str, options: dict) -> Robot:
    module, _, cls_name = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except (ImportError, AttributeError) as e:
        raise SpecError(f"[robot] driver {spec!r}: cannot import it ({e}); is its module on PYTHONPATH?") from None
    if not (isinstance(cls, type) and issubclass(cls, Robot)):
        raise SpecError(f"[robot] driver {spec!r}: expected a subclass of vla.runtime.robot.Robot, got {cls!r}")
    try:
        return cls(**options)
    except TypeError as e:
        raise SpecError(f"[robot] driver {spec!r}: bad options {sorted(options)}: {e}") from None


def _sim(cfg: RobotConfig) -> Robot:
    return SimRobotClient(cfg.host, cfg.port, connect_timeout_s=cfg.connect_timeout_s)


def _driver(cfg: RobotConfig) -> Robot:
    return _load_driver(cfg.driver, dict(cfg.options))


ROBOT_TYPES = {"sim": _sim, "driver": _driver}


def make_robot(cfg: RobotConfig) -> Robot:
    """A (not yet connected) robot for the launch file's [robot] section."""
    return ROBOT_TYPES[cfg.type](cfg)
