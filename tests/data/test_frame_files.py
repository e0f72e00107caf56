"""Camera codecs, shard files, loader resizing, old stores."""

import time

import numpy as np
import pytest
import torch
import zarr
from torch.utils.data import DataLoader
from zarr.codecs import BloscCodec

from vla.data import EpisodeStore, StoreError
from vla.data.codecs import ImageCodec
from vla.data.frame_files import SHARD_FRAMES, CorruptFrameError
from vla.data.sampler import WindowDataset, collate_windows
from vla.spec import ACTION, STATE, SpecError, image_key

from helpers import fill, make_frame, tiny_embodiment


def photo(h, w, t=0, seed=0):
    """A smooth picture with a little noise (JPEG-friendly, like a camera frame)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([128 + 90 * np.sin(x / 9 + t / 5), 128 + 90 * np.cos(y / 7), 100 + 0.5 * x + 0.3 * y], -1)
    img += np.random.default_rng((seed, t)).normal(0, 2, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def fill_photos(store, emb, episodes, length):
    with store.writer(emb.name) as w:
        for e in range(episodes):
            for t in range(length):
                f = make_frame(emb, e, t)
                for c, cam in enumerate(emb.cameras):
                    f[image_key(cam.name)] = photo(cam.height, cam.width, e * 1000 + t, c)
                w.add_frame(f)
            w.end_episode(task=f"task {e % 2}", success=e % 3 != 2)


def psnr(a, b):
    return 10 * np.log10(255.0**2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


def test_codec_names_and_qualities():
    assert ImageCodec.parse("jpeg").quality == 75 and str(ImageCodec.parse("jpeg:90")) == "jpeg:90"
    assert ImageCodec.parse({"name": "lossless"}) == ImageCodec()
    with pytest.raises(SpecError, match="unknown image codec 'webp'; codecs: lossless, jpeg"):
        ImageCodec.parse("webp")
    with pytest.raises(SpecError, match="quality must be an integer 1-100"):
        ImageCodec.parse("jpeg:0")
    with pytest.raises(SpecError, match="not an integer"):
        ImageCodec.parse("jpeg:high")
    with pytest.raises(SpecError, match="takes no quality"):
        ImageCodec.parse("lossless:5")


def test_jpeg_camera_round_trip_codec_in_summary_and_plain_zarr_reader(tmp_path):
    emb = tiny_embodiment(cams=(("front", 48, 64), ("wrist", 16, 16)))
    store = EpisodeStore.create(tmp_path / "s", [emb], codecs={"front": "jpeg:90"})
    fill_photos(store, emb, 2, 5)
    s = EpisodeStore.open(tmp_path / "s")
    assert s.summary()["embodiments"]["tiny"]["codecs"] == {"front": "jpeg:90", "wrist": "lossless"}
    ep = s.episode(1)
    want = np.stack([photo(48, 64, 1000 + t, 0) for t in range(5)])
    assert psnr(ep[image_key("front")], want) > 35
    np.testing.assert_array_equal(ep[image_key("wrist")], np.stack([photo(16, 16, 1000 + t, 1) for t in range(5)]))
    g = zarr.open_group(str(tmp_path / "s"), mode="r")  # vla.data registered the "vla.jpeg" codec
    np.testing.assert_array_equal(g["tiny/observation/images/front"][5:10], ep[image_key("front")])
    np.testing.assert_array_equal(g["tiny/observation/images/wrist"][5:10], ep[image_key("wrist")])
    with pytest.raises(StoreError, match="cameras \\['side'\\] that embodiment 'tiny' does not have"):
        EpisodeStore.create(tmp_path / "t", [emb], codecs={"side": "jpeg"})


def test_frames_are_packed_into_few_files_and_survive_appends(tmp_path):
    emb = tiny_embodiment(cams=(("front", 4, 6),))
    store = EpisodeStore.create(tmp_path / "s", [emb])
    fill(store, emb, 7, 300)  # 2,100 frames, written in 7 appends
    cam = tmp_path / "s" / "tiny" / "observation" / "images" / "front"
    assert sorted(p.name for p in cam.glob("c.*")) == ["c.0.0.0.0", "c.1.0.0.0", "c.2.0.0.0"]
    assert SHARD_FRAMES == 1024
    s = EpisodeStore.open(tmp_path / "s")
    for e in (0, 3, 6):
        ep = s.episode(e)
        assert (ep[image_key("front")][..., 0] == e).all()
        np.testing.assert_array_equal(ep[image_key("front")][:, 0, 0, 1], np.arange(300) % 256)
    z = zarr.open_group(str(tmp_path / "s"), mode="r")["tiny/observation/images/front"]
    np.testing.assert_array_equal(z[1000:1100], s.frames("tiny", "front").read(range(1000, 1100)))


def test_uncommitted_frames_are_cut_off_and_a_reader_never_sees_them(tmp_path):
    emb = tiny_embodiment(cams=(("front", 4, 6),))
    store = EpisodeStore.create(tmp_path / "s", [emb])
    fill(store, emb, 1, 10)
    shard = tmp_path / "s" / "tiny" / "observation" / "images" / "front" / "c.0.0.0.0"
    size = shard.stat().st_size
    with store.writer() as w:  # 40 frames flushed to the shard, never committed
        for t in range(40):
            w.add_frame(make_frame(emb, 9, t))
        assert shard.stat().st_size > size
    assert shard.stat().st_size == size  # the writer cut them off again
    fill(store, emb, 1, 5, start_ep=1)
    s = EpisodeStore.open(tmp_path / "s")
    assert (s.episode(1)[image_key("front")][..., 0] == 1).all()
    idx = np.frombuffer(shard.read_bytes()[: 16 * SHARD_FRAMES], "<u8").reshape(-1, 2)
    assert (idx[15:] == 2**64 - 1).all()  # no entries past the committed frames


@pytest.mark.parametrize("codec", ["lossless", "jpeg:95"])
@pytest.mark.parametrize("size", [(24, 24), (20, 36)])
def test_loader_image_size_matches_the_model_transforms(tmp_path, codec, size):
    from vla.model.transforms import resize_with_pad

    emb = tiny_embodiment(cams=(("front", 60, 80),))
    store = EpisodeStore.create(tmp_path / "s", [emb], codecs=codec)
    fill_photos(store, emb, 2, 6)
    native = WindowDataset(store.path, 4)
    small = WindowDataset(store.path, 4, image_size=size)
    idx = [0, 5, 7, 11]
    a = collate_windows(native.__getitems__(idx))[image_key("front")]
    b = collate_windows(small.__getitems__(idx))[image_key("front")]
    assert b.shape == (4, *size, 3) and b.dtype == torch.uint8
    if size[0] == size[1]:  # the model's square input: Transforms would skip its own resize for b
        ref = resize_with_pad(a, size[0])
        got = resize_with_pad(b, size[0])
        diff = (ref - got).abs()
        if codec == "lossless":
            assert diff.max() <= 1.01 / 127.5  # uint8 rounding only
        else:  # decoded at 1/2 scale by libjpeg instead of full size + antialiased resize
            assert diff.mean() * 127.5 < 2.0
        assert (got[:, :, :3] == -1).all() and (got[:, :, -3:] == -1).all()  # padded rows are black (-1)
    np.testing.assert_array_equal(small[5][ACTION], native[5][ACTION])


def test_corrupt_frame_in_a_worker_names_camera_and_frame(tmp_path):
    emb = tiny_embodiment(cams=(("front", 16, 24),))
    store = EpisodeStore.create(tmp_path / "s", [emb], codecs="jpeg")
    fill_photos(store, emb, 1, 8)
    shard = tmp_path / "s" / "tiny" / "observation" / "images" / "front" / "c.0.0.0.0"
    raw = bytearray(shard.read_bytes())
    off, n = (int(x) for x in np.frombuffer(bytes(raw[16 * 6 : 16 * 7]), "<u8"))
    raw[off + 2 : off + n] = b"\x00" * (n - 2)
    shard.write_bytes(bytes(raw))
    ds = WindowDataset(store.path, 2)
    dl = DataLoader(ds, batch_size=1, num_workers=2, collate_fn=collate_windows)
    got, errors = 0, []
    it = iter(dl)
    while True:  # to the end: the other worker goes on after one batch failed
        try:
            next(it)
            got += 1
        except CorruptFrameError as e:
            errors.append(str(e))
        except StopIteration:
            break
    assert got == 7 and len(errors) == 1 and "camera 'front' frame 6: corrupt jpeg" in errors[0]


def _write_v1_store(path, emb, episodes, length):
    """A store exactly as vla wrote it before version 2: one blosc-lz4 file per frame."""
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    n = episodes * length
    meta = g.require_group("meta")
    meta.create_array("episode_ends", data=np.arange(1, episodes + 1, dtype=np.int64) * length, chunks=(4096,))
    meta.create_array("episode_success", data=np.ones(episodes, np.int8), chunks=(4096,))
    for key, v in (("episode_embodiment", emb.name), ("episode_task", "old task"), ("episode_source", "v1")):
        meta.create_array(key, shape=(episodes,), dtype=str, chunks=(4096,))[:] = np.array([v] * episodes, dtype=object)
    frames = [make_frame(emb, e, t) for e in range(episodes) for t in range(length)]
    eg = g.require_group(emb.name)
    eg.create_array(STATE, data=np.stack([f[STATE] for f in frames]), chunks=(4096, emb.state_dim))
    eg.create_array(ACTION, data=np.stack([f[ACTION] for f in frames]), chunks=(4096, emb.action_dim))
    eg.create_array("timestamp", data=np.arange(n, dtype=np.float32), chunks=(4096,))
    for cam in emb.cameras:
        a = eg.create_array(
            image_key(cam.name),
            shape=(n, *cam.shape),
            chunks=(1, *cam.shape),
            dtype="uint8",
            compressors=[BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle", typesize=1)],
            chunk_key_encoding={"name": "default", "separator": "."},
            config={"write_empty_chunks": True},
        )
        a[:] = np.stack([f[image_key(cam.name)] for f in frames])
    g.attrs.put(
        {
            "format": "vla-episode-store",
            "version": 1,
            "embodiments": {emb.name: emb.to_dict()},
            "num_episodes": episodes,
            "num_frames": n,
        }
    )


def test_version_1_store_opens_read_only_and_migrates(tmp_path, emb):
    from vla.data.edit import migrate_store

    _write_v1_store(tmp_path / "old", emb, 3, 5)
    old = EpisodeStore.open(tmp_path / "old")
    assert old.version == 1 and old.num_episodes == 3
    assert (old.episode(2)[image_key("front")][..., 0] == 2).all()
    assert len(WindowDataset(old.path, 2)) == 15
    with pytest.raises(StoreError, match="opens read-only: migrate it with `vla data migrate"):
        EpisodeStore.open(tmp_path / "old", mode="a")
    r = migrate_store(tmp_path / "old", tmp_path / "new")
    assert r["from_version"] == 1 and r["episodes"] == 3
    new = EpisodeStore.open(tmp_path / "new")
    assert new.version == 2
    for i in range(3):
        a, b = old.episode(i), new.episode(i)
        for k in (STATE, ACTION, image_key("front")):
            np.testing.assert_array_equal(a[k], b[k])
        assert (a["task"], a["source"], a["success"]) == (b["task"], b["source"], b["success"])


def test_fsspec_store_with_jpeg_camera_and_several_episodes_per_shard():
    emb = tiny_embodiment(cams=(("front", 32, 32),))
    url = f"memory://vla-jpeg-{time.time_ns()}"
    store = EpisodeStore.create(url, [emb], codecs="jpeg:90")
    fill_photos(store, emb, 3, 40)
    with store.writer() as w:  # an uncommitted episode on an object store is never written
        w.add_frame(make_frame(emb, 5, 0))
    s = EpisodeStore.open(url)
    assert s.num_episodes == 3
    assert psnr(s.episode(2)[image_key("front")], np.stack([photo(32, 32, 2000 + t) for t in range(40)])) > 35
    assert s.summary()["embodiments"]["tiny"]["codecs"] == {"front": "jpeg:90"}


def test_lerobot_video_import_is_jpeg_and_close_to_the_video(tmp_path):
    from vla.data.lerobot_export import export_lerobot
    from vla.data.lerobot_import import import_lerobot
    from vla.data.video import VideoCursor

    emb = tiny_embodiment(cams=(("front", 128, 160),), hz=10.0)
    fill_photos(EpisodeStore.create(tmp_path / "s", [emb]), emb, 2, 6)
    export_lerobot(tmp_path / "s", tmp_path / "lr", progress=False)
    r = import_lerobot(tmp_path / "lr", tmp_path / "back", progress=False)
    # JPEG at the quality that reaches 38 dB (tests/data/test_camera_quality.py)
    assert r["codecs"]["front"].startswith("jpeg:")
    back = EpisodeStore.open(tmp_path / "back")
    video = next((tmp_path / "lr" / "videos").rglob("*.mp4"))
    decoded = VideoCursor(video, 10.0).frames_at(np.arange(12) / 10.0)
    got = back.frames("tiny", "front").read(range(12))
    assert psnr(got, decoded) >= 38
    r = import_lerobot(tmp_path / "lr", tmp_path / "back2", progress=False, codec="lossless")
    np.testing.assert_array_equal(
        EpisodeStore.open(tmp_path / "back2").frames("tiny", "front").read(range(12)), decoded
    )
