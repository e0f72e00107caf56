"""Per-camera image codecs of the episode store, chosen when a camera's array is created.

    lossless   blosc-lz4 of the raw pixels (the default): exact, ~1000x on sim renders, ~1.1x on
               camera frames (sensor noise does not compress losslessly).
    jpeg       baseline JPEG, 4:2:0 chroma, Huffman-optimized, quality 1-100 (default 75). Intra-frame,
               so any frame decodes alone; libjpeg-turbo decodes at 1/2, 1/4, 1/8 scale for less than
               the full frame, which is how the loader reads frames at the model's input size.

Chosen by measurement on 480x640 photo frames with sensor noise (a one-off comparison with
imagecodecs on the 2-core machine, not part of the bench): AVIF (speed 10) was ~30% smaller than
JPEG at equal PSNR but took 13-15 ms to encode and ~4 ms to decode a frame; JPEG XL (effort 1)
was no smaller and took 6-8 ms each way. A 3-camera 30 fps rig would need more than the two
cores to encode AVIF, and the loader would run several times slower. JPEG encodes in ~1.5 ms
and decodes in ~0.5 ms at the half scale a 224 px model needs. `vla bench data --workload
camera` measures the JPEG quality -> bytes / PSNR / windows/s curve against LeRobot's AV1
(README "Benchmarks").

A store written with `jpeg` stays readable by a plain zarr v3 reader once this module is
imported (`import vla.data` registers the "vla.jpeg" codec with zarr).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numcodecs.blosc
import numpy as np
from PIL import Image
from zarr.abc.codec import ArrayBytesCodec
from zarr.registry import register_codec

from vla.spec import SpecError

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec

CODEC_NAMES = ("lossless", "jpeg")
DEFAULT_JPEG_QUALITY = 75
IMPORT_JPEG_QUALITY = 60
_BLOSC = dict(cname=b"lz4", clevel=5, shuffle=numcodecs.blosc.NOSHUFFLE)


class CodecError(ValueError):
    """An encoded frame could not be decoded (corrupt or truncated bytes)."""


@dataclass(frozen=True)
class ImageCodec:
    """How one camera's frames are stored. `ImageCodec.parse("jpeg:90")`, `"jpeg"`, `"lossless"`."""

    name: str = "lossless"
    quality: int | None = None

    def __post_init__(self):
        if self.name not in CODEC_NAMES:
            raise SpecError(
                f"unknown image codec {self.name!r}; codecs: {', '.join(CODEC_NAMES)} (jpeg takes a quality: jpeg:75)"
            )
        if self.name == "jpeg":
            q = DEFAULT_JPEG_QUALITY if self.quality is None else self.quality
            if not isinstance(q, int) or not 1 <= q <= 100:
                raise SpecError(f"jpeg quality must be an integer 1-100, got {self.quality!r}")
            object.__setattr__(self, "quality", q)
        elif self.quality is not None:
            raise SpecError(f"codec {self.name!r} takes no quality (got {self.quality!r})")

    @classmethod
    def parse(cls, spec) -> "ImageCodec":
        """'lossless' | 'jpeg' | 'jpeg:<quality>' | {'name':..., 'quality':...} | ImageCodec."""
        if isinstance(spec, ImageCodec):
            return spec
        if isinstance(spec, dict):
            unknown = set(spec) - {"name", "quality"}
            if unknown:
                raise SpecError(f"image codec: unknown keys {sorted(unknown)} (expected name, quality)")
            return cls(str(spec.get("name", "lossless")), spec.get("quality"))
        if not isinstance(spec, str):
            raise SpecError(f"image codec must be a name like 'jpeg:75', got {spec!r}")
        name, _, q = spec.strip().partition(":")
        if q:
            try:
                quality = int(q)
            except ValueError:
                raise SpecError(f"image codec {spec!r}: quality {q!r} is not an integer") from None
            return cls(name, quality)
        return cls(name)

    @property
    def lossy(self) -> bool:
        return self.name != "lossless"

    def to_dict(self) -> dict:
        return {"name": self.name} if self.quality is None else {"name": self.name, "quality": self.quality}

    def __str__(self) -> str:
        return self.name if self.quality is None else f"{self.name}:{self.quality}"

    # ---- frames ----
    def encode(self, img: np.ndarray) -> bytes:
        """uint8 [H, W, 3] -> bytes."""
        img = np.ascontiguousarray(img)
        if self.name == "lossless":
            return numcodecs.blosc.compress(img.tobytes(), typesize=1, **_BLOSC)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=self.quality, subsampling=2, optimize=True)
        return buf.getvalue()

    def decode(self, blob: bytes, shape: tuple[int, int, int], min_size: tuple[int, int] | None = None) -> np.ndarray:
        """bytes -> uint8 [H, W, 3]. With min_size=(h, w) a codec may return a smaller frame, never
        smaller than (h, w) (JPEG decodes at k/8 scale); lossless always returns `shape`."""
        try:
            if self.name == "lossless":
                out = np.empty(shape, np.uint8)  # writable (a frombuffer view would not be)
                nbytes = int.from_bytes(blob[4:8], "little") if len(blob) >= 16 else -1  # blosc header
                if nbytes != out.nbytes:
                    raise CodecError(
                        f"corrupt lossless frame: its header says {nbytes} bytes, the camera's frame is {out.nbytes}"
                    )
                numcodecs.blosc.decompress(blob, out)
                return out
            return _jpeg_decode(blob, shape, min_size)
        except CodecError:
            raise
        except Exception as e:  # blosc RuntimeError, reshape ValueError, libjpeg errors
            raise CodecError(f"corrupt {self} frame ({type(e).__name__}: {e})") from None


def _jpeg_decode(blob: bytes, shape, min_size) -> np.ndarray:
    import simplejpeg

    h, w = shape[:2]
    if min_size is None or min_size[0] >= h or min_size[1] >= w:
        out = simplejpeg.decode_jpeg(blob, colorspace="RGB")
        if out.shape != tuple(shape):
            raise CodecError(f"corrupt jpeg frame: decodes to {out.shape}, the camera is {tuple(shape)}")
        return out
    # Only 1/2, 1/4, 1/8: libjpeg-turbo has SIMD inverse DCTs for those; the other k/8 scales are
    # plain C (3/8 of 480x640 decodes no faster than the full frame, 1/2 in 0.77x its time).
    k = next(k for k in (8, 4, 2, 1) if -(-h // k) >= min_size[0] and -(-w // k) >= min_size[1])
    out = simplejpeg.decode_jpeg(blob, colorspace="RGB", min_height=-(-h // k), min_width=-(-w // k))
    if out.shape[0] < min_size[0] or out.shape[1] < min_size[1] or out.shape[0] > h or out.shape[1] > w:
        raise CodecError(f"corrupt jpeg frame: decodes to {out.shape}, the camera is {tuple(shape)}")
    return out


def default_codec(height: int, width: int, *, camera_data: bool, from_video: bool = False) -> ImageCodec:
    """Lossy JPEG for camera data (recordings of real robots; imports of video features) of 128x128
    and up; lossless for the rest: sim renders (and LeRobot's sim datasets, 96x96 video of flat
    colours and sharp edges, where JPEG rings and lossless still compresses) and tiny frames.

    Quality: 75 for raw camera frames (the lowest with PSNR >= 38 dB on noisy 480x640 frames in
    `vla bench data --workload camera`), 60 for frames decoded from a lossy video (AV1 has already
    smoothed the sensor noise away: 38.9 dB against the decoded frames at ~2x AV1's bytes)."""
    if camera_data and min(height, width) >= 128:
        return ImageCodec("jpeg", IMPORT_JPEG_QUALITY if from_video else DEFAULT_JPEG_QUALITY)
    return ImageCodec("lossless")


# ---- zarr v3 codec, so that a plain zarr reader decodes jpeg cameras ----
@dataclass(frozen=True)
class VlaJpegCodec(ArrayBytesCodec):
    """zarr v3 array -> bytes codec "vla.jpeg": one [1, H, W, 3] uint8 chunk as one JPEG."""

    is_fixed_size = False
    quality: int = DEFAULT_JPEG_QUALITY

    @classmethod
    def from_dict(cls, data: dict) -> "VlaJpegCodec":
        return cls(quality=int((data.get("configuration") or {}).get("quality", DEFAULT_JPEG_QUALITY)))

    def to_dict(self) -> dict:
        return {"name": "vla.jpeg", "configuration": {"quality": self.quality}}

    def evolve_from_array_spec(self, array_spec: ArraySpec) -> "VlaJpegCodec":
        return self

    async def _decode_single(self, chunk_bytes, chunk_spec: ArraySpec):
        shape = tuple(chunk_spec.shape)
        img = ImageCodec("jpeg", self.quality).decode(chunk_bytes.to_bytes(), shape[-3:])
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(img.reshape(shape))

    async def _encode_single(self, chunk_array, chunk_spec: ArraySpec):
        arr = np.asarray(chunk_array.as_ndarray_like())
        blob = ImageCodec("jpeg", self.quality).encode(arr.reshape(arr.shape[-3:]))
        return chunk_spec.prototype.buffer.from_bytes(blob)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        raise NotImplementedError("jpeg output size depends on the content")


register_codec("vla.jpeg", VlaJpegCodec)
