"""`vla bench rtc` end to end with tiny settings: collect, train twice, every mode at two delays, JSON and plot."""

import json
import sys

import pytest
from typer.testing import CliRunner

from vla.bench.rtc import MODES, judge
from vla.cli import app

from helpers import FIXTURES

sys.path.insert(0, str(FIXTURES.parent))
from train.conftest import write_preset  # noqa: E402

RECIPE = """name = "track-tiny"
image_size = 32
seed = 0
[[tasks]]
robot = "arm7"
task = "track"
episodes = 2
noise = 0.02
"""
SUITE = """name = "track-tiny"
image_size = 32
replan_every = 8
[[tasks]]
robot = "arm7"
task = "track"
"""


@pytest.fixture
def one_thread():
    """A tiny model gains little from a second thread and loses 10-20x on a loaded machine (spinning)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
@pytest.mark.sim
def test_bench_rtc_writes_every_mode_and_delay(tmp_path, one_thread):
    (tmp_path / "recipe.toml").write_text(RECIPE)
    (tmp_path / "suite.toml").write_text(SUITE)
    preset = write_preset(tmp_path / "p.toml")  # 32 px, 3 denoising steps
    preset.write_text(preset.read_text().replace("horizon = 6", "horizon = 16"))  # 15 chunks an episode
    out, report = tmp_path / "bench", tmp_path / "rtc.json"
    argv = ["bench", "rtc", "--minutes", "0.05", "--steps", "2", "--delays-ms", "0,100", "--episodes", "1"]
    argv += [
        "--preset",
        str(preset),
        "--recipe",
        str(tmp_path / "recipe.toml"),
        "--suite",
        str(tmp_path / "suite.toml"),
    ]
    argv += ["--workers", "1", "--out", str(out), "--json", str(report)]
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 0, r.output
    got = json.loads(report.read_text())
    assert got == json.loads((out / "rtc.json").read_text())
    rows = got["results"]
    assert [(x["mode"], x["delay_ms"]) for x in rows] == [(m, d) for m in MODES for d in (0.0, 100.0)]
    for x in rows:
        if x["success_rate"] is None:  # only a trainer without training-time RTC leaves a mode out
            assert x["mode"] == "rtc-trained" and "rtc_max_delay" in x["missing"]
            continue
        assert x["episodes"] == 1 and 0 <= x["success_rate"] <= 1 and len(x["ci95"]) == 2
        assert set(x["boundary_jump"]) == {"p50", "p90", "max", "n"} and x["boundary_jump"]["n"] >= 1
        assert x["delay_steps"] == (2 if x["delay_ms"] else 0)
    assert got["setup"]["execute_steps"] == 8 and (out / "rtc.png").stat().st_size > 0
    assert set(got["targets"]) >= {"best_rtc_mode", "guided_jacobian_at_least_nojac", "trained_reported"}


def test_targets_are_judged_at_the_largest_delay():
    def row(mode, delay, rate):
        return {"mode": mode, "delay_ms": delay, "success_rate": rate}

    rows = [row("sync", 0, 0.9), row("sync", 300, 0.3), row("rtc-guided", 0, 0.9), row("rtc-guided", 300, 0.8)]
    rows += [row("rtc-guided-nojac", 0, 0.9), row("rtc-guided-nojac", 300, 0.85), row("rtc-trained", 0, 0.8)]
    t = judge(rows + [{"mode": "rtc-trained", "delay_ms": 300, "success_rate": None, "missing": "x"}])
    assert t["best_rtc_mode"] == "rtc-guided-nojac" and t["best_rtc_keeps_80pct_of_its_0ms"]
    assert t["best_rtc_beats_sync_by_20_points"] and not t["guided_jacobian_at_least_nojac"]
    assert t["trained_reported"] is False
