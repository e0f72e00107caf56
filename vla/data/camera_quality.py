"""Per-camera JPEG quality from a PSNR target, for camera frames decoded from a lossy source video.

No one quality suits every dataset: AV1 at LeRobot's settings leaves some videos smooth, where
quality 60 reaches 39 dB against the decoded frames, and others textured, where quality 60 gives
35 dB and it takes 85 to reach 38.9 dB (two 480x640 cameras of an unseen LeRobot dataset). So the
import measures each camera: it decodes a sample of frames spread evenly over the whole dataset
and binary-searches the smallest quality (1..100) whose PSNR against those frames reaches the
target. A camera that even quality 100 cannot bring to the target (4:2:0 chroma and 8-bit DCT cap
JPEG near 45-50 dB) is stored lossless.

PSNR throughout is pooled over frames: 10 log10(255^2 / MSE), the MSE taken over every pixel and
channel of every frame measured (as `vla bench data` computes it), so it is the PSNR of the
camera's stream, not the worst frame's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from vla.data import remote
from vla.data.codecs import ImageCodec
from vla.data.frame_files import StoreError

SAMPLE_FRAMES = 32  # frames decoded per camera to choose its quality (~1 s of search at 480x640)
CHECK_FRAMES = 256  # frames per camera whose stored PSNR the import measures and reports


class PsnrMeter:
    """Pooled PSNR of a stream of (reference, reconstruction) frame pairs."""

    def __init__(self):
        self.sse, self.values, self.frames = 0.0, 0, 0

    def add(self, ref: np.ndarray, rec: np.ndarray) -> None:
        d = (ref.astype(np.float64) - rec.astype(np.float64)).ravel()
        self.sse += float(np.dot(d, d))  # integer-valued squares: exact in float64 far beyond any frame
        self.values += d.size
        self.frames += 1 if ref.ndim == 3 else len(ref)

    @property
    def db(self) -> float | None:
        """None before any frame; inf when every frame was exact."""
        if not self.values:
            return None
        mse = self.sse / self.values
        return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def psnr(ref: np.ndarray, rec: np.ndarray) -> float:
    m = PsnrMeter()
    m.add(ref, rec)
    return m.db


def codec_psnr(frames: np.ndarray, codec: ImageCodec) -> float:
    """Pooled PSNR of frames [t, H, W, 3] after encoding and decoding each with codec."""
    m = PsnrMeter()
    for img in frames:
        m.add(img, codec.decode(codec.encode(img), img.shape))
    return m.db


@dataclass(frozen=True)
class QualityChoice:
    codec: ImageCodec
    psnr_db: float  # at codec, on the sample (inf for lossless)
    one_lower_db: float | None  # at quality - 1, on the sample: below the target (None at quality 1, lossless)
    sample_frames: int


def choose_jpeg(frames: np.ndarray, target_db: float) -> QualityChoice:
    """The smallest JPEG quality whose pooled PSNR on frames [t, H, W, 3] reaches target_db,
    or lossless when quality 100 does not."""
    cache: dict[int, float] = {}

    def at(q: int) -> float:
        if q not in cache:
            cache[q] = codec_psnr(frames, ImageCodec("jpeg", q))
        return cache[q]

    if at(100) < target_db:
        return QualityChoice(ImageCodec("lossless"), math.inf, None, len(frames))
    lo, hi = 1, 100  # at(hi) reaches the target; every quality below lo was measured below it
    while lo < hi:
        mid = (lo + hi) // 2
        if at(mid) >= target_db:
            hi = mid
        else:
            lo = mid + 1
    return QualityChoice(ImageCodec("jpeg", hi), at(hi), at(hi - 1) if hi > 1 else None, len(frames))


def sample_positions(lengths: list[int], k: int = SAMPLE_FRAMES) -> list[tuple[int, int]]:
    """(episode position, frame) of k frames spread evenly over episodes of these lengths (all when fewer)."""
    total = sum(lengths)
    starts = np.cumsum([0, *lengths])
    picks = np.unique(np.round(np.linspace(0, total - 1, min(k, total))).astype(int)) if total else []
    out = []
    for g in picks:
        e = int(np.searchsorted(starts, g, side="right") - 1)
        out.append((e, int(g - starts[e])))
    return out


def read_frames_at(path: str | Path, times: list[float], fps: float) -> np.ndarray:
    """RGB frames [t, H, W, 3] nearest to the given times, by seeking (LeRobot writes a keyframe every
    2 frames, so each costs a frame or two of decoding, wherever it is in the file)."""
    tol = 0.5 / fps
    rgb = VideoReformatter()
    out = []
    try:
        with av.open(str(path)) as c:
            st = c.streams.video[0]
            for t in times:
                c.seek(max(int((t - tol) / st.time_base), 0), stream=st, backward=True, any_frame=False)
                got = None
                for f in c.decode(st):
                    got = f
                    if f.time is not None and f.time >= t - tol:
                        break
                if got is None:
                    raise StoreError(f"{path}: no frame at {t:.4f}s")
                out.append(rgb.reformat(got, format="rgb24").to_ndarray())
    except (av.error.FFmpegError, IndexError) as e:
        raise StoreError(f"{path}: cannot read video: {e}") from None
    return np.stack(out)


def tree_bytes(path: Path | str) -> int:
    """Bytes of the files under a local folder or the objects under a URL prefix."""
    if remote.is_url(path):
        fs, p = remote.filesystem(str(path))
        return int(fs.du(p, total=True))
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def describe(cam: str, r: dict) -> str:
    """One line per camera for the import report."""
    head = f"{cam}: {r['codec']}"
    if r.get("target_db") is not None:
        below = r.get("one_lower_db")
        what = "smallest quality" if r["quality"] else "quality 100 misses it, so lossless"
        head += f" ({what} for >= {r['target_db']:g} dB on {r['sample_frames']} sampled frames"
        head += f"; quality {r['quality'] - 1} gives {below:.2f} dB)" if below is not None else ")"
    parts = [head]
    if r.get("psnr_db") is not None:
        parts.append(f"PSNR {r['psnr_db']:.2f} dB vs the decoded source on {r['checked_frames']} frames")
    parts.append(f"{r['bytes'] / 1e6:.2f} MB")
    if r.get("bytes_vs_source"):
        parts.append(f"{r['bytes_vs_source']:.2f}x the source video's {r['source_bytes'] / 1e6:.2f} MB")
    return ", ".join(parts)
