"""The control loop's helper threads: inference (one request at a time) and robot observation."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from vla.runtime.robot import Robot
from vla.spec import SpecError

log = logging.getLogger(__name__)


@dataclass
class _Result:
    k_obs: int
    t_sent: float
    actions: np.ndarray | None = None
    server_ms: float | None = None
    error: str = ""


class InferenceWorker:
    """One thread calling policy.infer for the latest request; results come back on a queue."""

    def __init__(self, policy, inject_delay_s: float = 0.0):
        self.policy = policy
        self.inject_delay_s = inject_delay_s
        self.requests: queue.Queue = queue.Queue(maxsize=1)
        self.results: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

    def submit(self, obs: dict, k_obs: int, extra: dict | None = None) -> None:
        """Ask for a chunk; `extra`: keyword arguments for policy.infer (ChunkExecutor.request: the
        guide of rtc, or rtc={...})."""
        self.requests.put_nowait((obs, k_obs, time.monotonic(), extra or {}))

    def _run(self) -> None:
        from vla.runtime.client import PolicyUnavailable, RemotePolicyError

        while not self._stop.is_set():
            try:
                obs, k_obs, t_sent, extra = self.requests.get(timeout=0.1)
            except queue.Empty:
                continue
            res = _Result(k_obs, t_sent)
            try:
                out = self.policy.infer(obs, **extra)
                if out.get("malformed"):
                    raise RemotePolicyError("the policy reported a malformed chunk")
                res.actions = np.asarray(out["actions"], np.float32)
                res.server_ms = (out.get("server_timing") or out.get("policy_timing") or {}).get("infer_ms")
                if self.inject_delay_s:
                    time.sleep(self.inject_delay_s)
            except PolicyUnavailable as e:
                res.error = f"policy unavailable: {e}"
            except (RemotePolicyError, SpecError, ValueError, KeyError) as e:  # it answered: the request was refused
                res.error = f"the policy refused the observation: {e}"
            except Exception as e:  # a broken policy must not kill the loop: it holds instead
                log.exception("inference failed")
                res.error = f"{type(e).__name__}: {e}"
            self.results.put(res)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)


class Observer:
    """Reads the robot in its own thread when asked, so a slow read never delays a tick."""

    def __init__(self, robot: Robot):
        self.robot = robot
        self.lock = threading.Lock()  # held while observing; resets take it too
        self.latest: tuple[int, dict] | None = None
        self.error: BaseException | None = None
        self.busy = 0  # ticks whose request found the previous read still running
        self._k = -1
        self._want = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="observer", daemon=True)
        self._thread.start()

    def trigger(self, k: int) -> None:
        if not self._idle.is_set():
            self.busy += 1
            return
        self._k = k
        self._idle.clear()
        self._want.set()

    def take(self) -> tuple[int, dict] | None:
        item, self.latest = self.latest, None
        return item

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._want.wait(0.1):
                continue
            self._want.clear()
            try:
                with self.lock:
                    self.latest = (self._k, self.robot.observe())
            except Exception as e:  # reported by the control thread
                self.error = e
            finally:
                self._idle.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
