import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from vla.data import EpisodeStore, FrameError, StoreError
from vla.data.edit import merge_stores
from vla.data.lerobot_export import VLA_INFO_KEY, VLA_SUCCESS, export_lerobot
from vla.data.lerobot_import import LeRobotFormatError, import_lerobot
from vla.data.synthetic import write_synthetic
from vla.resources import load_embodiment
from vla.spec import ACTION, STATE, TIMESTAMP, SpecError, image_key

from helpers import FIXTURES, make_frame

pytestmark = pytest.mark.interop

# name -> (episodes, frames each, cameras in feature order, exact pixels?, tasks)
FIXTURE_SETS = {
    "so100_video": (3, 24, ["front", "wrist"], False, ["pick the red cube", "push the blue block left"] * 2),
    "so100_video_v21": (3, 24, ["front", "wrist"], False, ["pick the red cube", "push the blue block left"] * 2),
    "aloha_image": (2, 16, ["top"], True, ["transfer the cube"] * 2),
    "aloha_image_v21": (2, 16, ["top"], True, ["transfer the cube"] * 2),
}


@pytest.mark.parametrize("name", sorted(FIXTURE_SETS))
def test_import_fixture_every_frame(tmp_path, name):
    n_eps, n_frames, cams, exact, tasks = FIXTURE_SETS[name]
    src = FIXTURES / "lerobot" / name
    info = json.loads((src / "meta" / "info.json").read_text())
    r = import_lerobot(src, tmp_path / "store", progress=False)
    assert r["episodes"] == n_eps and r["frames"] == n_eps * n_frames
    s = EpisodeStore.open(tmp_path / "store")
    emb = s.embodiments[info["robot_type"]]
    assert emb.camera_names == tuple(cams) and emb.control_hz == info["fps"]
    for e in range(n_eps):
        ep = s.episode(e)
        assert ep["task"] == tasks[e] and ep["success"] is None
        st = ep[STATE]
        k = np.arange(st.shape[1] - 2)
        t = np.arange(n_frames)
        np.testing.assert_array_equal(st[:, 0], e)
        np.testing.assert_array_equal(st[:, 1], t)
        np.testing.assert_allclose(st[:, 2:], np.sin(k[None] + t[:, None] / 7.0), atol=1e-6)
        np.testing.assert_allclose(ep[ACTION], st + 0.5, atol=1e-6)
        np.testing.assert_allclose(ep[TIMESTAMP], t / info["fps"], atol=1e-6)
        for c, cam in enumerate(cams):
            img = ep[image_key(cam)].astype(int)
            expected = np.stack([np.broadcast_to([(10 * e + 3 * f) % 256, 80 * c, 128], img.shape[1:]) for f in t])
            err = np.abs(img - expected).max()
            assert err == 0 if exact else err <= 8, (cam, e, err)


def test_export_then_import_roundtrip(tmp_path):
    emb = load_embodiment("toy2d")
    store = EpisodeStore.create(tmp_path / "s", [emb])
    write_synthetic(store, emb, episodes=3, length=12, seed=1)
    export_lerobot(store.path, tmp_path / "lr", progress=False)
    import_lerobot(tmp_path / "lr", tmp_path / "back", progress=False)
    a, b = EpisodeStore.open(tmp_path / "s"), EpisodeStore.open(tmp_path / "back")
    assert b.num_episodes == 3 and b.embodiments["toy2d"].camera_names == ("front", "wrist")
    for i in range(3):
        ea, eb = a.episode(i), b.episode(i)
        assert ea["task"] == eb["task"]
        np.testing.assert_array_equal(ea[STATE], eb[STATE])
        np.testing.assert_array_equal(ea[ACTION], eb[ACTION])
        for cam in ("front", "wrist"):  # AV1 is lossy: sharp edges ring, flat areas stay close
            diff = np.abs(ea[image_key(cam)].astype(int) - eb[image_key(cam)])
            assert diff.mean() < 3.0, diff.mean()


def test_export_png_images_roundtrip_is_exact(tmp_path):
    emb = load_embodiment("toy2d")
    store = EpisodeStore.create(tmp_path / "s", [emb])
    write_synthetic(store, emb, episodes=2, length=5, seed=2)
    export_lerobot(store.path, tmp_path / "lr", images="image", progress=False)
    import_lerobot(tmp_path / "lr", tmp_path / "back", progress=False)
    a, b = EpisodeStore.open(tmp_path / "s"), EpisodeStore.open(tmp_path / "back")
    for i in range(2):
        np.testing.assert_array_equal(a.episode(i)[image_key("front")], b.episode(i)[image_key("front")])


def _schema(path):
    return {f.name: str(f.type) for f in pq.read_schema(path)}


def test_export_layout_matches_lerobot_written_fixture(tmp_path):
    """Our v3.0 export has the files, fields, columns and column types LeRobot's own writer produces."""
    ref = FIXTURES / "lerobot" / "so100_video"
    import_lerobot(ref, tmp_path / "s", progress=False)
    export_lerobot(tmp_path / "s", tmp_path / "lr", progress=False)
    ours = tmp_path / "lr"
    ref_files = sorted(p.relative_to(ref).as_posix() for p in ref.rglob("*") if p.is_file())
    our_files = sorted(p.relative_to(ours).as_posix() for p in ours.rglob("*") if p.is_file())
    assert our_files == ref_files
    ri, oi = (json.loads((d / "meta" / "info.json").read_text()) for d in (ref, ours))
    assert set(oi) == set(ri) | {VLA_INFO_KEY}  # plus our spec, in a key LeRobot ignores
    for k in (
        "codebase_version",
        "fps",
        "total_episodes",
        "total_frames",
        "total_tasks",
        "data_path",
        "video_path",
        "robot_type",
    ):
        assert oi[k] == ri[k], k
    assert oi["features"].keys() == ri["features"].keys()
    for k, f in ri["features"].items():
        assert oi["features"][k]["dtype"] == f["dtype"] and oi["features"][k]["shape"] == f["shape"], k
        assert oi["features"][k].get("info", {}).keys() == f.get("info", {}).keys(), k
    for rel in ("data/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-000.parquet", "meta/tasks.parquet"):
        theirs = _schema(ref / rel)
        if rel.startswith("meta/episodes"):  # plus our success flags, in a column LeRobot ignores
            theirs[VLA_SUCCESS] = "bool"
        assert _schema(ours / rel) == theirs, rel
    ref_ep = pq.read_table(ref / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    our_ep = pq.read_table(ours / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    for r, o in zip(ref_ep, our_ep):
        for k in (
            "episode_index",
            "tasks",
            "length",
            "dataset_from_index",
            "dataset_to_index",
            "videos/observation.images.front/from_timestamp",
            "videos/observation.images.front/to_timestamp",
        ):
            assert o[k] == pytest.approx(r[k]), k
        np.testing.assert_allclose(o["stats/observation.state/mean"], r["stats/observation.state/mean"], atol=1e-5)
    rs, os_ = (json.loads((d / "meta" / "stats.json").read_text()) for d in (ref, ours))
    assert rs.keys() == os_.keys()
    np.testing.assert_allclose(os_["action"]["mean"], rs["action"]["mean"], atol=1e-5)
    np.testing.assert_allclose(os_["action"]["std"], rs["action"]["std"], atol=1e-4)
    # LeRobot reads tasks.parquet with pandas: the task strings must come back as the index.
    for d in (ref, ours):
        pandas_meta = json.loads(pq.read_metadata(d / "meta/tasks.parquet").metadata[b"pandas"])
        assert pandas_meta["index_columns"] == ["__index_level_0__"]
    assert (
        pq.read_table(ours / "meta/tasks.parquet").column("__index_level_0__").to_pylist()
        == pq.read_table(ref / "meta/tasks.parquet").column("__index_level_0__").to_pylist()
    )


def test_import_bad_input(tmp_path):
    with pytest.raises(LeRobotFormatError, match="missing .*info.json"):
        import_lerobot(tmp_path, tmp_path / "x", progress=False)
    bad = tmp_path / "bad"
    shutil.copytree(FIXTURES / "lerobot" / "aloha_image", bad)
    info = json.loads((bad / "meta" / "info.json").read_text())
    (bad / "meta" / "info.json").write_text(json.dumps({**info, "codebase_version": "v1.6"}))
    with pytest.raises(LeRobotFormatError, match="codebase_version 'v1.6' is not supported"):
        import_lerobot(bad, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
    (bad / "meta" / "info.json").write_text("{oops")
    with pytest.raises(LeRobotFormatError, match="invalid JSON"):
        import_lerobot(bad, tmp_path / "x", progress=False)
    # NaN in the data: clear error naming episode and key, and no store left behind.
    shutil.rmtree(bad)
    shutil.copytree(FIXTURES / "lerobot" / "aloha_image_v21", bad)
    f = bad / "data" / "chunk-000" / "episode_000001.parquet"
    t = pq.read_table(f).to_pydict()
    t["action"][3][2] = float("nan")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pydict(t, schema=pq.read_schema(f)), f)
    with pytest.raises(FrameError, match="episode 1.*frame 3, key 'action': non-finite"):
        import_lerobot(bad, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.importing").exists()
    # Destination exists: refused, untouched.
    (tmp_path / "taken").mkdir()
    with pytest.raises(StoreError, match="already exists"):
        import_lerobot(FIXTURES / "lerobot" / "aloha_image", tmp_path / "taken", progress=False)


def test_import_embodiment_option(tmp_path):
    src = FIXTURES / "lerobot" / "aloha_image"
    import_lerobot(src, tmp_path / "a", embodiment="my_aloha", progress=False)
    assert list(EpisodeStore.open(tmp_path / "a").embodiments) == ["my_aloha"]
    with pytest.raises(SpecError, match="does not match the dataset: state dim 8 vs dataset 14"):
        import_lerobot(src, tmp_path / "b", embodiment="toy2d", progress=False)


# ---- interchange keeps meaning: the spec and success flags survive a round trip ----
def _arm7_store(path, successes=(True, False, None)):
    emb = load_embodiment("arm7")
    store = EpisodeStore.create(path, [emb])
    with store.writer() as w:
        for e, ok in enumerate(successes):
            for t in range(6):
                w.add_frame(make_frame(emb, e, t))
            w.end_episode(task=f"task {e}", success=ok)
    return store


def test_roundtrip_restores_spec_and_success_and_merges(tmp_path):
    src = _arm7_store(tmp_path / "s")
    export_lerobot(src.path, tmp_path / "lr", embodiment="arm7", progress=False)
    info = json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())
    assert info[VLA_INFO_KEY]["embodiment"]["gripper"].startswith("last dim")
    r = import_lerobot(tmp_path / "lr", tmp_path / "back", progress=False)
    back = EpisodeStore.open(tmp_path / "back")
    assert r["restored_spec"]
    assert back.embodiments["arm7"].to_dict() == src.embodiments["arm7"].to_dict()  # units, limits, gripper, text
    assert [i.success for i in back.infos()] == [True, False, None]
    merge_stores([src.path, back.path], tmp_path / "m")
    m = EpisodeStore.open(tmp_path / "m")
    assert m.num_episodes == 6 and [i.success for i in m.infos()] == [True, False, None] * 2
    # Renaming on import still works on the restored spec.
    import_lerobot(tmp_path / "lr", tmp_path / "renamed", embodiment="arm7_b", progress=False)
    renamed = EpisodeStore.open(tmp_path / "renamed").embodiments["arm7_b"]
    assert renamed.state == src.embodiments["arm7"].state


def test_all_unknown_success_stays_a_bool_column(tmp_path):
    src = _arm7_store(tmp_path / "s", successes=(None, None))
    export_lerobot(src.path, tmp_path / "lr", progress=False)
    col = pq.read_table(tmp_path / "lr/meta/episodes/chunk-000/file-000.parquet").column(VLA_SUCCESS)
    assert str(col.type) == "bool" and col.to_pylist() == [None, None]
    import_lerobot(tmp_path / "lr", tmp_path / "back", progress=False)
    assert [i.success for i in EpisodeStore.open(tmp_path / "back").infos()] == [None, None]


def test_a_stale_spec_falls_back_to_the_features(tmp_path, caplog):
    """A dataset edited elsewhere so the spec no longer fits: warn and derive from the features."""
    export_lerobot(_arm7_store(tmp_path / "s").path, tmp_path / "lr", progress=False)
    p = tmp_path / "lr" / "meta" / "info.json"
    info = json.loads(p.read_text())
    info["features"]["action"]["names"][0] = "shoulder"
    p.write_text(json.dumps(info))
    r = import_lerobot(tmp_path / "lr", tmp_path / "back", progress=False)
    assert not r["restored_spec"] and "no longer matches the dataset" in caplog.text
    emb = EpisodeStore.open(tmp_path / "back").embodiments["arm7"]
    assert emb.actions[0].name == "shoulder" and emb.actions[1].unit == ""


def test_merge_with_a_spec_less_import_names_the_fields_and_the_fix(tmp_path):
    src = _arm7_store(tmp_path / "s")
    export_lerobot(src.path, tmp_path / "lr", progress=False)
    p = tmp_path / "lr" / "meta" / "info.json"
    info = json.loads(p.read_text())
    del info[VLA_INFO_KEY]  # as written by an older vla, or by LeRobot itself
    p.write_text(json.dumps(info))
    import_lerobot(tmp_path / "lr", tmp_path / "bare", progress=False)
    with pytest.raises(StoreError) as e:
        merge_stores([src.path, tmp_path / "bare"], tmp_path / "m")
    msg = str(e.value)
    assert "embodiment 'arm7' differs" in msg and "\n" not in msg
    assert "gripper: 'last dim: 0=open" in msg and "vs ''" in msg
    assert "state unit of 8/8 dims: joint1 'rad' vs ''" in msg and "actions high of 8/8 dims" in msg
    assert "--embodiment arm7" in msg
    # ... and the fix it names works.
    import_lerobot(tmp_path / "lr", tmp_path / "fixed", embodiment="arm7", progress=False)
    merge_stores([src.path, tmp_path / "fixed"], tmp_path / "m")
