"""Recording a control run into an EpisodeStore from a background thread.

The control thread only puts frames on a bounded queue; encoding (the writer's thread pool)
and disk writes happen here, so they never delay a tick. Each frame is the observation of tick k
and the action sent at tick k + 1 (the first command decided after seeing it), with the tick's
time as `timestamp`. Cameras of 128x128 and up are stored as JPEG (`codecs=` overrides; a store
that already has the embodiment keeps its codecs): 3 cameras at 640x480 and 30 fps take ~0.15
of one core to encode.

When the queue is full (the writer fell `max_queue` frames behind: a slow disk, a starved
CPU) the frame is dropped, never the tick: each drop is counted (`dropped`, and per episode
in the list `close()` returns, which `vla run` puts in its summary) and logged.

A write failure never stops the control loop: it is logged when it happens, later frames are
dropped (not queued without bound), and `error` / `error_message()` report it for the run summary.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from vla.spec import ACTION, IMAGE_PREFIX, STATE, TIMESTAMP, Embodiment

log = logging.getLogger(__name__)

_END, _STOP = "end", "stop"


class EpisodeRecorder:
    def __init__(
        self,
        store_path: str | Path,
        emb: Embodiment,
        loop_hz: float,
        *,
        source: str = "deploy",
        codecs=None,
        max_queue: int = 256,
    ):
        from vla.data.codecs import default_codec
        from vla.data.store import EpisodeStore

        # The frames are at the loop rate, not the policy's: say so in the recorded embodiment.
        self.emb = replace(emb, control_hz=float(loop_hz))
        self.path = str(store_path)
        self.store = EpisodeStore.create(self.path, [], exist_ok=True)
        if codecs is None:
            codecs = {c.name: default_codec(c.height, c.width, camera_data=True) for c in self.emb.cameras}
        self.store.add_embodiment(self.emb, codecs=codecs)
        self.source = source
        self.q: queue.Queue = queue.Queue(maxsize=max_queue)
        self.episodes: list[dict] = []
        self.error: BaseException | None = None
        self.dropped = 0  # frames dropped because the writer fell behind (whole run)
        self._dropped_ep = 0  # ... in the episode being recorded (read by the writer thread at its end)
        self._last_drop_log = 0.0
        self._keys = [STATE] + [IMAGE_PREFIX + c for c in self.emb.camera_names]
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def add(self, obs: dict, action: np.ndarray, t: float) -> None:
        if self.error is not None:  # the writer has stopped: nothing would ever take this frame
            return
        frame = {k: obs[k] for k in self._keys}
        frame[ACTION] = np.asarray(action, np.float32)
        frame[TIMESTAMP] = t
        try:
            self.q.put_nowait(frame)
        except queue.Full:
            self.dropped += 1
            self._dropped_ep += 1
            now = time.monotonic()
            if now - self._last_drop_log > 1.0:  # one line a second at most, with the running count
                self._last_drop_log = now
                log.warning(
                    "recorder: writer is %d frames behind, frame at t=%.3f s dropped (%d dropped so far)",
                    self.q.maxsize,
                    t,
                    self.dropped,
                )

    def end_episode(self, task: str, success: bool | None) -> None:
        if self.error is None:
            dropped, self._dropped_ep = self._dropped_ep, 0
            self._put_marker((_END, task, success, dropped))

    def _put_marker(self, item: tuple) -> None:
        """Queue an end/stop marker (never dropped): waits for room while the writer is alive."""
        while True:
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    return

    def error_message(self) -> str | None:
        """What went wrong while recording (for the run summary), or None."""
        return None if self.error is None else f"{type(self.error).__name__}: {self.error}"

    def close(self, timeout_s: float = 60.0) -> list[dict]:
        """Finish writing (an unfinished episode is discarded by the writer) and return the episodes."""
        self._put_marker((_STOP,))
        self._thread.join(timeout_s)
        if self.dropped:
            log.warning("recorder: %d frames were dropped in this run (the writer fell behind)", self.dropped)
        if self._thread.is_alive() and self.error is None:
            self.error = TimeoutError(
                f"the recorder did not finish within {timeout_s:.0f} s; the last episode may be missing"
            )
        if self.error is not None:
            log.error("recording failed: %s", self.error)
        return self.episodes

    def _run(self) -> None:
        try:
            with self.store.writer(self.emb.name, source=self.source) as w:
                n = 0
                while True:
                    item = self.q.get()
                    if isinstance(item, dict):
                        w.add_frame(item)
                        n += 1
                    elif item[0] == _END:
                        if n:
                            i = w.end_episode(task=item[1] or "", success=item[2])
                            self.episodes.append(
                                {
                                    "index": i,
                                    "frames": n,
                                    "task": item[1],
                                    "success": item[2],
                                    "dropped_frames": item[3],
                                }
                            )
                            log.info("recorded episode %d (%d frames, %d dropped) into %s", i, n, item[3], self.path)
                        n = 0
                    else:
                        return
        except BaseException as e:  # keep the control loop alive; report at close
            self.error = e
            log.exception("episode recorder stopped")
