"""The scripted experts clear the success bar on every built-in task (fixed seeds, small images)."""

import numpy as np
import pytest

import vla.sim
from vla.sim.rollout import run_episode

pytestmark = pytest.mark.sim

# Episodes per task here are few to keep the suite fast; `vla eval expert --suite builtin`
# measures the rates on many (see the closing note for the figures).
EPISODES = {"handover": 3, "pick-place": 3, "push": 3, "reach": 5, "reach-goal": 3, "track": 3}


@pytest.mark.parametrize("robot,task", vla.sim.builtin_pairs())
def test_expert_success(robot, task):
    env = vla.sim.make_env(robot, task, image_size=16)
    expert = vla.sim.make_expert(env, noise=0.02, seed=0)
    n = EPISODES[task]
    results = [run_episode(env, expert, seed=500 + i, replan_every=1) for i in range(n)]
    env.close()
    ok = sum(r["success"] for r in results)
    assert ok == n, f"{robot}/{task}: expert succeeded {ok}/{n}"


def test_zero_action_policy_fails():
    """A do-nothing policy must not count as success (the success checks can fail)."""

    class Hold:
        def reset(self):
            pass

        def infer(self, obs):
            return {"actions": np.concatenate([obs["observation/state"][:-1], [0.0]])[None].astype(np.float32)}

    for task in ("reach", "pick-place", "push"):
        env = vla.sim.make_env("arm5", task, image_size=16)
        r = run_episode(env, Hold(), seed=1, replan_every=1)
        env.close()
        assert not r["success"] and r["length"] == env.unwrapped.max_steps


@pytest.mark.parametrize("robot", ["arm7", "arm5"])
def test_push_expert_comes_down_clear_of_the_block(robot):
    """The push expert sets its fingers down on the table `run_up` behind the block's face, not beside
    it: a learned copy, a couple of centimetres off, then still lands on the table rather than on the
    block's top (where a learned policy at times stayed with the old 2.5 cm gap)."""
    env = vla.sim.make_env(robot, "push", image_size=16)
    expert = vla.sim.make_expert(env, noise=0.02, seed=0)
    e = env.unwrapped
    h, pad = e.robot.cube_half, e.robot.arms[0].pad_half
    gap = e.task.cfg.run_up
    for seed in (3, 4):
        obs, _ = env.reset(seed=seed)
        expert.reset()
        block = e.task.block_pos(e.data)[:2]
        for _ in range(200):
            obs, *_ = env.step(expert.act(obs))
            if e.grip_pos(0)[2] < 2 * h + pad:  # the fingers are now lower than the block's top
                break
        d = float(np.linalg.norm(e.grip_pos(0)[:2] - block))
        assert d > h + gap - 0.01, f"{robot} seed {seed}: fingers came down {d * 100:.1f} cm from the block's centre"
    env.close()
