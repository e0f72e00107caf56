"""Pictures of a store: a contact sheet of sample frames (for `vla data info`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vla.data.frame_files import CorruptFrameError
from vla.data.store import EpisodeStore


def contact_sheet(
    store: EpisodeStore, out: str | Path, *, max_episodes: int = 4, frames_per_episode: int = 3
) -> Path | None:
    """Rows: episodes spread over the store; columns: first/middle/last frame of every camera.

    Returns the PNG path, or None when the store has no episodes with cameras.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    infos = [i for i in store.infos() if store.embodiments[i.embodiment].cameras]
    if not infos:
        return None
    pick = sorted({int(x) for x in np.linspace(0, len(infos) - 1, min(max_episodes, len(infos)))})
    rows = [infos[k] for k in pick]
    ncams = max(len(store.embodiments[r.embodiment].cameras) for r in rows)
    ncols = ncams * frames_per_episode
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.6 * ncols, 1.9 * len(rows)), squeeze=False)
    for r, info in enumerate(rows):
        emb = store.embodiments[info.embodiment]
        ts = sorted({int(x) for x in np.linspace(info.start, info.end - 1, frames_per_episode)})
        for c, cam in enumerate(emb.camera_names):
            for k, t in enumerate(ts):
                ax = axes[r, c * frames_per_episode + k]
                try:
                    ax.imshow(store.frames(info.embodiment, cam).read([t])[0])
                    ax.set_title(f"{cam} t={t - info.start}", fontsize=7)
                except CorruptFrameError:  # the sheet shows what it can; `vla data verify` lists the rest
                    ax.text(0.5, 0.5, "corrupt", ha="center", va="center", color="red", transform=ax.transAxes)
                    ax.set_title(f"{cam} t={t - info.start}", fontsize=7, color="red")
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
            if not ax.images:
                ax.axis("off")
        label = info.task if len(info.task) <= 40 else info.task[:37] + "..."
        axes[r, 0].set_ylabel(f"ep {info.index} [{info.embodiment}]\n{label}", fontsize=7)
    fig.suptitle(f"{Path(store.path).name}: {store.num_episodes} episodes, {store.num_frames} frames", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
