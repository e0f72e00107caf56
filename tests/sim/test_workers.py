import os

import pytest

from vla.sim.workers import run_jobs


def _job(context, job):
    if job == context["crash"]:
        os._exit(3)  # a hard crash: the worker process dies mid-job
    if job == context["raise"]:
        raise ValueError(f"bad job {job}")
    return job * 10


@pytest.mark.parametrize("workers", [1, 2])
def test_errors_are_reported_per_job_and_the_rest_go_on(workers):
    context = {"crash": 3 if workers > 1 else None, "raise": 5}
    got = {job: (res, err) for job, res, err in run_jobs(_job, context, range(8), workers=workers)}
    assert sorted(got) == list(range(8))
    assert "ValueError: bad job 5" in got[5][1]
    if workers > 1:
        assert got[3][0] is None and "worker process died (exit code 3)" in got[3][1]
    for j in (0, 1, 2, 4, 6, 7):
        assert got[j] == (j * 10, None)


def _threads(context, job):
    import torch  # imported by the job (a policy factory does), after the worker started

    return torch.get_num_threads()


def test_workers_share_the_cores_even_when_a_job_imports_torch():
    want = max(1, (os.cpu_count() or 1) // 2)
    got = [res for _, res, _ in run_jobs(_threads, None, range(4), workers=2)]
    assert len(got) == 4 and set(got) == {want}
