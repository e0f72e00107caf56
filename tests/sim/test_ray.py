"""`vla collect --ray` / `vla eval --ray`: episodes as Ray actor tasks give what local workers give for
the same seeds; a failing job runs once more and is then reported while the others finish; without
Ray the option says how to get it. One local Ray session (2 CPUs) serves the module: starting one
costs seconds, and run_jobs_ray keeps a session its caller started."""

import os
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from vla.cli import app
from vla.data.store import EpisodeStore
from vla.sim.collect import RecipeConfig, RecipeTask, collect
from vla.sim.eval import evaluate
from vla.sim.ray_jobs import RAY_HINT, check_address, run_jobs_ray
from vla.sim.suites import SuiteConfig, SuiteTask
from vla.spec import SpecError

pytestmark = pytest.mark.sim
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_session():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 << 20)
    # The actors cannot import this test module by name: its jobs and policy travel by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


def _job(context, job):
    if job == context["raise"]:
        raise ValueError(f"bad job {job}")
    if job == context["crash"]:
        os._exit(3)  # the worker process dies mid-job
    if job == context["flaky"]:
        marker = context["marker"]
        if not os.path.exists(marker):  # dies the first time only: the retry succeeds
            open(marker, "w").close()
            os._exit(4)
    return job * 10, os.getpid()


def test_a_failing_job_runs_once_more_then_is_reported_and_the_rest_finish(ray_session, tmp_path):
    context = {"raise": 5, "crash": 3, "flaky": 6, "marker": str(tmp_path / "died-once")}
    got = {job: (res, err) for job, res, err in run_jobs_ray(_job, context, range(9), workers=2)}
    assert sorted(got) == list(range(9))
    assert got[5][0] is None and got[5][1].startswith("failed 2 times")
    assert got[5][1].strip().splitlines()[-1] == "ValueError: bad job 5"
    assert got[3][0] is None and "failed 2 times" in got[3][1] and "worker process died" in got[3][1]
    assert os.path.exists(context["marker"]) and got[6][1] is None and got[6][0][0] == 60  # retried, then done
    for j in (0, 1, 2, 4, 7, 8):
        assert got[j][1] is None and got[j][0][0] == j * 10
    assert ray.is_initialized()  # the caller's session is left running


def test_leaving_early_stops_the_actors(ray_session):
    jobs = run_jobs_ray(_job, {"raise": None, "crash": None, "flaky": None}, range(50), workers=2)
    next(jobs)
    jobs.close()  # what a Ctrl-C in the caller's loop does to the generator
    deadline = time.monotonic() + 20
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2


def _episodes(path):
    s = EpisodeStore.open(path)
    eps = [s.episode(i) for i in range(s.num_episodes)]
    return sorted(eps, key=lambda e: (e["embodiment"], e["observation/state"][0].tobytes()))


def test_collect_on_ray_writes_the_episodes_local_workers_write(ray_session, tmp_path):
    recipe = RecipeConfig(
        name="t", image_size=16, tasks=(RecipeTask("arm5", "reach", 3, noise=0.02), RecipeTask("arm7", "reach", 2))
    )
    local = collect(recipe, tmp_path / "local", progress=False)
    remote = collect(recipe, tmp_path / "ray", workers=2, ray="local", progress=False)
    assert remote["per_task"] == local["per_task"] and remote["first_seed"] == local["first_seed"]
    a, b = _episodes(tmp_path / "local"), _episodes(tmp_path / "ray")
    assert len(a) == len(b) == 5
    for ea, eb in zip(a, b):
        assert ea.keys() == eb.keys()
        for k, v in ea.items():
            if isinstance(v, np.ndarray):
                assert np.array_equal(v, eb[k]), k
            else:
                assert v == eb[k], k


class HoldStill:
    """A deterministic policy built in each worker (a factory's product): holds the arm still."""

    def reset(self):
        pass

    def infer(self, obs):
        a = np.concatenate([obs["observation/state"][:-1], [0.0]]).astype(np.float32)
        return {"actions": np.repeat(a[None], 4, 0)}


def hold_still() -> HoldStill:
    return HoldStill()


def test_eval_on_ray_gives_the_local_results_for_the_same_seeds(ray_session):
    suite = SuiteConfig(name="t", image_size=16, tasks=(SuiteTask("arm5", "reach", 3), SuiteTask("arm7", "reach", 2)))
    for policy in ("expert", hold_still):  # the scripted expert (seeded per episode) and a factory
        local = evaluate(policy, suite, workers=1 if policy == "expert" else 2, progress=False)
        remote = evaluate(policy, suite, workers=2, ray="local", progress=False)
        assert remote["tasks"] == local["tasks"] and remote["overall"] == local["overall"]
        assert local["overall"]["episodes"] == 5 and not any(r["errors"] for r in local["tasks"])


def test_addresses_are_checked_before_any_work():
    for ok in ("local", "auto", "10.0.0.5:6379", "ray://head:10001"):
        assert check_address(ok) == ok
    for bad in ("nowhere", "head:port", ""):
        with pytest.raises(SpecError, match="--ray takes"):
            check_address(bad)


@pytest.mark.parametrize("argv", [["collect", "quickstart", "--episodes", "1"], ["eval", "expert", "--episodes", "1"]])
def test_without_ray_the_option_says_how_to_get_it(argv, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    monkeypatch.chdir(tmp_path)
    extra = ["--out", str(tmp_path / "new")] if argv[0] == "collect" else []
    r = CliRunner().invoke(app, [*argv, *extra, "--ray", "local"])
    assert r.exit_code == 2 and r.output.strip().splitlines() == [f"error: {RAY_HINT}"]
    assert os.listdir(tmp_path) == []
