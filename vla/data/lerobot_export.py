"""Export an episode store (one embodiment) to a LeRobot v3.0 dataset folder.

Writes what LeRobot 0.4's `LeRobotDataset(repo_id, root=DIR)` reads: meta/info.json,
meta/stats.json, meta/tasks.parquet (task string as the pandas index), meta/episodes/...
(per-episode file pointers and stats), data/chunk-000/file-XXX.parquet and, per camera,
videos/<key>/chunk-000/file-XXX.mp4 (AV1, yuv420p, as LeRobot encodes) or, for cameras too
small for the encoder, PNG frames inside the parquet (feature dtype "image"). ENV_STATE, when the
store has it, becomes `observation.environment_state` (NaN rows for episodes without it; their
stats count 0 frames). Files roll
over at LeRobot's default caps (100 MB data, 200 MB video). Written to a temporary folder
and renamed at the end.

What LeRobot's features cannot say travels in fields its loader ignores (LeRobotDataset 0.4.4
loads such a folder unchanged, README "Bring your own LeRobot data"), so that `import_lerobot` gives the
same store back: the whole Embodiment spec (units, limits, action mode, gripper convention,
description) under `info.json["vla"]["embodiment"]`, and each episode's success flag (true,
false or null) in a `vla/success` column of meta/episodes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vla.data.frame_files import StoreError
from vla.data.store import EpisodeStore
from vla.data.video import VideoWriter, encode_png, video_codec_for
from vla.spec import ACTION, ENV_STATE, ENV_STATE_LAYOUT, STATE, image_key

DATA_CAP_MB, VIDEO_CAP_MB, CHUNKS_SIZE = 100, 200, 1000
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
LR_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
LR_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
LR_ENV_STATE = "observation.environment_state"
VLA_INFO_KEY = "vla"  # info.json: {"embodiment": Embodiment.to_dict()}
VLA_SUCCESS = "vla/success"  # meta/episodes column: bool, null when unknown


def env_state_names(dim: int) -> list[str]:
    return list(ENV_STATE_LAYOUT) if dim == len(ENV_STATE_LAYOUT) else [f"env_state_{i}" for i in range(dim)]


def _stats(x: np.ndarray) -> dict:
    """LeRobot per-feature stats of x [n, ...] over axis 0."""
    raw = np.asarray(x)
    x = raw.astype(np.float64)
    # Integer features keep integer min/max, as LeRobot writes them.
    out = {"min": raw.min(0), "max": raw.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}
    for name, q in QUANTILES.items():
        out[name] = np.quantile(x, q, axis=0)
    return out


def _finite_stats(x: np.ndarray) -> dict:
    """_stats over the rows of x [n, d] without NaN; all NaN: NaN stats with count 0 (left out by _aggregate)."""
    x = x[np.isfinite(x).all(axis=1)]
    if len(x):
        return _stats(x)
    nan = np.full(x.shape[1], np.nan)
    return {**{k: nan for k in ("min", "max", "mean", "std", *QUANTILES)}, "count": np.array([0])}


def _image_stats(imgs: np.ndarray) -> dict:
    """Per-channel stats of uint8 [n, H, W, 3] frames, scaled to [0, 1], shaped (3, 1, 1) like LeRobot.
    Sampled as LeRobot samples them: up to ~n**0.75 frames (at least 100), evenly spaced, and frames
    of 300 px or more strided down to ~150 px (exact quantiles of every pixel of 480x640 video took
    ~50 ms per frame)."""
    n = len(imgs)
    k = min(n, max(100, int(n**0.75)))
    sel = imgs[np.round(np.linspace(0, n - 1, k)).astype(int)]
    h, w = sel.shape[1:3]
    if max(h, w) >= 300:
        step = int(max(h, w) / 150)
        sel = sel[:, ::step, ::step]
    x = sel.reshape(-1, 3).astype(np.float64) / 255.0
    s = _stats(x)
    return {k: (v.reshape(3, 1, 1) if k != "count" else np.array([n])) for k, v in s.items()}


def _aggregate(per_episode: list[dict]) -> dict:
    """Weighted merge of per-episode stats (quantiles: count-weighted mean, as LeRobot does)."""
    per_episode = [s for s in per_episode if s["count"][0] > 0] or per_episode[:1]
    counts = np.array([float(s["count"][0]) for s in per_episode])
    w = counts / counts.sum()
    mean = sum(wi * s["mean"] for wi, s in zip(w, per_episode))
    var = sum(wi * (s["std"] ** 2 + (s["mean"] - mean) ** 2) for wi, s in zip(w, per_episode))
    out = {
        "min": np.min([s["min"] for s in per_episode], 0),
        "max": np.max([s["max"] for s in per_episode], 0),
        "mean": mean,
        "std": np.sqrt(var),
        "count": np.array([int(counts.sum())]),
    }
    for name in QUANTILES:
        out[name] = sum(wi * s[name] for wi, s in zip(w, per_episode))
    return out


def _tolist(d: dict) -> dict:
    return {k: np.asarray(v).tolist() for k, v in d.items()}


def _hf_features(emb, image_cams, env_dim: int | None) -> dict:
    def seq(n):
        return {"feature": {"dtype": "float32", "_type": "Value"}, "length": n, "_type": "List"}

    feats = {f"observation.images.{c}": {"_type": "Image"} for c in image_cams}
    feats.update(
        {
            "observation.state": seq(emb.state_dim),
            **({LR_ENV_STATE: seq(env_dim)} if env_dim else {}),
            "action": seq(emb.action_dim),
            "timestamp": {"dtype": "float32", "_type": "Value"},
        }
    )
    for k in ("frame_index", "episode_index", "index", "task_index"):
        feats[k] = {"dtype": "int64", "_type": "Value"}
    return feats


class _DataFiles:
    """data/chunk-000/file-XXX.parquet: one episode's frames table at a time, rolled over past DATA_CAP_MB."""

    def __init__(self, root: Path, hf_meta: dict):
        self.root, self.hf_meta = root, hf_meta
        self.file, self.writer, self.bytes = 0, None, 0

    def write(self, table: pa.Table) -> int:
        """-> the index of the file the table went to."""
        if self.writer is not None and self.bytes > DATA_CAP_MB * 1e6:
            self.writer.close()
            self.writer, self.file, self.bytes = None, self.file + 1, 0
        if self.writer is None:
            path = self.root / LR_DATA_PATH.format(chunk_index=0, file_index=self.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(path, table.schema.with_metadata(self.hf_meta))
        self.writer.write_table(table.replace_schema_metadata(self.hf_meta))
        self.bytes += table.nbytes
        return self.file

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class _VideoFiles:
    """One camera's videos/<key>/chunk-000/file-XXX.mp4: episodes appended, rolled over past VIDEO_CAP_MB."""

    def __init__(self, root: Path, cam, fps: int, codec: str):
        self.root, self.cam, self.fps, self.codec = root, cam, fps, codec
        self.key = f"observation.images.{cam.name}"
        self.file, self.writer, self.frames, self.bytes, self.path = 0, None, 0, 0, None

    def add(self, frames: np.ndarray, n: int) -> dict:
        """Append one episode's n frames; -> its meta/episodes columns (file and time span in it)."""
        if self.writer is not None and self.bytes > VIDEO_CAP_MB * 1e6:
            self.writer.close()
            self.writer, self.file, self.frames, self.bytes = None, self.file + 1, 0, 0
        if self.writer is None:
            path = self.root / LR_VIDEO_PATH.format(video_key=self.key, chunk_index=0, file_index=self.file)
            self.writer = VideoWriter(path, self.fps, self.cam.height, self.cam.width, self.codec)
            self.path = path
        start = self.frames / self.fps
        self.writer.add(frames)
        self.frames += n
        self.bytes = self.path.stat().st_size if self.path.exists() else 0
        return {
            f"videos/{self.key}/chunk_index": 0,
            f"videos/{self.key}/file_index": self.file,
            f"videos/{self.key}/from_timestamp": start,
            f"videos/{self.key}/to_timestamp": start + n / self.fps,
        }

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _pick_embodiment(store: EpisodeStore, embodiment: str | None):
    """The one embodiment to export (a LeRobot dataset has one robot) -> (its name, Embodiment, its episodes)."""
    if embodiment is None:
        if len(store.embodiments) != 1:
            raise StoreError(
                f"{store.path}: holds {sorted(store.embodiments)}; a LeRobot dataset has one robot, pass --embodiment"
            )
        embodiment = next(iter(store.embodiments))
    if embodiment not in store.embodiments:
        raise StoreError(f"{store.path}: no embodiment {embodiment!r}; have {sorted(store.embodiments)}")
    emb = store.embodiments[embodiment]
    infos = [i for i in store.infos() if i.embodiment == embodiment]
    if not infos:
        raise StoreError(f"{store.path}: no episodes of embodiment {embodiment!r}")
    return embodiment, emb, infos


def _video_codecs(emb, images: str) -> dict:
    """Camera name -> video codec, None for a camera stored as PNG frames in the parquet."""
    codecs = {}
    for cam in emb.cameras:
        codec = video_codec_for(cam.height, cam.width)
        if images == "video" and codec is None:
            raise StoreError(
                f"camera {cam.name!r} {cam.height}x{cam.width} is too small or odd-sized for video; use --images image"
            )
        codecs[cam.name] = None if images == "image" else codec
    return codecs


def _frames_table(ep: dict, emb, image_cams, env_dim, fps: int, n: int, ep_i: int, first: int, task_i: int):
    """One episode's rows of data/*.parquet; `first` is its first frame's dataset-wide index."""
    cols = {
        "observation.state": pa.FixedSizeListArray.from_arrays(
            pa.array(ep[STATE].reshape(-1), pa.float32()), emb.state_dim
        ),
        **(
            {
                LR_ENV_STATE: pa.FixedSizeListArray.from_arrays(
                    pa.array(ep[ENV_STATE].reshape(-1), pa.float32()), env_dim
                )
            }
            if env_dim
            else {}
        ),
        "action": pa.FixedSizeListArray.from_arrays(pa.array(ep[ACTION].reshape(-1), pa.float32()), emb.action_dim),
        # Timestamps restart at 0 each episode and follow the frame rate, as LeRobot checks.
        "timestamp": pa.array(np.arange(n, dtype=np.float32) / fps, pa.float32()),
        "frame_index": pa.array(np.arange(n), pa.int64()),
        "episode_index": pa.array(np.full(n, ep_i), pa.int64()),
        "index": pa.array(np.arange(first, first + n), pa.int64()),
        "task_index": pa.array(np.full(n, task_i), pa.int64()),
    }
    for c in image_cams:
        cols[f"observation.images.{c}"] = pa.array(
            [{"bytes": encode_png(img), "path": f"frame-{j:06d}.png"} for j, img in enumerate(ep[image_key(c)])],
            pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
        )
    order = [f"observation.images.{c}" for c in image_cams] + list(cols)[: len(cols) - len(image_cams)]
    return pa.table({k: cols[k] for k in order})


def _episode_stats(ep: dict, emb, env_dim, fps: int, n: int, ep_i: int, first: int, task_i: int) -> dict:
    """LeRobot's per-episode stats of every feature (meta/episodes columns; merged into meta/stats.json)."""
    st = {
        "observation.state": _stats(ep[STATE]),
        **({LR_ENV_STATE: _finite_stats(ep[ENV_STATE])} if env_dim else {}),
        "action": _stats(ep[ACTION]),
        "timestamp": _stats(np.arange(n, dtype=np.float64)[:, None] / fps),
        "frame_index": _stats(np.arange(n)[:, None]),
        "episode_index": _stats(np.full((n, 1), ep_i)),
        "index": _stats(np.arange(first, first + n)[:, None]),
        "task_index": _stats(np.full((n, 1), task_i)),
    }
    for c in emb.camera_names:
        st[f"observation.images.{c}"] = _image_stats(ep[image_key(c)])
    return st


def export_lerobot(
    store_path: str | Path,
    dst: str | Path,
    *,
    embodiment: str | None = None,
    robot_type: str | None = None,
    images: str = "auto",
    env_state: bool = True,
    progress: bool = True,
) -> dict:
    """images: 'auto' (video where the codec allows, else PNG), 'video' or 'image'.
    env_state: export the training-only scene facts as `observation.environment_state` (LeRobot's
    policies take that feature as an input at inference, so a comparison that must not give them
    the simulator's facts leaves it out)."""
    from tqdm import tqdm

    store = EpisodeStore.open(store_path)
    dst = Path(dst)
    if dst.exists():
        raise StoreError(f"{dst}: already exists; export writes a new folder")
    embodiment, emb, infos = _pick_embodiment(store, embodiment)
    fps = emb.control_hz
    if abs(fps - round(fps)) > 1e-6:
        raise StoreError(f"LeRobot needs an integer fps; embodiment {emb.name!r} runs at {fps} Hz")
    fps = int(round(fps))
    codecs = _video_codecs(emb, images)
    video_cams = [c for c in emb.camera_names if codecs[c]]
    image_cams = [c for c in emb.camera_names if not codecs[c]]
    env_dim = store.env_state_dim(embodiment) if env_state else 0
    task_list = sorted({i.task for i in infos})
    task_index = {t: k for k, t in enumerate(task_list)}

    tmp = dst.with_name(dst.name + ".exporting")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        hf_meta = {b"huggingface": json.dumps({"info": {"features": _hf_features(emb, image_cams, env_dim)}}).encode()}
        data = _DataFiles(tmp, hf_meta)
        videos = [_VideoFiles(tmp, cam, fps, codecs[cam.name]) for cam in emb.cameras if cam.name in video_cams]
        ep_rows, ep_stats, global_index = [], [], 0
        for new_i, info in enumerate(tqdm(infos, desc=f"export {emb.name}", unit="ep", disable=not progress)):
            ep, n, task_i = store.episode(info.index), info.length, task_index[info.task]
            row = {"episode_index": new_i, "tasks": [info.task], "length": n, VLA_SUCCESS: info.success}
            table = _frames_table(ep, emb, image_cams, env_dim, fps, n, new_i, global_index, task_i)
            row.update(
                {
                    "data/chunk_index": 0,
                    "data/file_index": data.write(table),
                    "dataset_from_index": global_index,
                    "dataset_to_index": global_index + n,
                }
            )
            for v in videos:
                row.update(v.add(ep[image_key(v.cam.name)], n))
            st = _episode_stats(ep, emb, env_dim, fps, n, new_i, global_index, task_i)
            ep_stats.append(st)
            for feat, s in st.items():
                for name, val in s.items():
                    row[f"stats/{feat}/{name}"] = np.asarray(val).tolist()
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
            ep_rows.append(row)
            global_index += n
        data.close()
        for v in videos:
            v.close()
        _write_meta(
            tmp,
            emb,
            robot_type or emb.name,
            fps,
            ep_rows,
            ep_stats,
            task_list,
            global_index,
            video_cams,
            image_cams,
            codecs,
            env_dim,
        )
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"episodes": len(infos), "frames": global_index, "video_cameras": video_cams, "image_cameras": image_cams}


def _write_tasks(path: Path, task_list: list[str]) -> None:
    """meta/tasks.parquet: LeRobot reads it with pandas, the task string being the index."""
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": None,
                "field_name": "__index_level_0__",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    tasks = pa.table(
        {
            "task_index": pa.array(range(len(task_list)), pa.int64()),
            "__index_level_0__": pa.array(task_list, pa.large_string()),
        }
    )
    pq.write_table(tasks.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}), path)


def _features(emb, video_cams, codecs: dict, fps: int, env_dim) -> dict:
    """info.json's features: what LeRobot knows of each column (dtype, shape, names; video encoding)."""
    features = {}
    for c in emb.cameras:
        key = f"observation.images.{c.name}"
        if c.name in video_cams:
            features[key] = {
                "dtype": "video",
                "shape": [c.height, c.width, 3],
                "names": ["height", "width", "channels"],
                "info": {
                    "video.height": c.height,
                    "video.width": c.width,
                    "video.codec": "av1" if codecs[c.name] == "libsvtav1" else "h264",
                    "video.pix_fmt": "yuv420p",
                    "video.is_depth_map": False,
                    "video.fps": fps,
                    "video.channels": 3,
                    "has_audio": False,
                },
            }
        else:
            features[key] = {
                "dtype": "image",
                "shape": [c.height, c.width, 3],
                "names": ["height", "width", "channels"],
            }
    features["observation.state"] = {"dtype": "float32", "shape": [emb.state_dim], "names": [d.name for d in emb.state]}
    if env_dim:
        features[LR_ENV_STATE] = {"dtype": "float32", "shape": [env_dim], "names": env_state_names(env_dim)}
    features["action"] = {"dtype": "float32", "shape": [emb.action_dim], "names": [d.name for d in emb.actions]}
    features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for k in ("frame_index", "episode_index", "index", "task_index"):
        features[k] = {"dtype": "int64", "shape": [1], "names": None}
    return features


def _write_meta(
    root: Path,
    emb,
    robot_type,
    fps,
    ep_rows,
    ep_stats,
    task_list,
    total_frames,
    video_cams,
    image_cams,
    codecs,
    env_dim=None,
) -> None:
    meta = root / "meta"
    (meta / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    ep_table = pa.Table.from_pylist(ep_rows)
    # All-unknown success would infer a null-typed column; keep it boolean so readers see its meaning.
    i = ep_table.column_names.index(VLA_SUCCESS)
    ep_table = ep_table.set_column(i, VLA_SUCCESS, ep_table.column(i).cast(pa.bool_()))
    pq.write_table(ep_table, meta / "episodes" / "chunk-000" / "file-000.parquet")
    _write_tasks(meta / "tasks.parquet", task_list)
    stats = {feat: _tolist(_aggregate([s[feat] for s in ep_stats])) for feat in ep_stats[0]}
    (meta / "stats.json").write_text(json.dumps(stats, indent=4))
    features = _features(emb, video_cams, codecs, fps, env_dim)
    info = {
        "codebase_version": "v3.0",
        "robot_type": robot_type,
        "total_episodes": len(ep_rows),
        "total_frames": total_frames,
        "total_tasks": len(task_list),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_CAP_MB,
        "video_files_size_in_mb": VIDEO_CAP_MB,
        "fps": fps,
        "splits": {"train": f"0:{len(ep_rows)}"},
        "data_path": LR_DATA_PATH,
        "video_path": LR_VIDEO_PATH if video_cams else None,
        "features": features,
        # Ignored by LeRobot; read back by import_lerobot (the spec LeRobot's features cannot hold).
        VLA_INFO_KEY: {"embodiment": emb.to_dict()},
    }
    (meta / "info.json").write_text(json.dumps(info, indent=4))
