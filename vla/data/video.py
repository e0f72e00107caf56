"""Reading frames at given timestamps from mp4 files, and writing mp4 files, with PyAV."""

from __future__ import annotations

import contextlib
import io
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from vla.data.frame_files import StoreError

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner per file otherwise; keep errors only


class VideoCursor:
    """Forward-only frame reader: frames_at(times) for increasing times, decoding each frame once.

    A LeRobot v3 video file holds many episodes back to back, so reading episodes in file
    order decodes the file exactly once. Asking for an earlier time reopens the file.
    """

    def __init__(self, path: str | Path, fps: float):
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"video file missing: {self.path}")
        self.tol = 0.5 / fps
        self._open()

    def _open(self) -> None:
        try:
            self._container = av.open(str(self.path))
            stream = self._container.streams.video[0]
        except (av.error.FFmpegError, IndexError) as e:
            raise StoreError(f"{self.path}: cannot open video: {e}") from None
        self._rgb = VideoReformatter()  # reused: a fresh converter per frame costs ~3x the decode
        self._frames = self._container.decode(stream)
        self._prev: tuple[float, np.ndarray] | None = None
        self._next: tuple[float, np.ndarray] | None = None

    def _advance(self) -> tuple[float, np.ndarray] | None:
        try:
            f = next(self._frames)
        except StopIteration:
            return None
        except av.error.FFmpegError as e:
            raise StoreError(f"{self.path}: video decode failed: {e}") from None
        return float(f.time), self._rgb.reformat(f, format="rgb24").to_ndarray()

    def frames_at(self, times) -> np.ndarray:
        times = np.asarray(times, np.float64)
        if len(times) and self._prev is not None and times[0] < self._prev[0] - self.tol:
            self.close()
            self._open()
        out = []
        for t in times:
            # Move forward until the next frame is past t; then the nearest of prev/next wins.
            while True:
                if self._next is None:
                    self._next = self._advance()
                if self._next is None or self._next[0] > t:
                    break
                self._prev, self._next = self._next, None
            cands = [c for c in (self._prev, self._next) if c is not None]
            best = min(cands, key=lambda c: abs(c[0] - t)) if cands else None
            if best is None or abs(best[0] - t) > self.tol:
                got = "none" if best is None else f"{best[0]:.4f}s"
                raise StoreError(f"{self.path}: no frame at {t:.4f}s (nearest {got}, tolerance {self.tol:.4f}s)")
            out.append(best[1])
        return np.stack(out) if out else np.zeros((0, 0, 0, 3), np.uint8)

    def close(self) -> None:
        self._container.close()


@contextlib.contextmanager
def _keep_scheduling():
    """SVT-AV1, run as root, switches the thread that starts an encoder to SCHED_FIFO and leaves it so:
    every thread and process it starts afterwards would then run real-time too (a test's subprocess
    starved a virtual servo bus that way). Put the caller's policy back."""
    if not hasattr(os, "sched_getscheduler"):
        yield
        return
    before = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0)) != before:
            try:
                os.sched_setscheduler(0, *before)
            except OSError:
                pass


class VideoWriter:
    """Append RGB frames to an mp4 (AV1 via SVT-AV1 as LeRobot writes, else H.264). The calling thread's
    scheduling policy is the same after each call as before it (see _keep_scheduling)."""

    def __init__(self, path: str | Path, fps: int, height: int, width: int, codec: str = "libsvtav1"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._c = av.open(str(self.path), mode="w")
        self.stream = self._c.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        if codec == "libsvtav1":
            self.stream.options = {"g": "2", "crf": "30", "preset": "12"}
        elif codec in ("libx264", "h264"):
            self.stream.options = {"g": "2", "crf": "18"}
        self.count = 0

    def add(self, frames: np.ndarray) -> None:
        with _keep_scheduling():
            for img in frames:
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                vf.pts = self.count  # in units of 1/fps, the codec's time base
                for packet in self.stream.encode(vf):
                    self._c.mux(packet)
                self.count += 1

    def close(self) -> None:
        with _keep_scheduling():
            for packet in self.stream.encode():
                self._c.mux(packet)
            self._c.close()


def video_codec_for(height: int, width: int) -> str | None:
    """The codec to export a camera with, or None when its size needs PNG frames instead."""
    if height % 2 or width % 2:
        return None
    if height >= 64 and width >= 64:
        return "libsvtav1"
    return "libx264" if height >= 16 and width >= 16 else None


def decode_png(blob: bytes, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(blob)) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:
        raise StoreError(f"{where}: cannot decode image bytes: {e}") from None


def encode_png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
