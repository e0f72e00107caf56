"""ENV_STATE from the built-in tasks: recorded beside each frame, never in the observation."""

import numpy as np
import pytest

from vla.data.store import EpisodeStore
from vla.sim.collect import RecipeConfig, RecipeTask, collect
from vla.sim.registry import make_env
from vla.sim.rollout import run_episode
from vla.spec import ENV_STATE, ENV_STATE_LAYOUT, STATE

pytestmark = pytest.mark.sim


class Hold:
    """Commands the current joint positions with open grippers: a cheap policy for a few steps."""

    def __init__(self, env):
        self.env = env.unwrapped

    def reset(self):
        pass

    def infer(self, obs):
        s = np.asarray(obs[STATE], np.float32).copy()
        return {"actions": s[None]}


def expected(env) -> np.ndarray:
    """The layout computed from the task's own facts, independently of environment_state()."""
    e = env.unwrapped
    t, d = e.task, e.data
    if t.name in ("reach", "reach-goal"):
        p = d.xpos[t.bodies[t.info["target"]]]
        return np.concatenate([p, p])
    if t.name == "pick-place":
        return np.concatenate([d.xpos[t.cube_bodies[t.info["cube"]]], t.info["bin_pos"]])
    if t.name == "push":
        return np.concatenate([d.xpos[t.block_bodies[t.info["block"]]], t.info["goal_pos"]])
    if t.name == "handover":
        return np.concatenate([d.xpos[t.bar_bodies[t.info["bar"]]], e.grip_pos(1)])
    raise AssertionError(t.name)


@pytest.mark.parametrize(
    "robot,task",
    [("arm7", "reach"), ("arm5", "reach-goal"), ("arm7", "pick-place"), ("arm7", "push"), ("bimanual", "handover")],
)
def test_every_builtin_task_records_env_state_beside_the_observation(robot, task):
    env = make_env(robot, task, image_size=16, max_steps=3)
    try:
        obs, _ = env.reset(seed=3)
        assert ENV_STATE not in obs and ENV_STATE not in env.observation_space.spaces
        es = env.unwrapped.environment_state()
        assert es.dtype == np.float32 and es.shape == (len(ENV_STATE_LAYOUT),)
        np.testing.assert_allclose(es, expected(env), atol=1e-6)
        ep = run_episode(env, Hold(env), seed=3, record=True)
        assert len(ep["frames"]) == 3
        first = ep["frames"][0][ENV_STATE]
        env.reset(seed=3)  # same seed: the scene of the recorded first frame
        np.testing.assert_allclose(first, expected(env), atol=1e-6)
        assert not run_episode(env, Hold(env), seed=3, record=False)["frames"]
    finally:
        env.close()


def test_an_env_without_env_state_records_none():
    env = make_env("arm7", "reach", image_size=16, max_steps=2)
    try:
        env.unwrapped.task.environment_state = lambda model, data: None  # as external envs: nothing to say
        ep = run_episode(env, Hold(env), seed=0, record=True)
        assert ep["frames"] and all(ENV_STATE not in f for f in ep["frames"])
    finally:
        env.close()


def test_collected_pick_place_episode_has_cube_and_bin(tmp_path):
    recipe = RecipeConfig(name="t", image_size=32, seed=5, tasks=(RecipeTask("arm7", "pick-place", 1),))
    r = collect(recipe, tmp_path / "s", progress=False, keep_failed=True)
    assert r["episodes_kept"] == 1
    s = EpisodeStore.open(tmp_path / "s")
    assert s.env_state_dim("arm7") == 6
    ep = s.episode(0)
    es = ep[ENV_STATE]
    assert es.shape == (len(ep[STATE]), 6) and np.isfinite(es).all()
    env = make_env("arm7", "pick-place", image_size=32)
    try:
        env.reset(seed=5)  # the recipe's first seed
        task, data = env.unwrapped.task, env.unwrapped.data
        np.testing.assert_allclose(es[0, :3], task.cube_pos(data), atol=1e-5)
        np.testing.assert_allclose(es[:, 3:], np.broadcast_to(task.info["bin_pos"], (len(es), 3)), atol=1e-6)
    finally:
        env.close()
