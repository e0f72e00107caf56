"""Evaluation results on disk: Wilson intervals, the JSON, a bar chart PNG, and rollout videos."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a success rate (sensible at 0/n and n/n, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def write_json(results: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def bar_chart(results: dict, path: str | Path) -> Path:
    """Success rate per task with 95% CI error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["tasks"]
    names = [f"{r['robot']}/{r['task']}" for r in rows]
    rate = np.array([r["success_rate"] for r in rows])
    lo = np.array([r["ci95"][0] for r in rows])
    hi = np.array([r["ci95"][1] for r in rows])
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(rows) + 1.5), 3.6), dpi=100)
    yerr = np.clip([rate - lo, hi - rate], 0.0, None)  # float round-off at 0/n and n/n
    ax.bar(range(len(rows)), rate, color="#4C72B0", yerr=yerr, capsize=4)
    for i, r in enumerate(rows):
        ax.text(i, min(1.02, hi[i] + 0.02), f"{r['successes']}/{r['episodes']}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("success rate (95% CI)")
    ax.set_title(f"{results['policy']} on {results['suite']}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_video(frames: list[np.ndarray], path: str | Path, fps: int) -> Path:
    """H.264 mp4 of RGB frames (padded to even sizes, as yuv420p needs)."""
    from vla.data.video import VideoWriter

    arr = np.stack(frames)
    h, w = arr.shape[1:3]
    ph, pw = h % 2, w % 2
    if ph or pw:
        arr = np.pad(arr, ((0, 0), (0, ph), (0, pw), (0, 0)))
    vw = VideoWriter(path, fps=fps, height=h + ph, width=w + pw, codec="libx264")
    try:
        vw.add(arr)
    finally:
        vw.close()
    return Path(path)
