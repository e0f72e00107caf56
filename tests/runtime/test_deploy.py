"""End to end through the CLI: `vla run` starts `vla sim-robot` and `vla serve` and drives a tiny pi0."""

import json
import subprocess
import sys

import pytest

from train.conftest import write_preset

pytestmark = [pytest.mark.sim, pytest.mark.slow]


@pytest.fixture(scope="module")
def arm7_ckpt(tmp_path_factory):
    from vla.config import load_preset
    from vla.data.store import EpisodeStore
    from vla.data.synthetic import write_synthetic
    from vla.sim.registry import embodiment_for
    from vla.train.trainer import train

    root = tmp_path_factory.mktemp("arm7")
    emb = embodiment_for("arm7", 32)
    store = EpisodeStore.create(root / "store", [emb])
    write_synthetic(store, emb, episodes=2, length=10, seed=0)
    return train(
        load_preset(write_preset(root / "p.toml")), [str(root / "store")], root / "ck", steps=2, progress=False
    )


def test_vla_run_against_a_sim_robot_process(tmp_path, arm7_ckpt):
    launch = tmp_path / "dep.toml"
    launch.write_text(f"""
name = "e2e"
[policy]
checkpoint = "{arm7_ckpt}"
noise_scale = 0.0
[robot]
env = "vla/Arm7-Reach-v0"
image_size = 32
port = 0
[control]
hz = 50
mode = "rtc"
duration_s = 3
[safety]
max_velocity = 2.0
[record]
out = "{tmp_path / "run"}"
""")
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from vla.cli import main; main()",
            "run",
            str(launch),
            "--json",
            str(tmp_path / "r.json"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "deadline misses" in r.stdout and "histogram" in r.stdout
    s = json.loads((tmp_path / "r.json").read_text())
    assert s["ticks"] > 60 and s["inference"]["requests"] >= 2 and s["inference"]["failed"] == 0
    assert s["noise_scale"] == 0.0  # the launch file's, passed to the child `vla serve` (the checkpoint has 1)
    assert s["recorded"] and s["recorded"][0]["frames"] > 30 and s["recorder_error"] is None
    assert s["recorder_dropped_frames"] >= sum(e.get("dropped_frames", 0) for e in s["recorded"])  # + an open episode
    for key in ("timing_json", "histogram_png", "ticks_csv", "interventions"):
        assert (tmp_path / "run" / s["files"][key].split("/")[-1]).exists()
    from vla.data.store import EpisodeStore

    store = EpisodeStore.open(tmp_path / "run" / "episodes")
    assert store.num_episodes >= 1 and store.embodiments["arm7"].control_hz == 50


def test_a_run_whose_every_request_is_refused_fails_and_says_why(tmp_path, arm7_ckpt):
    """The robot renders 48 px to a policy trained on 32 px: the server refuses every observation.
    This run used to print "policy unavailable" and exit 0."""
    launch = tmp_path / "dep.toml"
    launch.write_text(f"""
name = "mismatch"
[policy]
checkpoint = "{arm7_ckpt}"
[robot]
env = "vla/Arm7-Reach-v0"
image_size = 48
port = 0
[control]
hz = 50
duration_s = 2
[record]
out = "{tmp_path / "run"}"
""")
    r = subprocess.run(
        [sys.executable, "-c", "from vla.cli import main; main()", "run", str(launch)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode != 0, r.stdout[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "inference requests failed" in errors[0], r.stderr[-3000:]
    assert "refused the observation" in errors[0] and "expected image" in errors[0], errors[0]
    assert "Traceback" not in r.stderr
