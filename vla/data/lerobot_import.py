"""Import LeRobot datasets (format v3.0 and v2.1) into an episode store, without lerobot.

LeRobot layouts read here (see ANCHORS.md):
  v3.0  meta/info.json, meta/tasks.parquet, meta/episodes/chunk-*/file-*.parquet,
        data/chunk-*/file-*.parquet (many episodes per file),
        videos/<key>/chunk-*/file-*.mp4 (many episodes per file, from/to timestamps per episode)
  v2.1  meta/info.json, meta/tasks.jsonl, meta/episodes.jsonl,
        data/chunk-XXX/episode_XXXXXX.parquet, videos/chunk-XXX/<key>/episode_XXXXXX.mp4
Image features are either PNG bytes inside the parquet (dtype "image") or mp4 (dtype "video").

Mapping: `observation.state` -> observation/state, `action` -> action,
`observation.images.<cam>` (or any other image/video feature `observation.<cam>`) ->
observation/images/<cam>, `timestamp` -> timestamp, `observation.environment_state` (when the
dataset has it) -> observation/environment_state (an episode whose rows are all NaN gets none);
the episode's task string -> task.
The import writes into a temporary folder beside the destination and renames it at the end,
so a failed import leaves nothing behind (on object storage, where there is no rename, the store
is built in place and marked unfinished until its last write: vla.data.remote.new_store).

Codecs: video features of 128x128 and up are camera data, stored as JPEG at the smallest quality
whose PSNR against the decoded source video reaches `psnr` (38 dB by default), measured per camera
on a sample of its frames (vla.data.camera_quality); smaller video features (sim renders) and PNG
features are stored lossless. `codec=` sets one codec for every camera instead. The result reports,
per camera, the codec, the PSNR of the stored frames against the decoded source, and the bytes
against the source video's.

A dataset written by `export_lerobot` carries the store's Embodiment spec (info.json "vla") and
success flags (meta/episodes "vla/success"): the import restores both when the spec still matches
the dataset's features, so an export -> import round trip gives the same embodiment back.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from vla.data import camera_quality as cq
from vla.data import remote
from vla.data.codecs import ImageCodec, default_codec
from vla.data.frame_files import StoreError
from vla.data.lerobot_export import VLA_INFO_KEY, VLA_SUCCESS
from vla.data.store import EpisodeStore
from vla.data.video import VideoCursor, decode_png
from vla.resources import load_embodiment
from vla.spec import ACTION, ENV_STATE, STATE, TIMESTAMP, Camera, Dim, Embodiment, SpecError, image_key

log = logging.getLogger(__name__)

SUPPORTED = ("v2.1", "v3.0")
DEFAULT_PSNR_DB = 38.0
LR_STATE, LR_ACTION, LR_ENV_STATE = "observation.state", "action", "observation.environment_state"


class LeRobotFormatError(StoreError):
    """A LeRobot dataset folder is missing files or is not in a format we read."""


@dataclass
class _Episode:
    index: int
    length: int
    tasks: list[str]
    data_file: Path
    rows: tuple[int, int] | None = None  # v3: global [from, to) frame index
    videos: dict[str, tuple[Path, float]] = field(default_factory=dict)  # cam key -> (file, from_timestamp)
    success: bool | None = None  # from a vla export's "vla/success" column; else unknown


def read_info(root: Path) -> dict:
    p = root / "meta" / "info.json"
    if not p.exists():
        raise LeRobotFormatError(f"{root}: not a LeRobot dataset (missing {p})")
    try:
        info = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise LeRobotFormatError(f"{p}: invalid JSON: {e}") from None
    version = info.get("codebase_version")
    if version not in SUPPORTED:
        raise LeRobotFormatError(f"{p}: codebase_version {version!r} is not supported; expected one of {SUPPORTED}")
    for key in ("fps", "features"):
        if key not in info:
            raise LeRobotFormatError(f"{p}: missing required field {key!r}")
    return info


def camera_features(features: dict) -> dict[str, str]:
    """LeRobot image/video feature key -> our camera name."""
    cams = {}
    for key, f in features.items():
        if f.get("dtype") in ("image", "video"):
            name = key.removeprefix("observation.images.").removeprefix("observation.").replace(".", "_")
            cams[key] = name
    return cams


def embodiment_from_info(info: dict, name: str | None) -> Embodiment:
    feats = info["features"]
    for key in (LR_STATE, LR_ACTION):
        if key not in feats:
            raise LeRobotFormatError(f"meta/info.json: feature {key!r} missing; have {sorted(feats)}")

    def dims(key):
        f = feats[key]
        n = int(np.prod(f["shape"]))
        names = f.get("names")
        if isinstance(names, dict):  # older datasets: {"motors": [...]}
            names = next(iter(names.values()), None)
        if not isinstance(names, list) or len(names) != n or not all(isinstance(x, str) for x in names):
            names = [f"{key.split('.')[-1]}_{i}" for i in range(n)]
        return tuple(Dim(str(x)) for x in names)

    cams = []
    for key, cam in camera_features(feats).items():
        shape = feats[key]["shape"]
        names = feats[key].get("names") or ["height", "width", "channels"]
        if list(names)[:1] == ["channels"]:
            c, h, w = shape
        else:
            h, w, c = shape
        if c != 3:
            raise LeRobotFormatError(f"feature {key!r}: only RGB images are supported, got {c} channels")
        cams.append(Camera(cam, int(h), int(w)))
    return Embodiment(
        name=name or str(info.get("robot_type") or "lerobot"),
        state=dims(LR_STATE),
        actions=dims(LR_ACTION),
        cameras=tuple(cams),
        control_hz=float(info["fps"]),
        description=f"imported from LeRobot {info['codebase_version']}",
    )


def stored_embodiment(info: dict, derived: Embodiment, cams: dict[str, str]) -> Embodiment | None:
    """The Embodiment spec a vla export left in info.json, when it still describes the dataset's
    features (same state/action names, camera keys and shapes, fps); else None, with a warning."""
    block = info.get(VLA_INFO_KEY)
    d = block.get("embodiment") if isinstance(block, dict) else None
    if d is None:
        return None
    try:
        emb = Embodiment.from_dict(d)
    except SpecError as e:
        log.warning("meta/info.json %r.embodiment is not a valid spec (%s); using the features only", VLA_INFO_KEY, e)
        return None
    shapes = {key: c.shape for key, c in zip(cams, derived.cameras)}
    problems = []
    for what, ours, theirs in (
        ("state names", [x.name for x in emb.state], [x.name for x in derived.state]),
        ("action names", [x.name for x in emb.actions], [x.name for x in derived.actions]),
        ("cameras", {f"observation.images.{c.name}": c.shape for c in emb.cameras}, shapes),
    ):
        if ours != theirs:
            problems.append(f"{what} {ours} vs features {theirs}")
    if not math.isclose(emb.control_hz, derived.control_hz):
        problems.append(f"control_hz {emb.control_hz} vs fps {derived.control_hz}")
    if problems:
        log.warning(
            "meta/info.json %r.embodiment no longer matches the dataset (%s); using the features only",
            VLA_INFO_KEY,
            "; ".join(problems),
        )
        return None
    return emb


def _read_tasks(root: Path, version: str) -> dict[int, str]:
    if version == "v3.0":
        p = root / "meta" / "tasks.parquet"
        if not p.exists():
            raise LeRobotFormatError(f"{root}: missing {p}")
        t = pq.read_table(p).to_pydict()
        text = t.get("task") or t.get("__index_level_0__")
        if text is None:
            raise LeRobotFormatError(f"{p}: no task column (have {list(t)})")
        return {int(i): str(s) for i, s in zip(t["task_index"], text)}
    p = root / "meta" / "tasks.jsonl"
    if not p.exists():
        raise LeRobotFormatError(f"{root}: missing {p}")
    return {int(d["task_index"]): d["task"] for d in map(json.loads, p.read_text().splitlines()) if d}


def _episodes_v3(root: Path, info: dict, cams: dict[str, str]) -> list[_Episode]:
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise LeRobotFormatError(f"{root}: no meta/episodes/chunk-*/file-*.parquet")
    out = []
    for f in files:
        cols = [c for c in pq.read_schema(f).names if not c.startswith("stats/")]
        for r in pq.read_table(f, columns=cols).to_pylist():
            data_file = root / info["data_path"].format(
                chunk_index=r["data/chunk_index"], file_index=r["data/file_index"]
            )
            ep = _Episode(
                int(r["episode_index"]),
                int(r["length"]),
                list(r["tasks"] or []),
                data_file,
                rows=(int(r["dataset_from_index"]), int(r["dataset_to_index"])),
                success=r.get(VLA_SUCCESS),
            )
            for key in cams:
                if info["features"][key]["dtype"] == "video":
                    vf = root / info["video_path"].format(
                        video_key=key,
                        chunk_index=r[f"videos/{key}/chunk_index"],
                        file_index=r[f"videos/{key}/file_index"],
                    )
                    ep.videos[key] = (vf, float(r[f"videos/{key}/from_timestamp"]))
            out.append(ep)
    return sorted(out, key=lambda e: e.index)


def _episodes_v21(root: Path, info: dict, cams: dict[str, str]) -> list[_Episode]:
    p = root / "meta" / "episodes.jsonl"
    if not p.exists():
        raise LeRobotFormatError(f"{root}: missing {p}")
    chunks = int(info.get("chunks_size", 1000))
    out = []
    for d in map(json.loads, filter(None, p.read_text().splitlines())):
        i = int(d["episode_index"])
        data_file = root / info["data_path"].format(episode_chunk=i // chunks, episode_index=i)
        ep = _Episode(i, int(d["length"]), list(d.get("tasks") or []), data_file)
        for key in cams:
            if info["features"][key]["dtype"] == "video":
                vf = root / info["video_path"].format(episode_chunk=i // chunks, video_key=key, episode_index=i)
                ep.videos[key] = (vf, 0.0)
        out.append(ep)
    return sorted(out, key=lambda e: e.index)


class _TableCache:
    """Keeps the last data parquet file in memory (v3 files hold many episodes)."""

    def __init__(self, columns: list[str]):
        self.columns, self.path, self.table = columns, None, None

    def rows(self, ep: _Episode) -> dict:
        if self.path != ep.data_file:
            if not ep.data_file.exists():
                raise LeRobotFormatError(f"episode {ep.index}: data file missing: {ep.data_file}")
            t = pq.read_table(ep.data_file)
            missing = [c for c in self.columns if c not in t.column_names]
            if missing:
                raise LeRobotFormatError(f"{ep.data_file}: missing columns {missing}")
            self.table = t.select(self.columns)
            self.path = ep.data_file
            self._ep_col = np.asarray(self.table.column("episode_index"))
        sel = np.flatnonzero(self._ep_col == ep.index)
        if len(sel) != ep.length:
            raise LeRobotFormatError(f"{ep.data_file}: episode {ep.index} has {len(sel)} rows, meta says {ep.length}")
        sub = self.table.take(sel)
        fi = np.asarray(sub.column("frame_index"))
        order = np.argsort(fi, kind="stable")
        if not np.array_equal(fi[order], np.arange(ep.length)):
            raise LeRobotFormatError(f"{ep.data_file}: episode {ep.index} frame_index is not 0..{ep.length - 1}")
        return {c: sub.column(c) for c in self.columns}, order


def import_lerobot(
    src: str | Path,
    dst: str | Path,
    *,
    embodiment: str | None = None,
    progress: bool = True,
    codec: str | None = None,
    psnr: float = DEFAULT_PSNR_DB,
) -> dict:
    """Import a LeRobot v3.0/v2.1 folder into a new episode store at dst. Returns timing info and,
    under "cameras", per camera: codec, PSNR against the decoded source, bytes (and vs the source video).
    codec: one image codec for every camera ('lossless', 'jpeg', 'jpeg:90'); default: per camera,
    JPEG at the smallest quality reaching `psnr` dB for video features, lossless for the rest."""
    from tqdm import tqdm

    src = Path(src)
    dst = str(dst).rstrip("/") if remote.is_url(dst) else Path(dst)
    if not src.is_dir():
        raise LeRobotFormatError(f"{src}: not a directory")
    remote.check_new_store(dst, "import")
    if not psnr > 0:
        raise SpecError(f"psnr: the target PSNR must be a positive number of dB (e.g. 38), got {psnr}")
    info = read_info(src)
    version = info["codebase_version"]
    cams = camera_features(info["features"])
    emb = embodiment_from_info(info, None)
    restored = stored_embodiment(info, emb, cams)
    if restored is not None:
        cams = {f"observation.images.{c.name}": c.name for c in restored.cameras}
        emb = restored
    if embodiment is not None:
        emb = _resolve_embodiment(embodiment, emb)
    tasks = _read_tasks(src, version)
    episodes = _episodes_v3(src, info, cams) if version == "v3.0" else _episodes_v21(src, info, cams)
    fps = float(info["fps"])
    codecs, report = _choose_codecs(emb, cams, info, episodes, fps, codec, psnr)
    stride = max(1, -(-sum(e.length for e in episodes) // cq.CHECK_FRAMES))  # at most CHECK_FRAMES checked
    meters = {c: cq.PsnrMeter() for c, k in codecs.items() if k.name != "lossless"}

    cols = [LR_STATE, LR_ACTION, "timestamp", "frame_index", "episode_index", "task_index"]
    cols += [k for k in cams if info["features"][k]["dtype"] == "image"]
    has_env = LR_ENV_STATE in info["features"]
    if has_env:
        cols.append(LR_ENV_STATE)
    tables = _TableCache(cols)
    cursors: dict[tuple[str, Path], VideoCursor] = {}
    t0 = time.perf_counter()
    frames = 0
    try:
        with remote.new_store(dst, "import") as target:
            store = EpisodeStore.create(target.path, [emb], codecs=codecs, unfinished=target.unfinished)
            with store.writer(emb.name, source=f"lerobot:{src.name}") as w:
                for ep in tqdm(episodes, desc=f"import {src.name}", unit="ep", disable=not progress):
                    where = f"{src} episode {ep.index}"
                    cols_ep, order = tables.rows(ep)
                    state = np.asarray(cols_ep[LR_STATE].to_pylist(), np.float32)[order]
                    action = np.asarray(cols_ep[LR_ACTION].to_pylist(), np.float32)[order]
                    ts = np.asarray(cols_ep["timestamp"], np.float64)[order]
                    env = None
                    if has_env:
                        env = np.asarray(cols_ep[LR_ENV_STATE].to_pylist(), np.float32)[order]
                        env = None if np.isnan(env).all() else env.reshape(ep.length, -1)
                    images = _episode_images(ep, cols_ep, order, ts, cams, info, src, where, cursors, fps)
                    task_idx = int(np.asarray(cols_ep["task_index"])[order][0])
                    task = tasks.get(task_idx) or (ep.tasks[0] if ep.tasks else "")
                    _add_frames(
                        w, emb, ep.length, state, action, ts, env, images, where, meters, codecs, stride, frames
                    )
                    w.end_episode(task=task, success=ep.success)
                    frames += ep.length
            for c in cursors.values():
                c.close()
            store.finish()
        _add_sizes(report, meters, remote.join(dst, emb.name))
    except BaseException:
        for c in cursors.values():
            c.close()
        raise
    dt = time.perf_counter() - t0
    return {
        "episodes": len(episodes),
        "frames": frames,
        "seconds": dt,
        "frames_per_s": frames / max(dt, 1e-9),
        "version": version,
        "embodiment": emb.name,
        "codecs": {c: str(k) for c, k in codecs.items()},
        "cameras": report,
        "restored_spec": restored is not None,
    }


def _episode_images(ep: _Episode, cols, order, ts, cams: dict, info: dict, src: Path, where: str, cursors, fps):
    """One episode's frames per camera, in frame order: PNGs from the table, or decoded from its video at
    the frames' timestamps (`cursors` keeps one open video per feature; an episode in the next file
    closes the previous one)."""
    images = {}
    for key, cam in cams.items():
        if info["features"][key]["dtype"] == "image":
            structs = cols[key].to_pylist()
            images[cam] = [_png(structs[j], src, where, key) for j in order]
        else:
            vf, t_from = ep.videos[key]
            cur = cursors.get((key, vf))
            if cur is None:
                for k in [k for k in cursors if k[0] == key]:
                    cursors.pop(k).close()
                cur = cursors[(key, vf)] = VideoCursor(vf, fps)
            images[cam] = cur.frames_at(t_from + ts)
    return images


def _add_frames(w, emb, n, state, action, ts, env, images, where, meters, codecs, stride: int, first: int) -> None:
    """Write one episode's n frames; every `stride`-th frame of the import (`first` = frames before this
    episode) also goes to its camera's PSNR meter, encoded and decoded by the store's codec."""
    for j in range(n):
        frame = {STATE: state[j], ACTION: action[j], TIMESTAMP: ts[j]}
        if env is not None:
            frame[ENV_STATE] = env[j]
        for cam in emb.camera_names:
            frame[image_key(cam)] = images[cam][j]
            if cam in meters and (first + j) % stride == 0:
                k = codecs[cam]
                meters[cam].add(images[cam][j], k.decode(k.encode(images[cam][j]), images[cam][j].shape))
        try:
            w.add_frame(frame)
        except SpecError as e:
            raise type(e)(f"{where}: {e}") from None


def _add_sizes(report: dict, meters: dict, emb_dir: Path) -> None:
    """The report's stored bytes per camera (and vs the source video), and the PSNR measured."""
    for cam, r in report.items():
        r["bytes"] = cq.tree_bytes(remote.join(emb_dir, image_key(cam)))
        if r["source_bytes"]:
            r["bytes_vs_source"] = round(r["bytes"] / r["source_bytes"], 3)
        if cam in meters:
            r.update(psnr_db=round(meters[cam].db, 2), checked_frames=meters[cam].frames)


def _choose_codecs(emb, cams, info, episodes, fps, codec, target_db) -> tuple[dict, dict]:
    """Codec per camera, and the start of its report entry (see import_lerobot)."""
    by_name = {cam: key for key, cam in cams.items()}
    codecs, report = {}, {}
    for c in emb.cameras:
        key = by_name.get(c.name)
        is_video = key is None or info["features"][key].get("dtype") == "video"
        r = report[c.name] = {"source": "video" if is_video else "png", "target_db": None, "source_bytes": None}
        if is_video and key is not None:
            files = {ep.videos[key][0] for ep in episodes}
            r["source_bytes"] = sum(f.stat().st_size for f in files if f.exists())
        if codec is not None:
            codecs[c.name] = ImageCodec.parse(codec)
        else:
            codecs[c.name] = default_codec(c.height, c.width, camera_data=is_video, from_video=is_video)
            if codecs[c.name].name == "jpeg" and key is not None:
                choice = cq.choose_jpeg(_sample(episodes, key, fps), target_db)
                codecs[c.name] = choice.codec
                r.update(
                    target_db=target_db,
                    sample_frames=choice.sample_frames,
                    sample_psnr_db=round(choice.psnr_db, 2),
                    one_lower_db=None if choice.one_lower_db is None else round(choice.one_lower_db, 2),
                )
                log.debug(
                    "camera %s: %s reaches %.2f dB on %d sampled frames",
                    c.name,
                    choice.codec,
                    choice.psnr_db,
                    choice.sample_frames,
                )
        r["codec"] = str(codecs[c.name])
        r["quality"] = codecs[c.name].quality
    return codecs, report


def _sample(episodes: list[_Episode], key: str, fps: float) -> np.ndarray:
    """Decoded frames of one video feature, spread evenly over the dataset."""
    by_file: dict[Path, list[float]] = {}
    for e, j in cq.sample_positions([ep.length for ep in episodes]):
        vf, t_from = episodes[e].videos[key]
        by_file.setdefault(vf, []).append(t_from + j / fps)
    return np.concatenate([cq.read_frames_at(vf, sorted(ts), fps) for vf, ts in by_file.items()])


def _png(struct: dict | None, root: Path, where: str, key: str) -> np.ndarray:
    if not struct:
        raise LeRobotFormatError(f"{where}: {key} has no image")
    if struct.get("bytes"):
        return decode_png(struct["bytes"], f"{where} {key}")
    p = root / str(struct.get("path") or "")
    if struct.get("path") and p.is_file():
        return decode_png(p.read_bytes(), str(p))
    raise LeRobotFormatError(f"{where}: {key} has neither embedded bytes nor a readable path ({struct.get('path')})")


def _resolve_embodiment(name: str, derived: Embodiment) -> Embodiment:
    """`--embodiment` names a built-in/TOML embodiment (dims must match) or just renames.

    The cameras are the dataset's: a robot's camera names and sizes are a property of its setup (the
    built-in real arms list a default front/wrist pair at 480x640), not of the arm.
    """
    try:
        emb = load_embodiment(name)
    except SpecError:
        return replace(derived, name=name)
    problems = []
    if emb.state_dim != derived.state_dim:
        problems.append(f"state dim {emb.state_dim} vs dataset {derived.state_dim}")
    if emb.action_dim != derived.action_dim:
        problems.append(f"action dim {emb.action_dim} vs dataset {derived.action_dim}")
    if not math.isclose(emb.control_hz, derived.control_hz):
        log.warning(
            "embodiment %s runs at %s Hz but the dataset at %s fps", emb.name, emb.control_hz, derived.control_hz
        )
    if problems:
        raise SpecError(f"embodiment {emb.name!r} does not match the dataset: " + "; ".join(problems))
    if [(c.name, c.shape) for c in emb.cameras] != [(c.name, c.shape) for c in derived.cameras]:
        log.info(
            "embodiment %s: cameras as the dataset has them (%s)",
            emb.name,
            ", ".join(f"{c.name} {c.height}x{c.width}" for c in derived.cameras),
        )
    return replace(emb, cameras=derived.cameras)
