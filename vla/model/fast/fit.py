"""Fit FAST tokenizers on a store (`vla tokenizer fit`), one per embodiment, with a quality report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vla.data.sampler import WindowDataset
from vla.data.stats import compute_norm_stats
from vla.data.store import EpisodeStore
from vla.model.fast.tokenizer import FastTokenizer
from vla.spec import ACTION


def fit_store(
    store: str,
    out: str | Path,
    *,
    horizon: int = 50,
    scale: float = 10.0,
    vocab: int = 1024,
    chunks: int = 2000,
    seed: int = 0,
    holdout: float = 0.2,
) -> dict:
    s = EpisodeStore.open(store)
    stats = compute_norm_stats(s)
    ds = WindowDataset(s, horizon, images=False)
    rng = np.random.default_rng(seed)
    out = Path(out)
    report = {}
    for name in ds.embodiments:
        idx = ds.indices(embodiment=name)
        pick = rng.choice(idx, size=min(chunks, len(idx)), replace=False)
        x = np.stack([ds.lowdim(int(i))[ACTION] for i in pick])
        x = np.clip(stats[name][ACTION].normalize(x, "quantile"), -1, 1)
        n_test = max(1, int(len(x) * holdout))
        tok = FastTokenizer.fit(x[n_test:], scale=scale, vocab_size=vocab)
        tok.save(out / name)
        report[name] = {"fit_chunks": len(x) - n_test, "heldout": tok.report(x[:n_test])}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report
