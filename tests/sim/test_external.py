"""Meta-World and ALOHA sim adapters: same observation contract as the built-in envs, experts work."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import vla.sim
from vla.sim.env import ActionError
from vla.sim.rollout import run_episode
from vla.spec import ENV_STATE, ENV_STATE_LAYOUT, STATE, TASK, SpecError, image_key

pytestmark = pytest.mark.sim


def _check_obs(env, size):
    emb = env.unwrapped.embodiment
    obs, _ = env.reset(seed=0)
    assert set(obs) == {image_key(c) for c in emb.camera_names} | {STATE, TASK}
    assert all(obs[image_key(c)].shape == (size, size, 3) for c in emb.camera_names)
    assert obs[STATE].shape == (emb.state_dim,) and obs[STATE].dtype == np.float32
    assert env.observation_space.contains(obs)
    return obs


@pytest.mark.filterwarnings("ignore")
def test_metaworld_adapter():
    pytest.importorskip("metaworld")
    assert {"reach-v3", "pick-place-v3", "door-open-v3"} <= set(vla.sim.list_tasks("metaworld"))
    env = vla.sim.make_env("metaworld", "reach-v3", image_size=16)
    check_env(env.unwrapped, skip_render_check=True)
    obs = _check_obs(env, 16)
    assert obs[TASK] == "reach the goal position" and env.unwrapped.embodiment.action_mode == "ee_delta"
    with pytest.raises(ActionError, match=r"expected action of shape \(4,\)"):
        env.step(np.zeros(3))
    expert = vla.sim.make_expert(env, seed=0)
    results = [run_episode(env, expert, seed=s, replan_every=1) for s in (0, 1)]
    assert all(r["success"] for r in results) and all(r["length"] < 150 for r in results)
    env.close()
    with pytest.raises(SpecError, match=r"unknown Meta-World task 'reach-v9'; valid tasks are \["):
        vla.sim.make_env("metaworld", "reach-v9")


@pytest.mark.parametrize("task", ["transfer-cube", "insertion"])
def test_aloha_adapter(task):
    pytest.importorskip("gym_aloha")
    env = vla.sim.make_env("aloha", task, image_size=16)
    obs = _check_obs(env, 16)
    assert obs[STATE].shape == (14,) and env.unwrapped.embodiment.name == "aloha"
    with pytest.raises(ActionError, match=r"NaN/Inf"):
        env.step(np.full(14, np.nan))
    expert = vla.sim.make_expert(env, seed=0)
    env.reset(seed=0)
    for _ in range(5):
        _, _, _, _, info = env.step(expert.act(None))
    assert info["success"] is False
    env.close()


def test_aloha_physics_divergence_ends_the_episode_as_a_failure():
    # dm_control raises PhysicsError when actions drive the simulation unstable; an evaluation used
    # to drop such an episode as an error, leaving it out of the count (an untrained policy's 5
    # episodes were scored on 3). Now it is a truncated, failed episode, and the next reset is valid.
    pytest.importorskip("gym_aloha")
    env = vla.sim.make_env("aloha", "transfer-cube", image_size=16)
    obs, _ = env.reset(seed=0)
    env.unwrapped.data.qvel[:] = 1e20
    _, _, terminated, truncated, info = env.step(obs[STATE])
    assert (terminated, truncated, info["success"]) == (False, True, False) and "invalid" in info["physics_error"]
    obs, _ = env.reset(seed=1)
    _, _, _, truncated, info = env.step(obs[STATE])
    assert not truncated and "physics_error" not in info and np.isfinite(obs[STATE]).all()
    env.close()


def test_aloha_transfer_cube_expert():
    # One full episode (~290 steps at 50 Hz); `vla eval expert --suite aloha` gives the rates.
    pytest.importorskip("gym_aloha")
    env = vla.sim.make_env("aloha", "transfer-cube", image_size=16)
    r = run_episode(env, vla.sim.make_expert(env, seed=0), seed=0, replan_every=1)
    assert r["success"], f"aloha transfer-cube: scripted expert failed on seed 0 after {r['length']} steps"
    env.close()


def test_aloha_seeded_reset_is_deterministic():
    pytest.importorskip("gym_aloha")
    env = vla.sim.make_env("aloha", "transfer-cube", image_size=16)
    a, _ = env.reset(seed=5)
    box_a = env.unwrapped.data.qpos[16:19].copy()
    env.reset(seed=6)
    b, _ = env.reset(seed=5)
    np.testing.assert_array_equal(box_a, env.unwrapped.data.qpos[16:19])
    np.testing.assert_array_equal(a[STATE], b[STATE])
    env.close()


@pytest.mark.parametrize("task", ["transfer-cube", "insertion"])
def test_aloha_records_the_objects_positions_as_training_only_scene_facts(task):
    # The grounding loss of pi0-tiny regresses these; before, ALOHA demos had none and the keypoints
    # learned only from the actions (0/50 on both tasks after 60 CPU-minutes, never touching the cube).
    pytest.importorskip("gym_aloha")
    env = vla.sim.make_env("aloha", task, image_size=16)
    expert = vla.sim.make_expert(env, seed=0)
    ep = run_episode(env, expert, seed=7, replan_every=1, record=True)
    facts = np.stack([f[ENV_STATE] for f in ep["frames"]])
    assert facts.shape == (len(ep["frames"]), len(ENV_STATE_LAYOUT)) and facts.dtype == np.float32
    env.reset(seed=7)
    start = env.unwrapped.data.qpos[16:].copy()  # gym-aloha's free bodies: 7 numbers each
    np.testing.assert_allclose(facts[0, :3], start[:3], atol=1e-6)
    goal = start[:3] if task == "transfer-cube" else start[7:10]
    np.testing.assert_allclose(facts[0, 3:], goal, atol=1e-6)
    assert facts[:, 2].max() > facts[0, 2] + 0.05, "the right arm lifts the cube / peg: its z must follow"
    assert ENV_STATE not in env.unwrapped.observe(), "scene facts are never part of an observation"
    env.close()


@pytest.mark.filterwarnings("ignore")
def test_metaworld_records_object_and_hidden_goal_as_scene_facts():
    pytest.importorskip("metaworld")
    env = vla.sim.make_env("metaworld", "pick-place-v3", image_size=16)
    obs, _ = env.reset(seed=2)
    facts = env.unwrapped.environment_state()
    raw = env.unwrapped._raw
    np.testing.assert_allclose(facts[:3], raw[4:7], atol=1e-6)
    np.testing.assert_allclose(facts[3:], env.unwrapped._env.unwrapped._target_pos, atol=1e-6)
    env.reset(seed=3)
    assert not np.allclose(env.unwrapped.environment_state(), facts), "another seed, another layout"
    assert ENV_STATE not in obs
    env.close()
