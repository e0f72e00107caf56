"""Runtime test helpers: an in-process fake robot, stub policies, a tiny trained checkpoint."""

import threading
import time

import numpy as np
import pytest

from vla.runtime.robot import DONE, SUCCESS, Robot
from vla.spec import STATE, TASK, image_key

from helpers import tiny_embodiment
from train.conftest import two_stores, write_preset  # noqa: F401  (two_stores is a fixture used here)

EMB = tiny_embodiment("fake", s=3, a=3, cams=(("front", 8, 10),), hz=20.0)


class FakeRobot(Robot):
    """A first-order joint-position robot in memory: state moves a fraction towards the target per read."""

    def __init__(self, emb=EMB, *, done_after_s: float | None = None, success: bool = True):
        self.embodiment = emb
        self.lock = threading.Lock()
        self.state = np.zeros(emb.state_dim, np.float32)
        self.target = self.state.copy()
        self.sent: list[np.ndarray] = []
        self.sent_t: list[float] = []
        self.stops = 0
        self.resets = 0
        self.done_after_s, self.success = done_after_s, success
        self.t0 = time.monotonic()

    def observe(self) -> dict:
        with self.lock:
            self.state += 0.5 * (self.target - self.state)
            obs = {STATE: self.state.copy(), TASK: "reach the red target"}
        for c in self.embodiment.cameras:
            obs[image_key(c.name)] = np.zeros(c.shape, np.uint8)
        if self.done_after_s is not None:
            done = time.monotonic() - self.t0 >= self.done_after_s
            obs[DONE], obs[SUCCESS] = done, done and self.success
        return obs

    def send_action(self, action) -> None:
        a = np.asarray(action, np.float32)
        with self.lock:
            self.target = a.copy()
            self.sent.append(a.copy())
            self.sent_t.append(time.monotonic())

    def reset(self, seed=None) -> dict:
        self.resets += 1
        self.t0 = time.monotonic()
        return self.observe()

    def stop(self) -> None:
        self.stops += 1
        with self.lock:
            self.target = self.state.copy()


class StubPolicy:
    """A chunk that ramps from the observed state towards `goal` (policy rate = the embodiment's)."""

    def __init__(self, emb=EMB, *, horizon: int = 10, latency_s: float = 0.0, goal: float = 1.0, nan: bool = False):
        self.emb, self.horizon, self.latency_s, self.goal, self.nan = emb, horizon, latency_s, goal, nan
        self.calls = 0
        self.guided = 0
        self.rtc: list[dict] = []  # the rtc={...} of every request that carried one

    @property
    def metadata(self) -> dict:
        return {
            "policy_type": "stub",
            "action_horizon": self.horizon,
            "embodiments": {self.emb.name: self.emb.to_dict()},
        }

    def reset(self) -> None:
        pass

    def infer(self, obs, guide=None, guide_weights=None, rtc=None) -> dict:
        self.calls += 1
        if rtc is not None:
            self.rtc.append(rtc)
        if guide is not None:
            self.guided += 1
        s = np.asarray(obs[STATE], np.float32)
        if s.shape != (self.emb.state_dim,):
            raise ValueError(f"key {STATE!r}: expected shape ({self.emb.state_dim},), got {s.shape}")
        s = s[: self.emb.action_dim]
        if self.latency_s:
            time.sleep(self.latency_s)
        steps = np.linspace(0.05, 1.0, self.horizon)[:, None]
        a = s + steps * np.clip(self.goal - s, -0.5, 0.5)
        if guide is not None:  # ideal inpainting: follow the guide where it is fully weighted
            w = np.asarray(guide_weights)[:, None]
            a = w * guide + (1 - w) * a
        if rtc is not None:  # ideal: the steps that run before this chunk arrives are the old plan's
            d = rtc["inference_delay"]
            a[:d] = rtc["prev_chunk"][:d]
        if self.nan:
            a[:, 0] = np.nan
        return {"actions": a.astype(np.float32), "policy_timing": {"infer_ms": self.latency_s * 1000}}


@pytest.fixture
def fake_robot():
    return FakeRobot()


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory, two_stores):  # noqa: F811
    """A pi0 checkpoint trained for a few steps on two tiny embodiments (armA: s4 a3 2 cams, armB)."""
    from vla.config import load_preset
    from vla.train.trainer import train

    root = tmp_path_factory.mktemp("ckpt")
    preset = load_preset(write_preset(root / "p.toml"))
    return train(preset, two_stores, root / "ck", steps=2, progress=False)


def arm_a_obs(task_key: str = TASK) -> dict:
    obs = {STATE: np.zeros(4, np.float32), task_key: "reach the red target", "embodiment": "armA"}
    for c in ("front", "wrist"):
        obs[image_key(c)] = np.zeros((16, 16, 3), np.uint8)
    return obs
