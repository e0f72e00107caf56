"""Appending episodes to an EpisodeStore, one validated frame at a time.

    with store.writer("arm7", source="sim") as w:
        for obs, action in rollout:
            w.add_frame({"observation/state": s, "action": a, "observation/images/front": img})
        w.end_episode(success=True, task="pick up the red cube")

Images are flushed to disk every `flush_every` frames so long episodes do not pile up in
memory; low-dim keys are buffered and written at `end_episode`, right before the commit.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from vla.data.chunks import StoreError
from vla.spec import ACTION, IMAGE_PREFIX, STATE, TASK, TIMESTAMP, Embodiment, SpecError

log = logging.getLogger(__name__)

GROW = 1024  # grow image arrays in steps of this many frames to limit metadata writes


class FrameError(SpecError):
    """A frame handed to the writer does not match the embodiment."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Lock:
    """One writer per local store: an O_EXCL lock file holding the writer's pid."""

    def __init__(self, root: str):
        self.path = Path(root) / ".writer.lock"
        self.held = False

    def acquire(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and _pid_alive(pid) and pid != os.getpid():
                    raise StoreError(f"{self.path.parent}: another writer (pid {pid}) holds {self.path}") from None
                log.warning("removing stale writer lock %s (pid %s is gone)", self.path, pid)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            return
        raise StoreError(f"could not take writer lock {self.path}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


class EpisodeWriter:
    def __init__(self, store, emb: Embodiment, *, source: str = "", flush_every: int = 32):
        self.store = store
        self.emb = emb
        self.source = source
        self.flush_every = flush_every
        self._shapes = emb.frame_shapes()
        self._lock = None if "://" in store.path else _Lock(store.path)
        self._open = False
        self._reset_episode()

    # ---- context ----
    def __enter__(self) -> "EpisodeWriter":
        if self._lock is not None:
            self._lock.acquire()
        self.store.refresh()
        self._open = True
        self._reset_episode()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.frames_pending:
                log.warning("writer closed with %d uncommitted frames; that episode is discarded", self.frames_pending)
            self._reset_episode()
        finally:
            self._open = False
            if self._lock is not None:
                self._lock.release()

    def _reset_episode(self) -> None:
        self._start = self.store.num_frames
        self._lowdim: dict[str, list[np.ndarray]] = {STATE: [], ACTION: [], TIMESTAMP: []}
        self._images: dict[str, list[np.ndarray]] = {c: [] for c in self.emb.camera_names}
        self._flushed = 0  # image frames of this episode already on disk
        self._n = 0

    @property
    def frames_pending(self) -> int:
        return self._n

    # ---- frames ----
    def add_frame(self, frame: dict) -> None:
        """Validate and buffer one frame: state, action, every camera image, optional timestamp/task."""
        if not self._open:
            raise StoreError("use the writer as a context manager: `with store.writer() as w:`")
        expected = set(self._shapes)
        got = {k for k in frame if k not in (TIMESTAMP, TASK)}
        if got != expected:
            missing, extra = sorted(expected - got), sorted(got - expected)
            raise FrameError(f"embodiment {self.emb.name!r}, frame {self._n}: keys do not match "
                             f"(missing {missing}, unexpected {extra})")
        checked = {}
        for key, (shape, dtype) in self._shapes.items():
            v = np.asarray(frame[key])
            if v.shape != tuple(shape):
                raise FrameError(f"embodiment {self.emb.name!r}, frame {self._n}, key {key!r}: expected shape "
                                 f"{tuple(shape)}, got {v.shape}")
            if dtype == "uint8":
                if v.dtype != np.uint8:
                    raise FrameError(f"embodiment {self.emb.name!r}, frame {self._n}, key {key!r}: expected uint8 "
                                     f"image, got {v.dtype}")
            else:
                if not np.issubdtype(v.dtype, np.number):
                    raise FrameError(f"key {key!r}: expected numbers, got dtype {v.dtype}")
                v = v.astype(np.float32)
                if not np.isfinite(v).all():
                    bad = np.flatnonzero(~np.isfinite(v)).tolist()
                    raise FrameError(f"embodiment {self.emb.name!r}, frame {self._n}, key {key!r}: non-finite "
                                     f"values (NaN/Inf) at dims {bad}")
            checked[key] = v
        ts = frame.get(TIMESTAMP)
        ts = self._n / self.emb.control_hz if ts is None else float(np.asarray(ts).reshape(()))
        if not math.isfinite(ts):
            raise FrameError(f"frame {self._n}: timestamp {ts} is not finite")
        self._lowdim[STATE].append(checked[STATE])
        self._lowdim[ACTION].append(checked[ACTION])
        self._lowdim[TIMESTAMP].append(np.float32(ts))
        for cam in self.emb.camera_names:
            self._images[cam].append(checked[IMAGE_PREFIX + cam])
        self._n += 1
        if self._n - self._flushed >= self.flush_every:
            self._flush_images()

    def _flush_images(self) -> None:
        n_new = self._n - self._flushed
        if n_new == 0:
            return
        start = self._start + self._flushed
        end = start + n_new
        for cam in self.emb.camera_names:
            chunks = self.store.frame_chunks(self.emb.name, cam)
            arr = chunks.arr
            if arr.shape[0] < end:
                arr.resize((end + GROW - end % GROW, *arr.shape[1:]))
            chunks.write(start, np.stack(self._images[cam]))
            self._images[cam].clear()
        self._flushed = self._n

    def discard_episode(self) -> None:
        """Drop the frames of the episode in progress (nothing committed changes)."""
        self._reset_episode()

    def end_episode(self, *, task: str, success: bool | None = True) -> int:
        """Commit the episode in progress; returns its index. Frames become visible only now."""
        if not self._open:
            raise StoreError("use the writer as a context manager: `with store.writer() as w:`")
        if self._n == 0:
            raise StoreError("end_episode() called with no frames added")
        if not isinstance(task, str):
            raise SpecError(f"task must be a string instruction, got {type(task).__name__}")
        self._flush_images()
        store, emb = self.store, self.emb
        start, end = self._start, self._start + self._n
        for key, rows in self._lowdim.items():
            arr = store.array(emb.name, key)
            if arr.shape[0] < end:
                arr.resize((end + GROW, *arr.shape[1:]))
            arr[start:end] = np.stack(rows)
        success = -1 if success is None else int(bool(success))
        i = store.commit_episode(emb.name, task, success, self.source, end)  # the commit point
        self._reset_episode()
        return i
