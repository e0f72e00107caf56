"""Episode store: episodes of one or several embodiments in one zarr v3 group.

Layout (diffusion-policy replay buffer, extended to several embodiments):

    zarr.json                       attrs: format, version, embodiments, num_episodes, num_frames
    meta/episode_ends               int64 [e]  exclusive end of each episode in the global frame index
    meta/episode_embodiment         str   [e]
    meta/episode_task               str   [e]  the language instruction
    meta/episode_success            int8  [e]  1 success, 0 failure, -1 unknown (e.g. imported teleop)
    meta/episode_source             str   [e]  where it came from ("sim:arm7-reach", "lerobot:<dir>")
    <embodiment>/observation/state  float32 [t, s]   indexed by global frame index; only the frames
    <embodiment>/action             float32 [t, a]   of this embodiment's episodes are written
    <embodiment>/timestamp          float32 [t]
    <embodiment>/observation/environment_state  float32 [t, d]  optional (vla.spec.ENV_STATE): training-
                                    only scene facts; made by the first episode that has them, NaN rows
                                    for the embodiment's episodes without them (earlier ones included)
    <embodiment>/observation/images/<cam>  uint8 [t, H, W, 3] in shard files of 1,024 frames, each
                                    frame encoded by the camera's codec (vla.data.frame_files)

Each camera has a codec, recorded in its array's attributes and chosen when the embodiment is
added (`codecs=`): lossless (default, for sim renders) or jpeg with a quality (camera data);
see vla.data.codecs. Version-1 stores (one lossless file per frame) open read-only; `vla data
migrate` rewrites them as version 2.

Commit protocol (crash safety): a writer first writes an episode's frames, then its meta
entries, and last rewrites the root attrs with the new `num_episodes`/`num_frames` (one atomic
file replace on local disk, one PUT on object stores). Readers trust only the committed count,
so a writer killed at any point loses at most the episode it was writing; whatever it left
past the committed end is overwritten by the next writer.

The same holds on object storage, which has no rename and no append: every write above is one
whole object (a shard object is rewritten with the committed frames' bytes unchanged, a low-dim
chunk with its committed rows unchanged), and S3 reads and lists are strongly consistent, so
the root zarr.json PUT is the commit point there too. One writer per store: an OS lock on local
disk, a lease object on S3 (vla.data.remote). The root attrs carry a `uid` made at creation: the
key of the local read cache (vla.data.cache), so a store made again at the same URL never reads
the old one's copies. Stores being built by an edit or import on object storage carry an
`unfinished` mark until their last write; `open` refuses them.
"""

from __future__ import annotations

import logging
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from vla.data import remote
from vla.data.cache import store_cache_dir
from vla.data.codecs import ImageCodec
from vla.data.frame_files import FrameFiles, LegacyFrames, StoreError, image_array_kwargs
from vla.spec import ACTION, ENV_STATE, STATE, TIMESTAMP, Embodiment, SpecError, image_key

if TYPE_CHECKING:
    from vla.data.writer import EpisodeWriter

log = logging.getLogger(__name__)

FORMAT = "vla-episode-store"
VERSION = 2
LEGACY_VERSIONS = (1,)  # readable, not appendable: migrate them
META_KEYS = ("episode_ends", "episode_embodiment", "episode_task", "episode_success", "episode_source")
LOWDIM_CHUNK = 4096


def _lowdim_kwargs(fill_value=None) -> dict:
    kw = dict(dtype="float32", compressors=[BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=4)])
    if fill_value is not None:
        kw["fill_value"] = fill_value
    return kw


@dataclass(frozen=True)
class EpisodeInfo:
    index: int
    embodiment: str
    task: str
    success: bool | None
    source: str
    start: int  # global frame index
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start


_is_url = remote.is_url


def _open_group(path, mode: str) -> zarr.Group:
    if _is_url(path):
        return zarr.open_group(str(path), mode=mode, zarr_format=3, storage_options=remote.storage_options(path))
    return zarr.open_group(str(path), mode=mode, zarr_format=3)


class EpisodeStore:
    """A crash-safe, append-only store of episodes. See the module docstring for the layout."""

    def __init__(self, group: zarr.Group, path: str, *, cache: bool | Path = True):
        self._g = group
        self.path = path
        self._use_cache = cache
        self._pid = os.getpid()
        attrs = dict(group.attrs)
        if attrs.get("format") != FORMAT:
            raise StoreError(f"{path}: not a vla episode store (root attrs have format={attrs.get('format')!r})")
        self.version = attrs.get("version")
        if self.version not in (VERSION, *LEGACY_VERSIONS):
            raise StoreError(f"{path}: store version {self.version} not supported (expected {VERSION})")
        if self.version != VERSION and not group.read_only:
            raise StoreError(
                f"{path}: store version {self.version} was written by an older vla (one file per frame); "
                f"it opens read-only: migrate it with `vla data migrate {path} NEW_PATH`"
            )
        self._attrs = attrs
        self.embodiments: dict[str, Embodiment] = {
            name: Embodiment.from_dict(d) for name, d in attrs.get("embodiments", {}).items()
        }
        self._load_meta()
        self._frames: dict[tuple[str, str], FrameFiles | LegacyFrames] = {}
        self._lowdim: dict[tuple[str, str], np.ndarray] = {}  # committed prefix of each low-dim array
        self._env_dims: dict[str, int | None] = {}

    # ---- construction ----
    @classmethod
    def create(
        cls, path, embodiments=(), *, exist_ok: bool = False, codecs=None, unfinished: str | None = None
    ) -> "EpisodeStore":
        """Create an empty store at a local path or fsspec URL. codecs: see add_embodiment.
        exist_ok: open an existing store instead (never anything else that is there).
        unfinished: mark it as being built (vla.data.remote.new_store); `finish` removes the mark."""
        path = str(path).rstrip("/") if _is_url(path) else str(path)
        if _is_url(path):
            there = remote.url_entries(path)
            if there:  # zarr's mode "w" would delete whatever is under the prefix
                if exist_ok and "zarr.json" in there:
                    return cls.open(path, mode="a")
                raise StoreError(
                    f"{path}: already holds {len(there)} entr{'y' if len(there) == 1 else 'ies'} "
                    f"({', '.join(sorted(there)[:3])}{', ...' if len(there) > 3 else ''}); pick a new URL"
                    + ("" if exist_ok else " or open it")
                )
        else:
            p = Path(path)
            if p.exists() and any(p.iterdir()):
                if not exist_ok:
                    raise StoreError(f"{path}: already exists and is not empty; pick a new path or open it")
                return cls.open(path, mode="a")
        g = _open_group(path, mode="w")
        attrs = {"format": FORMAT, "version": VERSION, "embodiments": {}, "num_episodes": 0, "num_frames": 0}
        attrs["uid"] = uuid.uuid4().hex
        if unfinished:
            attrs["unfinished"] = unfinished
        g.attrs.put(attrs)
        meta = g.require_group("meta")
        arrays = [
            ("episode_ends", dict(dtype="int64")),
            ("episode_success", dict(dtype="int8", fill_value=-1)),
            *((key, dict(dtype=str)) for key in ("episode_embodiment", "episode_task", "episode_source")),
        ]
        _each(
            path,
            [lambda k=k, kw=kw: meta.create_array(k, shape=(0,), chunks=(LOWDIM_CHUNK,), **kw) for k, kw in arrays],
        )
        store = cls(g, path)
        for emb in embodiments:
            store.add_embodiment(emb, codecs=codecs)
        return store

    @classmethod
    def open(cls, path, mode: str = "r", *, cache: bool | Path = True) -> "EpisodeStore":
        """Open an existing store ('r' read-only, 'a' to append). cache: on object storage, read
        frames through the local cache (vla.data.cache; VLA_CACHE=off turns it off everywhere);
        False: one ranged GET per frame; a folder: a cache root of the caller's instead of VLA_CACHE."""
        if _is_url(path):
            path = str(path).rstrip("/")
            if not remote.url_exists(remote.join(path, "zarr.json")):
                why = "nothing there" if not remote.url_entries(path) else "no zarr.json under it"
                raise StoreError(f"{path}: not an episode store ({why})")
        else:
            path = str(path)
            if not (Path(path) / "zarr.json").exists():
                why = "does not exist" if not Path(path).exists() else "has no zarr.json"
                if (Path(path) / "meta" / "info.json").is_file():
                    why += "; it is a LeRobot dataset: `vla data import-lerobot DIR STORE` makes a store of it"
                raise StoreError(f"{path}: not an episode store ({why})")
        try:
            g = _open_group(path, mode="r" if mode == "r" else "r+")
        except Exception as e:  # zarr raises several types for unreadable metadata
            raise StoreError(f"{path}: cannot open as a zarr v3 group: {e}") from None
        what = dict(g.attrs).get("unfinished")
        if what:
            raise StoreError(
                f"{path}: an unfinished store (the {what} writing it stopped before the end); run the {what} "
                "again to replace it, or delete it"
            )
        return cls(g, path, cache=cache)

    def finish(self) -> None:
        """Remove the `unfinished` mark (one write of the root attrs): the store can now be opened."""
        if self._attrs.get("unfinished"):
            new = {k: v for k, v in self._attrs.items() if k != "unfinished"}
            self._g.attrs.put(new)
            self._attrs = new

    def add_embodiment(self, emb: Embodiment, codecs=None) -> None:
        """Register an embodiment (idempotent for an identical spec). codecs: the image codec of its
        cameras: None (lossless), one codec for all ("jpeg:80", ImageCodec) or {camera: codec}."""
        per_cam = _codecs_for(emb, codecs)
        if emb.name in self.embodiments:
            if self.embodiments[emb.name] != emb:
                raise StoreError(f"{self.path}: embodiment {emb.name!r} already registered with a different spec")
            return
        if emb.name == "meta":
            raise SpecError("embodiment name 'meta' is reserved by the store layout")
        eg = self._g.require_group(emb.name)
        if emb.cameras:
            eg.require_group("observation").require_group("images")
        lowdim = _lowdim_kwargs()
        arrays = [
            (STATE, dict(shape=(0, emb.state_dim), chunks=(LOWDIM_CHUNK, emb.state_dim), **lowdim)),
            (ACTION, dict(shape=(0, emb.action_dim), chunks=(LOWDIM_CHUNK, emb.action_dim), **lowdim)),
            (TIMESTAMP, dict(shape=(0,), chunks=(LOWDIM_CHUNK,), **lowdim)),
            *(
                (image_key(cam.name), image_array_kwargs(cam.height, cam.width, per_cam[cam.name]))
                for cam in emb.cameras
            ),
        ]
        _each(self.path, [lambda k=k, kw=kw: eg.create_array(k, **kw) for k, kw in arrays])
        embs = dict(self._attrs["embodiments"])
        embs[emb.name] = emb.to_dict()
        self._set_attrs(embodiments=embs)
        self.embodiments[emb.name] = emb

    def notes(self) -> dict:
        """Small JSON facts a tool keeps with the store (`vla collect`: the next seed per task)."""
        return dict(self._attrs.get("notes", {}))

    def set_note(self, key: str, value) -> None:
        """Record one note (JSON-able) in the root attributes (one atomic write)."""
        self._set_attrs(notes={**self.notes(), key: value})

    def _set_attrs(self, **changes) -> None:
        new = {**self._attrs, **changes}
        self._g.attrs.put(new)  # one atomic write of the root zarr.json
        self._attrs = new

    # ---- metadata ----
    def _load_meta(self) -> None:
        n = int(self._attrs.get("num_episodes", 0))
        try:
            meta = self._g["meta"]
            if _is_url(self.path) and n:  # five arrays, two round trips each: at once
                with ThreadPoolExecutor(len(META_KEYS)) as pool:
                    cols = dict(zip(META_KEYS, pool.map(lambda k: meta[k][:n], META_KEYS)))
            else:
                cols = {k: meta[k][:n] if n else np.zeros(0) for k in META_KEYS}
        except KeyError as e:
            raise StoreError(f"{self.path}: store is missing meta array {e}") from None
        except Exception as e:
            raise StoreError(f"{self.path}: cannot read episode metadata: {e}") from None
        for k, v in cols.items():
            if len(v) != n:
                raise StoreError(f"{self.path}: meta/{k} has {len(v)} entries, expected {n} committed episodes")
        ends = np.asarray(cols["episode_ends"], np.int64)
        if n and ends[-1] != self._attrs.get("num_frames"):
            raise StoreError(
                f"{self.path}: meta/episode_ends ends at {ends[-1]}, root says {self._attrs.get('num_frames')} frames"
            )
        self._ends = ends
        self._committed_n, self._committed = -1, {}
        self._starts = np.concatenate([[0], ends[:-1]]).astype(np.int64) if n else np.zeros(0, np.int64)
        self._emb = [str(x) for x in cols["episode_embodiment"]]
        self._task = [str(x) for x in cols["episode_task"]]
        self._success = np.asarray(cols["episode_success"], np.int8) if n else np.zeros(0, np.int8)
        self._source = [str(x) for x in cols["episode_source"]]
        unknown = set(self._emb) - set(self.embodiments)
        if unknown:
            raise StoreError(f"{self.path}: episodes name embodiments {sorted(unknown)} that the store does not define")

    def commit_episode(
        self, embodiment: str, task: str, success: int, source: str, end: int, grow: int = 1024, run=None
    ) -> int:
        """Make the next episode visible; -> its index. Writers call this once the episode's frames
        and low-dim rows [num_frames, end) are on disk. The per-episode meta rows are written
        first (invisible: past num_episodes), then the root attributes in one write: the commit
        point, so a writer killed before it leaves the store as it was. run(jobs): how to run the
        meta writes (the writer runs them at once on object stores); all end before the commit."""
        i = self.num_episodes
        meta = self._g["meta"]
        values = {
            "episode_ends": end,
            "episode_embodiment": embodiment,
            "episode_task": task,
            "episode_success": success,
            "episode_source": source,
        }

        def write(key: str, value) -> None:
            arr = meta[key]
            if arr.shape[0] < i + 1:
                arr.resize((i + grow,))
            arr[i] = value

        jobs = [lambda k=key, v=value: write(k, v) for key, value in values.items()]
        if run is None:
            for job in jobs:
                job()
        else:
            run(jobs)
        uid = {} if self._attrs.get("uid") else {"uid": uuid.uuid4().hex}  # stores made before uids
        self._set_attrs(num_episodes=self.num_episodes + 1, num_frames=end, **uid)
        self._starts = np.append(self._starts, self.num_frames)
        self._ends = np.append(self._ends, end)
        self._emb.append(embodiment)
        self._task.append(task)
        self._success = np.append(self._success, np.int8(success))
        self._source.append(source)
        return i

    def refresh(self) -> None:
        """Re-read the committed state (e.g. after another process appended). The group is
        re-opened: zarr keeps the root metadata it read at open, so re-reading attrs through the
        old handle saw no other writer's commits (and a writer on a stale handle would have
        written over them)."""
        self._g = _open_group(self.path, mode="r" if self._g.read_only else "r+")
        for f in self._frames.values():
            f.close()
        self._frames.clear()
        self._env_dims.clear()
        self._attrs = dict(self._g.attrs)
        self.embodiments = {name: Embodiment.from_dict(d) for name, d in self._attrs.get("embodiments", {}).items()}
        self._load_meta()

    @property
    def num_episodes(self) -> int:
        return len(self._ends)

    @property
    def num_frames(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def tasks(self) -> list[str]:
        return sorted(set(self._task))

    def info(self, i: int) -> EpisodeInfo:
        i = self._check_index(i)
        s = int(self._success[i])
        return EpisodeInfo(
            i,
            self._emb[i],
            self._task[i],
            None if s < 0 else bool(s),
            self._source[i],
            int(self._starts[i]),
            int(self._ends[i]),
        )

    def infos(self) -> list[EpisodeInfo]:
        return [self.info(i) for i in range(self.num_episodes)]

    def _check_index(self, i: int) -> int:
        n = self.num_episodes
        if not -n <= i < n:
            raise IndexError(f"episode {i} out of range: store {self.path} has {n} episodes")
        return i % n

    # ---- frame data ----
    def _after_fork(self) -> None:
        """In a forked process (a DataLoader worker) a store on object storage opens its group again:
        the parent's HTTP sessions belong to an event loop that does not run here."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            if _is_url(self.path):
                self._g = _open_group(self.path, mode="r" if self._g.read_only else "r+")
                self._frames.clear()  # the parent's: their descriptors and sessions stay unused

    def array(self, embodiment: str, key: str) -> zarr.Array:
        self._after_fork()
        try:
            return self._g[f"{embodiment}/{key}"]
        except KeyError:
            raise StoreError(f"{self.path}: no array {embodiment}/{key}") from None

    def frames(self, embodiment: str, camera: str) -> FrameFiles | LegacyFrames:
        """Frame-level access to one camera: read(frames, size=None), blobs(frames), codec."""
        self._after_fork()
        k = (embodiment, camera)
        if k not in self._frames:
            arr = self.array(embodiment, image_key(camera))
            if self.version != VERSION:
                self._frames[k] = LegacyFrames(arr, camera)
            else:
                cache = self.cache_dir()
                self._frames[k] = FrameFiles(
                    arr,
                    camera,
                    cache_dir=None if cache is None else cache / embodiment / camera,
                    committed=lambda: self.committed_end(embodiment),
                    source=self.path,
                )
        return self._frames[k]

    def cache_dir(self) -> Path | None:
        """Local read cache of this store's shard objects (object storage only; vla.data.cache)."""
        if not (_is_url(self.path) and self._use_cache) or remote.scheme(self.path) in ("memory", "file"):
            return None
        root = None if self._use_cache is True else Path(self._use_cache)
        return store_cache_dir(self.path, self._attrs.get("uid"), root)

    def codec(self, embodiment: str, camera: str) -> ImageCodec:
        return self.frames(embodiment, camera).codec

    def lowdim(self, embodiment: str, key: str, start: int, end: int) -> np.ndarray:
        """Frames [start, end) of a low-dim array (a copy). The committed part of each array is read
        once and kept: committed frames never change, and one read of a whole array is far faster
        than thousands of per-episode slices (35 s -> under 1 s for 4,000 episodes)."""
        cached = self._lowdim.get((embodiment, key))
        if cached is None or cached.shape[0] < end:
            arr = self.array(embodiment, key)
            if arr.shape[0] < end:
                raise StoreError(
                    f"{self.path}: {embodiment}/{key} has {arr.shape[0]} frames, need {end} (store corrupt?)"
                )
            committed = self.committed_end(embodiment)
            if end > committed:  # not (yet) committed: read it, keep nothing
                return arr[start:end]
            cached = self._lowdim[(embodiment, key)] = arr[:committed]
        return cached[start:end].copy()

    def env_state_dim(self, embodiment: str) -> int | None:
        """Dim d of the embodiment's ENV_STATE array (training-only scene facts), None when it has none.
        Rows of episodes recorded without it are NaN."""
        if embodiment not in self._env_dims:
            path = f"{embodiment}/{ENV_STATE}"
            self._env_dims[embodiment] = int(self._g[path].shape[1]) if path in self._g else None
        return self._env_dims[embodiment]

    def create_env_state(self, embodiment: str, dim: int) -> zarr.Array:
        """Make the embodiment's ENV_STATE array, float32 [num_frames, dim], NaN where never written.
        The writer (vla.data.writer) calls it on the first episode that carries ENV_STATE, before
        that episode's commit; undone by drop_env_state if the commit fails. It covers the frames
        already committed (NaN: they have none), so a writer killed before its commit leaves a
        store whose episodes still read."""
        eg = self._g[embodiment]
        shape = (self.num_frames, dim)
        arr = eg.create_array(ENV_STATE, shape=shape, chunks=(LOWDIM_CHUNK, dim), **_lowdim_kwargs(np.nan))
        self._env_dims[embodiment] = dim
        return arr

    def drop_env_state(self, embodiment: str) -> None:
        """Undo create_env_state: delete the embodiment's ENV_STATE array (the writer, when the
        first commit that carries it fails). Only for an array no committed episode uses."""
        del self._g[embodiment][ENV_STATE]
        self._env_dims.pop(embodiment, None)
        self._lowdim.pop((embodiment, ENV_STATE), None)

    def lowdim_keys(self, embodiment: str) -> tuple[str, ...]:
        """The embodiment's low-dim frame keys: STATE, ACTION, TIMESTAMP and ENV_STATE when it has one."""
        keys = (STATE, ACTION, TIMESTAMP)
        return keys + (ENV_STATE,) if self.env_state_dim(embodiment) is not None else keys

    def episode(self, i: int, *, images: bool = True, image_size: tuple[int, int] | None = None) -> dict:
        """Episode i as {frame key: array [t, ...]} plus task, embodiment, success, source.
        ENV_STATE [t, d] is there when the embodiment has one (NaN rows: this episode has none).
        image_size=(h, w): frames resized as the loader does (vla.data.resize)."""
        info = self.info(i)
        emb = self.embodiments[info.embodiment]
        out = {
            key: self.lowdim(info.embodiment, key, info.start, info.end) for key in self.lowdim_keys(info.embodiment)
        }
        if images:
            for cam in emb.camera_names:
                out[image_key(cam)] = self.frames(info.embodiment, cam).read(range(info.start, info.end), image_size)
        out.update(task=info.task, embodiment=info.embodiment, success=info.success, source=info.source)
        return out

    def __iter__(self) -> Iterator[dict]:
        for i in range(self.num_episodes):
            yield self.episode(i)

    def __len__(self) -> int:
        return self.num_episodes

    def summary(self) -> dict:
        """Plain-data description: counts, embodiments, tasks, per-key shapes."""
        per_emb = {}
        for name, emb in self.embodiments.items():
            idx = [i for i, e in enumerate(self._emb) if e == name]
            per_emb[name] = {
                "episodes": len(idx),
                "frames": int(sum(self._ends[i] - self._starts[i] for i in idx)),
                "control_hz": emb.control_hz,
                "action_mode": emb.action_mode,
                "keys": {k: {"shape": list(s), "dtype": d} for k, (s, d) in emb.frame_shapes().items()},
                **({"env_state_dim": self.env_state_dim(name)} if self.env_state_dim(name) is not None else {}),
                "codecs": {cam: str(self.codec(name, cam)) for cam in emb.camera_names},
            }
        tasks = {}
        for t in self._task:
            tasks[t] = tasks.get(t, 0) + 1
        succ = self._success
        return {
            "path": self.path,
            "episodes": self.num_episodes,
            "frames": self.num_frames,
            "embodiments": per_emb,
            "tasks": tasks,
            "success": {"yes": int((succ == 1).sum()), "no": int((succ == 0).sum()), "unknown": int((succ < 0).sum())},
            "sources": sorted(set(self._source)),
            "format_version": self.version,
        }

    def writer(self, embodiment: str | None = None, *, source: str = "") -> EpisodeWriter:
        from vla.data.writer import EpisodeWriter

        if self._g.read_only:
            raise StoreError(f"{self.path}: opened read-only; use EpisodeStore.open(path, mode='a') to append")
        if self.version != VERSION:
            raise StoreError(f"{self.path}: version-{self.version} store; migrate it with `vla data migrate`")
        if embodiment is None:
            if len(self.embodiments) != 1:
                raise StoreError(f"{self.path}: name the embodiment to write, one of {sorted(self.embodiments)}")
            embodiment = next(iter(self.embodiments))
        if embodiment not in self.embodiments:
            raise StoreError(f"{self.path}: unknown embodiment {embodiment!r}; store has {sorted(self.embodiments)}")
        return EpisodeWriter(self, self.embodiments[embodiment], source=source)

    def committed_end(self, embodiment: str) -> int:
        """End (exclusive global frame index) of the last committed episode of one embodiment."""
        if self._committed_n != len(self._ends):  # a commit or a re-read since
            self._committed_n, self._committed = len(self._ends), {}
        if embodiment not in self._committed:
            ends = (int(self._ends[i]) for i, e in enumerate(self._emb) if e == embodiment)
            self._committed[embodiment] = max(ends, default=0)
        return self._committed[embodiment]

    def __repr__(self) -> str:
        return (
            f"EpisodeStore({self.path!r}, episodes={self.num_episodes}, frames={self.num_frames}, "
            f"embodiments={sorted(self.embodiments)})"
        )


def _each(path: str, jobs: list) -> None:
    """Run metadata writes: at once on object stores (a round trip each), in order on local disk."""
    if not _is_url(path):
        for job in jobs:
            job()
        return
    with ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(job) for job in jobs]:
            f.result()


def _codecs_for(emb: Embodiment, codecs) -> dict[str, ImageCodec]:
    if codecs is None or isinstance(codecs, (str, ImageCodec)):
        one = ImageCodec.parse(codecs or "lossless")
        return {c: one for c in emb.camera_names}
    if not isinstance(codecs, dict):
        raise StoreError(f"codecs must be a codec name or {{camera: codec}}, got {codecs!r}")
    unknown = sorted(set(codecs) - set(emb.camera_names))
    if unknown:
        raise StoreError(
            f"codecs name cameras {unknown} that embodiment {emb.name!r} does not have "
            f"(cameras: {list(emb.camera_names)})"
        )
    return {c: ImageCodec.parse(codecs.get(c, "lossless")) for c in emb.camera_names}
