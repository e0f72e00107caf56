"""Editing stores, as LeRobot users do with `lerobot-edit-dataset`: keep or delete episodes (by
index, task, success), merge stores, split train/val by episode, migrate an old store.

Every edit writes a NEW store, local or on object storage (vla.data.remote.new_store): on local
disk it is built in `<dst>.editing` beside the destination and renamed into place at the end; on
object storage (no rename) it is built in place, marked unfinished until its last write. Either
way a crash leaves the sources as they were and no destination that opens, only the whole one.
Sources are locked for the duration (the writer's lock, or lease on S3): a store another process
is writing is refused, and no writer can start on it mid-edit.
Encoded frames are copied as they are (no re-encoding, no further loss) when the destination
camera has the source's codec; otherwise they are decoded and encoded again. When a source has
a `norm_stats.json`, the destination gets one recomputed from its own episodes. ENV_STATE rows
(training-only scene facts) go along with the episodes that have them.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from vla.data import remote
from vla.data.codecs import ImageCodec
from vla.data.frame_files import StoreError
from vla.data.store import EpisodeStore
from vla.data.writer import writer_lock
from vla.spec import ACTION, ENV_STATE, STATE, TIMESTAMP, Embodiment, SpecError

log = logging.getLogger(__name__)

SUCCESS_VALUES = {"yes": 1, "true": 1, "success": 1, "no": 0, "false": 0, "failure": 0, "unknown": -1, "none": -1}


@dataclass(frozen=True)
class EpisodeFilter:
    """Which episodes: indices (e.g. from "0,3,5-9"), tasks (exact strings), success (yes/no/unknown).
    Criteria combine with AND; an empty filter matches every episode."""

    episodes: tuple[int, ...] | None = None
    tasks: tuple[str, ...] | None = None
    success: tuple[str, ...] | None = None

    def __post_init__(self):
        for s in self.success or ():
            if s.lower() not in SUCCESS_VALUES:
                raise SpecError(f"success must be one of yes, no, unknown; got {s!r}")

    @property
    def empty(self) -> bool:
        return self.episodes is None and self.tasks is None and self.success is None

    def matches(self, store: EpisodeStore) -> list[int]:
        n = store.num_episodes
        if self.episodes is not None:
            bad = [i for i in self.episodes if not 0 <= i < n]
            if bad:
                raise SpecError(f"{store.path}: episodes {bad} out of range (the store has {n}: 0..{n - 1})")
        keep = set(self.episodes) if self.episodes is not None else set(range(n))
        if self.tasks is not None:
            unknown = sorted(set(self.tasks) - set(store.tasks))
            if unknown:
                log.warning("%s: no episode has task %s", store.path, unknown)
            keep &= {i.index for i in store.infos() if i.task in self.tasks}
        if self.success is not None:
            want = {SUCCESS_VALUES[s.lower()] for s in self.success}
            code = {True: 1, False: 0, None: -1}
            keep &= {i.index for i in store.infos() if code[i.success] in want}
        return sorted(keep)


def parse_indices(spec: str) -> tuple[int, ...]:
    """'0,3,5-9' -> (0, 3, 5, 6, 7, 8, 9)."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        a, sep, b = part.partition("-")
        try:
            lo, hi = int(a), int(b) if sep else int(a)
        except ValueError:
            raise SpecError(f"episode indices: {part!r} is not N or N-M (in {spec!r})") from None
        if hi < lo:
            raise SpecError(f"episode indices: range {part!r} runs backwards")
        out.extend(range(lo, hi + 1))
    return tuple(out)


def _same(a: str, b) -> bool:
    if remote.is_url(a) or remote.is_url(b):
        return str(a).rstrip("/") == str(b).rstrip("/")
    return Path(a).resolve() == Path(b).resolve()


@contextlib.contextmanager
def _locked(stores: Iterable[EpisodeStore]):
    """Hold the writer lock (lease on S3) of every source while reading it."""
    locks, held = [], []
    try:
        for s in stores:
            if any(_same(s.path, p) for p in held):
                continue
            lk = writer_lock(s.path)
            if lk is None:
                continue
            try:
                lk.acquire()
            except (OSError, PermissionError) as e:  # a read-only copy: nobody can be writing it
                log.warning("%s: cannot take the writer lock (%s); reading it unlocked", s.path, e)
                continue
            locks.append(lk)
            held.append(s.path)
            s.refresh()  # what was committed before the lock was taken
        yield
    finally:
        for lk in locks:
            lk.release()


def _has_stats(s: EpisodeStore) -> bool:
    try:
        return remote.exists(remote.join(s.path, "norm_stats.json"))
    except StoreError:
        return False


def _open(src) -> EpisodeStore:
    return src if isinstance(src, EpisodeStore) else EpisodeStore.open(src)


def copy_episodes(
    parts: Sequence[tuple[EpisodeStore, Sequence[int]]],
    dst: str | Path,
    *,
    codec: str | ImageCodec | None = None,
    progress: bool = False,
) -> dict:
    """Write a new store at dst holding the given episodes of each source, in order. codec: one
    codec for every camera of the destination (default: each camera keeps its source's codec)."""
    from tqdm import tqdm

    dst = str(dst).rstrip("/") if remote.is_url(dst) else Path(dst)
    remote.check_new_store(dst, "edit")
    stores = [s for s, _ in parts]
    for s in stores:
        if _same(s.path, dst):
            raise StoreError(f"{dst}: is also a source; write the edit to a new path")
    total = sum(len(ix) for _, ix in parts)
    frames = 0
    with _locked(stores), remote.new_store(dst, "edit") as target:
        out = EpisodeStore.create(target.path, unfinished=target.unfinished)
        origin: dict[str, str] = {}  # embodiment -> the first source that has it
        for s, _ in parts:
            for name, emb in s.embodiments.items():
                if name in out.embodiments and out.embodiments[name] != emb:
                    raise StoreError(_mismatch(name, origin[name], out.embodiments[name], s.path, emb))
                origin.setdefault(name, s.path)
                codecs = codec if codec is not None else {c: s.codec(name, c) for c in emb.camera_names}
                out.add_embodiment(emb, codecs=codecs)
        bar = tqdm(
            total=total, desc=f"write {str(dst).rstrip('/').rsplit('/', 1)[-1]}", unit="ep", disable=not progress
        )
        with contextlib.ExitStack() as stack:
            w = None  # one writer per run of consecutive episodes of one embodiment
            for s, indices in parts:
                for i in indices:
                    name = s.info(i).embodiment
                    if w is None or w.emb.name != name:
                        stack.close()
                        w = stack.enter_context(out.writer(name))
                    frames += _copy_one(s, i, w)
                    bar.update()
        bar.close()
        if frames and any(_has_stats(s) for s in stores):
            from vla.data.stats import compute_norm_stats, save_stats

            save_stats(compute_norm_stats(out), remote.join(target.path, "norm_stats.json"))
        out.finish()  # object storage: the commit of the whole store (local: the rename)
    return {"path": str(dst), "episodes": total, "frames": frames}


def spec_differences(expected: Embodiment, got: Embodiment) -> list[str]:
    """Each field in which two embodiment specs differ, as 'field: expected vs got'."""
    out = []
    for f in ("control_hz", "action_mode", "gripper"):
        a, b = getattr(expected, f), getattr(got, f)
        if a != b:
            out.append(f"{f}: {a!r} vs {b!r}")
    for what in ("state", "actions"):
        a, b = getattr(expected, what), getattr(got, what)
        if [d.name for d in a] != [d.name for d in b]:
            out.append(f"{what} names: {[d.name for d in a]} vs {[d.name for d in b]}")
            continue
        for f in ("unit", "low", "high"):
            bad = [
                f"{da.name} {getattr(da, f)!r} vs {getattr(db, f)!r}"
                for da, db in zip(a, b)
                if getattr(da, f) != getattr(db, f)
            ]
            if bad:
                more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
                out.append(f"{what} {f} of {len(bad)}/{len(a)} dims: {', '.join(bad[:3])}{more}")
    if expected.cameras != got.cameras:
        cams = [[(c.name, f"{c.height}x{c.width}") for c in e.cameras] for e in (expected, got)]
        out.append(f"cameras: {cams[0]} vs {cams[1]}")
    return out


def _mismatch(name: str, first: str, expected: Embodiment, path: str, got: Embodiment) -> str:
    return (
        f"{path}: cannot merge: embodiment {name!r} differs from the one in {first} (expected there vs got "
        f"here): {'; '.join(spec_differences(expected, got))}. Fix: if it is the same robot, rebuild this store with the "
        f"other's spec (for a LeRobot import: `vla data import-lerobot DIR NEW --embodiment {name}` with the "
        f"built-in name or a TOML file of that spec); if not, import it under another name (--embodiment NEW_NAME)"
    )


def _copy_one(src: EpisodeStore, i: int, w) -> int:
    info = src.info(i)
    out = w.store
    emb = src.embodiments[info.embodiment]
    rows = {k: src.lowdim(info.embodiment, k, info.start, info.end) for k in (STATE, ACTION, TIMESTAMP)}
    if src.env_state_dim(info.embodiment) is not None:
        env = src.lowdim(info.embodiment, ENV_STATE, info.start, info.end)
        if not np.isnan(env).all():  # all NaN: recorded without it, and stays so
            rows[ENV_STATE] = env
    blobs = {}
    for cam in emb.camera_names:
        frames = src.frames(info.embodiment, cam)
        target = out.codec(info.embodiment, cam)
        if target == frames.codec:
            blobs[cam] = frames.blobs(range(info.start, info.end))
        else:
            blobs[cam] = [target.encode(img) for img in frames.read(range(info.start, info.end))]
    w.add_encoded_episode(rows, blobs, task=info.task, success=info.success, source=info.source)
    return info.length


# ---- the edits ----
def keep_episodes(src, dst, flt: EpisodeFilter, *, progress: bool = False) -> dict:
    """A new store with only the episodes that match `flt`."""
    if flt.empty:
        raise SpecError("keep: say which episodes (indices, tasks or success)")
    s = _open(src)
    picked = flt.matches(s)
    if not picked:
        raise SpecError(f"{s.path}: no episode matches {flt}")
    return copy_episodes([(s, picked)], dst, progress=progress)


def delete_episodes(src, dst, flt: EpisodeFilter, *, progress: bool = False) -> dict:
    """A new store without the episodes that match `flt`."""
    if flt.empty:
        raise SpecError("delete: say which episodes (indices, tasks or success)")
    s = _open(src)
    drop = set(flt.matches(s))
    rest = [i for i in range(s.num_episodes) if i not in drop]
    if not rest:
        raise SpecError(f"{s.path}: deleting {len(drop)} episodes would leave none")
    return copy_episodes([(s, rest)], dst, progress=progress)


def merge_stores(srcs: Sequence, dst, *, progress: bool = False) -> dict:
    """One store with every episode of each source, in order. An embodiment present in several
    sources must have the same spec in each."""
    stores = [_open(s) for s in srcs]
    if len(stores) < 2:
        raise SpecError("merge: give at least two stores")
    return copy_episodes([(s, range(s.num_episodes)) for s in stores], dst, progress=progress)


def split_store(src, train_dst, val_dst, *, val_fraction: float = 0.1, seed: int = 0, progress: bool = False) -> dict:
    """Two new stores: a random `val_fraction` of the episodes (at least one) and the rest."""
    if not 0.0 < val_fraction < 1.0:
        raise SpecError(f"val_fraction must be in (0, 1), got {val_fraction}")
    s = _open(src)
    if s.num_episodes < 2:
        raise SpecError(f"{s.path}: needs at least 2 episodes to split, has {s.num_episodes}")
    n_val = min(max(1, round(val_fraction * s.num_episodes)), s.num_episodes - 1)
    order = np.random.default_rng(seed).permutation(s.num_episodes)
    val = sorted(int(i) for i in order[:n_val])
    train = sorted(int(i) for i in order[n_val:])
    for d in (train_dst, val_dst):
        remote.check_new_store(d, "split")
    a = copy_episodes([(s, train)], train_dst, progress=progress)
    try:
        b = copy_episodes([(s, val)], val_dst, progress=progress)
    except BaseException:
        remote.remove(train_dst)  # both or neither
        raise
    return {"train": a, "val": {**b, "episodes_from_source": val}}


def migrate_store(src, dst, *, codec: str | None = None, progress: bool = False) -> dict:
    """Rewrite a store (e.g. a version-1 store: one file per frame) in the current format.
    Lossless frames are copied as they are; codec= re-encodes every camera."""
    s = _open(src)
    r = copy_episodes([(s, range(s.num_episodes))], dst, codec=codec, progress=progress)
    return {**r, "from_version": s.version}
