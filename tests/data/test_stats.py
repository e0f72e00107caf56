import json

import numpy as np
import pytest

from vla.data import EpisodeStore
from vla.data.stats import compute_norm_stats, load_stats, save_stats
from vla.spec import ACTION, STATE, SpecError

from helpers import tiny_embodiment


def test_streaming_stats_match_numpy(tmp_path):
    emb = tiny_embodiment(cams=())
    store = EpisodeStore.create(tmp_path / "s", [emb])
    rng = np.random.default_rng(0)
    all_s, all_a = [], []
    with store.writer() as w:
        for _ in range(7):
            n = int(rng.integers(20, 200))
            s = rng.normal([1, -2, 3], [0.5, 2, 0.1], (n, 3)).astype(np.float32)
            a = rng.uniform(-1, 4, (n, 2)).astype(np.float32)
            for t in range(n):
                w.add_frame({STATE: s[t], ACTION: a[t]})
            w.end_episode(task="x")
            all_s.append(s)
            all_a.append(a)
    stats = compute_norm_stats(store)["tiny"]
    for key, x in ((STATE, np.concatenate(all_s)), (ACTION, np.concatenate(all_a))):
        st = stats[key]
        assert st.count == len(x)
        np.testing.assert_allclose(st.mean, x.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(st.std, x.std(0), rtol=1e-4)
        np.testing.assert_array_equal(st.min, x.min(0))
        np.testing.assert_array_equal(st.max, x.max(0))
        # Quantiles: the fraction of samples below q must be q, up to one sample and one histogram bin.
        width = (x.max(0) - x.min(0)) / 5000
        for q, got in ((0.01, st.q01), (0.99, st.q99)):
            below = (x < got - width).mean(0)
            below_or_at = (x <= got + width).mean(0)
            assert (below <= q + 1 / len(x)).all() and (below_or_at >= q - 1 / len(x)).all(), (q, below, below_or_at)
    # Normalize / unnormalize are inverses in both modes; quantile maps [q01, q99] to [-1, 1].
    x = np.concatenate(all_a)
    for mode in ("zscore", "quantile"):
        np.testing.assert_allclose(stats[ACTION].unnormalize(stats[ACTION].normalize(x, mode), mode), x, atol=1e-4)
    np.testing.assert_allclose(stats[ACTION].normalize(stats[ACTION].q01, "quantile"), -1, atol=1e-4)
    save_stats(compute_norm_stats(store), tmp_path / "stats.json")
    back = load_stats(tmp_path / "stats.json")
    np.testing.assert_allclose(back["tiny"][STATE].q99, stats[STATE].q99, rtol=1e-6)
    saved = json.loads((tmp_path / "stats.json").read_text())["tiny"][STATE]
    assert set(saved) == {"count", "mean", "std", "min", "max", "q01", "q99"}


def test_constant_dim_and_errors(tmp_path):
    emb = tiny_embodiment(cams=())
    store = EpisodeStore.create(tmp_path / "s", [emb])
    with store.writer() as w:
        for t in range(10):
            w.add_frame({STATE: np.array([1.0, t, 2.0]), ACTION: np.array([0.5, 0.5])})
        w.end_episode(task="x")
    st = compute_norm_stats(store)["tiny"][ACTION]
    np.testing.assert_array_equal(st.q01, [0.5, 0.5])
    np.testing.assert_array_equal(st.std, [0, 0])
    with pytest.raises(SpecError, match="mode must be one of"):
        st.normalize(np.zeros(2), "minmax")
    with pytest.raises(SpecError, match="not found"):
        load_stats(tmp_path / "missing.json")
