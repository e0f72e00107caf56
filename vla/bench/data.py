"""`vla bench data`: loader throughput, store bytes and files, write and import speed.

--workload sim (default): mirrors the LeRobot figure in ANCHORS.md: 20 episodes x 200 frames,
2 cameras 96x96 (sim-like, lossless), state/action 8, windows of H=50 actions, batch 32.

--workload camera: 2 cameras 480x640 of camera-like frames (vla.data.synthetic.CameraFrames),
one store per codec (lossless and JPEG at several qualities: the trade-off curve), windows/s
at the model's 224x224 input; the same frames in LeRobot's format (AV1 as LeRobot writes it,
read at LeRobot's access pattern with PyAV: LeRobot's own package cannot be installed beside
our torch), a LeRobot import of them, and 3 cameras recorded at 30 fps through `vla run`'s
recorder. Every figure depends on the machine's load: the JSON carries the load average.

--store URL (run_store): an existing store on object storage (s3://...), read by the loader
without the local read cache, from an empty cache (cold) and with the cache filled (warm),
against a local copy of the same store.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset

from vla.data.codecs import default_codec
from vla.data.frame_files import SHARD_FRAMES
from vla.data.lerobot_export import export_lerobot
from vla.data.lerobot_import import import_lerobot
from vla.data.sampler import WindowDataset, make_loader
from vla.data.store import EpisodeStore
from vla.data.synthetic import CameraFrames, write_synthetic
from vla.resources import load_embodiment
from vla.spec import ACTION, STATE, Camera, Dim, Embodiment, image_key


def run(
    episodes: int = 20,
    length: int = 200,
    horizon: int = 50,
    batch_size: int = 32,
    batches: int = 400,
    workdir: str | None = None,
) -> dict:
    emb = load_embodiment("toy2d")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        store = EpisodeStore.create(tmp / "store", [emb])
        t0 = time.perf_counter()
        write_synthetic(store, emb, episodes, length, seed=0)
        write_s = time.perf_counter() - t0
        ds = WindowDataset(store.path, horizon)
        loader = {f"workers_{w}": round(_loader_rate(ds, w, batches, batch_size)) for w in (0, 2)}
        t0 = time.perf_counter()
        export_lerobot(store.path, tmp / "lerobot", progress=False)
        export_s = time.perf_counter() - t0
        imp = import_lerobot(tmp / "lerobot", tmp / "imported", progress=False)
        size = sum(f.stat().st_size for f in (tmp / "store").rglob("*") if f.is_file())
    frames = episodes * length
    return {
        "benchmark": "data",
        "setup": {
            "episodes": episodes,
            "frames_per_episode": length,
            "cameras": "2 x 96x96",
            "state_action_dim": 8,
            "horizon": horizon,
            "batch_size": batch_size,
        },
        "windows_per_s": loader,
        "targets": {"windows_per_s_2_workers": 2000, "import_frames_per_s": 500},
        "store_write_frames_per_s": round(frames / write_s),
        "store_bytes_per_frame": round(size / frames),
        "lerobot_export_frames_per_s": round(frames / export_s),
        "lerobot_import_frames_per_s": round(imp["frames_per_s"]),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "machine": _machine(),
    }


def _machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


# ---- camera workload: 480x640 camera-like frames per codec, against LeRobot's format ----
CAMERA_TARGETS = {
    "bytes_vs_lerobot_av1_max": 2.0,
    "windows_per_s_224_vs_lerobot_min": 10.0,
    "files_per_1000_frames_per_camera_max": 1.0,
    "psnr_db_min": 38.0,
    "recording_dropped_frames": 0,
    "sim_windows_per_s_2_workers_min": 5000,
}


def _camera_embodiment(cams: int, h: int = 480, w: int = 640, hz: float = 30.0) -> Embodiment:
    dims = tuple(Dim(f"j{i}", "rad", -3.0, 3.0) for i in range(8))
    names = ("front", "wrist", "side")[:cams]
    return Embodiment("camera_rig", dims, dims, tuple(Camera(n, h, w) for n in names), control_hz=hz)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _tree_bytes(path: Path, pattern: str = "*") -> tuple[int, int]:
    files = [f for f in path.rglob(pattern) if f.is_file()]
    return sum(f.stat().st_size for f in files), len(files)


class _LeRobotPattern(Dataset):
    """LeRobot's loader access pattern on its own files, with PyAV (its `pyav` video backend): per
    window and camera, open the episode's mp4, seek to the keyframe before the frame's timestamp,
    decode forward to it, convert to RGB; actions from memory (LeRobot reads them from parquet
    through `datasets`, which is slower: this favours LeRobot)."""

    def __init__(self, root: Path, horizon: int, resize: int | None = None):
        meta = json.loads((root / "meta" / "info.json").read_text())
        self.fps = meta["fps"]
        self.cams = [k for k, f in meta["features"].items() if f["dtype"] == "video"]
        eps = pq.read_table(next((root / "meta" / "episodes").rglob("*.parquet"))).to_pylist()
        self.rows = [(e["episode_index"], t) for e in eps for t in range(e["length"])]
        self.videos = {
            (e["episode_index"], k): (
                root
                / meta["video_path"].format(
                    video_key=k, chunk_index=e[f"videos/{k}/chunk_index"], file_index=e[f"videos/{k}/file_index"]
                ),
                e[f"videos/{k}/from_timestamp"],
            )
            for e in eps
            for k in self.cams
        }
        self.actions = np.zeros((len(self.rows) + horizon, 8), np.float32)
        self.horizon, self.resize = horizon, resize

    def __len__(self) -> int:
        return len(self.rows)

    def _frame(self, path: Path, ts: float) -> np.ndarray:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            c.seek(int(ts / s.time_base), stream=s, backward=True, any_frame=False)
            for f in c.decode(s):
                if f.time >= ts - 0.5 / self.fps:
                    return f.to_ndarray(format="rgb24")
        raise RuntimeError(f"{path}: no frame at {ts}")

    def __getitem__(self, i: int) -> dict:
        ep, t = self.rows[i]
        out = {"action": torch.from_numpy(self.actions[i : i + self.horizon])}
        for k in self.cams:
            path, t0 = self.videos[(ep, k)]
            img = torch.from_numpy(self._frame(path, t0 + t / self.fps)).permute(2, 0, 1)
            if self.resize:
                img = torch.nn.functional.interpolate(
                    img[None].float(), size=(self.resize * 3 // 4, self.resize), mode="bilinear", antialias=True
                )[0]
            out[k] = img
        return out


def _loader_rate(ds, workers: int, batches: int, batch_size: int) -> float:
    """Windows/s of a loader; in-process (workers=0) with one torch thread, as in a DataLoader worker
    (two intra-op threads on small resizes were 2-8x slower whenever the machine had other load)."""
    threads = torch.get_num_threads()
    if workers == 0:
        torch.set_num_threads(1)
    try:
        return _loader_rate_inner(ds, workers, batches, batch_size)
    finally:
        torch.set_num_threads(threads)


def _loader_rate_inner(ds, workers: int, batches: int, batch_size: int) -> float:
    if isinstance(ds, WindowDataset):
        dl = make_loader(ds, batch_size, workers=workers, num_samples=batch_size * (batches + 2 + 2 * workers), seed=1)
    else:
        g = torch.Generator().manual_seed(1)
        sampler = torch.utils.data.RandomSampler(
            ds, replacement=True, num_samples=batch_size * (batches + 2 + 2 * workers), generator=g
        )
        dl = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, persistent_workers=workers > 0)
    it = iter(dl)
    for _ in range(2 + 2 * workers):  # exclude worker start-up and the batches prefetched meanwhile
        next(it)
    n, t0 = 0, time.perf_counter()
    for batch in it:
        n += len(batch["action"])
    rate = n / (time.perf_counter() - t0)
    # Join the workers now: their exit signals (SIGCHLD) arriving later, in the middle of an AV1
    # encode (LeRobot export), were seen to leave SVT-AV1's encoder threads waiting forever.
    del it, dl  # the iterator's finalizer joins its workers
    gc.collect()
    return rate


def _windows_per_cpu_s(ds, batches: int, batch_size: int) -> float:
    """Windows per CPU-second of one process making batches (one torch thread, as a DataLoader worker):
    the loader's cost, which other processes on the machine do not change the way they change
    windows/s (2 workers on 2 cores can at best double it)."""
    from torch.utils.data import default_collate

    from vla.data.sampler import collate_windows

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = np.random.default_rng(2)
    try:
        c0 = time.process_time()
        for _ in range(batches):
            idx = rng.integers(len(ds), size=batch_size).tolist()
            if isinstance(ds, WindowDataset):
                collate_windows(ds.__getitems__(idx))
            else:
                default_collate([ds[i] for i in idx])
        return batches * batch_size / (time.process_time() - c0)
    finally:
        torch.set_num_threads(threads)


def _record(seconds: float, cams: int, hz: float, tmp: Path, gen: CameraFrames) -> dict:
    """A control loop at `hz` handing 3 camera frames per tick to vla run's recorder."""
    from vla.runtime.recorder import EpisodeRecorder

    emb = _camera_embodiment(cams, hz=hz)
    bank = [gen.frames(c, 0, 16) for c in range(cams)]  # made beforehand: the loop only hands frames over
    rec = EpisodeRecorder(tmp / "recorded", emb, hz)
    ticks, depth, late = int(seconds * hz), 0, 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    for k in range(ticks):
        wait = t0 + k / hz - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        elif wait < -1.0 / hz:
            late += 1
        obs = {STATE: np.zeros(8, np.float32)}
        for c, cam in enumerate(emb.camera_names):
            obs[image_key(cam)] = bank[c][k % len(bank[c])]
        rec.add(obs, np.zeros(8, np.float32), k / hz)
        depth = max(depth, rec.q.qsize())
    rec.end_episode("record", None)
    t_end = time.perf_counter()
    episodes = rec.close()
    done = time.perf_counter()
    return {
        "cameras": f"{cams} x 480x640",
        "hz": hz,
        "seconds": seconds,
        "frames_offered": ticks,
        "frames_recorded": sum(e["frames"] for e in episodes),
        "dropped_frames": rec.dropped,
        "max_queue_depth": depth,
        "queue_limit": rec.q.maxsize,
        "late_ticks": late,
        "finish_after_last_frame_s": round(done - t_end, 2),
        "process_cpu_cores_used": round((time.process_time() - cpu0) / (done - t0), 2),
        "error": rec.error_message(),
    }


def _write_stores(stores: dict, gen: CameraFrames, episodes: int, length: int) -> dict:
    """The same camera-like episodes into every store; -> seconds each store spent writing."""
    write_s = dict.fromkeys(stores, 0.0)
    rng = np.random.default_rng(0)
    with contextlib.ExitStack() as stack:
        writers = {v: stack.enter_context(s.writer()) for v, s in stores.items()}
        for e in range(episodes):
            imgs = [gen.frames(c, e * length, length) for c in range(2)]
            lowdim = np.cumsum(rng.normal(0, 0.01, (length, 8)), 0).astype(np.float32)
            for v, w in writers.items():
                t0 = time.perf_counter()
                for j in range(length):
                    w.add_frame(
                        {
                            STATE: lowdim[j],
                            ACTION: lowdim[j],
                            image_key("front"): imgs[0][j],
                            image_key("wrist"): imgs[1][j],
                        }
                    )
                w.end_episode(task="pick up the cup", success=True)
                write_s[v] += time.perf_counter() - t0
    return write_s


def _codec_figures(s: EpisodeStore, emb, sample, truth, frames, write_s, horizon, batches, batch_size) -> dict:
    """One codec's store: bytes and files per frame, PSNR of `sample` against `truth`, write and load rates."""
    cam_dir = Path(s.path) / emb.name / "observation" / "images" / "front"
    nbytes, nfiles = _tree_bytes(cam_dir, "c.*")
    psnr = np.mean([_psnr(s.frames(emb.name, cam).read(sample), truth[c]) for c, cam in enumerate(emb.camera_names)])
    ds = WindowDataset(s.path, horizon, image_size=(224, 224))
    return {
        "bytes_per_frame": round(nbytes / frames),
        "files_per_1000_frames": round(1000 * nfiles / frames, 2),
        "psnr_db": round(float(psnr), 2),
        "write_frames_per_s": round(frames / write_s),
        "windows_per_s_224": {f"workers_{w}": round(_loader_rate(ds, w, batches, batch_size)) for w in (0, 2)},
        "windows_per_cpu_s_224": round(_windows_per_cpu_s(ds, max(4, batches // 4), batch_size)),
    }


def _lerobot_figures(src: Path, tmp: Path, emb, sample, truth, frames, horizon, lerobot_batches, batch_size):
    """LeRobot's format of the same frames: AV1 (GOP 2, crf 30, as LeRobot encodes), one mp4 per camera,
    read as LeRobot reads it. -> (figures, the sample frames decoded per camera, the front camera's video bytes)"""
    from vla.data.video import VideoCursor

    t0 = time.perf_counter()
    export_lerobot(src, tmp / "lerobot", progress=False)
    lr_bytes, lr_files = _tree_bytes(tmp / "lerobot" / "videos" / "observation.images.front", "*.mp4")
    ts = np.asarray(sample) / emb.control_hz
    decoded = {
        c: VideoCursor(
            next((tmp / "lerobot" / "videos" / f"observation.images.{cam}").rglob("*.mp4")), emb.control_hz
        ).frames_at(ts)
        for c, cam in enumerate(emb.camera_names)
    }
    lr = _LeRobotPattern(tmp / "lerobot", horizon)
    lr224 = _LeRobotPattern(tmp / "lerobot", horizon, resize=224)
    figures = {
        "format": "LeRobot v3.0, AV1 (libsvtav1 crf 30, GOP 2, yuv420p)",
        "export_s": round(time.perf_counter() - t0, 1),
        "bytes_per_frame": round(lr_bytes / frames),
        "files_per_1000_frames": round(1000 * lr_files / frames, 2),
        "psnr_db": round(float(np.mean([_psnr(decoded[c], truth[c]) for c in range(2)])), 2),
        "loader": "PyAV at LeRobot's access pattern (open, seek to keyframe, decode, per window and camera)",
        "windows_per_s_native": {
            f"workers_{w}": round(_loader_rate(lr, w, lerobot_batches, batch_size), 1) for w in (0, 2)
        },
        "windows_per_s_224_workers_2": round(_loader_rate(lr224, 2, lerobot_batches, batch_size), 1),
        "windows_per_cpu_s_native": round(_windows_per_cpu_s(lr, max(2, lerobot_batches // 3), batch_size), 1),
    }
    return figures, decoded, lr_bytes


def _import_figures(tmp: Path, emb, sample, decoded: dict, frames: int, lr_bytes: int) -> dict:
    """Import of that LeRobot dataset (default codec) against its source video."""
    imp = import_lerobot(tmp / "lerobot", tmp / "imported", progress=False)
    st = EpisodeStore.open(tmp / "imported")
    ib, _ = _tree_bytes(tmp / "imported" / st.infos()[0].embodiment / "observation" / "images" / "front", "c.*")
    ipsnr = np.mean(
        [
            _psnr(st.frames(st.infos()[0].embodiment, cam).read(sample), decoded[c])
            for c, cam in enumerate(emb.camera_names)
        ]
    )
    return {
        "codecs": imp["codecs"],
        "frames_per_s": round(imp["frames_per_s"]),
        "bytes_per_frame": round(ib / frames),
        "bytes_vs_lerobot": round(ib / lr_bytes, 2),
        "psnr_db_vs_source_video": round(float(ipsnr), 2),
    }


def run_camera(
    episodes: int = 8,
    length: int = 128,
    qualities=(60, 70, 75, 80, 90),
    horizon: int = 50,
    batch_size: int = 32,
    batches: int = 40,
    lerobot_batches: int = 12,
    record_s: float = 10.0,
    workdir: str | None = None,
) -> dict:
    """Bytes, files, PSNR, write speed and windows/s at 224x224 per codec, and the same for LeRobot's
    format (AV1 as LeRobot writes it; PyAV at LeRobot's access pattern), import and recording."""
    load0 = os.getloadavg()
    emb = _camera_embodiment(2)
    gen = CameraFrames()
    variants = ["lossless"] + [f"jpeg:{q}" for q in qualities]
    frames = episodes * length
    out: dict = {"benchmark": "data-camera", "codecs": {}}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        stores = {v: EpisodeStore.create(tmp / v.replace(":", "_q"), [emb], codecs=v) for v in variants}
        write_s = _write_stores(stores, gen, episodes, length)
        sample = list(range(0, frames, max(1, frames // 48)))
        truth = {c: np.stack([gen.frame(c, t) for t in sample]) for c in range(2)}
        for v, s in stores.items():
            out["codecs"][v] = _codec_figures(s, emb, sample, truth, frames, write_s[v], horizon, batches, batch_size)
        default = str(default_codec(480, 640, camera_data=True))
        if default in stores:  # the figure at native size: 684 windows/s on per-frame lossless files
            native = WindowDataset(stores[default].path, horizon)
            out["codecs"][default]["windows_per_s_native_workers_2"] = round(
                _loader_rate(native, 2, max(2, batches // 2), batch_size)
            )
        out["lerobot"], decoded, lr_bytes = _lerobot_figures(
            stores["lossless"].path, tmp, emb, sample, truth, frames, horizon, lerobot_batches, batch_size
        )
        out["import"] = _import_figures(tmp, emb, sample, decoded, frames, lr_bytes)
        out["recording"] = _record(record_s, 3, 30.0, tmp, gen)
    lr_rate = out["lerobot"]["windows_per_s_native"]["workers_2"]
    lr_cpu = out["lerobot"]["windows_per_cpu_s_native"]
    for r in out["codecs"].values():
        r["bytes_vs_lerobot_av1"] = round(r["bytes_per_frame"] / out["lerobot"]["bytes_per_frame"], 2)
        r["windows_224_vs_lerobot_workers_2"] = round(r["windows_per_s_224"]["workers_2"] / lr_rate, 1)
        r["windows_per_cpu_s_224_vs_lerobot"] = round(r["windows_per_cpu_s_224"] / lr_cpu, 1)
    out.update(
        {
            "setup": {
                "episodes": episodes,
                "frames_per_episode": length,
                "cameras": "2 x 480x640 camera-like (photo, motion, sensor noise sigma 2)",
                "horizon": horizon,
                "batch_size": batch_size,
                "default_codec": default,
                "shard_frames": SHARD_FRAMES,
            },
            "targets": CAMERA_TARGETS,
            "load_average_1_5_15": {
                "start": [round(x, 2) for x in load0],
                "end": [round(x, 2) for x in os.getloadavg()],
            },
            "machine": _machine(),
        }
    )
    return out


# ---- a store on object storage against the same store on local disk ----
STORE_TARGETS = {"s3_warm_cache_vs_local_min": 0.5}


@contextlib.contextmanager
def _env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _first_batches_rate(ds: WindowDataset, workers: int, batches: int, batch_size: int) -> float:
    """Windows/s over a fresh loader's first `batches` batches, its start-up included (what a cold
    cache costs shows here: `_loader_rate` leaves the first batches out)."""
    t0 = time.perf_counter()
    dl = make_loader(ds, batch_size, workers=workers, num_samples=batch_size * batches, seed=3)
    n = sum(len(b["action"]) for b in dl)
    rate = n / (time.perf_counter() - t0)
    del dl
    gc.collect()
    return rate


def _fill_cache(store: EpisodeStore) -> int:
    """Read one frame of every shard of every camera: each shard object lands in the cache."""
    n = 0
    for info in store.infos():
        for cam in store.embodiments[info.embodiment].camera_names:
            frames = store.frames(info.embodiment, cam)
            for t in range(info.start - info.start % frames.S, info.end, frames.S):
                frames.read([max(t, info.start)])
                n += 1
    return n


def run_store(
    store: str,
    horizon: int = 50,
    batch_size: int = 32,
    batches: int = 100,
    workers: tuple[int, ...] = (0, 2),
    repeats: int = 3,
    workdir: str | None = None,
) -> dict:
    """Loader windows/s on a store at a URL: no cache, cold cache, warm cache; and on a local copy.
    The local and warm-cache rates are the medians of `repeats` runs taken in turn (local, S3, local,
    ...), so a change in the machine's load weighs on both alike."""
    from vla.data import remote
    from vla.spec import SpecError

    if not remote.is_url(store):
        raise SpecError(f"--store {store}: give the URL of a store on object storage (s3://bucket/prefix)")
    src = EpisodeStore.open(store)
    if not src.num_episodes:
        raise SpecError(f"--store {store}: the store has no episodes")
    load0 = os.getloadavg()
    out: dict = {"benchmark": "data-store", "store": src.path}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        fs, root = remote.filesystem(src.path)
        t0 = time.perf_counter()
        fs.get(root.rstrip("/") + "/", str(tmp / "local"), recursive=True)
        (tmp / "local" / ".writer.lock").unlink(missing_ok=True)
        copy_s = time.perf_counter() - t0
        nbytes = sum(f.stat().st_size for f in (tmp / "local").rglob("*") if f.is_file())
        rates: dict = {"local": {}, "s3_warm_cache": {}}
        local = WindowDataset(str(tmp / "local"), horizon)
        first = {"local": round(_first_batches_rate(local, max(workers), batches, batch_size))}
        with _env(VLA_CACHE=str(tmp / "cache")):
            cold = WindowDataset(src.path, horizon)
            first["s3_cold_cache"] = round(_first_batches_rate(cold, max(workers), batches, batch_size))
            t0 = time.perf_counter()
            _fill_cache(EpisodeStore.open(src.path))
            fill_s = time.perf_counter() - t0
            warm = WindowDataset(src.path, horizon)
            for w in workers:
                runs: dict = {"local": [], "s3_warm_cache": []}
                for _ in range(repeats):
                    for name, ds in (("local", local), ("s3_warm_cache", warm)):
                        runs[name].append(_loader_rate(ds, w, batches, batch_size))
                for name, r in runs.items():
                    rates[name][f"workers_{w}"] = round(float(np.median(r)))
            cached = sum(f.stat().st_size for f in (tmp / "cache").rglob("c.*") if f.is_file())
        with _env(VLA_CACHE="off"):
            direct = WindowDataset(src.path, horizon)
            few = max(2, batches // 10)
            rates["s3_no_cache"] = {f"workers_{w}": round(_loader_rate(direct, w, few, batch_size), 1) for w in workers}
    out.update(
        {
            "setup": {
                "episodes": src.num_episodes,
                "frames": src.num_frames,
                "cameras": {
                    n: [f"{c.name} {c.height}x{c.width}" for c in e.cameras] for n, e in src.embodiments.items()
                },
                "horizon": horizon,
                "batch_size": batch_size,
                "batches": batches,
                "repeats": repeats,
                "store_bytes": nbytes,
                "endpoint": remote.storage_options(src.path).get("endpoint_url", "default"),
            },
            "windows_per_s": rates,
            "windows_per_s_first_batches": first,
            "s3_warm_cache_vs_local": {
                f"workers_{k}": round(rates["s3_warm_cache"][f"workers_{k}"] / rates["local"][f"workers_{k}"], 2)
                for k in workers
            },
            "s3_cold_vs_local_first_batches": round(first["s3_cold_cache"] / first["local"], 2),
            "copy_to_local_s": round(copy_s, 2),
            "cache_fill_after_cold_s": round(fill_s, 2),
            "cache_bytes": cached,
            "targets": STORE_TARGETS,
            "load_average_1_5_15": {
                "start": [round(x, 2) for x in load0],
                "end": [round(x, 2) for x in os.getloadavg()],
            },
            "machine": _machine(),
        }
    )
    return out
