"""Recording a control run into an EpisodeStore from a background thread.

The control thread only puts frames on a queue; compression and disk writes happen here, so
they never delay a tick. Each frame is the observation of tick k and the action sent at tick
k + 1 (the first command decided after seeing it), with the tick's time as `timestamp`.

A write failure never stops the control loop: it is logged when it happens, later frames are
dropped (not queued without bound), and `error` / `error_message()` report it for the run summary.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np

from vla.spec import ACTION, IMAGE_PREFIX, STATE, TIMESTAMP, Embodiment

log = logging.getLogger(__name__)

_END, _STOP = "end", "stop"


class EpisodeRecorder:
    def __init__(self, store_path: str | Path, emb: Embodiment, loop_hz: float, *, source: str = "deploy"):
        from vla.data.store import EpisodeStore

        # The frames are at the loop rate, not the policy's: say so in the recorded embodiment.
        self.emb = replace(emb, control_hz=float(loop_hz))
        self.path = str(store_path)
        self.store = EpisodeStore.create(self.path, [], exist_ok=True)
        self.store.add_embodiment(self.emb)
        self.source = source
        self.q: queue.Queue = queue.Queue()
        self.episodes: list[dict] = []
        self.error: BaseException | None = None
        self._keys = [STATE] + [IMAGE_PREFIX + c for c in self.emb.camera_names]
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def add(self, obs: dict, action: np.ndarray, t: float) -> None:
        if self.error is not None:  # the writer has stopped: nothing would ever take this frame
            return
        frame = {k: obs[k] for k in self._keys}
        frame[ACTION] = np.asarray(action, np.float32)
        frame[TIMESTAMP] = t
        self.q.put(frame)

    def end_episode(self, task: str, success: bool | None) -> None:
        if self.error is None:
            self.q.put((_END, task, success))

    def error_message(self) -> str | None:
        """What went wrong while recording (for the run summary), or None."""
        return None if self.error is None else f"{type(self.error).__name__}: {self.error}"

    def close(self, timeout_s: float = 60.0) -> list[dict]:
        """Finish writing (an unfinished episode is discarded by the writer) and return the episodes."""
        self.q.put((_STOP,))
        self._thread.join(timeout_s)
        if self._thread.is_alive() and self.error is None:
            self.error = TimeoutError(f"the recorder did not finish within {timeout_s:.0f} s; "
                                      "the last episode may be missing")
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
                            self.episodes.append({"index": i, "frames": n, "task": item[1], "success": item[2]})
                            log.info("recorded episode %d (%d frames) into %s", i, n, self.path)
                        n = 0
                    else:
                        return
        except BaseException as e:  # keep the control loop alive; report at close
            self.error = e
            log.exception("episode recorder stopped")
