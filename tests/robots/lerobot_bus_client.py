"""LeRobot's own motor bus, unmodified, drives a `vla virtual-bus` (run with LeRobot's python, not vla's).

    python lerobot_bus_client.py --robot so101 [--robot koch] --vla /path/to/vla --workdir DIR

Starts `vla virtual-bus --robot ROBOT --link DIR/ROBOT`, then with lerobot.motors' FeetechMotorsBus
(so100/so101) or DynamixelMotorsBus (koch), configured as LeRobot's so_follower / koch_follower do:
connect (LeRobot's handshake: ping every id, model numbers, one firmware version), calibrate with
LeRobot's own calls (torque off, operating mode, set_half_turn_homings, ranges around the homed middle,
write_calibration, read back and is_calibrated), configure, enable torque, sync_read Present_Position,
sync_write Goal_Position, and check that the arm got there; then disconnect and stop the virtual bus
with SIGINT, which must remove its link. Prints one JSON line per step; exits 1 on the first failure.
Imports nothing from vla.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

NAMES = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


T0 = time.perf_counter()


def step(name: str, **info) -> None:
    print(json.dumps({"step": name, "t": round(time.perf_counter() - T0, 2), **info}), flush=True)


def check(ok: bool, what: str) -> None:
    if not ok:
        step("FAILED", what=what)
        raise SystemExit(1)


def stub_heavy_imports() -> list[str]:
    """lerobot.motors imports lerobot.utils.utils, which imports torch, accelerate and datasets at module level;
    the motor buses never use them. Where they are not installed (the small CI venv), empty stand-ins let the
    import through: LeRobot's bus code itself runs as published."""
    import importlib.util
    import types

    class _Anything:
        def __init__(self, *a, **k):
            pass

        def __getattr__(self, name):
            return _Anything()

        def __call__(self, *a, **k):
            return _Anything()

    def module(name: str, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        m.__getattr__ = lambda attr: type(attr, (_Anything,), {})  # noqa: E731  (a class: it may sit in a type hint)
        sys.modules[name] = m
        return m

    stubbed = []
    if importlib.util.find_spec("torch") is None:
        module("torch")
        stubbed.append("torch")
    if importlib.util.find_spec("accelerate") is None:
        module("accelerate", Accelerator=_Anything)
        stubbed.append("accelerate")
    if importlib.util.find_spec("datasets") is None:
        noop = lambda *a, **k: None  # noqa: E731
        module("datasets", __path__=[])
        module("datasets.utils", __path__=[])
        module("datasets.utils.logging", disable_progress_bar=noop, enable_progress_bar=noop)
        stubbed.append("datasets")
    return stubbed


def lerobot_bus(robot: str, port: str):
    from lerobot.motors import Motor, MotorNormMode

    body, grip = MotorNormMode.RANGE_M100_100, MotorNormMode.RANGE_0_100
    if robot == "koch":
        from lerobot.motors.dynamixel import DynamixelMotorsBus

        models = ["xl430-w250"] * 2 + ["xl330-m288"] * 4
        cls = DynamixelMotorsBus
    else:
        from lerobot.motors.feetech import FeetechMotorsBus

        models = ["sts3215"] * 6
        cls = FeetechMotorsBus
    motors = {n: Motor(i + 1, m, grip if n == "gripper" else body) for i, (n, m) in enumerate(zip(NAMES, models))}
    return cls(port=port, motors=motors)


def calibrate(bus, robot: str) -> dict:
    """LeRobot's calibration calls, with the ranges set around the homed middle instead of recorded by hand."""
    from lerobot.motors import MotorCalibration

    full_turn = ("wrist_roll",) if robot != "koch" else ("shoulder_pan", "wrist_roll")
    bus.disable_torque()
    mode = 4 if robot == "koch" else 0  # koch_follower: extended position; so_follower: position
    for motor in bus.motors:
        bus.write("Operating_Mode", motor, mode)
    homings = bus.set_half_turn_homings()
    pos = bus.sync_read("Present_Position", normalize=False)
    cal = {}
    for motor, m in bus.motors.items():
        lo, hi = (0, 4095) if motor in full_turn else (pos[motor] - 600, pos[motor] + 600)
        cal[motor] = MotorCalibration(id=m.id, drive_mode=0, homing_offset=homings[motor], range_min=lo, range_max=hi)
    bus.write_calibration(cal)
    return {"homing_offsets": homings, "present_after_homing": pos}


def configure(bus, robot: str) -> None:
    with bus.torque_disabled():
        bus.configure_motors()
        if robot == "koch":  # as koch_follower.configure
            for motor in bus.motors:
                if motor != "gripper":
                    bus.write("Operating_Mode", motor, 4)
            bus.write("Operating_Mode", "gripper", 5)
            bus.write("Position_P_Gain", "elbow_flex", 1500)
            bus.write("Position_I_Gain", "elbow_flex", 0)
            bus.write("Position_D_Gain", "elbow_flex", 600)
        else:  # as so_follower.configure
            for motor in bus.motors:
                bus.write("Operating_Mode", motor, 0)
                bus.write("P_Coefficient", motor, 16)
                bus.write("I_Coefficient", motor, 0)
                bus.write("D_Coefficient", motor, 32)
                if motor == "gripper":
                    bus.write("Max_Torque_Limit", motor, 500)
                    bus.write("Protection_Current", motor, 250)
                    bus.write("Overload_Torque", motor, 25)


def drive(robot: str, vla: str, workdir: Path) -> None:
    link = workdir / robot
    proc = subprocess.Popen(
        [vla, "virtual-bus", "--robot", robot, "--link", str(link)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(link):
            if proc.poll() is not None:
                check(False, f"vla virtual-bus exited: {proc.stdout.read() if proc.stdout else ''}")
            check(time.monotonic() < deadline, "vla virtual-bus made no link in 120 s")
            time.sleep(0.1)
        step("virtual-bus", link=str(link), banner=proc.stdout.readline().strip())

        bus = lerobot_bus(robot, str(link))
        t = time.perf_counter()
        # LeRobot's handshake. Its ping waits ~50 ms for a reply; on a loaded 2-core machine the virtual
        # servo's first replies can miss that, as a real bus's do on a busy USB hub: up to 3 attempts,
        # each reported.
        for attempt in range(1, 4):
            try:
                bus.connect()
                break
            except RuntimeError as e:
                if attempt == 3 or "Missing motor IDs" not in str(e):
                    raise
                step("connect-retry", attempt=attempt, error=str(e).splitlines()[2:4])
                bus.port_handler.closePort()
        step("connect", attempts=attempt, handshake_s=round(time.perf_counter() - t, 3), models=bus.broadcast_ping())
        info = calibrate(bus, robot)
        check(all(abs(p - 2047) <= 4 for p in info["present_after_homing"].values()), "half-turn homing to 2047")
        check(bus.is_calibrated, "is_calibrated after write_calibration")
        step("calibrate", **info)
        configure(bus, robot)
        bus.enable_torque()
        start = bus.sync_read("Present_Position")
        step("sync_read", present=start)
        body = [n for n in NAMES if n != "gripper"]
        check(all(abs(start[n]) < 3 for n in body), "the homed middle reads about 0 in RANGE_M100_100")
        goal = {**start, "shoulder_pan": 25.0, "elbow_flex": -30.0, "wrist_flex": -20.0}
        bus.sync_write("Goal_Position", goal)
        deadline = time.monotonic() + 3.0
        while True:
            time.sleep(0.1)
            end = bus.sync_read("Present_Position")
            err = {n: round(abs(end[n] - goal[n]), 2) for n in goal}
            if max(err.values()) < 1.0 or time.monotonic() > deadline:
                break
        step("sync_write", goal=goal, present=end, abs_error=err)
        check(all(e < 3.0 for e in err.values()), "every joint reached its goal within 3 (of 100)")
        moved = {n: round(end[n] - start[n], 1) for n in ("shoulder_pan", "elbow_flex", "wrist_flex")}
        check(all(abs(v) > 15 for v in moved.values()), "the arm moved")
        n, t = 50, time.perf_counter()
        for _ in range(n):
            bus.sync_write("Goal_Position", bus.sync_read("Present_Position"))
        step("round_trip", sync_read_plus_sync_write_ms=round((time.perf_counter() - t) / n * 1000, 2), reps=n)
        bus.disconnect()  # disables torque first, as LeRobot does
        step("disconnect")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    out = proc.stdout.read() if proc.stdout else ""
    check(proc.returncode == 0, f"vla virtual-bus exit code {proc.returncode}: {out}")
    check(not os.path.lexists(link), "the link is gone after SIGINT")
    step("ok", robot=robot)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--robot", action="append", choices=["so100", "so101", "koch"], help="repeat for several")
    ap.add_argument("--vla", required=True, help="the vla command (its console script)")
    ap.add_argument("--workdir", required=True, type=Path)
    args = ap.parse_args()
    stubbed = stub_heavy_imports()
    import lerobot
    import lerobot.motors

    step("start", lerobot=lerobot.__version__, python=sys.version.split()[0], stubbed=stubbed)
    for robot in args.robot or ["so101"]:
        drive(robot, args.vla, args.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
