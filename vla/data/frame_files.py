"""Camera frames on disk: few shard files per camera, appended in place, read by frame.

Layout (store version 2). A camera is a zarr v3 array [t, H, W, 3] uint8 whose chunk grid has
shards of SHARD_FRAMES frames, codec `sharding_indexed` with one inner chunk per frame:

    <emb>/observation/images/<cam>/zarr.json      attrs: vla_codec {"name": "jpeg", "quality": 75}
    <emb>/observation/images/<cam>/c.<k>.0.0.0    frames [k*S, (k+1)*S): S*16-byte index, then frames

Each shard starts with its index (index_location "start", plain little-endian uint64
(offset, nbytes) pairs, no checksum), followed by the encoded frames in the order they were
written. That is what makes appends crash-safe in place: new frames go past the end of the
file, then their index entries (which were empty) are filled in; bytes of committed frames and
their index entries are never written again. A killed writer leaves at most unreferenced bytes
at the end and entries for uncommitted frames; the next writer (holding the lock) truncates
and clears those (`recover`). At every moment the file is a valid zarr shard, so a plain zarr
v3 reader opens the array (after `import vla.data`, which registers the "vla.jpeg" codec).

Reads bypass zarr's array API (~1-2 ms per chunk): one `pread` per frame on a kept-open file
for local stores; for fsspec URLs, one `pread` on a local copy of the shard object (vla.data.cache,
fetched whole on first use) or, without a cache, one ranged GET per frame. On object stores,
where files cannot be appended to, the writer rewrites the shard object (one atomic PUT: readers
see the old or the new object, with the same committed frames in both) once per episode.

Stores of version 1 (one file per frame, `c.<t>.0.0.0`, blosc-lz4) are read by `LegacyFrames`.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, ShardingCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from vla.data.cache import ShardCache
from vla.data.codecs import CodecError, ImageCodec, VlaJpegCodec

SHARD_FRAMES = 1024  # <= 1 file per 1,000 frames per camera
EMPTY = np.uint64(2**64 - 1)
MAX_OPEN_FILES = 128


class StoreError(RuntimeError):
    """An episode store is missing, corrupt, or was used the wrong way."""


class CorruptFrameError(StoreError):
    """An encoded frame could not be read or decoded; names the camera and the frame."""


def image_array_kwargs(height: int, width: int, codec: ImageCodec, shard_frames: int = SHARD_FRAMES) -> dict:
    """zarr create_array arguments for one camera (see the module docstring)."""
    inner = (
        [VlaJpegCodec(quality=codec.quality)]
        if codec.name == "jpeg"
        else [BytesCodec(), BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle", typesize=1)]
    )
    sharding = ShardingCodec(
        chunk_shape=(1, height, width, 3), codecs=inner, index_codecs=[BytesCodec()], index_location="start"
    )
    return dict(
        shape=(0, height, width, 3),
        chunks=(shard_frames, height, width, 3),
        dtype="uint8",
        fill_value=0,
        serializer=sharding,
        compressors=None,
        chunk_key_encoding={"name": "default", "separator": "."},
        attributes={"vla_codec": codec.to_dict()},
    )


def _local_root(arr: zarr.Array) -> Path | None:
    root = getattr(arr.store, "root", None)
    if isinstance(arr.store, zarr.storage.LocalStore) and root is not None:
        return Path(root) / arr.path
    return None


def _pread(fd: int, n: int, off: int) -> bytes:
    out = os.pread(fd, n, off)
    while len(out) < n:  # short reads are legal; 0 bytes means end of file
        more = os.pread(fd, n - len(out), off + len(out))
        if not more:
            break
        out += more
    return out


def _pwrite(fd: int, data: bytes, off: int) -> None:
    view = memoryview(data)
    while len(view):
        n = os.pwrite(fd, view, off)
        view, off = view[n:], off + n


class _Frames:
    """What both layouts share: decode + resize of a list of frames."""

    camera: str
    shape: tuple[int, int, int]
    codec: ImageCodec
    where: str

    def blob(self, t: int) -> bytes:
        raise NotImplementedError

    def blobs(self, frames) -> list[bytes]:
        return [self.blob(int(t)) for t in frames]

    def read(self, frames, size: tuple[int, int] | None = None) -> np.ndarray:
        """frames: int frame indices -> uint8 [n, H, W, 3], or [n, *size, 3] resized by the rule in
        vla.data.resize (decoding at reduced scale where the codec can)."""
        frames = [int(t) for t in frames]
        if size is None or tuple(size) == self.shape[:2]:
            out = np.empty((len(frames), *self.shape), np.uint8)
            for k, t in enumerate(frames):
                out[k] = self._decode(t, None)
            return out
        from vla.data.resize import fit, place  # torch: only readers that resize load it

        out = np.zeros((len(frames), size[0], size[1], 3), np.uint8)
        nh, nw, _, _ = fit(self.shape[0], self.shape[1], *size)
        for k, t in enumerate(frames):
            place(self._decode(t, (nh, nw)), out[k], self.shape[:2])
        return out

    def _decode(self, t: int, min_size) -> np.ndarray:
        try:
            return self.codec.decode(self.blob(t), self.shape, min_size)
        except CodecError as e:
            raise CorruptFrameError(f"{self.where}: camera {self.camera!r} frame {t}: {e}") from None


class FrameFiles(_Frames):
    """One camera's frames in shard files (store version 2)."""

    def __init__(
        self, arr: zarr.Array, camera: str, *, cache_dir: Path | None = None, committed=None, source: str = ""
    ):
        """cache_dir (object stores): where to keep local copies of the shards (vla.data.cache);
        committed() -> the reader's committed end for this camera, below which copies are used;
        source: the store's URL, noted in the cache folder."""
        self.arr, self.camera = arr, camera
        self.shape = tuple(arr.shape[1:])
        self.codec = ImageCodec.parse(arr.attrs.get("vla_codec", "lossless"))
        self.S = int((arr.shards or arr.chunks)[0])  # frames per shard file
        self.index_bytes = 16 * self.S
        self._dir = _local_root(arr)
        self._committed = committed
        self.cache = (
            ShardCache(cache_dir, self._get_shard, committed, source=source)
            if cache_dir is not None and committed is not None and self._dir is None
            else None
        )
        self.where = str(self._dir) if self._dir is not None else f"{arr.store}/{arr.path}"
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._index: dict[int, np.ndarray] = {}
        self._wbuf: dict[int, bytearray] = {}  # object stores: the shard being appended to
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _key(self, k: int) -> str:
        return f"c.{k}.0.0.0"

    def shard_of(self, t: int) -> tuple[int, int]:
        return t // self.S, t % self.S

    # ---- read ----
    def _fd(self, k: int) -> int | None:
        if self._pid != os.getpid():  # forked: descriptors and caches belong to the parent
            self._fds.clear()
            self._index.clear()
            self._pid = os.getpid()
        fd = self._fds.get(k)
        if fd is None:
            try:
                fd = os.open(self._dir / self._key(k), os.O_RDONLY)
            except FileNotFoundError:
                return None
            self._fds[k] = fd
            if len(self._fds) > MAX_OPEN_FILES:
                os.close(self._fds.popitem(last=False)[1])
        else:
            self._fds.move_to_end(k)
        return fd

    def _get_shard(self, k: int) -> bytes | None:
        buf = sync(self.arr.store.get(f"{self.arr.path}/{self._key(k)}", prototype=default_buffer_prototype()))
        return None if buf is None else buf.to_bytes()

    def _read_range(self, k: int, start: int, n: int, t: int | None = None) -> bytes | None:
        """Bytes of shard k; t: the (committed) frame they belong to, which lets a cached copy serve them."""
        if self._dir is not None:
            fd = self._fd(k)
            return None if fd is None else _pread(fd, n, start)
        if self.cache is not None and t is not None and t < self._committed():
            return self.cache.read(k, start, n, t)
        from zarr.abc.store import RangeByteRequest

        buf = sync(
            self.arr.store.get(
                f"{self.arr.path}/{self._key(k)}",
                prototype=default_buffer_prototype(),
                byte_range=RangeByteRequest(start, start + n),
            )
        )
        return None if buf is None else buf.to_bytes()

    def _entry(self, k: int, j: int, t: int) -> tuple[int, int]:
        for fresh in (False, True):
            idx = None if fresh else self._index.get(k)
            if idx is None:
                raw = self._read_range(k, 0, self.index_bytes, t)
                if raw is None:
                    raise StoreError(
                        f"{self.where}/{self._key(k)}: shard of camera {self.camera!r} frame {t} is "
                        "missing (store corrupt?)"
                    )
                if len(raw) != self.index_bytes:
                    raise CorruptFrameError(
                        f"{self.where}/{self._key(k)}: camera {self.camera!r} frame {t}: shard "
                        f"index truncated ({len(raw)} of {self.index_bytes} bytes)"
                    )
                idx = self._index[k] = np.frombuffer(raw, "<u8").reshape(self.S, 2)
            if idx[j, 0] != EMPTY:
                return int(idx[j, 0]), int(idx[j, 1])
        # An index cached before a later commit has empty entries for frames written since: re-read once.
        raise StoreError(f"{self.where}: camera {self.camera!r} frame {t} is not in its shard (store corrupt?)")

    def blob(self, t: int) -> bytes:
        k, j = self.shard_of(t)
        off, n = self._entry(k, j, t)
        data = self._read_range(k, off, n, t)
        if data is None or len(data) != n:
            got = 0 if data is None else len(data)
            raise CorruptFrameError(
                f"{self.where}/{self._key(k)}: camera {self.camera!r} frame {t}: truncated ({got} of {n} bytes)"
            )
        return data

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._index.clear()
        if self.cache is not None:
            self.cache.close()

    def __del__(self):
        try:
            if self._pid == os.getpid():
                self.close()
        except Exception:
            pass

    # ---- write (only the writer holding the store's lock) ----
    def append(self, start: int, blobs: list[bytes]) -> None:
        """Frames [start, start + len(blobs)) from encoded blobs; flushed to the store before return."""
        i, t = 0, start
        while i < len(blobs):
            k, j0 = self.shard_of(t)
            n = min(len(blobs) - i, self.S - j0)
            self._append_shard(k, j0, blobs[i : i + n])
            i, t = i + n, t + n
        self._index.clear()

    def _append_shard(self, k: int, j0: int, blobs: list[bytes]) -> None:
        data = b"".join(blobs)
        lengths = np.array([len(b) for b in blobs], np.uint64)
        if self._dir is not None:
            fd = os.open(self._dir / self._key(k), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                end = os.fstat(fd).st_size
                if end < self.index_bytes:
                    _pwrite(fd, np.full(2 * self.S, EMPTY, "<u8").tobytes(), 0)
                    end = self.index_bytes
                _pwrite(fd, data, end)  # the frames first ...
                entries = np.stack([end + np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths], 1)
                _pwrite(fd, entries.astype("<u8").tobytes(), 16 * j0)  # ... then the entries pointing at them
            finally:
                os.close(fd)
            return
        buf = self._shard_buffer(k)
        end = len(buf)
        buf += data
        entries = np.stack([end + np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths], 1).astype("<u8")
        buf[16 * j0 : 16 * (j0 + len(blobs))] = entries.tobytes()
        self._put(k, buf)

    def _shard_buffer(self, k: int) -> bytearray:
        buf = self._wbuf.get(k)
        if buf is None:
            old = self._get_shard(k)
            buf = bytearray(old) if old is not None else bytearray(np.full(2 * self.S, EMPTY, "<u8").tobytes())
            self._wbuf.clear()  # only the shard being appended to is kept
            self._wbuf[k] = buf
        return buf

    def _put(self, k: int, buf: bytearray) -> None:
        sync(
            self.arr.store.set(
                f"{self.arr.path}/{self._key(k)}", default_buffer_prototype().buffer.from_bytes(bytes(buf))
            )
        )

    def recover(self, keep_below: int) -> None:
        """Forget every frame at or past `keep_below` (left by a writer that was killed): clear their
        index entries, cut the bytes after the last frame kept, remove shards left empty. Frames
        below `keep_below` are never touched."""
        self.close()
        self._wbuf.clear()
        for k in self.shards():
            if k < keep_below // self.S:
                continue
            first = max(keep_below - k * self.S, 0)
            if first == 0:
                self._remove(k)
                continue
            raw = self._read_range(k, 0, self.index_bytes)
            idx = np.frombuffer(raw, "<u8").reshape(self.S, 2).copy()
            idx[first:] = EMPTY
            used = idx[idx[:, 0] != EMPTY]
            end = int((used[:, 0] + used[:, 1]).max()) if len(used) else self.index_bytes
            self._rewrite(k, idx, end)
        self.close()

    def shards(self) -> list[int]:
        """Indices of the shard files that exist."""
        if self._dir is not None:
            names = [p.name for p in self._dir.glob("c.*.0.0.0")] if self._dir.exists() else []
        else:

            async def ls():
                return [key async for key in self.arr.store.list_dir(self.arr.path)]

            names = sync(ls())
        out = []
        for name in names:
            parts = name.rsplit("/", 1)[-1].split(".")
            if len(parts) == 5 and parts[0] == "c" and parts[1].isdigit():
                out.append(int(parts[1]))
        return sorted(out)

    def _remove(self, k: int) -> None:
        if self._dir is not None:
            (self._dir / self._key(k)).unlink(missing_ok=True)
        else:
            sync(self.arr.store.delete(f"{self.arr.path}/{self._key(k)}"))

    def _rewrite(self, k: int, idx: np.ndarray, end: int) -> None:
        if self._dir is not None:
            fd = os.open(self._dir / self._key(k), os.O_RDWR)
            try:
                os.ftruncate(fd, end)
                _pwrite(fd, idx.astype("<u8").tobytes(), 0)
            finally:
                os.close(fd)
            return
        buf = bytearray(self._get_shard(k)[:end])
        buf[: self.index_bytes] = idx.astype("<u8").tobytes()
        self._put(k, buf)


class LegacyFrames(_Frames):
    """Read-only access to a version-1 camera: one blosc-lz4 file per frame, `c.<t>.0.0.0`."""

    def __init__(self, arr: zarr.Array, camera: str):
        self.arr, self.camera = arr, camera
        self.shape = tuple(arr.shape[1:])
        self.codec = ImageCodec("lossless")
        self._dir = _local_root(arr)
        self.where = str(self._dir) if self._dir is not None else f"{arr.store}/{arr.path}"

    def blob(self, t: int) -> bytes:
        key = f"c.{t}.0.0.0"
        if self._dir is not None:
            try:
                with open(self._dir / key, "rb") as f:
                    return f.read()
            except FileNotFoundError:
                raise StoreError(
                    f"{self._dir / key}: image chunk of camera {self.camera!r} frame {t} is missing (store corrupt?)"
                ) from None
        buf = sync(self.arr.store.get(f"{self.arr.path}/{key}", prototype=default_buffer_prototype()))
        if buf is None:
            raise StoreError(f"{self.where}/{key}: image chunk of camera {self.camera!r} frame {t} is missing")
        return buf.to_bytes()
