import importlib

import numpy as np
import pytest

from vla.data.store import EpisodeStore
from vla.sim.collect import RecipeConfig, RecipeTask, collect, load_recipe
from vla.spec import SpecError

pytestmark = pytest.mark.sim
# `vla.sim.collect` the attribute is the API function; the module is this one.
collect_mod = importlib.import_module("vla.sim.collect")


def _recipe(**kw):
    tasks = kw.pop("tasks", (RecipeTask("arm7", "reach", 2, noise=0.02), RecipeTask("arm5", "reach", 2)))
    return RecipeConfig(name="t", image_size=16, tasks=tasks, **kw)


def test_collect_fills_a_store_with_successful_episodes(tmp_path):
    r = collect(_recipe(), tmp_path / "s", progress=False)
    assert r["episodes_attempted"] == 4 and r["episodes_kept"] == 4 and not r["crashed"]
    s = EpisodeStore.open(tmp_path / "s")
    assert s.num_episodes == 4 and sorted(s.embodiments) == ["arm5", "arm7"]
    ep = s.episode(0)
    assert ep["embodiment"] == "arm7"  # the recipe's first task
    assert ep["success"] in (True, 1)  # a kept demo succeeded (bool or 0/1, as the store gives it)
    assert "target" in ep["task"] or "marker" in ep["task"] or "one" in ep["task"]
    assert ep["observation/images/front"].shape[1:] == (16, 16, 3)
    assert np.isfinite(ep["action"]).all() and ep["action"].shape[1] == 8
    # Appending to the same store works and keeps what was there.
    collect(_recipe(tasks=(RecipeTask("arm5", "reach", 1),)), tmp_path / "s", progress=False)
    assert EpisodeStore.open(tmp_path / "s").num_episodes == 5


def test_demonstrations_go_on_past_the_first_success(tmp_path):
    one = (RecipeTask("arm7", "reach", 1),)
    collect(_recipe(tasks=one, after_success=0), tmp_path / "a", progress=False)
    collect(_recipe(tasks=one, after_success=12), tmp_path / "b", progress=False)
    a, b = EpisodeStore.open(tmp_path / "a").episode(0), EpisodeStore.open(tmp_path / "b").episode(0)
    # The same episode (seed), recorded 12 steps longer; the first frames are the same.
    assert len(b["action"]) == len(a["action"]) + 12
    np.testing.assert_array_equal(b["action"][: len(a["action"])], a["action"])
    # The extra steps keep the arm near where it succeeded: it settles, it does not wander off.
    assert np.abs(np.diff(b["action"][-6:], axis=0)).max() < 0.05
    with pytest.raises(SpecError, match="after_success"):
        _recipe(after_success=-1)


def test_failed_episodes_are_dropped_unless_kept(tmp_path, monkeypatch):
    real = collect_mod._collect_job

    def flaky(context, job):
        ep = real(context, job)
        ep["success"] = job["seed"] % 2 == 0
        return ep

    monkeypatch.setattr(collect_mod, "_collect_job", flaky)
    r = collect(_recipe(tasks=(RecipeTask("arm5", "reach", 4),)), tmp_path / "a", progress=False)
    assert r["episodes_kept"] == 2
    r = collect(_recipe(tasks=(RecipeTask("arm5", "reach", 4),)), tmp_path / "b", keep_failed=True, progress=False)
    s = EpisodeStore.open(tmp_path / "b")
    assert r["episodes_kept"] == 4 and sorted(int(s.info(i).success) for i in range(4)) == [0, 0, 1, 1]


def test_interrupt_keeps_completed_episodes(tmp_path, monkeypatch):
    real_run_jobs = collect_mod.run_jobs

    def interrupted(fn, context, jobs, workers):
        for i, item in enumerate(real_run_jobs(fn, context, jobs, workers=workers)):
            if i == 2:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(collect_mod, "run_jobs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        collect(_recipe(tasks=(RecipeTask("arm5", "reach", 5),)), tmp_path / "s", progress=False)
    s = EpisodeStore.open(tmp_path / "s")
    assert s.num_episodes == 2


def test_crashed_episode_is_reported_with_its_seed(tmp_path, monkeypatch):
    real = collect_mod._collect_job

    def crashing(context, job):
        if job["seed"] == 1:
            raise RuntimeError("simulated crash")
        return real(context, job)

    monkeypatch.setattr(collect_mod, "_collect_job", crashing)
    r = collect(_recipe(tasks=(RecipeTask("arm5", "reach", 3),)), tmp_path / "s", progress=False)
    assert r["episodes_kept"] == 2
    assert r["crashed"] == [{"robot": "arm5", "task": "reach", "seed": 1, "error": "RuntimeError: simulated crash"}]


def test_recipes_load_and_bad_ones_say_why(tmp_path):
    q = load_recipe("quickstart")
    assert {(t.robot, t.task) for t in q.tasks} == {
        (r, t) for r in ("arm7", "arm5") for t in ("reach-goal", "pick-place", "reach")
    }
    bad = tmp_path / "bad.toml"
    bad.write_text('[[tasks]]\nrobot = "arm7"\ntask = "juggle"\n')
    valid = r"valid tasks are \['pick-place', 'push', 'reach', 'reach-goal', 'track'\]"
    with pytest.raises(SpecError, match=r"unknown task 'juggle' for robot 'arm7'; " + valid):
        load_recipe(bad)
    with pytest.raises(SpecError, match="recipe not found"):
        load_recipe("no-such-recipe")


def test_the_package_collect_stays_the_function_after_its_module_is_imported():
    import importlib

    importlib.import_module("vla.sim.collect")
    from vla.sim import collect as fn

    assert callable(fn) and fn.__module__ == "vla.sim.collect"


def test_collecting_again_into_a_store_continues_the_seeds(tmp_path):
    """Appending used to restart at the recipe's seed: the new episodes were byte copies of the old."""
    one = (RecipeTask("arm5", "reach", 2),)
    first = collect(_recipe(tasks=one), tmp_path / "s", progress=False)
    again = collect(_recipe(tasks=one), tmp_path / "s", progress=False)
    assert first["first_seed"] == {"arm5/reach": 0} and again["first_seed"] == {"arm5/reach": 2}
    s = EpisodeStore.open(tmp_path / "s")
    actions = [s.episode(i)["action"] for i in range(s.num_episodes)]
    assert len(actions) == 4
    for i in range(4):
        for j in range(i):
            assert actions[i].shape != actions[j].shape or not np.array_equal(actions[i], actions[j]), (i, j)
    # An explicit --seed starts where it says (here: the first episode again).
    again = collect(_recipe(tasks=(RecipeTask("arm5", "reach", 1),)), tmp_path / "s", progress=False, seed=0)
    np.testing.assert_array_equal(EpisodeStore.open(tmp_path / "s").episode(4)["action"], actions[0])


def test_collect_never_appends_to_what_is_not_a_store(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SpecError, match="a file of 4 bytes"):
        collect(_recipe(), tmp_path / "notes.txt", progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"
