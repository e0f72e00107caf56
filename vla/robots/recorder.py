"""The store side of teleoperated recording: frames in, committed episodes out, off the loop's thread.

    rec = StoreRecorder.open("demos", embodiment)          # takes the store's writer lock now
    rec.add(state, action, images, t)                       # never blocks: a full queue drops the frame
    rec.end_episode("pick up the cube")                     # commit (on the writer thread)
    rec.discard_episode()                                   # or drop it (re-record)
    episodes = rec.close()

One writer thread owns the store's `EpisodeWriter`: it JPEG-encodes each camera frame as it arrives
(OpenCV's encoder, which releases the GIL; PIL's holds it for the 1.5-7 ms a 640x480 frame takes, long
enough to delay a tick) and keeps the episode's encoded frames (~30-200 KB a frame) and low-dim rows
until the episode ends, then appends and commits it in one step (`EpisodeWriter.add_encoded_episode`).
The loop thread only puts a tuple on a queue. An episode becomes visible only at its commit, so a
recorder killed at any moment loses at most the episode in progress and nothing else.

A store is appended to only when it holds exactly this embodiment (same spec: joints, cameras, rate);
anything else is refused before the robot moves. Camera frames are stored as JPEG (quality 75, the
codec of real camera data); a store that already has the embodiment keeps its codecs.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vla.spec import ACTION, STATE, TIMESTAMP, Embodiment

log = logging.getLogger(__name__)

_FRAME, _END, _DISCARD, _SYNC, _STOP = "frame", "end", "discard", "sync", "stop"


@dataclass
class RecordedEpisode:
    index: int  # in the store
    frames: int
    task: str
    dropped_frames: int  # frames the writer queue had no room for (each also counted by the loop)


@dataclass
class _Counts:
    queued: int = 0
    dropped: int = 0
    episodes: list = field(default_factory=list)


def check_store(path: str | Path, emb: Embodiment) -> bool:
    """Whether `path` may take episodes of `emb`: True for an existing store that holds exactly this
    embodiment, False for a free path; StoreError/OutputError for anything else."""
    from vla.data.frame_files import StoreError
    from vla.data.store import EpisodeStore
    from vla.outputs import check_output, is_store

    if not is_store(path):
        check_output(path, "an episode store", flag="--out")  # free, or refused with what is there
        return False
    store = EpisodeStore.open(path)
    if set(store.embodiments) != {emb.name}:
        raise StoreError(
            f"--out {path} holds embodiments {sorted(store.embodiments)}; `vla record` appends only to a store "
            f"of {emb.name!r} alone: choose another --out"
        )
    if store.embodiments[emb.name] != emb:
        old, new = store.embodiments[emb.name], emb
        diff = [
            f"{what} {a} here vs {b} in the store"
            for what, a, b in (
                ("cameras", _cams(new), _cams(old)),
                ("control_hz", new.control_hz, old.control_hz),
                ("state", [d.name for d in new.state], [d.name for d in old.state]),
                ("actions", [d.name for d in new.actions], [d.name for d in old.actions]),
            )
            if a != b
        ] or ["joint units or limits differ"]
        raise StoreError(
            f"--out {path} holds {emb.name!r} episodes of another spec ({'; '.join(diff)}): record with the "
            "store's cameras and --fps, or choose another --out"
        )
    return True


def _cams(emb: Embodiment) -> list[str]:
    return [f"{c.name} {c.height}x{c.width}" for c in emb.cameras]


def frame_encoder(codec):
    """bytes of one uint8 HxWx3 RGB frame in `codec` (vla.data.codecs.ImageCodec), encoded without holding
    the GIL: JPEG through OpenCV's libjpeg (Huffman-optimized, 4:2:0: the bytes PIL writes for the store's
    codec, while PIL holds the GIL and would stall the loop thread for the whole encode); others by the codec."""
    if codec.name != "jpeg":
        return codec.encode
    import cv2

    from vla.data.codecs import CodecError

    params = [
        cv2.IMWRITE_JPEG_QUALITY,
        int(codec.quality),
        cv2.IMWRITE_JPEG_OPTIMIZE,
        1,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
    ]

    def encode(img: np.ndarray) -> bytes:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise CodecError(f"OpenCV could not encode a {img.shape} frame as JPEG")
        return buf.tobytes()

    return encode


class StoreRecorder:
    """Episodes of one embodiment into an EpisodeStore, encoded and written by a background thread."""

    def __init__(self, store, emb: Embodiment, *, source: str, max_queue: int):
        self.store, self.emb = store, emb
        self.q: queue.Queue = queue.Queue(maxsize=max_queue)
        self.counts = _Counts()
        self.error: BaseException | None = None
        self._episode_dropped = 0
        self._encode = {c: frame_encoder(store.codec(emb.name, c)) for c in emb.camera_names}
        self._shapes = {c.name: c.shape for c in emb.cameras}
        self._writer = store.writer(emb.name, source=source)
        self._writer.__enter__()  # the store's writer lock, taken here: a second recorder is refused at once
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    @classmethod
    def open(
        cls,
        path: str | Path,
        emb: Embodiment,
        *,
        source: str = "teleop",
        codec: str = "jpeg",
        max_queue_s: float = 4.0,
    ) -> "StoreRecorder":
        """Create the store (or open it to append, after `check_store`). The queue holds `max_queue_s`
        seconds of frames at the embodiment's rate before frames are dropped."""
        from vla.data.store import EpisodeStore

        if check_store(path, emb):
            store = EpisodeStore.open(path, mode="a")
        else:
            store = EpisodeStore.create(path, [emb], codecs=codec)
        return cls(store, emb, source=source, max_queue=max(8, int(max_queue_s * emb.control_hz)))

    # ---- the loop's side (never blocks) ----
    def add(self, state: np.ndarray, action: np.ndarray, images: dict[str, np.ndarray], t: float) -> bool:
        """Queue one frame; False when it was dropped (the writer is behind or has failed)."""
        if self.error is None:
            try:
                self.q.put_nowait((_FRAME, state, action, images, t))
                self.counts.queued += 1
                return True
            except queue.Full:
                pass
        self.counts.dropped += 1
        self._episode_dropped += 1
        return False

    def end_episode(self, task: str) -> None:
        """Commit the episode in progress (on the writer thread; `wait()` for it)."""
        dropped, self._episode_dropped = self._episode_dropped, 0
        self._marker((_END, task, dropped))

    def discard_episode(self) -> None:
        """Drop the episode in progress (re-record): nothing committed changes."""
        self._episode_dropped = 0
        self._marker((_DISCARD,))

    def wait(self, timeout_s: float = 60.0) -> None:
        """Until the writer has taken everything queued so far (an episode's commit, say)."""
        done = threading.Event()
        self._marker((_SYNC, done))
        done.wait(timeout_s)

    def _marker(self, item: tuple) -> None:
        while self._thread.is_alive():  # never dropped; waits for room while the writer lives
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    @property
    def backlog(self) -> int:
        return self.q.qsize()

    def close(self, timeout_s: float = 120.0) -> list[RecordedEpisode]:
        """Finish writing; an episode never ended is discarded. Returns the committed episodes."""
        self._marker((_STOP,))
        self._thread.join(timeout_s)
        if self._thread.is_alive() and self.error is None:
            self.error = TimeoutError(f"the store writer did not finish within {timeout_s:.0f} s")
        if not self._thread.is_alive():
            self._writer.__exit__(None, None, None)  # releases the lock
        return list(self.counts.episodes)

    # ---- the writer thread ----
    def _new_episode(self) -> tuple[dict, dict]:
        return {STATE: [], ACTION: [], TIMESTAMP: []}, {c: [] for c in self.emb.camera_names}

    def _run(self) -> None:
        from vla.data.writer import FrameError

        rows, blobs = self._new_episode()
        try:
            while True:
                item = self.q.get()
                kind = item[0]
                if kind == _STOP:
                    return
                if kind == _SYNC:
                    item[1].set()
                elif kind == _DISCARD:
                    rows, blobs = self._new_episode()
                elif kind == _END:
                    n = len(rows[TIMESTAMP])
                    if n:
                        i = self._writer.add_encoded_episode(
                            {k: np.stack(v) for k, v in rows.items()},
                            blobs,
                            task=item[1],
                            success=None,  # teleoperation: the operator judges later (`vla data keep`)
                        )
                        self.counts.episodes.append(RecordedEpisode(i, n, item[1], item[2]))
                        log.debug("committed episode %d (%d frames) into %s", i, n, self.store.path)
                    rows, blobs = self._new_episode()
                else:
                    _, state, action, images, t = item
                    for cam, enc in self._encode.items():
                        img = images[cam]
                        if img.shape != self._shapes[cam] or img.dtype != np.uint8:
                            raise FrameError(
                                f"camera {cam!r}: expected uint8 frames {self._shapes[cam]}, got {img.dtype} {img.shape}"
                            )
                        blobs[cam].append(enc(img))
                    rows[STATE].append(np.asarray(state, np.float32))
                    rows[ACTION].append(np.asarray(action, np.float32))
                    rows[TIMESTAMP].append(np.float32(t))
        except BaseException as e:  # the loop keeps running; it reads `error` and stops
            self.error = e
            log.exception("the store writer stopped")
            while True:  # release anyone waiting on a marker
                try:
                    item = self.q.get_nowait()
                except queue.Empty:
                    break
                if item[0] == _SYNC:
                    item[1].set()
