"""Normalization statistics written by other projects, read into vla's own `KeyStats`.

Two layouts are understood (only the state and action keys are read; image stats are ignored):

LeRobot >= 0.4 policy checkpoint (`DataProcessorPipeline.save_pretrained`):
    policy_preprocessor.json   {"name": ..., "steps": [{"registry_name": ..., "config": {...},
                                "state_file": "policy_preprocessor_step_<i>_<registry_name>.safetensors"}, ...]}
    The step whose `registry_name` is "normalizer_processor" holds the stats; its index changes
    between versions, so it is looked up by name. Its state file is a flat safetensors dict
    "<feature>.<stat>" -> tensor, e.g. "observation.state.mean", "action.q99",
    "observation.images.top.std". Stat names: mean, std, min, max, count, and (newer files)
    q01, q99, q10, q90.
openpi (`openpi.shared.normalize.save`):
    assets/<asset_id>/norm_stats.json   {"norm_stats": {"state": {"mean", "std", "q01", "q99"},
                                          "actions": {...}}}
    q01/q99 may be null; <asset_id> is often a LeRobot repo id, so it may hold a slash.

Fields a source lacks are filled so the result works in both normalization modes:
    count      -> 0 when the source does not record it
    q01 / q99  -> min / max when absent, and min / max -> q01 / q99 when absent
    q01 / q99  -> mean -/+ 2 * std when neither quantiles nor min/max exist (so min/max too)
    std        -> (q99 - q01) / 4 when absent; mean -> (q01 + q99) / 2 when absent
The two std <-> quantile fallbacks are inverses of each other, so a value filled one way and read
back the other way is unchanged. A key with neither mean/std nor q01/q99 (or min/max) is an error.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from vla.data.stats import STAT_NAMES, KeyStats
from vla.spec import ACTION, STATE, SpecError

log = logging.getLogger(__name__)

LEROBOT_PROCESSOR_FILE = "policy_preprocessor.json"
LEROBOT_NORMALIZER = "normalizer_processor"
OPENPI_STATS_FILE = "norm_stats.json"

# foreign key -> vla frame key
_LEROBOT_KEYS = {"observation.state": STATE, "action": ACTION}
_OPENPI_KEYS = {"state": STATE, "actions": ACTION}

# std = (q99 - q01) / _QUANTILE_SPAN_STDS, and q01/q99 = mean -/+ span/2 * std the other way.
_QUANTILE_SPAN_STDS = 4.0


def read_lerobot_stats(directory: str | Path) -> dict[str, KeyStats] | None:
    """Stats of a LeRobot >= 0.4 policy checkpoint dir (or its parent holding `pretrained_model/`).

    Returns {STATE: ..., ACTION: ...} (the keys the file has), or None when the dir has no
    `policy_preprocessor.json`, the pipeline has no normalizer step, or that step saved no state
    (a policy saved without dataset stats). Raises SpecError for a file that exists but cannot be
    read. Fallbacks for missing fields: see the module docstring.
    """
    found = _read_lerobot(_existing_dir(directory))
    return None if found is None else found[0]


def read_openpi_stats(path: str | Path, asset_id: str | None = None) -> dict[str, KeyStats] | None:
    """Stats of an openpi `norm_stats.json`.

    `path` is the json file itself, an `assets/<asset_id>` dir holding it, or a checkpoint dir
    holding `assets/**/norm_stats.json`. In a checkpoint dir `asset_id` chooses among several
    asset ids (it is ignored for the other two forms); several without a choice is a SpecError
    that lists them. Returns None when no norm_stats.json is there. Fallbacks for missing fields
    (openpi stores no count, min or max): see the module docstring.
    """
    found = _read_openpi(_existing_path(path), asset_id)
    return None if found is None else found[0]


def find_foreign_stats(directory: str | Path, *, asset_id: str | None = None) -> tuple[dict[str, KeyStats], str] | None:
    """Stats of a checkpoint dir from another project, tried as LeRobot, then as openpi.

    Returns (stats, where they came from, e.g. "lerobot policy_preprocessor.json
    (normalizer_processor, step 2)"), or None when the dir holds neither layout.
    """
    d = _existing_dir(directory)
    return _read_lerobot(d) or _read_openpi(d, asset_id)


# --- LeRobot ---------------------------------------------------------------------------------


def _read_lerobot(d: Path) -> tuple[dict[str, KeyStats], str] | None:
    base = d
    if not (d / LEROBOT_PROCESSOR_FILE).is_file() and (d / "pretrained_model" / LEROBOT_PROCESSOR_FILE).is_file():
        base = d / "pretrained_model"  # a LeRobot training checkpoint: checkpoints/<step>/pretrained_model/
    cfg_path = base / LEROBOT_PROCESSOR_FILE
    if not cfg_path.is_file():
        return None
    rel = cfg_path.relative_to(d).as_posix()
    cfg = _read_json(cfg_path)
    steps = cfg.get("steps") if isinstance(cfg, dict) else None
    if not isinstance(steps, list):
        raise SpecError(f"{cfg_path}: expected an object with a 'steps' list, got {_describe(cfg)}")
    hits = [i for i, s in enumerate(steps) if isinstance(s, dict) and s.get("registry_name") == LEROBOT_NORMALIZER]
    if not hits:
        names = [s.get("registry_name", s.get("class")) if isinstance(s, dict) else s for s in steps]
        log.info("%s: no %s step (steps: %s); no norm stats there", cfg_path, LEROBOT_NORMALIZER, names)
        return None
    if len(hits) > 1:
        raise SpecError(f"{cfg_path}: expected one {LEROBOT_NORMALIZER} step, found {len(hits)} at steps {hits}")
    index = hits[0]
    state_file = steps[index].get("state_file")
    if state_file is None:
        log.warning(
            "%s: %s (step %d) has no state_file: the policy was saved without norm stats",
            cfg_path,
            LEROBOT_NORMALIZER,
            index,
        )
        return None
    if not isinstance(state_file, str) or not state_file:
        raise SpecError(
            f"{cfg_path}: {LEROBOT_NORMALIZER} (step {index}) state_file must be a file name, got {state_file!r}"
        )
    tensors_path = base / state_file
    if not tensors_path.is_file():
        raise SpecError(
            f"{cfg_path}: {LEROBOT_NORMALIZER} (step {index}) names state_file {state_file!r}, which is not in {base}"
        )
    tensors = _read_safetensors(tensors_path)

    by_feature: dict[str, dict[str, np.ndarray]] = {}
    for flat_key, value in tensors.items():
        feature, _, stat = flat_key.rpartition(".")
        by_feature.setdefault(feature, {})[stat] = value
    stats = {}
    for feature, key in _LEROBOT_KEYS.items():
        if feature in by_feature:
            stats[key] = _key_stats(by_feature[feature], source=tensors_path, key=feature)
    if not stats:
        raise SpecError(
            f"{tensors_path}: no stats for {sorted(_LEROBOT_KEYS)}; features in the file: {sorted(by_feature)}"
        )
    ignored = sorted(set(by_feature) - set(_LEROBOT_KEYS))
    if ignored:
        log.debug("%s: ignoring stats of %s", tensors_path, ignored)
    return stats, f"lerobot {rel} ({LEROBOT_NORMALIZER}, step {index})"


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types (and TypeError for bf16 in numpy)
        raise SpecError(f"{path}: not a readable safetensors file: {e}") from None


# --- openpi ----------------------------------------------------------------------------------


def _read_openpi(p: Path, asset_id: str | None) -> tuple[dict[str, KeyStats], str] | None:
    if p.is_file():
        json_path, where = p, p.name
    elif (p / OPENPI_STATS_FILE).is_file():
        json_path, where = p / OPENPI_STATS_FILE, f"{p.name}/{OPENPI_STATS_FILE}"
    else:
        assets = p / "assets"
        if not assets.is_dir():
            return None
        by_id = {
            f.parent.relative_to(assets).as_posix(): f
            for f in sorted(assets.glob(f"**/{OPENPI_STATS_FILE}"))
            if f.parent != assets
        }
        if asset_id is not None:
            if asset_id not in by_id:
                raise SpecError(
                    f"{assets}: no {OPENPI_STATS_FILE} for asset id {asset_id!r}; asset ids there: {sorted(by_id)}"
                )
            json_path = by_id[asset_id]
        elif not by_id:
            return None
        elif len(by_id) > 1:
            raise SpecError(
                f"{assets}: several asset ids hold {OPENPI_STATS_FILE}: {sorted(by_id)}; choose one (asset_id)"
            )
        else:
            json_path = next(iter(by_id.values()))
        where = json_path.relative_to(p).as_posix()

    data = _read_json(json_path)
    entries = data.get("norm_stats") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise SpecError(f'{json_path}: expected {{"norm_stats": {{...}}}}, got {_describe(data)}')
    stats = {}
    for name, key in _OPENPI_KEYS.items():
        entry = entries.get(name)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise SpecError(f"{json_path}: norm_stats[{name!r}] must be an object of stats, got {type(entry).__name__}")
        stats[key] = _key_stats(entry, source=json_path, key=name)
    if not stats:
        raise SpecError(f"{json_path}: no stats for {sorted(_OPENPI_KEYS)}; keys in norm_stats: {sorted(entries)}")
    return stats, f"openpi {where}"


# --- shared ----------------------------------------------------------------------------------


def _key_stats(raw: dict, *, source: Path, key: str) -> KeyStats:
    """One foreign key's stats (name -> array-like, None = absent) -> KeyStats, with fallbacks."""
    arrays: dict[str, np.ndarray] = {}
    for name in STAT_NAMES:
        if raw.get(name) is not None:
            arrays[name] = _vector(raw[name], source=source, key=key, stat=name)
    lengths = {name: a.shape for name, a in arrays.items()}
    if len({a.shape for a in arrays.values()}) > 1:
        raise SpecError(f"{source}: stats of {key!r} disagree in shape: {lengths}")
    if any(a.size == 0 for a in arrays.values()):
        raise SpecError(f"{source}: stats of {key!r} are empty: {lengths}")
    a = arrays
    has_moments = "mean" in a and "std" in a
    has_quantiles = ("q01" in a or "min" in a) and ("q99" in a or "max" in a)
    if not (has_moments or has_quantiles):
        raise SpecError(
            f"{source}: stats of {key!r} need mean and std or q01 and q99 (or min and max); found {sorted(a) or 'none'}"
        )
    filled = []
    for q, m in (("q01", "min"), ("q99", "max")):
        if q not in a and m in a:
            a[q] = a[m]
            filled.append(f"{q}<-{m}")
        elif m not in a and q in a:
            a[m] = a[q]
            filled.append(f"{m}<-{q}")
    half_span = _QUANTILE_SPAN_STDS / 2.0
    if "q01" not in a or "q99" not in a:  # only mean/std: an assumed +-2 std band
        for q, m, sign in (("q01", "min", -1.0), ("q99", "max", 1.0)):
            if q not in a:
                a[q] = a[m] = a["mean"] + sign * half_span * a["std"]
                filled.append(f"{q},{m}<-mean{'+' if sign > 0 else '-'}{half_span:g}*std")
    if "std" not in a:
        a["std"] = (a["q99"] - a["q01"]) / _QUANTILE_SPAN_STDS
        filled.append(f"std<-(q99-q01)/{_QUANTILE_SPAN_STDS:g}")
    if "mean" not in a:
        a["mean"] = (a["q01"] + a["q99"]) / 2.0
        filled.append("mean<-(q01+q99)/2")
    if filled:
        log.info("%s: %r lacks some stats, filled %s", source, key, ", ".join(filled))
    count = _count(raw.get("count"), source=source, key=key)
    return KeyStats(count, **{name: np.ascontiguousarray(a[name], np.float32) for name in STAT_NAMES})


def _vector(value, *, source: Path, key: str, stat: str) -> np.ndarray:
    try:
        x = np.asarray(value, np.float32)
    except (TypeError, ValueError) as e:
        raise SpecError(f"{source}: {key}.{stat} is not a numeric array: {e}") from None
    if x.ndim == 0:
        return x.reshape(1)
    if x.size != x.shape[-1]:  # leading singleton dims ([1, d]) are fine, a real matrix is not
        raise SpecError(f"{source}: {key}.{stat} must be 1-D, got shape {x.shape}")
    return x.reshape(-1)


def _count(value, *, source: Path, key: str) -> int:
    if value is None:
        return 0
    x = np.asarray(value).reshape(-1)
    if x.size == 0:
        return 0
    if x.size != 1 or not np.isfinite(x[0]) or x[0] < 0:
        raise SpecError(f"{source}: {key}.count must be one non-negative number, got {value!r}")
    return int(x[0])


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: not valid JSON: {e}") from None


def _describe(value) -> str:
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:10]}"
    return f"a {type(value).__name__}"


def _existing_path(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise SpecError(f"stats path not found: {p}")
    return p


def _existing_dir(path: str | Path) -> Path:
    p = _existing_path(path)
    if not p.is_dir():
        raise SpecError(f"expected a checkpoint directory, got a file: {p}")
    return p
