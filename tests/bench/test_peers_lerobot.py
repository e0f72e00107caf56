"""LeRobot's real ACT through `vla bench peers`' side script and adapter: trained a few steps on one
exported ALOHA demo, then one episode in vla's harness. Needs a LeRobot 0.4 environment
(VLA_PEERS_PYTHON, default /tmp/lerobot-venv/bin/python) and takes about a minute, so it runs only
with VLA_TEST_LEROBOT=1 (CI has no such environment)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from vla.bench.peers.adapter import PeerPolicy
from vla.bench.peers.bench import PEER_CONFIGS
from vla.bench.peers.venv import SIDE_SCRIPT, check_python

PY = Path(os.environ.get("VLA_PEERS_PYTHON", "/tmp/lerobot-venv/bin/python"))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.sim,
    pytest.mark.interop,
    pytest.mark.skipif(not os.environ.get("VLA_TEST_LEROBOT"), reason="set VLA_TEST_LEROBOT=1 to run (about 1 min)"),
    pytest.mark.skipif(not PY.exists(), reason=f"no LeRobot environment at {PY} (set VLA_PEERS_PYTHON)"),
]


def test_lerobot_act_trains_on_exported_demos_and_runs_an_episode_through_the_adapter(tmp_path):
    from vla.data.lerobot_export import export_lerobot
    from vla.sim import collect, evaluate
    from vla.sim.collect import RecipeConfig, RecipeTask
    from vla.sim.suites import SuiteConfig, SuiteTask

    assert check_python(PY)["lerobot"].startswith("0.4")
    collect(RecipeConfig("t", (RecipeTask("aloha", "transfer-cube", 1),), image_size=32), str(tmp_path / "demos"))
    export_lerobot(tmp_path / "demos", tmp_path / "lr", images="image", progress=False)
    config = {**PEER_CONFIGS["act"], "chunk_size": 20, "n_action_steps": 20, "dim_feedforward": 256}
    cmd = [str(PY), str(SIDE_SCRIPT), "train", "--policy", "act", "--dataset", str(tmp_path / "lr"),
           "--out", str(tmp_path / "ck"), "--seconds", "300", "--steps", "2", "--snapshots", "",
           "--config", json.dumps(config), "--threads", "2", "--workers", "0"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((tmp_path / "ck" / "train.json").read_text())
    assert rep["steps"] == 2 and rep["policy"] == "act" and rep["config"]["chunk_size"] == 20
    suite = SuiteConfig("t", (SuiteTask("aloha", "transfer-cube", 1),), image_size=32)
    with PeerPolicy(PY, tmp_path / "ck" / "final", log=tmp_path / "serve.log") as p:
        assert p.metadata["policy"] == "act" and p.metadata["cameras"] == ["top", "wrist_left", "wrist_right"]
        res = evaluate(p, suite, replan_every=1, progress=False)
    task = res["tasks"][0]
    assert task["episodes"] == 1 and task["errors"] == [] and task["mean_length"] == 400  # untrained: runs out of time
