"""A local read cache of the camera shard objects of stores on object storage.

Training reads frames at random; one GET per frame from S3 costs milliseconds where a local
`pread` costs microseconds. So a reader copies each shard object it touches to local disk, whole,
and reads frames from that copy (vla.data.frame_files.FrameFiles).

Where: `$VLA_CACHE/stores/<key>/<embodiment>/<camera>/c.<k>.0.0.0`, VLA_CACHE defaulting to
`$XDG_CACHE_HOME/vla` (`~/.cache/vla`). `VLA_CACHE=off` reads every frame from the store. The
key hashes the store's URL and its `uid` (made when the store is created), so a store deleted
and made again at the same URL is never served from the old one's copies. Clear it by deleting
the folder; nothing else writes there, and a copy being written is a temporary file until renamed.

Why a copy is never stale: the frames of committed episodes and their index entries never
change (a writer rewrites a shard object only to append, and clears only frames past the last
commit), so a copy holds the right bytes for every frame that was committed before it was
fetched. Each copy records that count (`valid_below`: the reader's committed end, taken before
the GET) in a 16-byte header; a frame at or past it is fetched again, with a newer count.
Processes sharing the cache (DataLoader workers) fetch a shard once: the fetch holds a file lock.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np
from filelock import FileLock

MAGIC = b"VLASHRD1"
HEADER = 16  # MAGIC, then uint64 little-endian valid_below
MAX_OPEN_FILES = 128


def cache_root() -> Path | None:
    """The cache folder, or None when VLA_CACHE turns it off."""
    value = os.environ.get("VLA_CACHE", "")
    if value.lower() in ("off", "none", "0", "false", "no"):
        return None
    if value:
        return Path(value).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vla"


def store_cache_dir(url: str, uid: str | None, root: Path | None = None) -> Path | None:
    """The cache folder of one store (made on the first fetch), None without a cache or a uid.
    root: a cache root instead of VLA_CACHE's."""
    root = root or cache_root()
    if root is None or not uid:
        return None
    key = hashlib.sha256(f"{url.rstrip('/')}\n{uid}".encode()).hexdigest()[:24]
    return root / "stores" / key


def _note_source(store_dir: Path, url: str) -> None:
    """source.json: which store a cache folder holds copies of (for a person looking in)."""
    if not (store_dir / "source.json").exists():
        tmp = store_dir / f"source.json.{os.getpid()}"
        tmp.write_text(json.dumps({"url": url}) + "\n")
        tmp.replace(store_dir / "source.json")


def _pread(fd: int, n: int, off: int) -> bytes:
    out = os.pread(fd, n, off)
    while len(out) < n:
        more = os.pread(fd, n - len(out), off + len(out))
        if not more:
            break
        out += more
    return out


class ShardCache:
    """Local copies of one camera's shard objects. fetch(k) -> the object's bytes (None: no such
    shard); committed() -> the reader's committed end (global frame index) for this camera."""

    def __init__(
        self, folder: Path, fetch: Callable[[int], bytes | None], committed: Callable[[], int], source: str = ""
    ):
        self.folder = Path(folder)  # <store's cache folder>/<embodiment>/<camera>
        self.source = source
        self._fetch_object = fetch
        self._committed = committed
        self._files: OrderedDict[int, tuple[int, int]] = OrderedDict()  # k -> (fd, valid_below)
        self._pid = os.getpid()
        self.fetched_bytes = 0

    def _path(self, k: int) -> Path:
        return self.folder / f"c.{k}.0.0.0"

    def _open(self, k: int) -> tuple[int, int] | None:
        if self._pid != os.getpid():  # forked (a DataLoader worker): the parent's descriptors
            self._files.clear()
            self._pid = os.getpid()
        got = self._files.get(k)
        if got is not None:
            self._files.move_to_end(k)
            return got
        try:
            fd = os.open(self._path(k), os.O_RDONLY)
        except FileNotFoundError:
            return None
        head = _pread(fd, HEADER, 0)
        if len(head) != HEADER or head[:8] != MAGIC:  # not ours (or damaged): fetch it again
            os.close(fd)
            return None
        got = self._files[k] = (fd, int(np.frombuffer(head[8:], "<u8")[0]))
        if len(self._files) > MAX_OPEN_FILES:
            os.close(self._files.popitem(last=False)[1][0])
        return got

    def _forget(self, k: int) -> None:
        got = self._files.pop(k, None)
        if got is not None:
            os.close(got[0])

    def read(self, k: int, start: int, n: int, t: int) -> bytes | None:
        """Bytes [start, start + n) of shard k, from a copy that holds frame t (fetched if none
        does). None: the store has no shard k. Only for committed frames (t < committed())."""
        got = self._open(k)
        if got is None or t >= got[1]:
            got = self._fetch(k, t)
            if got is None:
                return None
        return _pread(got[0], n, HEADER + start)

    def _fetch(self, k: int, t: int) -> tuple[int, int] | None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _note_source(self.folder.parent.parent, self.source)
        with FileLock(str(self._path(k)) + ".lock"):
            self._forget(k)
            got = self._open(k)  # another process may have fetched it meanwhile
            if got is not None and t < got[1]:
                return got
            valid = self._committed()  # before the GET: every frame below it is in what the GET returns
            data = self._fetch_object(k)
            if data is None:
                return None
            tmp = self._path(k).with_name(f"{self._path(k).name}.{os.getpid()}.partial")
            with open(tmp, "wb") as f:
                f.write(MAGIC + np.uint64(valid).astype("<u8").tobytes())
                f.write(data)
            tmp.replace(self._path(k))
            self.fetched_bytes += len(data)
            self._forget(k)
            return self._open(k)

    def close(self) -> None:
        if self._pid == os.getpid():
            for fd, _ in self._files.values():
                os.close(fd)
        self._files.clear()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
