import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from vla.data import EpisodeStore, FrameError, StoreError
from vla.data.frame_files import CorruptFrameError
from vla.spec import ACTION, STATE, TIMESTAMP, image_key

from helpers import fill, make_frame, tiny_embodiment


def check_episode(store, i, emb, ep_id, length):
    ep = store.episode(i)
    assert ep["embodiment"] == emb.name
    assert ep[STATE].shape == (length, emb.state_dim)
    np.testing.assert_array_equal(ep[STATE][:, 0], ep_id)
    np.testing.assert_array_equal(ep[STATE][:, 1], np.arange(length))
    np.testing.assert_array_equal(ep[ACTION][:, 0], ep_id * 1000 + np.arange(length))
    for c, cam in enumerate(emb.cameras):
        img = ep[image_key(cam.name)]
        assert img.shape == (length, *cam.shape) and img.dtype == np.uint8
        assert (img[..., 0] == ep_id % 256).all()
        np.testing.assert_array_equal(img[:, 0, 0, 1], np.arange(length) % 256)
        assert (img[..., 2] == c).all()


def test_write_and_read_back_exactly(tmp_path, emb):
    store = EpisodeStore.create(tmp_path / "s", [emb])
    fill(store, emb, 5, lambda e: 3 + 7 * e)
    s = EpisodeStore.open(tmp_path / "s")
    assert s.num_episodes == 5 and s.num_frames == sum(3 + 7 * e for e in range(5))
    for e in range(5):
        check_episode(s, e, emb, e, 3 + 7 * e)
        info = s.info(e)
        assert info.task == f"do {e % 3}" and info.success == (e % 2 == 0) and info.source == "test"
    ts = s.episode(1)[TIMESTAMP]
    np.testing.assert_allclose(ts, np.arange(10) / emb.control_hz, rtol=1e-6)
    # Images are ordinary zarr arrays: zarr's own reader agrees with ours.
    z = zarr.open_group(str(tmp_path / "s"), mode="r")[f"{emb.name}/observation/images/front"]
    np.testing.assert_array_equal(z[s.info(2).start : s.info(2).end], s.episode(2)[image_key("front")])
    with pytest.raises(IndexError, match="out of range"):
        s.episode(5)


def test_several_embodiments_in_one_store(tmp_path):
    a = tiny_embodiment("a", s=3, a=2, cams=(("front", 8, 10),))
    b = tiny_embodiment("b", s=5, a=4, cams=(("top", 6, 6), ("wrist", 4, 4)))
    store = EpisodeStore.create(tmp_path / "s", [a, b])
    fill(store, a, 2, 4)
    fill(store, b, 2, 5, start_ep=2)
    fill(store, a, 1, 6, start_ep=4)
    s = EpisodeStore.open(tmp_path / "s")
    assert [i.embodiment for i in s.infos()] == ["a", "a", "b", "b", "a"]
    check_episode(s, 2, b, 2, 5)
    check_episode(s, 4, a, 4, 6)
    summ = s.summary()
    assert summ["embodiments"]["b"]["frames"] == 10 and summ["embodiments"]["a"]["episodes"] == 3


def test_bad_frames_raise_and_change_nothing(tmp_path, emb):
    store = EpisodeStore.create(tmp_path / "s", [emb])
    fill(store, emb, 2, 4)
    before = (tmp_path / "s" / "zarr.json").read_text()
    good = make_frame(emb, 9, 0)
    cases = [
        ({k: v for k, v in good.items() if k != ACTION}, "missing \\['action'\\]"),
        ({**good, "observation/images/side": good[image_key("front")]}, "unexpected"),
        ({**good, STATE: np.zeros(4, np.float32)}, "'observation/state': expected shape \\(3,\\), got \\(4,\\)"),
        ({**good, ACTION: np.array([0.0, np.nan], np.float32)}, "non-finite values .* at dims \\[1\\]"),
        ({**good, STATE: np.array([0.0, np.inf, 1.0])}, "non-finite"),
        ({**good, image_key("front"): good[image_key("front")].astype(np.float32)}, "expected uint8"),
    ]
    with store.writer() as w:
        w.add_frame(make_frame(emb, 2, 0))
        for frame, msg in cases:
            with pytest.raises(FrameError, match=msg):
                w.add_frame(frame)
        w.add_frame(make_frame(emb, 2, 1))
        w.end_episode(task="ok")
    s = EpisodeStore.open(tmp_path / "s")
    assert s.num_episodes == 3
    check_episode(s, 2, emb, 2, 2)
    assert before != (tmp_path / "s" / "zarr.json").read_text()  # only the commit changed it


def test_discard_and_unfinished_episode_are_invisible(tmp_path, emb):
    store = EpisodeStore.create(tmp_path / "s", [emb])
    fill(store, emb, 1, 3)
    with store.writer() as w:
        for t in range(40):  # > flush_every: some images hit the disk
            w.add_frame(make_frame(emb, 7, t))
    s = EpisodeStore.open(tmp_path / "s")
    assert s.num_episodes == 1 and s.num_frames == 3
    fill(store, emb, 1, 5, start_ep=1)
    s = EpisodeStore.open(tmp_path / "s")
    check_episode(s, 1, emb, 1, 5)


def test_cached_lowdim_reads_follow_appends_and_never_serve_uncommitted_frames(tmp_path, emb):
    """lowdim keeps each array's committed frames in memory: episodes committed later (seen after
    refresh) are read fresh, frames of an abandoned episode never reach a reader, and callers
    get copies."""
    store = EpisodeStore.create(tmp_path / "s", [emb])
    fill(store, emb, 2, 3)
    reader = EpisodeStore.open(tmp_path / "s")
    check_episode(reader, 1, emb, 1, 3)  # caches the 6 committed frames
    with store.writer() as w:  # an episode that is never committed overwrites nothing committed
        for t in range(4):
            w.add_frame(make_frame(emb, 77, t))
    fill(store, emb, 1, 5, start_ep=2)  # written over the abandoned frames' slots
    reader.refresh()
    check_episode(reader, 2, emb, 2, 5)  # the reader re-reads past its cached prefix
    got = reader.episode(0)[STATE]
    got[:] = -1
    check_episode(reader, 0, emb, 0, 3)


def test_writer_on_an_older_handle_appends_after_other_writers(tmp_path, emb):
    """A store handle opened before another writer committed must not write over those episodes
    (refresh re-opens the zarr group; it used to re-read zarr's cached root metadata)."""
    EpisodeStore.create(tmp_path / "s", [emb])
    old = EpisodeStore.open(tmp_path / "s", mode="a")
    fill(EpisodeStore.open(tmp_path / "s", mode="a"), emb, 2, 3)
    fill(old, emb, 1, 4, start_ep=2)
    s = EpisodeStore.open(tmp_path / "s")
    assert s.num_episodes == 3
    for e, n in ((0, 3), (1, 3), (2, 4)):
        check_episode(s, e, emb, e, n)


def test_open_errors(tmp_path, emb):
    with pytest.raises(StoreError, match="does not exist"):
        EpisodeStore.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="has no zarr.json"):
        EpisodeStore.open(tmp_path / "empty")
    zarr.open_group(str(tmp_path / "other"), mode="w")
    with pytest.raises(StoreError, match="not a vla episode store"):
        EpisodeStore.open(tmp_path / "other")
    store = EpisodeStore.create(tmp_path / "s", [emb])
    fill(store, emb, 2, 3)
    with pytest.raises(StoreError, match="already exists"):
        EpisodeStore.create(tmp_path / "s", [emb])
    with pytest.raises(StoreError, match="read-only"):
        EpisodeStore.open(tmp_path / "s").writer()
    # A corrupt root zarr.json
    (tmp_path / "s2").mkdir()
    (tmp_path / "s2" / "zarr.json").write_text("{not json")
    with pytest.raises(StoreError, match="cannot open"):
        EpisodeStore.open(tmp_path / "s2")


@pytest.mark.parametrize("codec", ["lossless", "jpeg:80"])
def test_corrupt_or_missing_frame_is_reported(tmp_path, codec):
    emb = tiny_embodiment(cams=(("front", 16, 24),))
    store = EpisodeStore.create(tmp_path / "s", [emb], codecs=codec)
    fill(store, emb, 1, 3)
    shard = tmp_path / "s" / emb.name / "observation" / "images" / "front" / "c.0.0.0.0"
    raw = bytearray(shard.read_bytes())
    off, n = (int(x) for x in np.frombuffer(bytes(raw[16:32]), "<u8"))  # frame 1's index entry
    raw[off : off + n] = b"\x07" * n
    shard.write_bytes(bytes(raw))
    with pytest.raises(CorruptFrameError, match="camera 'front' frame 1: corrupt"):
        EpisodeStore.open(tmp_path / "s").episode(0)
    shard.write_bytes(bytes(raw[: off + 2]))
    with pytest.raises(CorruptFrameError, match="camera 'front' frame 1: truncated"):
        EpisodeStore.open(tmp_path / "s").episode(0)
    shard.unlink()
    with pytest.raises(StoreError, match="shard of camera 'front' frame 0 is missing"):
        EpisodeStore.open(tmp_path / "s").episode(0)


def test_second_writer_is_refused(tmp_path, emb):
    """The writer lock is an OS file lock (filelock): a second writer is refused, in this process
    as in another; once the first closes, the lock is free again."""
    store = EpisodeStore.create(tmp_path / "s", [emb])
    other = EpisodeStore.open(tmp_path / "s", mode="a")
    with store.writer():
        with pytest.raises(StoreError, match="another writer"):
            with other.writer():
                pass
    with other.writer():
        pass


def test_fsspec_url_store(emb):
    url = f"memory://vla-test-{time.time_ns()}"
    store = EpisodeStore.create(url, [emb])
    fill(store, emb, 2, 4)
    s = EpisodeStore.open(url)
    assert s.num_episodes == 2
    check_episode(s, 1, emb, 1, 4)


CHILD = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    from helpers import make_frame, tiny_embodiment
    from vla.data import EpisodeStore
    emb = tiny_embodiment(cams=(("front", 32, 32), ("wrist", 16, 16)))
    store = EpisodeStore.open({path!r}, mode="a")
    with store.writer() as w:
        w.flush_every = 4
        e = store.num_episodes
        print("ready", flush=True)
        while True:
            for t in range(25 + e % 7):
                w.add_frame(make_frame(emb, e, t))
            w.end_episode(task=f"ep {{e}}")
            e += 1
""")


def test_sigkill_mid_write_loses_at_most_the_open_episode(tmp_path):
    emb = tiny_embodiment(cams=(("front", 32, 32), ("wrist", 16, 16)))
    path = tmp_path / "s"
    EpisodeStore.create(path, [emb])
    script = CHILD.format(tests=str(Path(__file__).parents[1]), path=str(path))
    rng = np.random.default_rng(0)
    committed = 0
    for _attempt in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(float(rng.uniform(0.2, 0.6)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        s = EpisodeStore.open(path)
        assert s.num_episodes >= committed  # never loses committed work
        committed = s.num_episodes
        for i in range(s.num_episodes):
            check_episode(s, i, emb, i, 25 + i % 7)
    assert committed > 4, "the writer should have committed several episodes before being killed"
    # The store still accepts new episodes (the OS dropped the killed writer's lock).
    store = EpisodeStore.open(path, mode="a")
    with store.writer() as w:
        for t in range(25 + committed % 7):
            w.add_frame(make_frame(emb, committed, t))
        w.end_episode(task="after kill")
    s = EpisodeStore.open(path)
    assert s.num_episodes == committed + 1
    check_episode(s, committed, emb, committed, 25 + committed % 7)
