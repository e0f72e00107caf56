"""The whole real-robot path on virtual buses, through the same SDK code as real arms: calibrate a leader
and a follower (`vla calibrate`, scripted answers), record two episodes by teleoperation (`vla record`),
train a few steps on them (`vla train`), and run the policy on the virtual follower (`vla run`, driver
ServoArm); the arm moves, and its torque is off when the run ends.

The buses are `vla virtual-bus` child processes, one device each, as real arms are. A virtual follower
does not move with its torque off, so it is calibrated the way a person would move it by hand: the same
virtual arm (same seed: same servos, same assembly offsets) is started once with the scripted hand
(role leader) for `vla calibrate`, and once as the follower, which ServoArm then drives with that file.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vla.cli import app
from vla.data import EpisodeStore
from vla.spec import STATE, image_key

sys.path.insert(0, str(Path(__file__).parents[1]))
from train.conftest import write_preset  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.sim]

CLI = "from vla.cli import main; main()"
SIZE = 64  # camera frames: small, to keep the test quick
RANGE_S = 7.5  # the scripted hand's demonstration loops every ~7 s: every joint goes through its range


def _bus(tmp: Path, name: str, role: str, *extra: str) -> subprocess.Popen:
    log = open(tmp / f"{name}.log", "w")
    args = ["virtual-bus", "--robot", "so101", "--role", role, "--link", str(tmp / name), "--seed", "0", *extra]
    return subprocess.Popen([sys.executable, "-c", CLI, *args], stdout=log, stderr=subprocess.STDOUT)


def _wait_ready(tmp: Path, procs: dict, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    for name, p in procs.items():
        while "Ctrl-C" not in (tmp / f"{name}.log").read_text():
            assert p.poll() is None, (tmp / f"{name}.log").read_text()
            assert time.monotonic() < deadline, f"virtual bus {name} did not start"
            time.sleep(0.05)
    # Then until every servo answers (as a server's port is polled before its first request): a bus that has
    # just printed its banner can still be busy starting its physics and leader threads for a moment.
    from vla.robots.bus import BusError, make_bus

    for name in procs:
        while True:
            bus = make_bus("so101", str(tmp / name))
            try:
                bus.connect()
                bus.close()
                break
            except BusError:
                assert time.monotonic() < deadline, f"virtual bus {name} never answered every servo"
                time.sleep(0.2)


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _cli(argv: list[str]) -> str:
    r = CliRunner().invoke(app, [str(a) for a in argv])
    assert r.exit_code == 0, r.output
    return r.output


def test_calibrate_record_train_run_on_virtual_buses(tmp_path):
    t0 = time.monotonic()
    procs = {
        "leader": _bus(tmp_path, "leader", "leader"),
        "follower-by-hand": _bus(tmp_path, "follower-by-hand", "leader"),
        "follower": _bus(
            tmp_path, "follower", "follower", "--cameras", "front,wrist", "--camera-size", f"{SIZE}x{SIZE}"
        ),
    }
    try:
        _wait_ready(tmp_path, procs)
        # 1. calibrate both arms at once, each `vla calibrate` answering its one prompt from a file
        (tmp_path / "answers.txt").write_text("\n")
        cal = {}
        running = []
        for arm, link in (("leader", "leader"), ("follower", "follower-by-hand")):
            cal[arm] = tmp_path / f"{arm}.json"
            argv = ["calibrate", "--robot", "so101", "--role", arm, "--port", tmp_path / link, "--out", cal[arm]]
            argv += ["--answers", tmp_path / "answers.txt", "--range-seconds", str(RANGE_S)]
            cmd = [sys.executable, "-c", CLI, *map(str, argv)]
            running.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for p in running:
            out, _ = p.communicate(timeout=60)
            assert p.returncode == 0, out
            assert "saved the so101" in out
        _stop(procs.pop("follower-by-hand"))
        t_cal = time.monotonic()

        # 2. record two episodes by teleoperation (no terminal: fixed-length episodes)
        store = tmp_path / "demos"
        follower = tmp_path / "follower"
        cams = f"front=virtual:{follower},wrist=virtual:{follower}"
        out = _cli(
            ["record", "--robot", "so101", "--leader-port", tmp_path / "leader", "--follower-port", follower,
             "--leader-calibration", cal["leader"], "--follower-calibration", cal["follower"],
             "--episodes", "2", "--seconds", "1", "--reset-seconds", "0.3", "--task", "pick up the cube",
             "--out", store, "--cameras", cams, "--camera-size", f"{SIZE}x{SIZE}", "--json", tmp_path / "rec.json"]
        )  # fmt: skip
        assert out.count("episode ") >= 2 and "recorded 2 episode(s)" in out, out
        rec = json.loads((tmp_path / "rec.json").read_text())
        frames = [e["frames"] for e in rec["episodes"]]
        assert all(20 <= n <= 30 for n in frames), rec  # 1 s at 30 Hz (a starved machine may skip a tick)
        s = EpisodeStore.open(store)
        assert s.num_episodes == 2 and s.info(0).task == "pick up the cube"
        assert [s.info(i).length for i in range(2)] == frames
        assert {str(s.codec("so101", c)) for c in ("front", "wrist")} == {"jpeg:75"}
        eps = [s.episode(i) for i in range(2)]
        for ep, n in zip(eps, frames):
            assert ep[image_key("front")].shape == (n, SIZE, SIZE, 3) and ep[image_key("wrist")].std() > 0
        # The follower followed: every joint the leader moved (> 10 units) moved with it, a few ticks behind.
        # The scripted hand holds still for about a second of its ~7 s loop (as a person pauses after a take),
        # and where in the loop an episode falls depends on the machine's speed; the two episodes are 1.3 s
        # apart, so at least one of them sees the hand move: check the one where it moved the most.
        ep = max(eps, key=lambda e: np.ptp(e["action"], axis=0).max())
        action, state = ep["action"], ep[STATE]
        moved = np.flatnonzero(np.ptp(action, axis=0) > 10)
        assert len(moved), "the leader's hand did not move"
        for j in moved:
            # After its first catch-up (8 ticks), the follower's position at the best lag of 0-4 ticks is within
            # 10% of the leader's travel on average; a follower that stayed where it began is off by far more.
            a, q = action[8:, j], state[8:, j]
            err = min(np.abs(a[: len(a) - k] - q[k:]).mean() for k in range(5))
            assert err < 2 + 0.1 * np.ptp(action[:, j]), (j, err, action[:, j], state[:, j])
        t_rec = time.monotonic()

        # 3. train a few steps on the recording
        preset = write_preset(tmp_path / "p.toml")
        _cli(["train", preset, "--data", store, "--steps", "2", "--out", tmp_path / "ckpt"])
        t_train = time.monotonic()

        # 4. run the policy on the virtual follower
        (tmp_path / "so101-virtual.toml").write_text(
            f"""name = "so101-virtual"
[policy]
checkpoint = "{tmp_path / "ckpt"}"
isolate = false
embodiment = "so101"
[robot]
driver = "vla.robots.arm:ServoArm"
[robot.options]
port = "{follower}"
robot = "so101"
calibration = "{cal["follower"]}"
image_size = [{SIZE}, {SIZE}]
cameras = {{ front = "virtual:{follower}", wrist = "virtual:{follower}" }}
[control]
hz = 30
mode = "sync"
duration_s = 2
episodes = 1
[safety]
watchdog_s = 2.0
[record]
out = "{tmp_path / "run"}"
"""
        )
        out = _cli(["run", tmp_path / "so101-virtual.toml", "--json", tmp_path / "run.json"])
        run = json.loads((tmp_path / "run.json").read_text())
        assert run["outcome"] == "duration" and not run["recorder_error"], out
        states = EpisodeStore.open(tmp_path / "run" / "episodes").episode(0)[STATE]
        assert np.ptp(states, axis=0).max() > 0.5, "the follower did not move"
        t_run = time.monotonic()

        # 5. the run ended with the follower's torque off (ServoArm.close)
        from vla.robots.bus import Motor
        from vla.robots.feetech import FeetechBus
        from vla.robots.specs import arm_spec

        motors = {n: Motor(i, m) for n, (i, m) in arm_spec("so101").motors.items()}
        with FeetechBus(str(follower), motors) as bus:
            assert set(bus.sync_read("Torque_Enable").values()) == {0}
        print(
            f"timing: buses + calibration {t_cal - t0:.1f} s, record {t_rec - t_cal:.1f} s, "
            f"train {t_train - t_rec:.1f} s, run {t_run - t_train:.1f} s"
        )
    finally:
        for p in procs.values():
            _stop(p)
