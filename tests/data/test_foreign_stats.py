"""Reading LeRobot processor files and openpi norm_stats.json into KeyStats (files written here)."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from vla.data.foreign_stats import find_foreign_stats, read_lerobot_stats, read_openpi_stats
from vla.data.stats import STAT_NAMES, KeyStats
from vla.spec import ACTION, STATE, SpecError

RNG = np.random.default_rng(0)


def _stats(dim, names=("mean", "std", "min", "max", "q01", "q99")):
    lo = RNG.uniform(-3, -1, dim).astype(np.float32)
    hi = RNG.uniform(1, 3, dim).astype(np.float32)
    full = {"min": lo, "max": hi, "q01": lo * 0.9, "q99": hi * 0.9, "mean": (lo + hi) / 2 + 0.1, "std": (hi - lo) / 5}
    return {k: full[k] for k in names}


def _write_lerobot(d, tensors, *, index=2, extra_steps=None, state_file=True):
    """A policy_preprocessor.json as LeRobot's DataProcessorPipeline.save_pretrained writes it."""
    d.mkdir(parents=True, exist_ok=True)
    steps = [
        {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
        {"registry_name": "to_batch_processor", "config": {}},
        {"registry_name": "tokenizer_processor", "config": {"max_length": 48}},
        {"registry_name": "device_processor", "config": {"device": "cpu"}},
    ][:index]
    name = f"policy_preprocessor_step_{index}_normalizer_processor.safetensors"
    norm = {
        "registry_name": "normalizer_processor",
        "config": {"eps": 1e-8, "features": {}, "norm_map": {"STATE": "MEAN_STD", "ACTION": "MEAN_STD"}},
    }
    if state_file:
        norm["state_file"] = name
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(d / name))
    steps.append(norm)
    steps += extra_steps or [{"registry_name": "device_processor", "config": {"device": "cpu"}}]
    (d / "policy_preprocessor.json").write_text(json.dumps({"name": "policy_preprocessor", "steps": steps}))
    return d


def _flat(feature, stats):
    return {f"{feature}.{k}": v for k, v in stats.items()}


def _write_openpi(path, entries):
    path.parent.mkdir(parents=True, exist_ok=True)
    as_json = {
        name: {k: (None if v is None else np.asarray(v).tolist()) for k, v in s.items()} for name, s in entries.items()
    }
    path.write_text(json.dumps({"norm_stats": as_json}, indent=2))
    return path


def _check(ks: KeyStats, want: dict, dim: int):
    for name in STAT_NAMES:
        arr = getattr(ks, name)
        assert arr.dtype == np.float32 and arr.shape == (dim,), (name, arr.dtype, arr.shape)
        if name in want:
            np.testing.assert_array_equal(arr, want[name])


# --- LeRobot -----------------------------------------------------------------------------------


def test_lerobot_normalizer_not_first_with_image_key(tmp_path):
    s, a = _stats(8), _stats(7)
    img = {"mean": np.zeros((3, 1, 1), np.float32), "std": np.ones((3, 1, 1), np.float32)}
    tensors = {
        **_flat("observation.state", s),
        **_flat("action", a),
        **_flat("observation.images.top", img),
        "observation.state.count": np.array([1234], np.int64),
        "action.q10": a["q01"],
    }
    d = _write_lerobot(tmp_path / "ckpt", tensors, index=2)
    stats = read_lerobot_stats(d)
    assert set(stats) == {STATE, ACTION}
    _check(stats[STATE], s, 8)
    _check(stats[ACTION], a, 7)
    assert stats[STATE].count == 1234 and stats[ACTION].count == 0

    found, where = find_foreign_stats(d)
    assert where == "lerobot policy_preprocessor.json (normalizer_processor, step 2)"
    _check(found[ACTION], a, 7)


def test_lerobot_step_index_is_looked_up(tmp_path):
    a = _stats(4)
    for index in (0, 3):
        d = _write_lerobot(tmp_path / f"i{index}", _flat("action", a), index=index)
        stats, where = find_foreign_stats(d)
        assert set(stats) == {ACTION} and where.endswith(f"step {index})")
        _check(stats[ACTION], a, 4)


def test_lerobot_training_checkpoint_layout(tmp_path):
    a = _stats(3)
    _write_lerobot(tmp_path / "005000" / "pretrained_model", _flat("action", a))
    stats, where = find_foreign_stats(tmp_path / "005000")
    assert where.startswith("lerobot pretrained_model/policy_preprocessor.json")
    _check(stats[ACTION], a, 3)


def test_lerobot_old_file_without_quantiles(tmp_path):
    s = _stats(5, names=("mean", "std", "min", "max"))
    stats = read_lerobot_stats(_write_lerobot(tmp_path, _flat("observation.state", s)))
    ks = stats[STATE]
    _check(ks, s, 5)
    np.testing.assert_array_equal(ks.q01, s["min"])
    np.testing.assert_array_equal(ks.q99, s["max"])
    assert ks.count == 0


def test_lerobot_none_when_absent(tmp_path):
    assert read_lerobot_stats(tmp_path) is None
    assert find_foreign_stats(tmp_path) is None
    # a pipeline without a normalizer, and a normalizer saved without stats
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "policy_preprocessor.json").write_text(
        json.dumps({"name": "policy_preprocessor", "steps": [{"registry_name": "device_processor", "config": {}}]})
    )
    assert read_lerobot_stats(tmp_path / "a") is None
    assert read_lerobot_stats(_write_lerobot(tmp_path / "b", {}, state_file=False)) is None


def test_lerobot_malformed_json_names_file(tmp_path):
    (tmp_path / "policy_preprocessor.json").write_text('{"steps": [')
    with pytest.raises(SpecError, match="policy_preprocessor.json.*not valid JSON"):
        read_lerobot_stats(tmp_path)
    (tmp_path / "policy_preprocessor.json").write_text('{"name": "x"}')
    with pytest.raises(SpecError, match="policy_preprocessor.json.*'steps' list"):
        read_lerobot_stats(tmp_path)


def test_lerobot_missing_state_file_named(tmp_path):
    d = _write_lerobot(tmp_path, _flat("action", _stats(2)))
    (d / "policy_preprocessor_step_2_normalizer_processor.safetensors").unlink()
    with pytest.raises(SpecError, match="policy_preprocessor_step_2_normalizer_processor.safetensors"):
        read_lerobot_stats(d)


def test_lerobot_corrupt_state_file_named(tmp_path):
    d = _write_lerobot(tmp_path, _flat("action", _stats(2)))
    (d / "policy_preprocessor_step_2_normalizer_processor.safetensors").write_bytes(b"garbage")
    with pytest.raises(SpecError, match="normalizer_processor.safetensors.*safetensors"):
        read_lerobot_stats(d)


def test_lerobot_mismatched_lengths_name_key(tmp_path):
    a = _stats(4)
    a["std"] = a["std"][:3]
    d = _write_lerobot(tmp_path, _flat("action", a))
    with pytest.raises(SpecError, match=r"'action'.*shape.*std.*\(3,\)"):
        read_lerobot_stats(d)


def test_lerobot_no_usable_stats_names_file_and_key(tmp_path):
    d = _write_lerobot(tmp_path, {"action.mean": np.zeros(3, np.float32)})
    with pytest.raises(SpecError, match=r"normalizer_processor.safetensors.*'action'.*need mean and std"):
        read_lerobot_stats(d)
    d = _write_lerobot(tmp_path / "img", _flat("observation.images.top", _stats(3)))
    with pytest.raises(SpecError, match="observation.images.top"):
        read_lerobot_stats(d)


# --- openpi ------------------------------------------------------------------------------------


def test_openpi_three_path_forms(tmp_path):
    s, a = _stats(8, ("mean", "std", "q01", "q99")), _stats(7, ("mean", "std", "q01", "q99"))
    f = _write_openpi(
        tmp_path / "ckpt" / "assets" / "physical-intelligence" / "libero" / "norm_stats.json",
        {"state": s, "actions": a},
    )
    for path in (f, f.parent, tmp_path / "ckpt"):
        stats = read_openpi_stats(path)
        _check(stats[STATE], s, 8)
        _check(stats[ACTION], a, 7)
        # openpi stores no min/max/count: min/max come from the quantiles
        np.testing.assert_array_equal(stats[ACTION].min, a["q01"])
        np.testing.assert_array_equal(stats[ACTION].max, a["q99"])
        assert stats[STATE].count == 0
    found, where = find_foreign_stats(tmp_path / "ckpt")
    assert where == "openpi assets/physical-intelligence/libero/norm_stats.json"
    _check(found[STATE], s, 8)


def test_openpi_several_asset_ids(tmp_path):
    a1, a2 = _stats(3, ("mean", "std", "q01", "q99")), _stats(3, ("mean", "std", "q01", "q99"))
    _write_openpi(tmp_path / "assets" / "aloha" / "norm_stats.json", {"actions": a1})
    _write_openpi(tmp_path / "assets" / "org" / "droid" / "norm_stats.json", {"actions": a2})
    with pytest.raises(SpecError, match=r"several asset ids.*\['aloha', 'org/droid'\]"):
        read_openpi_stats(tmp_path)
    with pytest.raises(SpecError, match="several asset ids"):
        find_foreign_stats(tmp_path)
    _check(read_openpi_stats(tmp_path, asset_id="org/droid")[ACTION], a2, 3)
    stats, where = find_foreign_stats(tmp_path, asset_id="aloha")
    assert where == "openpi assets/aloha/norm_stats.json"
    _check(stats[ACTION], a1, 3)
    with pytest.raises(SpecError, match=r"'nope'.*\['aloha', 'org/droid'\]"):
        read_openpi_stats(tmp_path, asset_id="nope")


def test_openpi_fallbacks_without_quantiles(tmp_path):
    # older openpi files: q01/q99 null -> an assumed mean +- 2 std band, min/max the same
    s = _stats(4, ("mean", "std"))
    f = _write_openpi(tmp_path / "norm_stats.json", {"state": {**s, "q01": None, "q99": None}})
    ks = read_openpi_stats(f)[STATE]
    _check(ks, s, 4)
    np.testing.assert_allclose(ks.q01, s["mean"] - 2 * s["std"], rtol=1e-6)
    np.testing.assert_allclose(ks.q99, s["mean"] + 2 * s["std"], rtol=1e-6)
    np.testing.assert_array_equal(ks.min, ks.q01)
    np.testing.assert_array_equal(ks.max, ks.q99)


def test_openpi_fallbacks_without_moments(tmp_path):
    q = _stats(4, ("q01", "q99"))
    ks = read_openpi_stats(_write_openpi(tmp_path / "norm_stats.json", {"actions": q}))[ACTION]
    _check(ks, q, 4)
    np.testing.assert_allclose(ks.std, (q["q99"] - q["q01"]) / 4, rtol=1e-6)
    np.testing.assert_allclose(ks.mean, (q["q01"] + q["q99"]) / 2, rtol=1e-6)


def test_openpi_errors(tmp_path):
    bad = tmp_path / "bad" / "norm_stats.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    with pytest.raises(SpecError, match=r"bad/norm_stats.json.*not valid JSON"):
        read_openpi_stats(bad.parent)
    with pytest.raises(SpecError, match="not valid JSON"):
        find_foreign_stats(tmp_path / "bad")  # an assets/<id> dir is accepted as a checkpoint too
    f = _write_openpi(tmp_path / "x" / "norm_stats.json", {"state": {"mean": [0.0, 1.0], "std": [1.0]}})
    with pytest.raises(SpecError, match=r"'state'.*shape.*mean.*\(2,\).*std.*\(1,\)"):
        read_openpi_stats(f)
    f = _write_openpi(tmp_path / "y" / "norm_stats.json", {"actions": {"std": [1.0, 2.0]}})
    with pytest.raises(SpecError, match=r"y/norm_stats.json.*'actions'.*need mean and std"):
        read_openpi_stats(f)
    f = _write_openpi(tmp_path / "z" / "norm_stats.json", {"joints": _stats(2)})
    with pytest.raises(SpecError, match=r"no stats for.*joints"):
        read_openpi_stats(f)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "norm_stats.json").write_text(json.dumps({"state": {}}))
    with pytest.raises(SpecError, match="norm_stats"):
        read_openpi_stats(tmp_path / "w")
    with pytest.raises(SpecError, match="not found"):
        read_openpi_stats(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert read_openpi_stats(tmp_path / "empty") is None


def test_quantile_normalize_matches_openpi_formula(tmp_path):
    s = _stats(6, ("mean", "std", "q01", "q99"))
    f = _write_openpi(tmp_path / "assets" / "r" / "norm_stats.json", {"state": s})
    ks = read_openpi_stats(tmp_path)[STATE]
    x = RNG.normal(0, 2, (5, 6)).astype(np.float32)
    raw = json.loads(f.read_text())["norm_stats"]["state"]
    q01, q99 = np.asarray(raw["q01"], np.float32), np.asarray(raw["q99"], np.float32)
    want = (x - q01) / (q99 - q01 + 1e-6) * 2.0 - 1.0  # openpi transforms.Normalize._normalize_quantile
    np.testing.assert_allclose(ks.normalize(x, "quantile"), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ks.unnormalize(ks.normalize(x, "quantile"), "quantile"), x, rtol=1e-5, atol=1e-5)
