import json

import numpy as np
import pytest

from vla.sim.eval import evaluate, format_results
from vla.sim.report import wilson
from vla.sim.suites import SuiteConfig, SuiteTask, list_suites, load_suite
from vla.spec import SpecError

pytestmark = pytest.mark.sim


def _suite(episodes=2, tasks=(("arm5", "reach"),)):
    return SuiteConfig(name="t", image_size=16, tasks=tuple(SuiteTask(r, t, episodes) for r, t in tasks))


def test_wilson_interval():
    lo, hi = wilson(10, 10)
    assert hi == pytest.approx(1.0) and 0.72 < lo < 0.73
    lo, hi = wilson(0, 10)
    assert lo == pytest.approx(0.0) and 0.27 < hi < 0.28
    lo, hi = wilson(50, 100)
    assert 0.40 < lo < 0.41 and 0.59 < hi < 0.60


def test_expert_eval_writes_json_chart_and_videos(tmp_path):
    r = evaluate("expert", _suite(), json_out=tmp_path / "r.json", videos=tmp_path / "v", num_videos=1, progress=False)
    row = r["tasks"][0]
    assert row["successes"] == 2 and row["success_rate"] == 1.0 and row["mean_length"] > 0
    assert json.loads((tmp_path / "r.json").read_text())["overall"]["successes"] == 2
    assert (tmp_path / "r.png").stat().st_size > 1000
    assert len(r["videos"]) == 1 and [str(p) for p in (tmp_path / "v").glob("*.mp4")] == r["videos"]
    assert "arm5/reach" in format_results(r)


def _videos_kept(outcomes, limit):
    from vla.sim.eval import _keep_video

    kept = {"n": 0, "success": False, "fail": False}
    return [ok for ok in outcomes if _keep_video(kept, ok, limit)]


def test_videos_show_a_success_and_a_failure_when_there_are_both():
    assert _videos_kept([False, False, False, True, True, False], 2) == [False, True]  # first success 4th
    assert _videos_kept([True, True, False], 2) == [True, False]
    assert _videos_kept([False] * 5, 3) == [False, False]  # a slot stays free for a success that never came
    assert _videos_kept([False, True, True, True], 3) == [False, True, True]
    assert _videos_kept([True, False], 1) == [True]


class Counting:
    """Holds the arm still with chunks of h actions; counts infer calls and checks the obs it gets."""

    def __init__(self, h=4):
        self.h, self.calls = h, 0

    def reset(self):
        pass

    def infer(self, obs):
        assert obs["embodiment"] == "arm5" and isinstance(obs["task"], str)
        self.calls += 1
        a = np.concatenate([obs["observation/state"][:-1], [0.0]]).astype(np.float32)
        return {"actions": np.repeat(a[None], self.h, 0)}


def test_chunks_execute_open_loop_for_replan_every_steps():
    p = Counting(h=4)
    r = evaluate(p, _suite(episodes=1), replan_every=3, progress=False)
    n = r["tasks"][0]["mean_length"]
    assert r["tasks"][0]["successes"] == 0  # holding still never touches a target
    assert p.calls == -(-n // 3)
    p2 = Counting(h=4)
    evaluate(p2, _suite(episodes=1), progress=False)  # default: half the chunk
    assert p2.calls == -(-n // 2)


def test_each_evaluate_call_builds_its_own_policy_from_its_factory():
    built = []

    def factory(tag):
        def make():
            p = Counting(h=4)
            p.tag = tag
            built.append(p)
            return p

        return make

    first, second = factory("first"), factory("second")
    evaluate(first, _suite(episodes=2), progress=False)
    evaluate(second, _suite(episodes=2), progress=False)  # workers=1: runs in this process, as the first did
    # One build per evaluate() call (shared by its episodes), each from its own factory.
    assert [p.tag for p in built] == ["first", "second"]
    assert built[0].calls > 0 and built[1].calls > 0
    evaluate(first, _suite(episodes=1), progress=False)  # the same factory again: a fresh policy
    assert [p.tag for p in built] == ["first", "second", "first"] and built[2].calls > 0


def test_bad_policy_output_is_an_error_with_its_seed():
    class Wrong(Counting):
        def infer(self, obs):
            return {"actions": np.zeros((4, 3), np.float32)}

    r = evaluate(Wrong(), _suite(episodes=2), progress=False)
    errs = r["tasks"][0]["errors"]
    assert [e["seed"] for e in errs] == [1_000_000, 1_000_001]
    assert "expected actions of shape [h, 6], got (4, 3)" in errs[0]["error"]
    assert r["tasks"][0]["episodes"] == 0


def test_suites_load_and_unknown_names_list_valid_ones():
    assert {"quickstart", "reach-goal", "reach-lang", "pick-place", "builtin"} <= set(list_suites())
    for name in list_suites():
        load_suite(name)
    with pytest.raises(SpecError, match=r"unknown suite 'nope'; valid suites are \["):
        load_suite("nope")
    with pytest.raises(SpecError, match="workers > 1 needs"):
        evaluate(Counting(), _suite(), workers=2, progress=False)


def test_chart_handles_perfect_and_zero_rates(tmp_path):
    from vla.sim.report import bar_chart

    rows = [
        {
            "robot": "arm7",
            "task": "reach",
            "episodes": 50,
            "successes": 50,
            "success_rate": 1.0,
            "ci95": list(wilson(50, 50)),
        },
        {
            "robot": "arm5",
            "task": "reach",
            "episodes": 7,
            "successes": 0,
            "success_rate": 0.0,
            "ci95": list(wilson(0, 7)),
        },
    ]
    assert bar_chart({"tasks": rows, "policy": "p", "suite": "s"}, tmp_path / "c.png").stat().st_size > 1000


def test_policy_noise_is_seeded_per_episode():
    import torch

    from vla.sim.registry import make_env
    from vla.sim.rollout import run_episode

    class Noisy:  # samples like a flow policy: fresh torch noise for every chunk
        def reset(self):
            pass

        def infer(self, obs):
            s = obs["observation/state"]
            a = np.concatenate([s[:-1], [0.0]]) + 0.05 * torch.randn(4, len(s)).numpy()
            return {"actions": a.astype(np.float32)}

    env = make_env("arm5", "reach", image_size=16)
    before = torch.get_rng_state()
    runs = [run_episode(env, Noisy(), seed=s, record=True) for s in (3, 3, 4)]
    acts = [np.stack([f["action"] for f in r["frames"]]) for r in runs]
    assert np.array_equal(acts[0], acts[1])  # same seed, same rollout
    assert not np.array_equal(acts[0][:4], acts[2][:4])  # another seed, other noise
    assert torch.equal(torch.get_rng_state(), before)  # the caller's generator is left as it was


def test_seed_picks_another_block_of_held_out_scenes():
    class Wrong(Counting):
        def infer(self, obs):
            return {"actions": np.zeros((4, 3), np.float32)}

    r = evaluate(Wrong(), _suite(episodes=2), progress=False, seed=5_000_000)
    assert r["seed"] == 5_000_000
    assert [e["seed"] for e in r["tasks"][0]["errors"]] == [5_000_000, 5_000_001]
    with pytest.raises(SpecError, match="seed must be >= 0"):
        evaluate(Wrong(), _suite(episodes=1), progress=False, seed=-1)


class _Staged:
    """A PolicyLike that holds still (the test's env hands out the staged rewards)."""

    def reset(self):
        pass

    def infer(self, obs):
        return {"actions": np.tile(obs["observation/state"], (4, 1))}


def test_eval_reports_how_far_failed_episodes_got_by_reward_stage(monkeypatch):
    # gym-aloha rewards 1 touched, 2 lifted, 3 handed over (touching both), 4 done: a policy at 0/50
    # that never touches the cube and one that lifts it every time differ only in these counts.
    import vla.sim.eval as ev

    stages = {0: 2.0, 1: 0.0, 2: 3.0}  # the highest stage each episode reaches, by episode index
    made = ev.make_env

    def staged_env(robot, task, **kw):
        env = made(robot, task, **kw)
        step, reset = env.step, env.reset
        seen = {"k": 0}

        def new_reset(**a):
            seen["k"] = a["seed"] - 1_000_000
            return reset(**a)

        def new_step(action):
            obs, _, term, trunc, info = step(action)
            return obs, stages[seen["k"]] * (env.unwrapped.steps % 2), term, trunc, info  # rises and falls

        env.reset, env.step = new_reset, new_step
        env.unwrapped.reward_stages = declared
        return env

    monkeypatch.setattr(ev, "make_env", staged_env)
    declared = True
    monkeypatch.setattr(ev, "_ENVS", {})
    r = evaluate(_Staged(), _suite(episodes=3), progress=False)
    row = r["tasks"][0]
    assert row["successes"] == 0
    assert row["max_reward_counts"] == {"0": 1, "2": 1, "3": 1} and row["mean_max_reward"] == pytest.approx(
        5 / 3, abs=1e-4
    )
    assert "highest reward stage reached: 0: 1, 2: 1, 3: 1" in format_results(r)
    # The same whole-number rewards from an env that does not declare stages (Meta-World's dense
    # reward saturates at exactly 10.0 when a task is solved): a mean, no stage table.
    declared = False
    monkeypatch.setattr(ev, "_ENVS", {})
    r = evaluate(_Staged(), _suite(episodes=3), progress=False)
    row = r["tasks"][0]
    assert "max_reward_counts" not in row and row["mean_max_reward"] == pytest.approx(5 / 3, abs=1e-4)
    assert "highest reward stage" not in format_results(r)


def test_dense_rewards_give_a_mean_but_no_stage_counts():
    from vla.sim.eval import _reward_stats

    assert _reward_stats([0.25, 1.5]) == {"mean_max_reward": 0.875}
    assert _reward_stats([]) == {}
    assert _reward_stats([1.0, 0.0, 1.0], stages=True) == {
        "mean_max_reward": 0.6667,
        "max_reward_counts": {"0": 1, "1": 2},
    }
    assert _reward_stats([10.0, 10.0]) == {"mean_max_reward": 10.0}  # saturated, not declared stages


def test_results_say_what_noise_a_checkpoint_sampled_from():
    from types import SimpleNamespace

    p = Counting(h=4)
    p.cfg = SimpleNamespace(noise_scale=0.0)  # as a pi0 Policy's model config
    r = evaluate(p, _suite(episodes=1), progress=False)
    assert r["noise_scale"] == 0.0 and "noise_scale 0.0" in format_results(r).splitlines()[0]
    served = Counting(h=4)
    served.metadata = {"policy_type": "pi0", "noise_scale": 1.0}  # as a RemotePolicy's, from its server
    assert evaluate(served, _suite(episodes=1), progress=False)["noise_scale"] == 1.0
    r = evaluate(Counting(h=4), _suite(episodes=1), progress=False)  # a policy without one: nothing said
    assert "noise_scale" not in r and "noise_scale" not in format_results(r)
