"""Cameras for real robots: a reader thread per camera keeps the latest frame; `read()` returns it.

    cam = make_camera("0", name="front", height=480, width=640, fps=30)   # /dev/video0 through OpenCV
    cam.connect()            # opens the device, starts the reader, waits for the first frame
    rgb = cam.read()         # uint8 HxWx3 RGB, the newest frame (never a queue of old ones)
    cam.close()

Specs (`make_camera`, and `parse_cameras("front=0,wrist=video:clip.mp4")` for command lines):
    "0", "2"              an OpenCV device index
    "/dev/video2"         an OpenCV device path (any path OpenCV can open)
    "video:PATH"          a video file played in a loop at its own frame rate (tests, demos)
    "virtual:LINK"        a virtual camera rendered by a virtual bus's MuJoCo arm (vla.robots.virtual)

Latest-frame semantics: the reader thread reads at the camera's rate and replaces the frame it holds;
`frames_read` counts frames taken from the source, `frames_dropped` those replaced before any `read()`
returned them (a slow consumer loses frames, never gets stale ones). `read()` raises CameraError when the
reader stopped (device unplugged) or the newest frame is older than `max_age_s`.
"""

from __future__ import annotations

import glob
import logging
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from vla.runtime.robot import RobotError
from vla.spec import SpecError

log = logging.getLogger(__name__)


class CameraError(RobotError):
    """A camera that cannot be opened or stopped delivering frames."""


def _resize(frame: np.ndarray, height: int | None, width: int | None) -> np.ndarray:
    if (height is None or frame.shape[0] == height) and (width is None or frame.shape[1] == width):
        return frame
    import cv2

    h, w = height or frame.shape[0], width or frame.shape[1]
    interp = cv2.INTER_AREA if h * w < frame.shape[0] * frame.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(frame, (w, h), interpolation=interp)


class Camera(ABC):
    """What a robot needs from a camera. `height` / `width` are those of the frames `read()` returns
    (the requested size, else the source's own once connected)."""

    def __init__(self, name: str, *, height: int | None = None, width: int | None = None, fps: float = 30.0):
        if (height is None) != (width is None):
            raise SpecError(f"camera {name!r}: give both height and width, or neither")
        for what, v in (("height", height), ("width", width)):
            if v is not None and v <= 0:
                raise SpecError(f"camera {name!r}: {what} must be positive, got {v}")
        if not fps > 0:
            raise SpecError(f"camera {name!r}: fps must be > 0, got {fps}")
        self.name = name
        self.height, self.width, self.fps = height, width, float(fps)
        self.frames_read = 0
        self.frames_dropped = 0

    @abstractmethod
    def connect(self) -> None: ...

    @abstractmethod
    def read(self) -> np.ndarray:
        """The newest frame, uint8 HxWx3 RGB."""

    @abstractmethod
    def close(self) -> None: ...

    @property
    @abstractmethod
    def is_connected(self) -> bool: ...

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.close()


class ReaderCamera(Camera):
    """A camera read by a background thread. Subclasses open the source, grab one BGR frame (None at the
    end of the source), and release it; `paced` sources (files) are slowed to `fps` by the thread."""

    paced = False

    def __init__(self, name: str, *, height=None, width=None, fps: float = 30.0, max_age_s: float = 1.0):
        super().__init__(name, height=height, width=width, fps=fps)
        self.max_age_s = max_age_s
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._frame_t = 0.0
        self._unread = False
        self._error: CameraError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _grab(self) -> np.ndarray | None: ...

    @abstractmethod
    def _release(self) -> None: ...

    def describe(self) -> str:
        return f"camera {self.name!r}"

    @property
    def is_connected(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def connect(self, timeout_s: float = 5.0) -> None:
        if self._thread is not None:
            raise CameraError(f"{self.describe()} is already connected")
        self._open()
        self._stop.clear()
        self._error = None
        self._thread = threading.Thread(target=self._loop, name=f"camera-{self.name}", daemon=True)
        self._thread.start()
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._error is not None, timeout_s)
            error, got = self._error, self._frame is not None
        if error is not None or not got:
            self.close()
            raise error or CameraError(f"{self.describe()} gave no frame within {timeout_s} s")
        log.info("%s connected: %dx%d at %.3g fps", self.describe(), self.width, self.height, self.fps)

    def _loop(self) -> None:
        period = 1.0 / self.fps
        next_t = time.monotonic()
        try:
            while not self._stop.is_set():
                bgr = self._grab()
                if bgr is None:
                    raise CameraError(f"{self.describe()} stopped delivering frames (unplugged?)")
                rgb = np.ascontiguousarray(_resize(bgr, self.height, self.width)[..., ::-1])
                with self._cond:
                    if self._unread:
                        self.frames_dropped += 1
                    self._frame, self._frame_t, self._unread = rgb, time.monotonic(), True
                    self.frames_read += 1
                    self._cond.notify_all()
                if self.paced:
                    next_t += period
                    delay = next_t - time.monotonic()
                    if delay > 0:
                        self._stop.wait(delay)
                    else:
                        next_t = time.monotonic()  # fell behind: no burst to catch up
        except CameraError as e:
            err = e
        except Exception as e:  # OpenCV errors in the thread reach the reader as one CameraError
            err = CameraError(f"{self.describe()}: {type(e).__name__}: {e}")
        else:
            return
        with self._cond:
            self._error = err
            self._cond.notify_all()

    def read(self, timeout_s: float = 1.0) -> np.ndarray:
        with self._cond:
            if self._thread is None:
                raise CameraError(f"{self.describe()} is not connected (call connect() first)")
            self._cond.wait_for(lambda: self._frame is not None or self._error is not None, timeout_s)
            if self._error is not None:
                raise self._error
            if self._frame is None:
                raise CameraError(f"{self.describe()} gave no frame within {timeout_s} s")
            age = time.monotonic() - self._frame_t
            if age > self.max_age_s:
                raise CameraError(f"{self.describe()}: no new frame for {age:.2f} s")
            self._unread = False
            return self._frame

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self._release()
        with self._cond:
            self._frame, self._unread = None, False


def _devices() -> str:
    found = sorted(glob.glob("/dev/video*"))
    return ", ".join(found) if found else "none"


class OpenCVCamera(ReaderCamera):
    """A USB / built-in camera through OpenCV (`opencv-python-headless`): a device index or a path.
    The requested size and rate are asked of the device; frames are resized when it gives another size."""

    def __init__(self, device: int | str, name: str = "camera", **kw):
        super().__init__(name, **kw)
        self.device = device
        self._cap = None

    def describe(self) -> str:
        return f"camera {self.name!r} ({self.device})"

    def _open(self) -> None:
        import cv2

        if isinstance(self.device, str) and not Path(self.device).exists():
            raise CameraError(f"{self.describe()}: {self.device} does not exist (video devices here: {_devices()})")
        cv2.setNumThreads(1)
        cap = cv2.VideoCapture(self.device, cv2.CAP_ANY)
        if not cap.isOpened():
            cap.release()
            raise CameraError(
                f"{self.describe()}: cannot open it (video devices here: {_devices()}); is it plugged in and "
                "not used by another program?"
            )
        if self.width is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, float(self.width))
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, float(self.height))
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        got_w, got_h = int(round(cap.get(cv2.CAP_PROP_FRAME_WIDTH))), int(round(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if self.width is None:
            self.width, self.height = got_w, got_h
        elif (got_w, got_h) != (self.width, self.height):
            log.warning(
                "%s gives %dx%d, not %dx%d: frames are resized", self.describe(), got_w, got_h, self.width, self.height
            )
        got_fps = cap.get(cv2.CAP_PROP_FPS)
        if got_fps and abs(got_fps - self.fps) > 0.5:
            log.warning("%s runs at %.3g fps, not %.3g", self.describe(), got_fps, self.fps)
        self._cap = cap

    def _grab(self) -> np.ndarray | None:
        ok, frame = self._cap.read()
        return frame if ok else None

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class VideoFileCamera(OpenCVCamera):
    """A video file played in a loop at its own frame rate (the given fps if the file states none)."""

    paced = True

    def __init__(self, path: str | Path, name: str = "camera", **kw):
        super().__init__(str(path), name, **kw)

    def _open(self) -> None:
        import cv2

        if not Path(self.device).is_file():
            raise CameraError(f"{self.describe()}: no such video file")
        cap = cv2.VideoCapture(self.device)
        ok, first = cap.read() if cap.isOpened() else (False, None)
        if not ok:
            cap.release()
            raise CameraError(f"{self.describe()}: not a video OpenCV can read")
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        fps = cap.get(cv2.CAP_PROP_FPS)
        if fps and fps > 0:
            self.fps = float(fps)
        if self.width is None:
            self.height, self.width = first.shape[:2]
        self._cap = cap

    def _grab(self) -> np.ndarray | None:
        import cv2

        ok, frame = self._cap.read()
        if not ok:  # the end: start over
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
        return frame if ok else None


SPEC_FORMS = '"0" (device index), "/dev/video2" (device path), "video:PATH" (a video file), "virtual:LINK"'


def make_camera(
    spec: str, *, name: str = "camera", height: int | None = None, width: int | None = None, fps: float = 30.0
) -> Camera:
    """A (not yet connected) camera from a spec string; see the module docstring for the forms."""
    spec = str(spec).strip()
    if not spec:
        raise SpecError(f"camera {name!r}: empty spec; expected {SPEC_FORMS}")
    kind, sep, rest = spec.partition(":")
    if sep and kind == "video":
        if not rest:
            raise SpecError(f"camera {name!r}: 'video:' needs a file path")
        return VideoFileCamera(rest, name, height=height, width=width, fps=fps)
    if sep and kind == "virtual":
        if not rest:
            raise SpecError(f"camera {name!r}: 'virtual:' needs the virtual bus's link path")
        from vla.robots.virtual.camera import VirtualCamera

        return VirtualCamera(rest, name, fps, height=height, width=width)
    if spec.isdigit():
        return OpenCVCamera(int(spec), name, height=height, width=width, fps=fps)
    if spec.startswith(("/", "./", "../", "~")):
        return OpenCVCamera(str(Path(spec).expanduser()), name, height=height, width=width, fps=fps)
    raise SpecError(f"camera {name!r}: cannot read spec {spec!r}; expected {SPEC_FORMS}")


def parse_cameras(text: str | dict | None) -> dict[str, str]:
    """ "front=0,wrist=video:clip.mp4" -> {"front": "0", "wrist": "video:clip.mp4"} (a dict passes through,
    checked). Names are non-empty, without '/', and unique."""
    if text is None or text == "":
        return {}
    if isinstance(text, dict):
        items = [(str(k), str(v)) for k, v in text.items()]
    else:
        items = []
        for part in str(text).split(","):
            name, sep, spec = part.partition("=")
            if not sep or not name.strip() or not spec.strip():
                raise SpecError(f"cameras: expected NAME=SPEC items separated by commas, got {part.strip()!r}")
            items.append((name.strip(), spec.strip()))
    out: dict[str, str] = {}
    for name, spec in items:
        if not name or "/" in name:
            raise SpecError(f"cameras: name {name!r} must be non-empty and contain no '/'")
        if name in out:
            raise SpecError(f"cameras: {name!r} is named twice")
        out[name] = spec
    return out
