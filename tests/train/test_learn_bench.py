"""`vla bench learn`'s pieces that need no simulation: snapshots, per-task pools, targets, curves."""

import numpy as np

from vla.bench.learn import TARGETS, judge_targets, plot_curves, task_pools
from vla.config import load_preset
from vla.data import EpisodeStore
from vla.model.interop.checkpoint import Checkpoint
from vla.train.trainer import snapshot_path, train

from helpers import make_frame, tiny_embodiment
from train.conftest import write_preset


def test_snapshots_keep_the_checkpoint_of_each_curve_point(tmp_path, two_stores):
    preset = load_preset(write_preset(tmp_path / "p.toml"))
    ck = train(preset, two_stores, tmp_path / "ck", progress=False, snapshot_seconds=(0.0, 3600.0))
    early = snapshot_path(ck, 0.0)
    assert early.name == "ck@0s" and Checkpoint(early).config["step"] == 0
    assert Checkpoint(ck).config["step"] == 6
    assert not snapshot_path(ck, 3600.0).exists()  # the run ended before that point


def testtask_pools_group_instructions_by_source(tmp_path):
    emb = tiny_embodiment("armA", s=3, a=2)
    st = EpisodeStore.create(tmp_path / "s", [emb])
    for ep, (source, task) in enumerate(
        [
            ("sim:expert:armA/reach", "touch red"),
            ("sim:expert:armA/reach", "touch blue"),
            ("sim:expert:armA/push", "push red"),
            ("sim:expert:armA/reach", "touch red"),
        ]
    ):
        with st.writer("armA", source=source) as w:
            for t in range(3):
                w.add_frame(make_frame(emb, ep, t))
            w.end_episode(task=task)
    assert task_pools(str(tmp_path / "s")) == {"armA/reach": ["touch blue", "touch red"], "armA/push": ["push red"]}


def _point(success: dict, lang: dict | None = None) -> dict:
    return {"success": success, "average": float(np.mean(list(success.values()))), "language_check": lang or {}}


def test_targets_are_judged_at_their_minutes_and_need_the_language_check():
    tasks = [t for t, *_ in TARGETS if t != "average"]
    good = {t: 0.95 for t in tasks}
    curve = {
        15.0: _point({t: 0.0 for t in tasks}),
        30.0: _point(good, {"arm7/reach": {"passed": True}, "arm5/reach": {"passed": False}}),
    }
    rows = {r["target"]: r for r in judge_targets(curve)}
    assert rows["arm7/reach"]["met"] is True and rows["arm7/reach"]["measured_at"] == 30.0
    assert rows["arm5/reach"]["met"] is False  # success high, but the instruction is not used
    assert rows["arm7/pick-place"]["met"] is True
    # The 60-minute targets are judged on the latest point at or below 60 minutes.
    assert rows["average"]["measured_at"] == 30.0 and rows["average"]["met"] is True
    low = {15.0: _point({t: 0.1 for t in tasks})}
    rows = {r["target"]: r for r in judge_targets(low)}
    assert rows["arm7/push"]["met"] is False and rows["average"]["met"] is False
    assert all(r["met"] is None for r in judge_targets({60.5: _point(good)}) if r["minutes"] < 60)


def test_curves_png(tmp_path):
    curve = {15.0: _point({"arm7/reach": 0.2, "arm5/reach": 0.1}), 30.0: _point({"arm7/reach": 0.6, "arm5/reach": 0.4})}
    plot_curves({"pi0-tiny": curve}, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "c.png").stat().st_size > 5000


def test_a_new_model_gets_as_many_camera_slots_as_the_data_needs(tmp_path, two_stores):
    from vla.data.synthetic import write_synthetic

    emb = tiny_embodiment("tri", s=4, a=3, cams=(("front", 16, 16), ("left", 16, 16), ("right", 16, 16)))
    store = EpisodeStore.create(tmp_path / "tri", [emb])
    write_synthetic(store, emb, episodes=2, length=12, seed=3)
    preset = load_preset(write_preset(tmp_path / "p.toml"))  # 2 camera slots
    assert preset.model["cameras"] == 2
    ck = train(preset, [*two_stores, str(tmp_path / "tri")], tmp_path / "ck", steps=2, progress=False)
    assert Checkpoint(ck).config["policy"]["config"]["cameras"] == 3


def test_grounding_error_per_task_on_recorded_scene_facts(tmp_path, two_stores):
    import pytest

    from vla.bench.learn import grounding_error
    from vla.sim.collect import RecipeConfig, RecipeTask, collect
    from vla.spec import SpecError

    recipe = RecipeConfig("g", (RecipeTask("arm7", "reach", 2), RecipeTask("arm7", "pick-place", 1)), image_size=32)
    collect(recipe, tmp_path / "demos", progress=False)
    text = write_preset(tmp_path / "p.toml").read_text()
    (tmp_path / "g.toml").write_text(text.replace("[model]\n", "[model]\ngrounding_tokens = 2\nenv_state_loss = 1.0\n"))
    ck = train(load_preset(tmp_path / "g.toml"), [str(tmp_path / "demos")], tmp_path / "ck", steps=2, progress=False)
    got = grounding_error(ck, tmp_path / "demos", windows=8)
    assert set(got) == {"arm7/reach", "arm7/pick-place"}
    for row in got.values():
        assert row["windows"] == 8 and all(np.isfinite(row[k]) and row[k] >= 0 for k in ("object_cm", "goal_cm"))
    plain = train(load_preset(write_preset(tmp_path / "q.toml")), [str(tmp_path / "demos")], tmp_path / "plain",
                  steps=1, progress=False)  # fmt: skip
    with pytest.raises(SpecError, match="no env-state head"):
        grounding_error(plain, tmp_path / "demos")
