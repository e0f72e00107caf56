"""The control loop with an in-memory robot: modes, safety, watchdog, e-stop, Ctrl-C, server faults."""

import threading
import time

import numpy as np
import pytest

from vla.data.store import EpisodeStore
from vla.runtime.chunking import ChunkingConfig
from vla.runtime.client import RemotePolicy
from vla.runtime.control import ControlConfig, ControlLoop
from vla.runtime.recorder import EpisodeRecorder
from vla.runtime.robot import DONE, SUCCESS
from vla.runtime.safety import SafetyConfig
from vla.runtime.server import PolicyServer, ServerConfig

from runtime.conftest import EMB, StubPolicy


def _loop(robot, policy, mode="rtc", seconds=1.0, recorder=None, watchdog_s=0.5, **control):
    cfg = ControlConfig(hz=50, duration_s=seconds, **control)
    return ControlLoop(
        robot,
        policy,
        cfg,
        SafetyConfig(max_velocity=5.0, watchdog_s=watchdog_s),
        ChunkingConfig(mode=mode, execute_s=0.2),
        recorder=recorder,
    )


def _wait_for(condition, timeout_s=20.0, what="condition"):
    """Poll instead of sleeping a fixed time: a loaded machine only makes this slower, not wrong."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("mode", ["sync", "async", "rtc", "rtc-guided"])
def test_one_action_per_tick_in_every_mode(fake_robot, mode):
    policy = StubPolicy(latency_s=0.03)
    r = _loop(fake_robot, policy, mode).run()
    # 1 s at 50 Hz on a fixed grid: never more than 50 ticks (+1 at the boundary); a loaded machine
    # may skip ticks, but the ticks run and the ticks skipped together cover the whole second.
    assert r["outcome"] == "duration" and 0 < r["ticks"] <= 51 and r["ticks"] + r["skipped_ticks"] >= 50
    assert len(fake_robot.sent) == r["ticks"]  # exactly one command per tick, holds included
    assert r["executor"]["chunks"] >= 2 and r["inference"]["failed"] == 0
    assert (policy.guided > 0) == (mode == "rtc")
    assert (len(policy.rtc) > 0) == (mode == "rtc-guided")  # through the inference worker
    for req in policy.rtc:
        assert req["mode"] == "guided" and 0 <= req["inference_delay"] <= req["execution_horizon"]
        assert req["prev_chunk"].shape[1] == 3 and req["execution_horizon"] == len(req["prev_chunk"])
    assert np.isfinite(np.stack(fake_robot.sent)).all()
    assert fake_robot.state[0] > 0.2  # it moved towards the goal


def test_nan_actions_never_reach_the_robot(fake_robot):
    r = _loop(fake_robot, StubPolicy(nan=True), "async", seconds=0.5).run()
    assert r["safety"]["nonfinite"] > 0 and r["interventions"] >= r["safety"]["nonfinite"]
    assert np.isfinite(np.stack(fake_robot.sent)).all()


class Jump(StubPolicy):
    def infer(self, obs, guide=None, guide_weights=None):
        return {"actions": np.full((self.horizon, 3), 4.0, np.float32)}


def test_velocity_limit_bounds_every_step(fake_robot):
    r = _loop(fake_robot, Jump(), "async", seconds=0.6).run()
    steps = np.abs(np.diff(np.stack(fake_robot.sent), axis=0))
    assert steps.max() <= 5.0 / 50 + 1e-5 and r["safety"]["velocity_limit"] > 0


def _run_in_thread(loop):
    out = {}
    t = threading.Thread(target=lambda: out.update(loop.run()))
    t.start()
    return t, out


def test_ctrl_c_stops_the_robot_and_closes_the_episode(tmp_path, fake_robot):
    rec = EpisodeRecorder(tmp_path / "store", EMB, 50)
    loop = _loop(fake_robot, StubPolicy(), "rtc", seconds=30, recorder=rec)
    t, out = _run_in_thread(loop)
    _wait_for(lambda: len(fake_robot.sent) >= 30, what="30 commands")
    loop.request_stop()
    t.join(10)
    episodes = rec.close()
    assert not t.is_alive() and out["outcome"] == "interrupted" and fake_robot.stops >= 1
    assert out["recorder_error"] is None
    s = EpisodeStore.open(tmp_path / "store")
    assert s.num_episodes == 1 and episodes[0]["success"] is None and s.infos()[0].length > 10
    ep = s.episode(0)
    assert ep["action"].shape[1] == 3 and np.all(np.diff(ep["timestamp"]) > 0)
    assert s.embodiments["fake"].control_hz == 50  # frames are at the loop rate


def test_estop_stops_motion_at_once(fake_robot):
    loop = _loop(fake_robot, StubPolicy(), "async", seconds=30)
    t, out = _run_in_thread(loop)
    _wait_for(lambda: len(fake_robot.sent) >= 25, what="25 commands")
    loop.request_estop()
    t_estop = time.monotonic()
    t.join(10)
    assert not t.is_alive() and out["outcome"] == "estop" and out["safety"]["estop"] == 1 and fake_robot.stops >= 1
    # Every tick checks the e-stop before it sends: at most the tick already past that check sends after it.
    assert sum(ts > t_estop for ts in fake_robot.sent_t) <= 1


class Timed(StubPolicy):
    """Reports how long each infer call really took (a loaded machine stretches the sleep), and since
    when the call in progress runs."""

    busy_since = None

    def infer(self, obs, guide=None, guide_weights=None):
        t0 = self.busy_since = time.monotonic()
        try:
            out = super().infer(obs, guide, guide_weights)
        finally:
            self.busy_since = None
        out["policy_timing"] = {"infer_ms": (time.monotonic() - t0) * 1000}
        return out


def test_episodes_end_when_the_robot_says_done(fake_robot):
    policy = Timed(latency_s=0.1)
    observe = fake_robot.observe

    def done_while_a_request_runs():  # so that every reset abandons a request in flight
        obs = observe()
        since = policy.busy_since
        if obs[DONE] and (since is None or time.monotonic() - since > 0.03):
            obs[DONE] = obs[SUCCESS] = False
        return obs

    fake_robot.observe = done_while_a_request_runs
    fake_robot.done_after_s = 0.4
    loop = _loop(fake_robot, policy, "rtc", seconds=30, episodes=3)
    r = loop.run()
    assert r["outcome"] == "episodes" and len(r["episodes"]) == 3 and r["successes"] == 3
    assert fake_robot.resets == 3  # the first reset plus one between episodes
    # A request abandoned at a reset must not leave a second one queued behind every later request:
    # a request's latency is its own inference plus the wait for the next tick, not a whole other
    # inference first. Both measured here, so a slow machine moves them together.
    rows = [x for x in loop.timing.inference if x[4]]
    waited = np.median([lat - infer for _, _, lat, infer, _ in rows])
    assert len(rows) >= 6 and waited < 0.6 * np.median([x[3] for x in rows])


class SlowAfter(StubPolicy):
    def infer(self, obs, guide=None, guide_weights=None):
        if self.calls >= 3:
            time.sleep(0.6)
        return super().infer(obs, guide, guide_weights)


def test_watchdog_holds_when_a_chunk_is_late(fake_robot):
    r = _loop(fake_robot, SlowAfter(horizon=40), "async", seconds=2.0, watchdog_s=0.25).run()
    # From the 4th request on, every chunk comes 0.6 s after its request: the robot holds for a good
    # part of the run (about half; a share of the ticks run, so a slow machine does not change it).
    assert r["safety"]["watchdog_hold"] >= 1 and r["held_ticks"] >= 0.2 * r["ticks"]


def test_server_killed_mid_run_holds_then_resumes(fake_robot):
    stub = StubPolicy(horizon=20)
    plan_s = stub.horizon / EMB.control_hz  # how long the robot could go on moving on its last chunk
    srv = PolicyServer(stub, ServerConfig(port=0)).start()
    port = srv.port
    policy = RemotePolicy(srv.url)
    loop = _loop(fake_robot, policy, "rtc", seconds=60.0, watchdog_s=0.3, retry_s=0.2)
    t, out = _run_in_thread(loop)
    _wait_for(lambda: stub.calls >= 3 and len(fake_robot.sent) >= 30, what="the first chunks")
    holds_before = loop.snapshot["safety"].get("watchdog_hold", 0)
    t_kill = time.monotonic()
    srv.stop()
    _wait_for(lambda: loop.snapshot["safety"].get("watchdog_hold", 0) > holds_before, what="the watchdog hold")
    t_hold, n_hold = time.monotonic(), len(fake_robot.sent)
    _wait_for(lambda: len(fake_robot.sent) >= n_hold + 15, what="15 more ticks")
    t_back = time.monotonic()
    srv2 = PolicyServer(StubPolicy(horizon=20, goal=-1.0), ServerConfig(port=port)).start()
    with fake_robot.lock:
        held = [s for s, ts in zip(fake_robot.sent, fake_robot.sent_t) if t_hold < ts < t_back]
    # ... and it resumes once the server is back (the new server drives it towards -1).
    _wait_for(lambda: fake_robot.sent[-1][0] < held[0][0] - 0.05, what="the robot to move again")
    loop.request_stop()
    t.join(10)
    srv2.stop()
    policy.close()
    # It holds long before its last plan would have run out, and while the server is down every
    # command is the same.
    assert t_hold - t_kill < plan_s
    assert len(held) >= 10 and all(np.array_equal(held[0], s) for s in held)
    assert out["safety"]["watchdog_hold"] >= 1 and out["inference"]["failed"] >= 1
    assert out["outcome"] == "interrupted"


def test_a_recorder_failure_reaches_the_run_summary(tmp_path, fake_robot, monkeypatch, caplog):
    import json

    from vla.runtime import run as run_mod

    class DiskFull:  # the store's episode writer on a full disk
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def add_frame(self, frame):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(EpisodeStore, "writer", lambda self, *args, **kwargs: DiskFull())
    monkeypatch.setattr(run_mod, "_robot", lambda cfg, stack, out: fake_robot)
    monkeypatch.setattr(run_mod, "_policy", lambda cfg, stack, out: lambda: StubPolicy())  # connects at once
    launch = {
        "name": "disk-full",
        "policy": {"url": "ws://127.0.0.1:1"},
        "control": {"hz": 50, "duration_s": 0.5},
        "record": {"out": str(tmp_path / "run")},
    }
    with caplog.at_level("ERROR", logger="vla.runtime.recorder"):
        s = run_mod.run_deployment(launch, status=False)
    assert s["ticks"] > 0 and len(fake_robot.sent) == s["ticks"]  # the run itself went on
    assert s["recorder_error"] == "OSError: [Errno 28] No space left on device" and s["recorded"] == []
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["recorder_error"] == s["recorder_error"]
    assert any("No space left on device" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


def test_rtc_request_reaches_a_remote_policy(fake_robot):
    """rtc={...} travels from the executor through the worker, the client and `vla serve`'s server."""
    stub = StubPolicy(latency_s=0.03)
    srv = PolicyServer(stub, ServerConfig(port=0)).start()
    try:
        with RemotePolicy(srv.url) as policy:
            r = _loop(fake_robot, policy, "rtc-trained", seconds=1.0).run()
    finally:
        srv.stop()
    assert r["inference"]["failed"] == 0 and stub.rtc
    for req in stub.rtc:
        assert req["mode"] == "trained" and req["prev_chunk"].dtype == np.float32 and req["prev_chunk"].shape[1] == 3
        assert isinstance(req["inference_delay"], int) and req["schedule"] == "linear"
