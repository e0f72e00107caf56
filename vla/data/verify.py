"""`vla data verify`: read every frame of a store and name the ones that cannot be read.

Low-dim arrays are read per embodiment and key; each camera frame is decoded on its own, so one
corrupt frame is named (episode, camera, frame) and the scan goes on. A store on object storage
is read from fresh copies of its shard objects (in a temporary cache, removed at the end), never
from the local read cache: what is checked is what the store holds now.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from vla.data import remote
from vla.data.frame_files import StoreError
from vla.data.store import EpisodeStore


def verify_store(store: str | EpisodeStore, *, progress: bool = False, limit: int = 1000) -> dict:
    """-> {"frames", "images_checked", "corrupt": [{"episode", "embodiment", "key", "frame", "error"}]}.
    `frame` counts from the episode's start; at most `limit` problems are listed (all are counted)."""
    if not isinstance(store, EpisodeStore) and remote.is_url(store):
        with tempfile.TemporaryDirectory(prefix="vla-verify-") as tmp:
            return verify_store(EpisodeStore.open(store, cache=Path(tmp)), progress=progress, limit=limit)
    from tqdm import tqdm

    s = store if isinstance(store, EpisodeStore) else EpisodeStore.open(store)
    infos = s.infos()
    corrupt: list[dict] = []
    count = 0

    def note(info, key: str, frame: int | None, err: Exception) -> None:
        nonlocal count
        count += 1
        if len(corrupt) < limit:
            corrupt.append(
                {"episode": info.index, "embodiment": info.embodiment, "key": key, "frame": frame, "error": str(err)}
            )

    images = 0
    bar = tqdm(total=s.num_frames, desc=f"verify {s.path}", unit="frame", disable=not progress)
    for info in infos:
        emb = s.embodiments[info.embodiment]
        for key in s.lowdim_keys(info.embodiment):
            try:
                s.lowdim(info.embodiment, key, info.start, info.end)
            except (StoreError, ValueError, OSError) as e:
                note(info, key, None, e)
        for cam in emb.camera_names:
            frames = s.frames(info.embodiment, cam)
            for t in range(info.start, info.end):
                images += 1
                try:
                    frames.read([t])
                except (StoreError, ValueError, OSError) as e:
                    note(info, f"observation/images/{cam}", t - info.start, e)
        bar.update(info.end - info.start)
    bar.close()
    return {
        "store": s.path,
        "episodes": s.num_episodes,
        "frames": s.num_frames,
        "images_checked": images,
        "problems": count,
        "corrupt": corrupt,
    }
