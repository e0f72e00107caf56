"""Teleoperated recording against fake arms and cameras: the loop's timing and figures, the store it
writes (one frame per tick, committed per episode), drops, re-record / stop keys, a killed recorder."""

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from vla.data import EpisodeStore
from vla.data.frame_files import StoreError
from vla.robots.keys import INTERRUPT, NEXT, RERECORD, STOP, KeyControl, parse_keys
from vla.robots.recorder import StoreRecorder, check_store
from vla.robots.session import record_session
from vla.robots.teleop import TeleopLoop, grid_phase, tracking_errors
from vla.spec import ACTION, STATE, Camera, Dim, Embodiment, image_key

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


def arm_embodiment(cams=(("front", 24, 32),), hz=30.0) -> Embodiment:
    dims = tuple(Dim(j, "pct", -100.0, 100.0) for j in JOINTS)
    return Embodiment("fake_arm", dims, dims, tuple(Camera(n, h, w) for n, h, w in cams), hz)


class FakeLeader:
    """Joints on slow sines; each read takes `read_s` (a bus round trip)."""

    def __init__(self, read_s=0.0005):
        self.t0, self.read_s = time.monotonic(), read_s

    def read_joints(self):
        time.sleep(self.read_s)
        t = time.monotonic() - self.t0
        return (30 * np.sin(0.5 * t + np.arange(6))).astype(np.float32)


class FakeFollower:
    """Reaches the commanded position at the next read (an ideal servo) unless `lag`."""

    def __init__(self, emb):
        self.embodiment = emb
        self.pos = np.zeros(6, np.float32)
        self.sent = []

    def send_action(self, a):
        self.sent.append(np.array(a))
        self.pos = np.array(a, np.float32)

    def read_joints(self):
        return self.pos.copy()


class FakeCamera:
    """Frames at `fps` from its own thread; each frame's pixels hold its sequence number."""

    def __init__(self, name, h, w, fps=30.0, skip_every=0):
        self.name, self.shape, self.period = name, (h, w, 3), 1.0 / fps
        self.skip_every = skip_every
        self._latest = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        n, t = 0, time.monotonic()
        while not self._stop.is_set():
            t += self.period
            time.sleep(max(0.0, t - time.monotonic()))
            n += 1
            if self.skip_every and n % self.skip_every == 0:
                continue  # the camera missed this frame
            img = np.full(self.shape, n % 251, np.uint8)
            self._latest = (n, img)

    def latest(self):
        return self._latest

    def close(self):
        self._stop.set()
        self._thread.join(1)


@pytest.fixture
def cams():
    made = []

    def make(*specs, **kw):
        for name, h, w in specs:
            made.append(FakeCamera(name, h, w, **kw))
        return made

    yield make
    for c in made:
        c.close()


class TickKeys(KeyControl):
    """No terminal; `script` maps a tick number, counted over the whole session from 1, to an event."""

    def __init__(self, script):
        super().__init__(fd=0)
        self.script, self.tick = dict(script), 0

    def poll(self):
        self.tick += 1
        return self.script.get(self.tick)


def test_parse_keys():
    assert parse_keys(b"\x1b[C") == [NEXT]
    assert parse_keys(b"\x1b[D") == [RERECORD]
    assert parse_keys(b"\x1bOC") == [NEXT]
    assert parse_keys(b"\x1b") == [STOP]
    assert parse_keys(b"nrqN") == [NEXT, RERECORD, STOP, NEXT]
    assert parse_keys(b"x\x1b[Ay") == []  # up arrow, other letters: nothing


def test_keys_from_a_pipe():
    r, w = os.pipe()
    keys = KeyControl(fd=r).start(tty_only=False)
    try:
        assert keys.active
        os.write(w, b"\x1b[D")
        deadline = time.monotonic() + 2
        ev = None
        while ev is None and time.monotonic() < deadline:
            ev = keys.poll()
            time.sleep(0.01)
        assert ev == RERECORD
        keys.send(STOP)
        keys.send(NEXT)  # a stop is never overwritten
        assert keys.poll() == STOP and keys.poll() is None
    finally:
        keys.stop()
        os.close(w)
        os.close(r)


def test_grid_phase_keeps_away_from_frame_arrivals():
    p = 1 / 30
    ph = grid_phase([0.010], p)
    assert abs(((ph - 0.010) % p) - p / 2) < p / 32
    ph = grid_phase([0.0, p / 2], p)  # two cameras half a period apart: a quarter from each
    d = [min(abs(ph - a) % p, p - abs(ph - a) % p) for a in (0.0, p / 2)]
    assert min(d) > p / 4 - p / 32


def test_loop_rate_tracking_and_frames(cams):
    emb = arm_embodiment()
    feeds = cams(("front", 24, 32))
    loop = TeleopLoop(FakeLeader(), FakeFollower(emb), fps=30, cameras=feeds)
    loop.wait_for_cameras()
    st = loop.run(1.0)
    assert st.ticks == 30 and st.ended_by == "time"
    assert st.period_ms["p50"] == pytest.approx(1000 / 30, abs=1.0)
    assert st.tracking_error["max"] == 0.0  # an ideal follower
    # The ticks sit between frame arrivals: a 30 fps camera gives a new frame every tick (ticks placed
    # where the frames arrive miss about half of them; 2 allow for a starved test machine).
    assert st.stale_frames["front"] <= 2, st
    assert st.dropped_frames == st.stale_frames["front"]


def test_a_camera_that_misses_frames_is_counted(cams):
    emb = arm_embodiment()
    feeds = cams(("front", 24, 32), skip_every=5)
    loop = TeleopLoop(FakeLeader(), FakeFollower(emb), fps=30, cameras=feeds)
    loop.wait_for_cameras()
    st = loop.run(1.0)
    assert 4 <= st.stale_frames["front"] <= 8, st  # one frame in five never came
    assert st.dropped_frames == st.stale_frames["front"]


def test_record_session_writes_committed_episodes(tmp_path, cams):
    emb = arm_embodiment(cams=(("front", 24, 32), ("wrist", 16, 16)))
    feeds = cams(("front", 24, 32), ("wrist", 16, 16))
    follower = FakeFollower(emb)
    keys = TickKeys({})
    r = record_session(
        FakeLeader(),
        follower,
        tmp_path / "s",
        task="wave",
        episodes=2,
        seconds=0.5,
        fps=30,
        cameras=feeds,
        keys=keys,
        settle_seconds=0,
    )
    assert r["outcome"] == "done" and r["error"] is None, r
    assert [e["index"] for e in r["episodes"]] == [0, 1]
    store = EpisodeStore.open(tmp_path / "s")
    assert store.num_episodes == 2
    assert str(store.codec("fake_arm", "front")) == "jpeg:75"
    assert store.embodiments["fake_arm"].control_hz == 30.0
    ep = store.episode(1)
    assert len(ep[STATE]) == 15 and ep["task"] == "wave" and ep["success"] is None
    np.testing.assert_allclose(ep[STATE], ep[ACTION])  # the ideal follower reached each command
    assert ep[image_key("wrist")].shape == (15, 16, 16, 3)
    np.testing.assert_allclose(np.diff(ep["timestamp"]), 1 / 30, atol=1e-5)
    # Appending again to the same store (same embodiment) is allowed; another spec is refused.
    assert check_store(tmp_path / "s", replace_hz(emb, 30.0))
    with pytest.raises(StoreError, match="control_hz 20.0 here vs 30.0"):
        check_store(tmp_path / "s", replace_hz(emb, 20.0))
    with pytest.raises(StoreError, match="cameras"):
        check_store(tmp_path / "s", replace_hz(arm_embodiment(), 30.0))


def replace_hz(emb, hz):
    from dataclasses import replace

    return replace(emb, control_hz=hz)


def test_rerecord_and_stop_keys(tmp_path, cams):
    emb = arm_embodiment()
    feeds = cams(("front", 24, 32))

    # Ticks are counted over the whole session: episode 1 runs ticks 1..6 and is dropped at tick 6,
    # its re-recording ends early by "next" at tick 10, episode 2 is stopped (kept) at tick 13.
    keys = TickKeys({6: RERECORD, 10: NEXT, 13: STOP})
    r = record_session(
        FakeLeader(),
        FakeFollower(emb),
        tmp_path / "s",
        task="t",
        episodes=5,
        seconds=1,
        fps=30,
        cameras=feeds,
        keys=keys,
        settle_seconds=0,
    )
    assert r["rerecorded"] == 1 and r["outcome"] == "stopped"
    assert [(e["frames"], e["ended_by"]) for e in r["episodes"]] == [(4, NEXT), (3, STOP)]
    assert EpisodeStore.open(tmp_path / "s").num_episodes == 2


def test_interrupt_drops_the_episode_in_progress(tmp_path, cams):
    emb = arm_embodiment()
    keys = TickKeys({20: INTERRUPT})
    r = record_session(
        FakeLeader(),
        FakeFollower(emb),
        tmp_path / "s",
        task="t",
        episodes=1,
        seconds=2,
        fps=30,
        cameras=cams(("front", 24, 32)),
        keys=keys,
        settle_seconds=0,
    )
    assert r["outcome"] == "interrupted" and r["episodes"] == []
    assert EpisodeStore.open(tmp_path / "s").num_episodes == 0


def test_a_full_queue_drops_frames_and_counts_them(tmp_path, cams):
    emb = arm_embodiment()
    rec = StoreRecorder.open(tmp_path / "s", emb)
    gate = threading.Event()
    encode = rec._encode["front"]

    def stuck_encode(img):  # a writer that cannot keep up
        gate.wait()
        return encode(img)

    rec._encode["front"] = stuck_encode
    rec.q.maxsize = 5
    loop = TeleopLoop(FakeLeader(), FakeFollower(emb), fps=30, cameras=cams(("front", 24, 32)))
    loop.wait_for_cameras()
    st = loop.run(0.5, rec)
    gate.set()
    rec.end_episode("t")
    eps = rec.close()
    assert st.queue_drops >= 8 and st.dropped_frames >= st.queue_drops
    assert eps[0].frames + st.queue_drops == st.ticks
    assert eps[0].dropped_frames == st.queue_drops


def test_a_second_recorder_on_one_store_is_refused(tmp_path):
    emb = arm_embodiment()
    rec = StoreRecorder.open(tmp_path / "s", emb)
    try:
        with pytest.raises(StoreError, match="another writer"):
            StoreRecorder.open(tmp_path / "s", emb)
    finally:
        rec.close()


KILLED = """
import sys, time, numpy as np
sys.path.insert(0, {tests!r})
from robots.test_teleop import arm_embodiment
from vla.robots.recorder import StoreRecorder
emb = arm_embodiment(cams=(("front", 24, 32),))
rec = StoreRecorder.open({path!r}, emb)
img = {{"front": np.zeros((24, 32, 3), np.uint8)}}
for ep in range(2):
    for t in range(40):
        rec.add(np.zeros(6, np.float32), np.zeros(6, np.float32), img, t / 30)
    if ep == 0:
        rec.end_episode("kept")
        rec.wait()
print("ready", flush=True)
time.sleep(60)
"""


def test_a_killed_recorder_loses_only_the_episode_in_progress(tmp_path):
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = textwrap.dedent(KILLED).format(tests=tests, path=str(tmp_path / "s"))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # the second episode is in progress (encoded, not committed)
    finally:
        p.kill()
        p.wait()
    store = EpisodeStore.open(tmp_path / "s")
    assert store.num_episodes == 1 and store.info(0).length == 40 and store.info(0).task == "kept"
    # The next recorder takes the store over (the OS dropped the lock) and appends after episode 0.
    rec = StoreRecorder.open(tmp_path / "s", arm_embodiment(cams=(("front", 24, 32),)))
    img = {"front": np.full((24, 32, 3), 7, np.uint8)}
    for t in range(5):
        rec.add(np.ones(6, np.float32), np.ones(6, np.float32), img, t / 30)
    rec.end_episode("after")
    assert [e.index for e in rec.close()] == [1]
    store.refresh()
    assert store.info(1).length == 5
    assert (store.episode(1)[image_key("front")] >= 5).all()


def test_tracking_error_with_and_without_the_servo_lag():
    t = np.arange(60)[:, None]
    commands = 50 * np.sin(0.2 * t + np.arange(6)).astype(np.float32)
    states = np.roll(commands, 2, axis=0)  # the follower is where the leader was two ticks ago
    lag, err = tracking_errors(list(commands), list(states), skip=5)
    assert lag == 2 and err["max"] == 0.0
    _, same_tick = tracking_errors(list(commands), list(states), skip=5, lags=(0,))
    assert same_tick["p50"] > 5


def test_no_keys_without_a_usable_stdin(monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # as under a test runner: no file descriptor
    keys = KeyControl().start()
    assert not keys.active and keys.poll() is None
    keys.stop()
