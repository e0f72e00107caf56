"""Normalization statistics per embodiment and key, computed streaming.

Two passes over the low-dim arrays, one episode at a time (never the whole store in memory):
pass 1 gives count, mean, variance (Chan's parallel update), min and max; pass 2 fills a
histogram of `bins` bins per dim over [min, max] and reads q01/q99 off it, so a quantile is
exact to within (max - min) / bins.

Two normalization modes (the policy preset picks one, the checkpoint records it):
    zscore:   (x - mean) / (std + eps)                 pi0
    quantile: (x - q01) / (q99 - q01 + eps) * 2 - 1    FAST / pi0.5, clipped to [-1, 1] by callers

ENV_STATE (training-only scene facts) gets stats too, for each embodiment that has it, over its
finite rows only (NaN rows: episodes recorded without it); absent where no row is known.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from vla.data import remote
from vla.spec import ACTION, ENV_STATE, STATE, SpecError

EPS = 1e-6
MODES = ("zscore", "quantile")
STAT_NAMES = ("mean", "std", "min", "max", "q01", "q99")


@dataclass
class KeyStats:
    count: int
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    q01: np.ndarray
    q99: np.ndarray

    def to_dict(self) -> dict:
        return {"count": int(self.count), **{k: np.asarray(getattr(self, k), np.float64).tolist() for k in STAT_NAMES}}

    @classmethod
    def from_dict(cls, d: dict) -> "KeyStats":
        missing = [k for k in ("count", *STAT_NAMES) if k not in d]
        if missing:
            raise SpecError(f"norm stats entry lacks {missing}")
        return cls(count=int(d["count"]), **{k: np.asarray(d[k], np.float32) for k in STAT_NAMES})

    def normalize(self, x: np.ndarray, mode: str) -> np.ndarray:
        if mode == "zscore":
            return (x - self.mean) / (self.std + EPS)
        if mode == "quantile":
            return (x - self.q01) / (self.q99 - self.q01 + EPS) * 2.0 - 1.0
        raise SpecError(f"normalization mode must be one of {MODES}, got {mode!r}")

    def scale(self, mode: str) -> np.ndarray:
        """Robot units per normalized unit (what a difference of two values is divided by)."""
        if mode == "zscore":
            return self.std + EPS
        if mode == "quantile":
            return (self.q99 - self.q01 + EPS) / 2.0
        raise SpecError(f"normalization mode must be one of {MODES}, got {mode!r}")

    def unnormalize(self, y: np.ndarray, mode: str) -> np.ndarray:
        if mode == "zscore":
            return y * (self.std + EPS) + self.mean
        if mode == "quantile":
            return (y + 1.0) / 2.0 * (self.q99 - self.q01 + EPS) + self.q01
        raise SpecError(f"normalization mode must be one of {MODES}, got {mode!r}")


# embodiment name -> frame key -> KeyStats
NormStats = dict[str, dict[str, KeyStats]]


class _Moments:
    def __init__(self, dim: int):
        self.n = 0
        self.mean = np.zeros(dim)
        self.m2 = np.zeros(dim)
        self.min = np.full(dim, np.inf)
        self.max = np.full(dim, -np.inf)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        nb = len(x)
        if nb == 0:
            return
        mb = x.mean(0)
        m2b = ((x - mb) ** 2).sum(0)
        delta = mb - self.mean
        n = self.n + nb
        self.mean = self.mean + delta * nb / n
        self.m2 = self.m2 + m2b + delta**2 * self.n * nb / n
        self.n = n
        self.min = np.minimum(self.min, x.min(0))
        self.max = np.maximum(self.max, x.max(0))


class _Histogram:
    def __init__(self, lo: np.ndarray, hi: np.ndarray, bins: int):
        self.lo, self.bins = lo, bins
        self.width = np.where(hi > lo, (hi - lo) / bins, 1.0)
        self.counts = np.zeros((len(lo), bins), np.int64)

    def update(self, x: np.ndarray) -> None:
        idx = np.clip(((np.asarray(x, np.float64) - self.lo) / self.width).astype(np.int64), 0, self.bins - 1)
        for d in range(idx.shape[1]):
            self.counts[d] += np.bincount(idx[:, d], minlength=self.bins)

    def quantile(self, q: float) -> np.ndarray:
        out = np.empty(len(self.lo))
        for d, c in enumerate(self.counts):
            cum = np.cumsum(c)
            target = q * cum[-1]
            b = int(np.searchsorted(cum, target, side="left"))
            before = cum[b - 1] if b > 0 else 0
            frac = (target - before) / c[b] if c[b] else 0.0
            out[d] = self.lo[d] + (b + frac) * self.width[d]
        return out


def compute_stats_from_chunks(chunks_factory, dim: int, bins: int = 5000) -> KeyStats:
    """chunks_factory() -> iterable of [n, dim] arrays; called twice (two passes)."""
    mom = _Moments(dim)
    for x in chunks_factory():
        mom.update(x)
    if mom.n == 0:
        raise SpecError("no frames to compute norm stats from")
    hist = _Histogram(mom.min, mom.max, bins)
    for x in chunks_factory():
        hist.update(x)
    std = np.sqrt(np.maximum(mom.m2 / mom.n, 0.0))
    # Quantiles cannot leave the observed range (a constant dim has q01 = q99 = its value).
    q01 = np.clip(hist.quantile(0.01), mom.min, mom.max)
    q99 = np.clip(hist.quantile(0.99), mom.min, mom.max)

    # float32, exactly what a JSON round trip gives back (so a resumed run normalizes identically)
    def f32(x):
        return np.asarray(x, np.float32)

    return KeyStats(mom.n, f32(mom.mean), f32(std), f32(mom.min), f32(mom.max), f32(q01), f32(q99))


def compute_norm_stats(
    stores: Iterable, keys: tuple[str, ...] = (STATE, ACTION, ENV_STATE), bins: int = 5000, progress: bool = False
) -> NormStats:
    """Stats per embodiment and key over every committed episode of the given stores. ENV_STATE is
    optional: computed over finite rows where an embodiment has it, left out where it has none."""
    from tqdm import tqdm

    stores = list(stores) if isinstance(stores, (list, tuple)) else [stores]
    by_emb: dict[str, list[tuple]] = {}
    dims: dict[str, dict[str, int]] = {}
    for store in stores:
        for info in store.infos():
            by_emb.setdefault(info.embodiment, []).append((store, info))
            emb = store.embodiments[info.embodiment]
            d = {STATE: emb.state_dim, ACTION: emb.action_dim}
            if info.embodiment in dims and {k: dims[info.embodiment][k] for k in d} != d:
                raise SpecError(
                    f"embodiment {info.embodiment!r} has different dims across stores: {dims[info.embodiment]} vs {d}"
                )
            d = {**dims.get(info.embodiment, {}), **d}
            env = store.env_state_dim(info.embodiment)
            if env is not None:
                if d.get(ENV_STATE, env) != env:
                    raise SpecError(
                        f"embodiment {info.embodiment!r}: {ENV_STATE} dims differ across stores: {d[ENV_STATE]} vs {env}"
                    )
                d[ENV_STATE] = env
            dims[info.embodiment] = d
    out: NormStats = {}
    for name, eps in by_emb.items():
        out[name] = {}
        for key in keys:
            if key not in dims[name]:
                if key == ENV_STATE:
                    continue  # optional: this embodiment has none
                raise SpecError(f"norm stats: unknown key {key!r} (known: {sorted(dims[name])})")
            optional = key == ENV_STATE

            def chunks(eps=eps, key=key, name=name, optional=optional):
                it = tqdm(eps, desc=f"stats {name} {key}", disable=not progress, leave=False)
                for store, info in it:
                    if optional and store.env_state_dim(name) is None:
                        continue
                    x = store.lowdim(name, key, info.start, info.end)
                    yield x[np.isfinite(x).all(axis=1)] if optional else x

            if optional and not any(len(x) for x in chunks()):
                continue  # every row unknown
            out[name][key] = compute_stats_from_chunks(chunks, dims[name][key], bins)
    return out


def stats_to_json(stats: NormStats) -> dict:
    return {emb: {k: s.to_dict() for k, s in per.items()} for emb, per in stats.items()}


def stats_from_json(d: dict) -> NormStats:
    return {emb: {k: KeyStats.from_dict(s) for k, s in per.items()} for emb, per in d.items()}


def save_stats(stats: NormStats, path: str | Path) -> None:
    """To a local file (temp file and rename) or an object-storage URL (one PUT)."""
    remote.write_bytes(path, json.dumps(stats_to_json(stats), indent=1).encode())


def load_stats(path: str | Path) -> NormStats:
    path = path if remote.is_url(path) else Path(path)
    try:
        return stats_from_json(json.loads(remote.read_bytes(path)))
    except FileNotFoundError:
        raise SpecError(f"norm stats file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise SpecError(f"{path}: not valid JSON: {e}") from None
