"""`vla bench peers` without LeRobot: the frames, the adapter against a fake peer process (same command
line and protocol as lerobot_side.py), the held-out seed rule, and the whole bench on a tiny suite."""

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from vla.bench.peers.adapter import PeerError, PeerPolicy
from vla.bench.peers.bench import check_held_out, curve_points, run
from vla.bench.peers.wire import WireError, encode, read_msg
from vla.spec import SpecError

FAKE = Path(__file__).with_name("fake_peer.py")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train.conftest import write_preset  # noqa: E402


def test_frames_carry_arrays_exactly_and_refuse_what_is_not_a_frame():
    arrays = {"img": np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3), "x": np.array([1.5, -2.0], np.float32)}
    head, got = read_msg(io.BytesIO(encode({"cmd": "infer", "task": "pick é"}, arrays)))
    assert head == {"cmd": "infer", "task": "pick é"}
    assert set(got) == set(arrays) and all(
        np.array_equal(got[k], v) and got[k].dtype == v.dtype for k, v in arrays.items()
    )
    with pytest.raises(EOFError):
        read_msg(io.BytesIO(encode({"a": 1})[:-2]))
    with pytest.raises(WireError, match="not speaking this protocol"):
        read_msg(io.BytesIO(b"\xff\xff\xff\xff{}"))
    with pytest.raises(WireError, match="malformed"):
        read_msg(io.BytesIO(b"\x00\x00\x00\x02{}"))  # no "_arrays"
    with pytest.raises(WireError, match="dtype"):
        encode({}, {"o": np.array(["a"], object)})


def _ckpt(tmp_path, name="ck", **spec):
    d = tmp_path / name
    d.mkdir()
    (d / "fake.json").write_text(json.dumps({"mean": [0.5, -1.0, 2.0], **spec}))
    return d


def _obs():
    return {"observation/images/top": np.zeros((8, 8, 3), np.uint8), "observation/state": np.ones(4, np.float32),
            "task": "do it", "embodiment": "armA"}  # fmt: skip


def test_adapter_drives_a_peer_process_as_a_policy(tmp_path):
    with PeerPolicy(sys.executable, _ckpt(tmp_path), script=FAKE, log=tmp_path / "serve.log") as p:
        assert p.metadata == {"ready": True, "policy": "fake", "n_action_steps": 1}
        p.reset()
        out = p.infer(_obs())
        assert out["actions"].dtype == np.float32 and out["actions"].tolist() == [[0.5, -1.0, 2.0]]
        proc = p.proc
    assert proc.poll() is not None  # closed with the context


def test_adapter_reports_a_peer_that_errs_exits_hangs_or_babbles(tmp_path):
    with PeerPolicy(sys.executable, _ckpt(tmp_path, "e", error_on_infer=True), script=FAKE) as p:
        with pytest.raises(PeerError, match="asked to fail"):
            p.infer(_obs())
        p.reset()  # still serving after an error
    log = tmp_path / "x.log"
    with PeerPolicy(sys.executable, _ckpt(tmp_path, "x", exit_on_infer=3), script=FAKE, log=log) as p:
        with pytest.raises(PeerError, match="exited with code 3.*exiting as asked"):
            p.infer(_obs())
        with pytest.raises(PeerError, match="has exited"):
            p.reset()
    with PeerPolicy(sys.executable, _ckpt(tmp_path, "h", hang_on_infer=True), script=FAKE, timeout=0.5) as p:
        with pytest.raises(PeerError, match="no answer in time"):
            p.infer(_obs())
    with pytest.raises(PeerError, match="not speaking this protocol"):
        PeerPolicy(sys.executable, _ckpt(tmp_path, "g", garbage=True), script=FAKE)


def test_curve_points_and_held_out_seeds():
    from vla.sim.collect import RecipeConfig, RecipeTask
    from vla.sim.suites import SuiteConfig, SuiteTask

    assert curve_points(60, 15) == [15, 30, 45, 60] and curve_points(3, None) == [3] and curve_points(5, 2) == [2, 4, 5]
    recipe = RecipeConfig("r", (RecipeTask("aloha", "transfer-cube", 50), RecipeTask("aloha", "insertion", 50)))
    suite = SuiteConfig("s", (SuiteTask("aloha", "transfer-cube", 10), SuiteTask("aloha", "insertion", 10)))
    check_held_out(suite, recipe, 1_000_000, 50)
    check_held_out(suite, recipe, 50, 50)  # 50..99 and 100050..: after the demos' 0..49 and 100000..100049
    with pytest.raises(SpecError, match=r"aloha/transfer-cube \(40\.\.89\).*\(0\.\.49\)"):
        check_held_out(suite, recipe, 40, 50)

    class Store:  # a store appended to past the recipe's count: its note says up to which seed
        def notes(self):
            return {"collect_next_seed": {"aloha/insertion": 100_080}}

    with pytest.raises(SpecError, match=r"aloha/insertion .*\(100000\.\.100079\)"):
        check_held_out(suite, recipe, 60, 10, Store())


@pytest.mark.sim
def test_bench_runs_end_to_end_on_a_tiny_suite_and_reuses_what_is_done(tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        'name = "tiny"\nimage_size = 32\nseed = 0\n[[tasks]]\nrobot = "arm7"\ntask = "reach"\nepisodes = 2\n'
    )
    suite = tmp_path / "suite.toml"
    suite.write_text('name = "tiny"\nimage_size = 32\nepisodes = 1\n[[tasks]]\nrobot = "arm7"\ntask = "reach"\n')
    preset = write_preset(tmp_path / "p.toml")
    kw = dict(suite=str(suite), recipe=str(recipe), preset=str(preset), policies=("vla", "act"), minutes=0.5,
              eval_every=0.25, episodes=1, steps=2, workers=1, threads=1, peer_python=sys.executable,
              side_script=FAKE, progress=False)  # fmt: skip
    res = run(tmp_path / "out", **kw)
    out = tmp_path / "out"
    assert (out / "demos-lerobot" / "meta" / "info.json").exists()
    rows = {(r["policy"], r["minutes"]): r for r in res["results"]}
    # vla stops at its 2-step cap before the 15 s point: only its end is evaluated; the fake has both.
    assert set(rows) == {("vla", 0.5), ("act", 0.25), ("act", 0.5)}
    for r in rows.values():
        assert r["suite"] == "tiny" and r["task"] == "reach" and r["episodes"] == 1 and 0 <= r["success_rate"] <= 1
        assert r["errors"] == 0
    assert res["policies"]["act"]["config"] == {"pretrained_backbone_weights": None}
    assert res["policies"]["vla"]["steps"] == 2 and res["policies"]["act"]["steps"] == 2
    assert json.loads((out / "peers.json").read_text())["results"] == res["results"]
    table = (out / "peers.md").read_text()
    assert "| reach |" in table and "LeRobot ACT" in table and "| average |" in table
    assert (out / "peers_curves.png").stat().st_size > 1000
    stamp = (out / "train-act.json").stat().st_mtime_ns, (out / "eval" / "vla-0.5min.json").stat().st_mtime_ns
    again = run(out, **kw)
    assert again["results"] == res["results"]
    assert ((out / "train-act.json").stat().st_mtime_ns, (out / "eval" / "vla-0.5min.json").stat().st_mtime_ns) == stamp


def test_table_shows_how_far_each_policy_got_where_rewards_are_stages():
    from vla.bench.peers.report import markdown

    def row(policy, task, counts):
        n = sum(counts.values())
        return {"policy": policy, "task": task, "minutes": 30.0, "success_rate": counts.get("4", 0) / n,
                "successes": counts.get("4", 0), "episodes": n, "errors": 0, "max_reward_counts": counts}  # fmt: skip

    rows = [row("vla", "transfer-cube", {"0": 13, "2": 29, "4": 8}), row("act", "transfer-cube", {"0": 50})]
    results = {
        "results": rows, "averages": [], "minutes": 30.0, "suite": "aloha", "episodes_per_task": 50, "seed": 1,
        "demos": {"episodes": 40}, "policies": {"vla": {"params": 1.5e6, "steps": 9}, "act": {"params": 5e7, "steps": 7}},
    }  # fmt: skip
    table = markdown(results)
    assert "| transfer-cube | vla | 0: 13, 2: 29, 4: 8 |" in table
    assert "| transfer-cube | LeRobot ACT | 0: 50 |" in table
    for r in rows:  # a suite whose rewards are only success or not (the built-in tasks) has no such table
        r["max_reward_counts"] = {"0": 3, "1": 1}
    assert "stage" not in markdown(results)
