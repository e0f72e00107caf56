"""vla data keep / delete / merge / split: new stores, atomic, sources locked."""

import logging
import time
from dataclasses import replace

import numpy as np
import pytest

from vla.data import EpisodeStore, StoreError
from vla.data import edit as edit_mod
from vla.data.edit import (
    EpisodeFilter,
    delete_episodes,
    keep_episodes,
    merge_stores,
    parse_indices,
    spec_differences,
    split_store,
)
from vla.data.stats import load_stats
from vla.data.writer import WriterLock
from vla.spec import STATE, SpecError, image_key

from helpers import fill, make_frame, tiny_embodiment


@pytest.fixture
def src(tmp_path, emb):
    s = EpisodeStore.create(tmp_path / "src", [emb], codecs="jpeg:90")
    fill(s, emb, 6, lambda e: 3 + e)  # tasks "do 0/1/2", success on even episodes
    return s


def ids(store):
    return [int(store.episode(i)[STATE][0, 0]) for i in range(store.num_episodes)]


def test_parse_indices():
    assert parse_indices("0,3,5-7") == (0, 3, 5, 6, 7)
    with pytest.raises(SpecError, match="'x' is not N or N-M"):
        parse_indices("1,x")
    with pytest.raises(SpecError, match="runs backwards"):
        parse_indices("5-2")


def test_keep_and_delete_by_index_task_and_success(tmp_path, src, emb):
    r = keep_episodes(src.path, tmp_path / "k", EpisodeFilter(tasks=("do 1", "do 2")))
    k = EpisodeStore.open(tmp_path / "k")
    assert ids(k) == [1, 2, 4, 5] and r["frames"] == 4 + 5 + 7 + 8
    assert k.info(0).source == "test" and k.codec(emb.name, "front") == src.codec(emb.name, "front")
    # Frames are copied as encoded: byte for byte.
    assert k.frames(emb.name, "front").blobs(range(4)) == src.frames(emb.name, "front").blobs(range(3, 7))
    delete_episodes(src.path, tmp_path / "d", EpisodeFilter(episodes=(0, 1, 2), success=("yes",)))
    assert ids(EpisodeStore.open(tmp_path / "d")) == [1, 3, 4, 5]
    with pytest.raises(SpecError, match="out of range"):
        keep_episodes(src.path, tmp_path / "x", EpisodeFilter(episodes=(9,)))
    with pytest.raises(SpecError, match="say which episodes"):
        delete_episodes(src.path, tmp_path / "x", EpisodeFilter())
    with pytest.raises(SpecError, match="would leave none"):
        delete_episodes(src.path, tmp_path / "x", EpisodeFilter(tasks=("do 0", "do 1", "do 2")))
    with pytest.raises(StoreError, match="already exists"):
        keep_episodes(src.path, tmp_path / "k", EpisodeFilter(episodes=(0,)))
    assert not (tmp_path / "x").exists()


def test_merge_same_spec_and_refuse_a_different_one(tmp_path, src, emb):
    other = EpisodeStore.create(tmp_path / "o", [emb])  # lossless: the merged store keeps src's jpeg
    fill(other, emb, 2, 4, start_ep=20)
    b = tiny_embodiment("b", s=5, a=1, cams=())
    fill(EpisodeStore.create(tmp_path / "b", [b]), b, 1, 3, start_ep=30)
    merge_stores([src.path, other.path, tmp_path / "b"], tmp_path / "m")
    m = EpisodeStore.open(tmp_path / "m")
    assert ids(m) == [0, 1, 2, 3, 4, 5, 20, 21, 30] and sorted(m.embodiments) == ["b", "tiny"]
    img = m.episode(7)[image_key("front")]  # re-encoded as jpeg:90 from the lossless source
    assert np.abs(img.astype(int) - make_frame(emb, 21, 0)[image_key("front")].astype(int)).mean() < 3
    clash = tiny_embodiment(s=4)
    fill(EpisodeStore.create(tmp_path / "c", [clash]), clash, 1, 3)
    with pytest.raises(StoreError, match=r"c: cannot merge: embodiment 'tiny' differs from the one in .*src"):
        merge_stores([src.path, tmp_path / "c"], tmp_path / "m2")
    assert not (tmp_path / "m2").exists() and not (tmp_path / "m2.editing").exists()


def test_merge_refusal_names_each_differing_field_expected_vs_got(tmp_path, src, emb):
    other = replace(
        emb,
        state=(replace(emb.state[0], unit="deg"), *emb.state[1:]),
        actions=tuple(replace(d, high=1.0) for d in emb.actions),
        control_hz=30.0,
        gripper="last dim: 1=open",
        cameras=(replace(emb.cameras[0], width=12),),
    )
    fill(EpisodeStore.create(tmp_path / "o", [other]), other, 1, 3)
    with pytest.raises(StoreError) as e:
        merge_stores([src.path, tmp_path / "o"], tmp_path / "m")
    msg = str(e.value)
    for part in (
        "control_hz: 10.0 vs 30.0",
        "gripper: '' vs 'last dim: 1=open'",
        "state unit of 1/3 dims: s0 'rad' vs 'deg'",
        "actions high of 2/2 dims: a0 5.0 vs 1.0, a1 5.0 vs 1.0",
        "cameras: [('front', '8x10')] vs [('front', '8x12')]",
        "Fix: ",
        "--embodiment tiny",
    ):
        assert part in msg, (part, msg)
    assert "state names" not in msg and "action_mode" not in msg
    assert spec_differences(emb, emb) == []


def test_split_by_episode_and_stats_follow(tmp_path, src, emb):
    from vla.data.stats import compute_norm_stats, save_stats

    save_stats(compute_norm_stats(src), tmp_path / "src" / "norm_stats.json")
    r = split_store(src.path, tmp_path / "train", tmp_path / "val", val_fraction=0.34, seed=1)
    tr, va = EpisodeStore.open(tmp_path / "train"), EpisodeStore.open(tmp_path / "val")
    assert va.num_episodes == 2 and tr.num_episodes == 4
    assert sorted(ids(tr) + ids(va)) == list(range(6)) and ids(va) == r["val"]["episodes_from_source"]
    st = load_stats(tmp_path / "val" / "norm_stats.json")  # recomputed from the val episodes only
    assert st[emb.name][STATE].count == sum(3 + e for e in ids(va))


def test_a_crash_mid_edit_leaves_no_destination(tmp_path, src, monkeypatch):
    calls = []

    def boom(s, i, w):
        calls.append(i)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(s, i, w)

    real = edit_mod._copy_one
    monkeypatch.setattr(edit_mod, "_copy_one", boom)
    with pytest.raises(KeyboardInterrupt):
        keep_episodes(src.path, tmp_path / "k", EpisodeFilter(episodes=(0, 1, 2, 3)))
    assert not (tmp_path / "k").exists() and not (tmp_path / "k.editing").exists()
    assert EpisodeStore.open(src.path).num_episodes == 6
    with WriterLock(src.path):  # the edit let go of the source's lock
        pass


def test_a_store_being_written_is_not_edited(tmp_path, src, emb):
    with src.writer() as w:
        w.add_frame(make_frame(emb, 9, 0))
        with pytest.raises(StoreError, match="another writer"):
            keep_episodes(src.path, tmp_path / "k", EpisodeFilter(episodes=(0,)))
    assert not (tmp_path / "k").exists()


def test_recorder_counts_and_logs_dropped_frames(tmp_path, emb, caplog, monkeypatch):
    from vla.data.writer import EpisodeWriter
    from vla.runtime.recorder import EpisodeRecorder

    slow = EpisodeWriter.add_frame

    def add_frame(self, frame):
        time.sleep(0.05)  # a writer that falls behind
        slow(self, frame)

    monkeypatch.setattr(EpisodeWriter, "add_frame", add_frame)
    rec = EpisodeRecorder(tmp_path / "rec", emb, 10.0, max_queue=3)
    with caplog.at_level(logging.WARNING, logger="vla.runtime.recorder"):
        for k in range(20):
            f = make_frame(emb, 0, k)
            rec.add({STATE: f[STATE], image_key("front"): f[image_key("front")]}, f["action"], k / 10)
        rec.end_episode("drop test", None)
        episodes = rec.close()
    assert rec.dropped > 0 and rec.error is None
    assert episodes[0]["dropped_frames"] == rec.dropped and episodes[0]["frames"] == 20 - rec.dropped
    assert "dropped" in caplog.text
    s = EpisodeStore.open(tmp_path / "rec")
    assert s.num_episodes == 1 and s.info(0).length == 20 - rec.dropped
    assert s.codec(emb.name, "front").name == "lossless"  # 8x10 frames: too small for jpeg
