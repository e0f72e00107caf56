"""Simulated inference delay in sim time (vla.sim.rollout with a vla.runtime.chunking executor): which
chunk's which action runs at each step, per mode, and what each request carries."""

import gymnasium as gym
import numpy as np
import pytest

from vla.runtime.chunking import ChunkingConfig, SimExecutor
from vla.sim.rollout import run_episode
from vla.spec import STATE, TASK, SpecError

from helpers import tiny_embodiment

EMB = tiny_embodiment("clock", s=2, a=2, cams=(), hz=20.0)


class ClockEnv(gym.Env):
    """Its state says how many steps have run; it remembers every action it was sent."""

    def __init__(self, steps=30):
        self.embodiment, self.max_steps = EMB, steps
        self.action_space = gym.spaces.Box(-1e6, 1e6, (2,), np.float32)
        self.sent = []

    def state(self):
        return np.array([0.0, len(self.sent)], np.float32)

    def _obs(self):
        return {STATE: self.state(), TASK: "tick"}

    def reset(self, *, seed=None, options=None):
        self.sent = []
        return self._obs(), {}

    def step(self, action):
        self.sent.append(np.asarray(action, np.float32).copy())
        return self._obs(), 0.0, False, len(self.sent) >= self.max_steps, {"success": False}


class ClockPolicy:
    """Chunk of 10: action j of a chunk asked for after s steps is [100 * s + j, 0]."""

    def __init__(self):
        self.requests = []

    def reset(self):
        pass

    def infer(self, obs, **extra):
        s = int(obs[STATE][1])
        self.requests.append((s, extra))
        return {"actions": np.stack([100.0 * s + np.arange(10), np.zeros(10)], 1).astype(np.float32)}


def _run(mode, delay, steps=30):
    env, pol = ClockEnv(steps), ClockPolicy()
    ex = SimExecutor(ChunkingConfig(mode=mode, execute_s=0.2))  # 4 steps at 20 Hz
    r = run_episode(env, pol, seed=0, executor=ex, delay_steps=delay)
    return [int(a[0]) for a in env.sent], pol.requests, r


def test_without_delay_every_mode_runs_four_actions_per_chunk():
    for mode in ("sync", "rtc", "rtc-guided"):
        sent, _, r = _run(mode, 0, steps=12)
        assert sent == [0, 1, 2, 3, 400, 401, 402, 403, 800, 801, 802, 803], mode
        assert r["boundary_jumps"] == [397.0, 397.0]
    sent, _, r = _run("async", 0, steps=12)  # the same chunks, cross-faded into
    assert sent[:4] == [0, 1, 2, 3] and 3 < sent[4] < sent[5] < 400 and r["boundary_jumps"][0] < 397


def test_sync_holds_while_the_chunk_is_computed_and_starts_it_late():
    sent, reqs, _ = _run("sync", 2, steps=14)
    # First chunk: asked at step 0, arrives 2 steps later (held at the start pose: 0).
    # Second: asked after 6 steps, held 2 steps on the last action (3), then started from its first.
    assert sent == [0, 0, 0, 1, 2, 3, 3, 3, 600, 601, 602, 603, 603, 603]
    assert [s for s, _ in reqs] == [0, 6, 12]


def test_async_skips_what_ran_while_the_chunk_was_computed():
    sent, reqs, _ = _run("rtc-guided", 2, steps=12)
    # Asked after 4 steps (the first chunk started at step 2, 2 of its 4 had run): the answer
    # lands 2 steps later, at step 6, where its action 2 is due. No blending.
    assert sent == [0, 0, 0, 1, 2, 3, 402, 403, 404, 405, 802, 803]
    assert [s for s, _ in reqs] == [0, 4, 8]
    rtc = reqs[1][1]["rtc"]
    assert rtc["mode"] == "guided" and rtc["inference_delay"] == 2
    # The old plan from the new chunk's first step (step 4) on: its actions 2..9.
    assert rtc["prev_chunk"][:, 0].tolist() == [2, 3, 4, 5, 6, 7, 8, 9]


def test_jumps_and_requests_are_reported():
    _, reqs, r = _run("rtc-guided", 2, steps=12)
    assert r["requests"] == len(reqs) == 3
    assert r["boundary_jumps"] == [399.0, 397.0]  # 3 -> 402, 405 -> 802


def test_a_delay_needs_an_executor_and_a_joint_position_robot():
    with pytest.raises(SpecError, match="executor"):
        run_episode(ClockEnv(), ClockPolicy(), seed=0, delay_steps=3)
    env = ClockEnv()
    env.embodiment = tiny_embodiment("ee", s=3, a=2, cams=(), hz=20.0)
    with pytest.raises(SpecError, match="holds the robot"):
        run_episode(env, ClockPolicy(), seed=0, executor=SimExecutor(ChunkingConfig()))


class HoldChunks:
    """Chunks of 20 that hold the arm where it is; remembers what each request carried."""

    def __init__(self):
        self.extra = []

    def reset(self):
        pass

    def infer(self, obs, **extra):
        self.extra.append(extra)
        return {"actions": np.repeat(np.asarray(obs[STATE], np.float32)[None], 20, 0)}


@pytest.mark.sim
def test_evaluate_with_a_mode_and_a_delay():
    from vla.sim.eval import evaluate, format_results

    pol = HoldChunks()
    ex = SimExecutor(ChunkingConfig(mode="rtc-guided", execute_s=0.5))
    r = evaluate(pol, "track", episodes=1, image_size=16, progress=False, executor=ex, delay_ms=300)
    assert r["chunking"] == {"mode": "rtc-guided", "delay_ms": 300.0}
    o = r["overall"]
    assert o["success_rate"] == 0 and o["boundary_jump"]["n"] >= 1 and o["boundary_jump"]["max"] < 1e-3
    assert o["requests_per_episode"] == len(pol.extra) and "boundary jump p50" in format_results(r)
    rtc = [e["rtc"] for e in pol.extra if e]
    assert rtc and all(x["inference_delay"] == 6 for x in rtc)  # 300 ms at 20 Hz
    with pytest.raises(SpecError, match="needs a chunking mode"):
        evaluate(pol, "track", episodes=1, image_size=16, progress=False, delay_ms=100)
    with pytest.raises(SpecError, match="scripted expert"):
        evaluate("expert", "track", episodes=1, image_size=16, progress=False, executor=ex)
