"""Appending episodes to an EpisodeStore, one validated frame at a time.

    with store.writer("arm7", source="sim") as w:
        for obs, action in rollout:
            w.add_frame({"observation/state": s, "action": a, "observation/images/front": img})
        w.end_episode(success=True, task="pick up the red cube")

Images are encoded by their camera's codec (in a small thread pool: JPEG and blosc release the
GIL) and appended to the camera's shard file every `flush_every` frames, so long episodes do
not pile up in memory; on object stores (fsspec URLs) the encoded frames are kept until
`end_episode` and written once per shard. Low-dim keys are buffered and written at
`end_episode`, right before the commit. A frame may also carry ENV_STATE (float32 [d], training-only
scene facts): every frame of an episode or none; the store makes the array on first use and
writes NaN rows for episodes without it. On entering, the writer takes the store's writer lock
(`writer_lock`: an OS lock on local disk, a lease object on S3) and clears whatever a killed
writer left past the last committed episode (vla.data.frame_files.FrameFiles.recover).
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from vla.data import remote
from vla.data.frame_files import StoreError
from vla.data.lease import LeaseLock
from vla.spec import ACTION, ENV_STATE, IMAGE_PREFIX, STATE, TASK, TIMESTAMP, Embodiment, SpecError

log = logging.getLogger(__name__)

GROW = 1024  # grow image arrays in steps of this many frames to limit metadata writes


class FrameError(SpecError):
    """A frame handed to the writer does not match the embodiment."""


LOCK_FILE = ".writer.lock"


class WriterLock:
    """One writer per local store: an exclusive OS lock (filelock.FileLock, flock on POSIX) on
    `<store>/.writer.lock`. Edits of a store (vla.data.edit) take the same lock, so a store being
    written is never edited.

    Any second WriterLock on the same store is refused at once, whether from another process or
    this one. The OS drops the lock when its process dies, so a killed writer leaves no stale lock
    to clear; the (empty) lock file itself stays in the store, as filelock leaves it.
    """

    def __init__(self, root: str | Path):
        self.path = Path(root) / LOCK_FILE
        # thread_local=False: a recorder may enter the writer on one thread and close it on another.
        self._lock = FileLock(self.path, thread_local=False)

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def acquire(self) -> None:
        """Take the lock or raise StoreError (another writer or edit holds it). OSError when the
        lock file cannot be made (a read-only store)."""
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise StoreError(f"{self.path.parent}: another writer holds {self.path}; wait for it to finish") from None

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release(force=True)

    def check(self) -> None:
        """The OS lock cannot be lost while its process lives (a lease can: vla.data.remote)."""

    def __enter__(self) -> "WriterLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def writer_lock(root: str | Path) -> "WriterLock | LeaseLock | None":
    """The one-writer lock of a store: an OS lock on local disk, a lease object on S3; None (with a
    warning) on other object stores, where keeping to one writer is up to the user."""
    if not remote.is_url(root):
        return WriterLock(root)
    if remote.scheme(root) in remote.S3_SCHEMES:
        return LeaseLock(str(root))
    log.warning("%s: no writer lock on %s:// stores; make sure only one writer appends", root, remote.scheme(root))
    return None


class EpisodeWriter:
    def __init__(self, store, emb: Embodiment, *, source: str = "", flush_every: int = 32, threads: int = 2):
        self.store = store
        self.emb = emb
        self.source = source
        self.flush_every = flush_every
        self.threads = threads
        self._shapes = emb.frame_shapes()
        self._remote = remote.is_url(store.path)
        self._lock = writer_lock(store.path)
        self._open = False
        self._pool: ThreadPoolExecutor | None = None
        self._io: ThreadPoolExecutor | None = None  # object stores: an episode's objects are written concurrently
        self._reset_episode()

    # ---- context ----
    def __enter__(self) -> "EpisodeWriter":
        if self._lock is not None:
            self._lock.acquire()
        try:
            self.store.refresh()
            keep = self.store.committed_end(self.emb.name)
            for cam in self.emb.camera_names:
                self.store.frames(self.emb.name, cam).recover(keep)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise
        self._open = True
        self._reset_episode()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.frames_pending:
                log.warning("writer closed with %d uncommitted frames; that episode is discarded", self.frames_pending)
                self._drop_written()
            self._reset_episode()
        finally:
            self._open = False
            for pool in (self._pool, self._io):
                if pool is not None:
                    pool.shutdown()
            self._pool = self._io = None
            if self._lock is not None:
                self._lock.release()

    def _reset_episode(self) -> None:
        self._start = self.store.num_frames
        self._lowdim: dict[str, list[np.ndarray]] = {STATE: [], ACTION: [], TIMESTAMP: []}
        self._env: list[np.ndarray] | None = None  # ENV_STATE rows; None: the episode has none
        self._images: dict[str, list[np.ndarray]] = {c: [] for c in self.emb.camera_names}
        self._blobs: dict[str, list[bytes]] = {c: [] for c in self.emb.camera_names}  # encoded, not yet written
        self._encoded = 0  # image frames of this episode already encoded
        self._flushed = 0  # ... and already on disk
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
        got = {k for k in frame if k not in (TIMESTAMP, TASK, ENV_STATE)}
        if got != expected:
            missing, extra = sorted(expected - got), sorted(got - expected)
            raise FrameError(
                f"embodiment {self.emb.name!r}, frame {self._n}: keys do not match "
                f"(missing {missing}, unexpected {extra})"
            )
        checked = {}
        for key, (shape, dtype) in self._shapes.items():
            v = np.asarray(frame[key])
            if v.shape != tuple(shape):
                raise FrameError(
                    f"embodiment {self.emb.name!r}, frame {self._n}, key {key!r}: expected shape "
                    f"{tuple(shape)}, got {v.shape}"
                )
            if dtype == "uint8":
                if v.dtype != np.uint8:
                    raise FrameError(
                        f"embodiment {self.emb.name!r}, frame {self._n}, key {key!r}: expected uint8 "
                        f"image, got {v.dtype}"
                    )
            else:
                if not np.issubdtype(v.dtype, np.number):
                    raise FrameError(f"key {key!r}: expected numbers, got dtype {v.dtype}")
                v = v.astype(np.float32)
                if not np.isfinite(v).all():
                    bad = np.flatnonzero(~np.isfinite(v)).tolist()
                    raise FrameError(
                        f"embodiment {self.emb.name!r}, frame {self._n}, key {key!r}: non-finite "
                        f"values (NaN/Inf) at dims {bad}"
                    )
            checked[key] = v
        ts = frame.get(TIMESTAMP)
        ts = self._n / self.emb.control_hz if ts is None else float(np.asarray(ts).reshape(()))
        if not math.isfinite(ts):
            raise FrameError(f"frame {self._n}: timestamp {ts} is not finite")
        env = self._check_env_state(frame)
        if self._n == 0:
            self._env = None if env is None else []
        if env is not None:
            self._env.append(env)
        self._lowdim[STATE].append(checked[STATE])
        self._lowdim[ACTION].append(checked[ACTION])
        self._lowdim[TIMESTAMP].append(np.float32(ts))
        for cam in self.emb.camera_names:
            self._images[cam].append(checked[IMAGE_PREFIX + cam])
        self._n += 1
        if self._n - self._encoded >= self.flush_every:
            self._encode()
            if not self._remote:
                self._write_images()

    def _check_env_state(self, frame: dict) -> np.ndarray | None:
        """The frame's ENV_STATE row, checked against the episode's earlier frames and the store's array."""
        where = f"embodiment {self.emb.name!r}, frame {self._n}, key {ENV_STATE!r}"
        has = ENV_STATE in frame
        if self._n and has != (self._env is not None):
            first = "has" if self._env is not None else "lacks"
            raise FrameError(f"{where}: the episode's first frame {first} it; every frame must have it or none")
        if not has:
            return None
        v = np.asarray(frame[ENV_STATE])
        if v.ndim != 1 or not np.issubdtype(v.dtype, np.number):
            raise FrameError(f"{where}: expected a float vector [d], got shape {v.shape} dtype {v.dtype}")
        v = v.astype(np.float32)
        want = self._env[0].shape if self._n else self._store_env_shape()
        if want is not None and v.shape != want:
            what = "earlier frames" if self._n else f"the store's {self.emb.name}/{ENV_STATE} array"
            raise FrameError(f"{where}: shape {v.shape} does not match {what}, shape {want}")
        if not np.isfinite(v).all():
            bad = np.flatnonzero(~np.isfinite(v)).tolist()
            raise FrameError(f"{where}: non-finite values (NaN/Inf) at dims {bad}")
        return v

    def _store_env_shape(self) -> tuple[int] | None:
        d = self.store.env_state_dim(self.emb.name)
        return None if d is None else (d,)

    def _encode(self) -> None:
        """Encode the buffered raw frames of every camera (in parallel)."""
        if self._n == self._encoded:
            return
        if self._pool is None and self.threads > 1:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="encode")
        for cam in self.emb.camera_names:
            codec = self.store.codec(self.emb.name, cam)
            imgs = self._images[cam]
            blobs = (
                list(self._pool.map(codec.encode, imgs)) if self._pool is not None else [codec.encode(i) for i in imgs]
            )
            self._blobs[cam].extend(blobs)
            imgs.clear()
        self._encoded = self._n

    def _parallel(self, jobs: list) -> None:
        """Run write jobs: one after another on local disk; at once on object stores, where each is
        a few requests of a round trip each (an episode's commit took ~25 in a row)."""
        if not self._remote or len(jobs) < 2:
            for job in jobs:
                job()
            return
        if self._io is None:
            self._io = ThreadPoolExecutor(8, thread_name_prefix="store-io")
        for f in [self._io.submit(job) for job in jobs]:
            f.result()

    def _write_images(self) -> None:
        """Append the encoded frames not yet on disk to the cameras' shard files."""
        n_new = self._encoded - self._flushed
        if n_new == 0:
            return
        start = self._start + self._flushed
        end = start + n_new

        def write(cam: str) -> None:
            frames = self.store.frames(self.emb.name, cam)
            arr = frames.arr
            if arr.shape[0] < end:  # the array's shape (zarr.json) says how far a plain zarr reader looks
                arr.resize((end + GROW - end % GROW, *arr.shape[1:]))
            frames.append(start, self._blobs[cam])
            self._blobs[cam].clear()

        self._parallel([lambda c=cam: write(c) for cam in self.emb.camera_names])
        self._flushed = self._encoded

    def discard_episode(self) -> None:
        """Drop the frames of the episode in progress (nothing committed changes)."""
        self._drop_written()
        self._reset_episode()

    def _drop_written(self) -> None:
        if self._flushed:  # frames already in the shard files: cut them off again
            keep = self.store.committed_end(self.emb.name)
            for cam in self.emb.camera_names:
                self.store.frames(self.emb.name, cam).recover(keep)

    def end_episode(self, *, task: str, success: bool | None = True) -> int:
        """Commit the episode in progress; returns its index. Frames become visible only now."""
        if not self._open:
            raise StoreError("use the writer as a context manager: `with store.writer() as w:`")
        if self._n == 0:
            raise StoreError("end_episode() called with no frames added")
        if not isinstance(task, str):
            raise SpecError(f"task must be a string instruction, got {type(task).__name__}")
        self._encode()
        self._write_images()
        rows = {key: np.stack(v) for key, v in self._lowdim.items()}
        if self._env is not None:
            rows[ENV_STATE] = np.stack(self._env)
        return self._commit(rows, task, success, self.source)

    def _commit(self, rows: dict[str, np.ndarray], task: str, success: bool | None, source: str) -> int:
        store, emb = self.store, self.emb
        start, end = self._start, self._start + self._n
        d = store.env_state_dim(emb.name)
        if ENV_STATE in rows and d is not None and rows[ENV_STATE].shape[1:] != (d,):
            raise FrameError(
                f"embodiment {emb.name!r}: {ENV_STATE} rows have shape {rows[ENV_STATE].shape[1:]}, "
                f"the store's {emb.name}/{ENV_STATE} array has shape ({d},)"
            )
        if ENV_STATE not in rows and d is not None:
            rows = {**rows, ENV_STATE: np.full((self._n, d), np.nan, np.float32)}  # overwrite leftovers too
        created = ENV_STATE in rows and d is None
        try:
            if created:
                store.create_env_state(emb.name, rows[ENV_STATE].shape[1])

            def write(key: str, v: np.ndarray) -> None:
                arr = store.array(emb.name, key)
                if arr.shape[0] < end:
                    arr.resize((end + GROW, *arr.shape[1:]))
                arr[start:end] = v

            self._parallel([lambda k=key, v=v: write(k, v) for key, v in rows.items()])
            success = -1 if success is None else int(bool(success))
            if self._lock is not None:
                self._lock.check()  # a writer whose S3 lease was taken over must not commit
            i = store.commit_episode(emb.name, task, success, source, end, run=self._parallel)  # the commit point
        except BaseException:
            if created and store.num_frames < end:  # not committed: the new array goes again
                store.drop_env_state(emb.name)
            raise
        self._reset_episode()
        return i

    def add_encoded_episode(
        self,
        rows: dict[str, np.ndarray],
        blobs: dict[str, list[bytes]],
        *,
        task: str,
        success: bool | None,
        source: str | None = None,
    ) -> int:
        """Append and commit a whole episode whose frames are already encoded with this store's codecs
        (copying between stores without re-encoding). rows: state [n, s], action [n, a], timestamp [n],
        optionally ENV_STATE [n, d] (finite; an episode without it leaves it out)."""
        if not self._open:
            raise StoreError("use the writer as a context manager: `with store.writer() as w:`")
        if self._n:
            raise StoreError("add_encoded_episode() with a frame-by-frame episode in progress")
        n = len(rows[TIMESTAMP])
        for key, shape in ((STATE, (n, self.emb.state_dim)), (ACTION, (n, self.emb.action_dim)), (TIMESTAMP, (n,))):
            if np.shape(rows[key]) != shape:
                raise FrameError(
                    f"embodiment {self.emb.name!r}: {key} has shape {np.shape(rows[key])}, expected {shape}"
                )
        if set(blobs) != set(self.emb.camera_names) or any(len(b) != n for b in blobs.values()):
            raise FrameError(
                f"embodiment {self.emb.name!r}: need {n} encoded frames for each of "
                f"{list(self.emb.camera_names)}, got { ({c: len(b) for c, b in blobs.items()}) }"
            )
        if n == 0:
            raise StoreError("add_encoded_episode() with no frames")
        env = None
        if rows.get(ENV_STATE) is not None:
            env = np.asarray(rows[ENV_STATE], np.float32)
            d = self.store.env_state_dim(self.emb.name)
            if env.ndim != 2 or len(env) != n or (d is not None and env.shape[1] != d):
                want = f"({n}, {d})" if d is not None else f"({n}, d)"
                raise FrameError(f"embodiment {self.emb.name!r}: {ENV_STATE} has shape {env.shape}, expected {want}")
            if not np.isfinite(env).all():
                raise FrameError(f"embodiment {self.emb.name!r}: {ENV_STATE} has non-finite values (NaN/Inf)")
        self._n = self._encoded = n
        for cam in self.emb.camera_names:
            self._blobs[cam] = list(blobs[cam])
        self._write_images()
        rows = {k: np.asarray(rows[k], np.float32) for k in (STATE, ACTION, TIMESTAMP)}
        if env is not None:
            rows[ENV_STATE] = env
        return self._commit(rows, task, success, self.source if source is None else source)
