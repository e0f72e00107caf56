"""ENV_STATE (training-only scene facts) through the store, sampler, stats, edits and LeRobot interchange."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from vla.data import EpisodeStore, FrameError
from vla.data.edit import merge_stores, split_store
from vla.data.lerobot_export import export_lerobot
from vla.data.lerobot_import import import_lerobot
from vla.data.sampler import WindowDataset, collate_windows
from vla.data.stats import compute_norm_stats, load_stats, save_stats
from vla.spec import ENV_STATE, ENV_STATE_LAYOUT, STATE, SpecError

from helpers import fill, make_frame


def env_row(ep: int, t: int, d: int = 6) -> np.ndarray:
    return np.array([ep, t, *np.linspace(0.1, 0.5, d - 2)], np.float32)


def write(store, emb, ep: int, length: int, d: int | None = 6) -> None:
    """One episode; frames carry ENV_STATE of dim d (None: none)."""
    with store.writer(emb.name) as w:
        for t in range(length):
            f = make_frame(emb, ep, t)
            if d is not None:
                f[ENV_STATE] = env_row(ep, t, d)
            w.add_frame(f)
        w.end_episode(task=f"task {ep}")


@pytest.fixture
def mixed(tmp_path, emb):
    """Episode 0 without ENV_STATE (written before the array exists), 1 with, 2 without."""
    s = EpisodeStore.create(tmp_path / "mixed", [emb])
    write(s, emb, 0, 4, None)
    write(s, emb, 1, 5)
    write(s, emb, 2, 3, None)
    return EpisodeStore.open(tmp_path / "mixed", mode="a")


def test_store_round_trip_with_nan_backfill(mixed, emb):
    assert mixed.env_state_dim(emb.name) == 6
    eps = [mixed.episode(i, images=False) for i in range(3)]
    assert np.isnan(eps[0][ENV_STATE]).all() and eps[0][ENV_STATE].shape == (4, 6)
    np.testing.assert_array_equal(eps[1][ENV_STATE], np.stack([env_row(1, t) for t in range(5)]))
    assert np.isnan(eps[2][ENV_STATE]).all() and eps[2][ENV_STATE].shape == (3, 6)
    rows = mixed.lowdim(emb.name, ENV_STATE, 0, mixed.num_frames)  # row i is frame i
    assert rows.dtype == np.float32 and rows.shape == (12, 6)
    np.testing.assert_array_equal(rows[4:9, 1], np.arange(5))


def test_store_without_env_state_is_unchanged(tmp_path, emb):
    s = EpisodeStore.create(tmp_path / "s", [emb])
    fill(s, emb, 2, 3)
    assert s.env_state_dim(emb.name) is None and ENV_STATE not in s.episode(0)
    assert f"{emb.name}/{ENV_STATE}" not in s._g


def test_bad_env_state_raises_and_changes_nothing(mixed, emb):
    before = mixed.lowdim(emb.name, ENV_STATE, 0, mixed.num_frames)
    n = mixed.num_episodes
    with pytest.raises(SpecError, match=r"\(5,\).*\(6,\)"):
        write(mixed, emb, 7, 3, d=5)
    with mixed.writer(emb.name) as w:
        f = make_frame(emb, 8, 0)
        w.add_frame({**f, ENV_STATE: env_row(8, 0)})
        with pytest.raises(FrameError, match="every frame must have it or none"):
            w.add_frame(make_frame(emb, 8, 1))
        with pytest.raises(FrameError, match="non-finite"):
            w.add_frame({**f, ENV_STATE: np.full(6, np.nan, np.float32)})
        w.discard_episode()
    s = EpisodeStore.open(mixed.path)
    assert s.num_episodes == n and s.env_state_dim(emb.name) == 6
    np.testing.assert_array_equal(s.lowdim(emb.name, ENV_STATE, 0, s.num_frames), before)


def test_a_failed_first_commit_leaves_no_array(tmp_path, emb, monkeypatch):
    s = EpisodeStore.create(tmp_path / "s", [emb])
    fill(s, emb, 1, 3)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(s, "commit_episode", boom)
    with pytest.raises(OSError):
        write(s, emb, 1, 3)
    monkeypatch.undo()
    s = EpisodeStore.open(s.path)
    assert s.num_episodes == 1 and s.env_state_dim(emb.name) is None


def test_sampler_key_present_nan_and_absent(mixed, tmp_path, emb):
    plain = EpisodeStore.create(tmp_path / "plain", [emb])
    fill(plain, emb, 1, 4)
    assert ENV_STATE not in WindowDataset(plain, horizon=2).lowdim(0)

    ds = WindowDataset([mixed, plain], horizon=2, history=1, images=False)
    assert ds.env_state_dim == 6
    samples = [ds.lowdim(i) for i in range(len(ds))]
    by_ep = {}
    for i, s in enumerate(samples):
        assert s[ENV_STATE].shape == (6,) and s[ENV_STATE].dtype == np.float32  # frame t only, no history
        by_ep.setdefault(int(ds.episode_of(i)), []).append(s[ENV_STATE])
    assert np.isnan(np.stack(by_ep[0])).all() and np.isnan(np.stack(by_ep[3])).all()  # mixed ep 0, plain store
    np.testing.assert_array_equal(np.stack(by_ep[1]), np.stack([env_row(1, t) for t in range(5)]))

    batch = collate_windows(ds.__getitems__([0, 4, 5]))
    assert batch[ENV_STATE].dtype == torch.float32 and batch[ENV_STATE].shape == (3, 6)
    assert torch.isnan(batch[ENV_STATE][0]).all() and torch.equal(batch[ENV_STATE][1], torch.from_numpy(env_row(1, 0)))


def test_sampler_refuses_env_state_dims_that_differ(mixed, tmp_path, emb):
    other = EpisodeStore.create(tmp_path / "other", [emb])
    write(other, emb, 0, 3, d=4)
    with pytest.raises(SpecError, match="dims differ"):
        WindowDataset([mixed, other], horizon=2)


def test_stats_skip_nan_rows_and_round_trip(mixed, tmp_path, emb):
    stats = compute_norm_stats(mixed)
    st = stats[emb.name][ENV_STATE]
    rows = np.stack([env_row(1, t) for t in range(5)])
    assert st.count == 5
    np.testing.assert_allclose(st.mean, rows.mean(0), atol=1e-6)
    np.testing.assert_allclose(st.min, rows.min(0)) and np.testing.assert_allclose(st.max, rows.max(0))
    save_stats(stats, tmp_path / "norm_stats.json")
    back = load_stats(tmp_path / "norm_stats.json")[emb.name][ENV_STATE]
    np.testing.assert_array_equal(back.mean, st.mean) and np.testing.assert_array_equal(back.q99, st.q99)

    plain = EpisodeStore.create(tmp_path / "plain", [emb])
    fill(plain, emb, 1, 4)
    assert ENV_STATE not in compute_norm_stats(plain)[emb.name]


def test_merge_and_split_keep_env_state(mixed, tmp_path, emb):
    plain = EpisodeStore.create(tmp_path / "plain", [emb])
    fill(plain, emb, 1, 4)
    merge_stores([plain, mixed], tmp_path / "merged")
    m = EpisodeStore.open(tmp_path / "merged")
    assert m.num_episodes == 4 and m.env_state_dim(emb.name) == 6
    assert np.isnan(m.episode(0, images=False)[ENV_STATE]).all()  # plain's, back-filled
    np.testing.assert_array_equal(m.episode(2, images=False)[ENV_STATE], mixed.episode(1, images=False)[ENV_STATE])

    split_store(mixed, tmp_path / "train", tmp_path / "val", val_fraction=0.34, seed=0)
    parts = [EpisodeStore.open(tmp_path / p) for p in ("train", "val")]
    got = {e.task: p.episode(e.index, images=False).get(ENV_STATE) for p in parts for e in p.infos()}
    np.testing.assert_array_equal(got["task 1"], mixed.episode(1, images=False)[ENV_STATE])
    for t in ("task 0", "task 2"):
        assert got[t] is None or np.isnan(got[t]).all()


@pytest.mark.interop
def test_lerobot_export_import_keeps_env_state(mixed, tmp_path, emb):
    export_lerobot(mixed.path, tmp_path / "lr", images="image", progress=False)
    info = json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())
    feat = info["features"]["observation.environment_state"]
    assert feat == {"dtype": "float32", "shape": [6], "names": list(ENV_STATE_LAYOUT)}
    stats = json.loads((tmp_path / "lr" / "meta" / "stats.json").read_text())["observation.environment_state"]
    assert stats["count"] == [5] and np.allclose(stats["mean"], np.stack([env_row(1, t) for t in range(5)]).mean(0))

    import_lerobot(tmp_path / "lr", tmp_path / "back", progress=False)
    back = EpisodeStore.open(tmp_path / "back")
    name = next(iter(back.embodiments))
    assert back.env_state_dim(name) == 6
    for i in range(3):
        a, b = mixed.episode(i, images=False), back.episode(i, images=False)
        np.testing.assert_array_equal(b[ENV_STATE], a[ENV_STATE])  # NaN rows stay NaN
        np.testing.assert_array_equal(b[STATE], a[STATE])


@pytest.mark.interop
def test_lerobot_export_can_leave_the_scene_facts_out(mixed, tmp_path):
    # `vla bench peers` exports so: LeRobot's ACT and Diffusion Policy would take
    # observation.environment_state as an input, which the evaluation never gives them.
    export_lerobot(mixed.path, tmp_path / "lr", images="image", env_state=False, progress=False)
    info = json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())
    stats = json.loads((tmp_path / "lr" / "meta" / "stats.json").read_text())
    assert "observation.environment_state" not in info["features"] and "observation.environment_state" not in stats
    assert "observation.state" in info["features"]
    table = pq.read_table(next((tmp_path / "lr" / "data").rglob("*.parquet")))
    assert "observation.environment_state" not in table.column_names and table.num_rows == info["total_frames"]
