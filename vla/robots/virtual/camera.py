"""Virtual cameras: the virtual bus's process renders its arm and publishes each camera's latest frame in
a file beside the link (`<link>.cam-<name>`); `VirtualCamera` reads it, as a USB camera would be read.

The file is shared memory by mmap: a 64-byte header, then two frame slots (double buffering).
    0  magic b"VLACAM01"    8 height u32   12 width u32   16 fps f64
    24 seq u64 (frames published; frame `seq` lives in slot seq % 2)   32 stamp f64 (time.time())
The writer fills slot (seq + 1) % 2, then publishes seq + 1. A reader copies slot seq % 2 and checks that
seq moved by less than two meanwhile (else the slot was being rewritten, and it copies again).

Rendering runs in a child process (spawned, its own OpenGL context), fed the arm's joint state through
shared memory: the bus's protocol thread never waits on a render.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MAGIC = b"VLACAM01"
HEADER = 64
_SEQ = struct.Struct("<Q")
_STAMP = struct.Struct("<d")


def camera_path(link: str | Path, name: str) -> Path:
    return Path(f"{link}.cam-{name}")


def create_frame_file(path: Path, height: int, width: int, fps: float) -> None:
    """A new frame file (refuses an existing path: the caller checked it is free)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.ftruncate(fd, HEADER + 2 * height * width * 3)
        os.pwrite(fd, MAGIC + struct.pack("<IId", height, width, fps) + _SEQ.pack(0) + _STAMP.pack(0.0), 0)
    finally:
        os.close(fd)


class FrameWriter:
    def __init__(self, path: Path):
        with open(path, "r+b") as f:
            self.mm = mmap.mmap(f.fileno(), 0)
        self.height, self.width = struct.unpack_from("<II", self.mm, 8)
        self.size = self.height * self.width * 3
        self.seq = _SEQ.unpack_from(self.mm, 24)[0]

    def publish(self, frame: np.ndarray) -> None:
        nxt = self.seq + 1
        off = HEADER + (nxt % 2) * self.size
        self.mm[off : off + self.size] = memoryview(np.ascontiguousarray(frame, np.uint8)).cast("B")
        _STAMP.pack_into(self.mm, 32, time.time())
        _SEQ.pack_into(self.mm, 24, nxt)
        self.seq = nxt

    def close(self) -> None:
        self.mm.close()


class VirtualCamera:
    """A camera of a running `vla virtual-bus`: `connect()`, `read()` (HxWx3 uint8, RGB), `close()`.

    `read()` returns a frame newer than the last one returned, waiting for it at most one frame period;
    if none comes by then (the publisher stalled or stopped), it returns the latest frame it has.
    `read_latest()` never waits.
    """

    def __init__(self, link: str | Path, name: str, fps: float = 30, height: int | None = None, width=None):
        self.link, self.name = str(link), name
        self.path = camera_path(link, name)
        self.fps = float(fps)
        self.height, self.width = height, width
        self._mm: mmap.mmap | None = None
        self._seen = 0

    @property
    def is_connected(self) -> bool:
        return self._mm is not None

    def connect(self) -> None:
        if self._mm is not None:
            return
        try:
            with open(self.path, "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (FileNotFoundError, ValueError):
            raise FileNotFoundError(
                f"no virtual camera {self.name!r} at {self.path}: start `vla virtual-bus --link {self.link} "
                f"--cameras {self.name}` first"
            ) from None
        if mm[:8] != MAGIC:
            mm.close()
            raise ValueError(f"{self.path} is not a virtual camera's frame file")
        h, w, pub_fps = struct.unpack_from("<IId", mm, 8)
        if (self.height, self.width) != (None, None) and (self.height, self.width) != (h, w):
            mm.close()
            raise ValueError(
                f"virtual camera {self.name!r} renders {h}x{w}, not the {self.height}x{self.width} asked for; "
                "start the virtual bus with a matching --camera-size"
            )
        self.height, self.width, self._period = h, w, 1.0 / pub_fps
        self._mm = mm
        deadline = time.monotonic() + 5.0
        while _SEQ.unpack_from(mm, 24)[0] == 0:  # the first render is still coming
            if time.monotonic() > deadline:
                self.close()
                raise TimeoutError(f"virtual camera {self.name!r} ({self.path}) published no frame in 5 s")
            time.sleep(0.005)

    def _copy(self) -> tuple[int, np.ndarray]:
        mm = self._mm
        if mm is None:
            raise RuntimeError(f"virtual camera {self.name!r} is not connected: call connect() first")
        size = self.height * self.width * 3
        while True:
            seq = _SEQ.unpack_from(mm, 24)[0]
            off = HEADER + (seq % 2) * size
            frame = np.frombuffer(mm, np.uint8, size, off).reshape(self.height, self.width, 3).copy()
            if _SEQ.unpack_from(mm, 24)[0] - seq < 2:
                return seq, frame

    def read_latest(self) -> np.ndarray:
        seq, frame = self._copy()
        self._seen = seq
        return frame

    def read(self) -> np.ndarray:
        deadline = time.monotonic() + self._period
        while _SEQ.unpack_from(self._mm, 24)[0] <= self._seen and time.monotonic() < deadline:
            time.sleep(0.001)
        return self.read_latest()

    def async_read(self, timeout_ms: float = 0) -> np.ndarray:
        return self.read_latest()

    @property
    def stamp(self) -> float:
        """time.time() at which the latest frame was rendered."""
        return _STAMP.unpack_from(self._mm, 32)[0] if self._mm is not None else 0.0

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None

    def __enter__(self) -> VirtualCamera:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def render_loop(robot: str, qpos, cameras: dict[str, str], size: tuple[int, int], fps: float, stop) -> None:
    """Child process: render `cameras` {name: frame file} of `robot`'s scene at `fps` from the shared `qpos`
    until `stop` is set or the parent dies."""
    import signal

    from vla.sim.gl import ensure_offscreen_gl

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent stops us
    ensure_offscreen_gl()
    import mujoco

    from vla.robots.virtual.arm import build_model, get_arm

    parent = os.getppid()
    spec = get_arm(robot)
    model, _ = build_model(spec, size)
    data = mujoco.MjData(model)
    renderer = mujoco.Renderer(model, size[0], size[1])
    writers = {name: FrameWriter(Path(path)) for name, path in cameras.items()}
    shared = np.frombuffer(qpos, np.float64)
    period = 1.0 / fps
    next_t = time.monotonic()
    try:
        while not stop.is_set() and os.getppid() == parent:
            data.qpos[:] = shared
            mujoco.mj_kinematics(model, data)
            mujoco.mj_camlight(model, data)
            for name, w in writers.items():
                renderer.update_scene(data, camera=name)
                w.publish(renderer.render())
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            else:
                next_t = time.monotonic()  # fell behind: skip frames rather than catch up in a burst
    finally:
        renderer.close()
        for w in writers.values():
            w.close()
