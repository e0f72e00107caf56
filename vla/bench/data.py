"""`vla bench data`: loader throughput and LeRobot import speed on a generated store.

Setup mirrors the LeRobot figure in ANCHORS.md: 20 episodes x 200 frames, 2 cameras 96x96,
state/action 8, windows of H=50 actions, batch 32.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from vla.data.lerobot_export import export_lerobot
from vla.data.lerobot_import import import_lerobot
from vla.data.sampler import WindowDataset, make_loader
from vla.data.store import EpisodeStore
from vla.data.synthetic import write_synthetic
from vla.spec import load_embodiment


def _windows_per_s(ds: WindowDataset, workers: int, batches: int, batch_size: int) -> float:
    dl = make_loader(ds, batch_size, workers=workers, num_samples=batch_size * (batches + 2), seed=1)
    it = iter(dl)
    next(it)  # exclude worker start-up
    next(it)
    n, t0 = 0, time.perf_counter()
    for batch in it:
        n += len(batch["task"])
    return n / (time.perf_counter() - t0)


def run(episodes: int = 20, length: int = 200, horizon: int = 50, batch_size: int = 32, batches: int = 400,
        workdir: str | None = None) -> dict:
    emb = load_embodiment("toy2d")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        store = EpisodeStore.create(tmp / "store", [emb])
        t0 = time.perf_counter()
        write_synthetic(store, emb, episodes, length, seed=0)
        write_s = time.perf_counter() - t0
        ds = WindowDataset(store.path, horizon)
        loader = {f"workers_{w}": round(_windows_per_s(ds, w, batches, batch_size)) for w in (0, 2)}
        t0 = time.perf_counter()
        export_lerobot(store.path, tmp / "lerobot", progress=False)
        export_s = time.perf_counter() - t0
        imp = import_lerobot(tmp / "lerobot", tmp / "imported", progress=False)
        size = sum(f.stat().st_size for f in (tmp / "store").rglob("*") if f.is_file())
    frames = episodes * length
    return {
        "benchmark": "data",
        "setup": {"episodes": episodes, "frames_per_episode": length, "cameras": "2 x 96x96", "state_action_dim": 8,
                  "horizon": horizon, "batch_size": batch_size},
        "windows_per_s": loader,
        "targets": {"windows_per_s_2_workers": 2000, "import_frames_per_s": 500},
        "store_write_frames_per_s": round(frames / write_s),
        "store_bytes_per_frame": round(size / frames),
        "lerobot_export_frames_per_s": round(frames / export_s),
        "lerobot_import_frames_per_s": round(imp["frames_per_s"]),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine()},
    }
