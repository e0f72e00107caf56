"""LeRobot video import: each camera's JPEG quality comes from a PSNR target against the decoded source."""

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vla.data import EpisodeStore
from vla.data import camera_quality as cq
from vla.data.codecs import ImageCodec
from vla.data.lerobot_export import export_lerobot
from vla.data.lerobot_import import import_lerobot
from vla.data.video import VideoCursor
from vla.spec import ACTION, STATE, Camera, Dim, Embodiment, SpecError, image_key

pytestmark = pytest.mark.interop

H, W, FPS, EPISODES, LENGTH = 128, 160, 10, 2, 12  # 24 frames: fewer than SAMPLE_FRAMES, so all are sampled


def camera_like(n: int, seed: int) -> np.ndarray:
    """Luma texture with grain, a mild tint and a moving coloured block: JPEG quality matters on it."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (H // 4, W // 4), dtype=np.uint8)
    base = np.asarray(Image.fromarray(base).resize((W, H), Image.BICUBIC)).astype(np.float32)
    out = []
    for t in range(n):
        img = (np.roll(base, 2 * t, axis=1) + rng.normal(0, 4, (H, W)))[..., None] * np.float32([1.0, 0.9, 0.75])
        y, x = 10 + t % (H - 40), 20 + (3 * t) % (W - 50)
        img[y : y + 30, x : x + 40] = [200, 60, 50]
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.fixture(scope="module")
def video_dataset(tmp_path_factory) -> Path:
    """A LeRobot v3.0 folder whose camera is AV1 video written with PyAV (as LeRobot writes it)."""
    root = tmp_path_factory.mktemp("cq")
    emb = Embodiment("rig", (Dim("j0"),), (Dim("j0"),), (Camera("front", H, W),), control_hz=FPS)
    store = EpisodeStore.create(root / "s", [emb])
    with store.writer() as w:
        for e in range(EPISODES):
            for img in camera_like(LENGTH, seed=e):
                w.add_frame({STATE: np.zeros(1, np.float32), ACTION: np.zeros(1, np.float32), image_key("front"): img})
            w.end_episode(task="look", success=True)
    export_lerobot(store.path, root / "lr", progress=False)
    return root / "lr"


def decoded_source(lr: Path) -> np.ndarray:
    (mp4,) = (lr / "videos").rglob("*.mp4")
    return VideoCursor(mp4, FPS).frames_at(np.arange(EPISODES * LENGTH) / FPS)


def stored(path: Path) -> np.ndarray:
    s = EpisodeStore.open(path)
    return np.concatenate([s.episode(i)[image_key("front")] for i in range(s.num_episodes)])


def test_chosen_quality_reaches_the_target_and_one_lower_does_not(video_dataset, tmp_path):
    r = import_lerobot(video_dataset, tmp_path / "s", psnr=38.0, progress=False)
    cam = r["cameras"]["front"]
    q = cam["quality"]
    assert cam["codec"] == f"jpeg:{q}" and 1 < q < 100 and cam["target_db"] == 38.0
    src = decoded_source(video_dataset)
    got = cq.psnr(src, stored(tmp_path / "s"))
    assert got >= 38.0
    assert cq.codec_psnr(src, ImageCodec("jpeg", q - 1)) < 38.0
    # The report says what was measured: PSNR of the stored frames, bytes on disk and vs the source video.
    assert cam["psnr_db"] == pytest.approx(got, abs=0.01) and cam["checked_frames"] == EPISODES * LENGTH
    assert cam["one_lower_db"] < 38.0 <= cam["sample_psnr_db"]
    (mp4,) = (video_dataset / "videos").rglob("*.mp4")
    assert cam["source_bytes"] == mp4.stat().st_size
    assert cam["bytes"] == cq.tree_bytes(tmp_path / "s" / "rig" / image_key("front"))
    assert cam["bytes_vs_source"] == pytest.approx(cam["bytes"] / cam["source_bytes"], rel=1e-3)
    line = cq.describe("front", cam)
    assert f"jpeg:{q} (smallest quality for >= 38 dB" in line and "x the source video" in line

    # A lower target takes a lower quality and fewer bytes.
    low = import_lerobot(video_dataset, tmp_path / "low", psnr=33.0, progress=False)["cameras"]["front"]
    assert low["quality"] < q and low["bytes"] < cam["bytes"] and low["psnr_db"] >= 33.0


def test_a_target_jpeg_cannot_reach_stores_lossless(video_dataset, tmp_path):
    r = import_lerobot(video_dataset, tmp_path / "s", psnr=70.0, progress=False)
    assert r["cameras"]["front"]["codec"] == "lossless"
    np.testing.assert_array_equal(stored(tmp_path / "s"), decoded_source(video_dataset))
    assert "quality 100 misses it, so lossless" in cq.describe("front", r["cameras"]["front"])
    with pytest.raises(SpecError, match="positive number of dB"):
        import_lerobot(video_dataset, tmp_path / "x", psnr=0.0, progress=False)


def test_codec_override_skips_the_search_and_still_reports(video_dataset, tmp_path):
    r = import_lerobot(video_dataset, tmp_path / "s", codec="jpeg:50", progress=False)
    cam = r["cameras"]["front"]
    assert cam["codec"] == "jpeg:50" and cam["target_db"] is None
    assert cam["psnr_db"] == pytest.approx(cq.psnr(decoded_source(video_dataset), stored(tmp_path / "s")), abs=0.01)


def test_seeking_reads_the_frames_sequential_decoding_gives(video_dataset):
    (mp4,) = (video_dataset / "videos").rglob("*.mp4")
    times = [0.0, 0.7, 1.3, 2.3]
    seq = VideoCursor(mp4, FPS).frames_at(times)
    np.testing.assert_array_equal(cq.read_frames_at(mp4, times, FPS), seq)
    assert cq.sample_positions([3, 2], k=10) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert [e for e, _ in cq.sample_positions([100, 100], k=4)] == [0, 0, 1, 1]


def test_psnr_meter_is_pooled_over_frames():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0] = 10  # frame 0: MSE 100, frame 1: exact -> pooled MSE 50
    assert cq.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 50))
    assert cq.psnr(a, a) == math.inf and cq.PsnrMeter().db is None
