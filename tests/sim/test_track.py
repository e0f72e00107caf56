"""The dynamic task `track`: its expert succeeds, it is deterministic per seed, and it punishes staleness."""

from collections import deque

import numpy as np
import pytest

import vla.sim
from vla.sim.rollout import run_episode
from vla.spec import STATE, TASK

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def env():
    e = vla.sim.make_env("arm7", "track", image_size=16)
    yield e
    e.close()


def test_expert_succeeds_on_both_arms(env):
    for robot in ("arm7", "arm5"):
        e = env if robot == "arm7" else vla.sim.make_env(robot, "track", image_size=16)
        ok = sum(
            run_episode(e, vla.sim.make_expert(e, noise=0.02, seed=i), seed=300 + i, replan_every=1)["success"]
            for i in range(5)
        )
        assert ok >= 5 * 0.9, f"{robot}: expert {ok}/5"


def test_the_target_moves_twice_the_threshold_in_300ms(env):
    task = env.unwrapped.task
    assert task.rim_speed * 0.3 >= 2 * task.threshold
    env.reset(seed=4)
    p0 = task.target_pos(env.unwrapped.data)
    for _ in range(6):  # 300 ms at 20 Hz, the arm holding still
        env.step(env.unwrapped.state())
    moved = np.linalg.norm(task.target_pos(env.unwrapped.data)[:2] - p0[:2])
    assert moved >= 2 * task.threshold
    np.testing.assert_allclose(task.predict(env.unwrapped.data, 0.0), task.target_pos(env.unwrapped.data))


def test_same_seed_same_episode(env):
    def rollout(seed):
        obs, _ = env.reset(seed=seed)
        frames = [obs]
        for _ in range(5):
            obs, *_ = env.step(env.unwrapped.state())
            frames.append(obs)
        return frames, env.unwrapped.task.target_pos(env.unwrapped.data)

    (a, pa), (b, pb), (_, pc) = rollout(7), rollout(7), rollout(8)
    assert a[0][TASK] == b[0][TASK]
    for fa, fb in zip(a, b):
        for k in fa:
            if k != TASK:
                np.testing.assert_array_equal(fa[k], fb[k])
    np.testing.assert_array_equal(pa, pb)
    assert not np.allclose(pa, pc)


class Late:
    """The expert's actions, executed `steps` control steps after it chose them."""

    def __init__(self, env, steps):
        self.expert, self.queue = vla.sim.make_expert(env, seed=0), deque()
        self.steps = steps

    def reset(self):
        self.expert.reset()
        self.queue.clear()

    def infer(self, obs):
        self.queue.append(self.expert.act(obs))
        late = self.queue.popleft() if len(self.queue) > self.steps else np.asarray(obs[STATE])
        return {"actions": late[None]}


def test_a_stale_expert_misses(env):
    """300 ms of staleness (6 steps at 20 Hz) and the expert, perfect when fresh, no longer succeeds."""
    fresh = sum(run_episode(env, Late(env, 0), seed=600 + i, replan_every=1)["success"] for i in range(3))
    late = sum(run_episode(env, Late(env, 6), seed=600 + i, replan_every=1)["success"] for i in range(3))
    assert fresh == 3 and late == 0
