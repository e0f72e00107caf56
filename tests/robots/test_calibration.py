"""Calibration: parity with LeRobot's own normalize / unnormalize (fixture written by LeRobot 0.4.4 itself,
tests/fixtures/lerobot_calibration/generate.py), the file format, lookups by id, and the procedure on a
fake bus that models the servos' homing arithmetic."""

import json
import threading

import numpy as np
import pytest

from vla.robots import load_calibration
from vla.robots.calibration import (
    CalibrationError,
    build_calibration,
    calibrate_arm,
    calibration_dir,
    default_calibration_path,
    find_calibration,
    half_turn_homings,
    is_calibration_file,
    mismatched_motors,
    record_ranges,
    resolve_calibration,
    save_calibration,
)
from vla.robots.specs import arm_spec

from helpers import FIXTURES

HERE = FIXTURES / "lerobot_calibration"
CASES = json.loads((HERE / "cases.json").read_text())
PARAMS = [(name, mode) for name in CASES["calibrations"] for mode in ("range", "degrees")]


@pytest.mark.parametrize("name, mode", PARAMS, ids=[f"{n}-{m}" for n, m in PARAMS])
def test_normalize_matches_lerobot(name, mode):
    entry = CASES["calibrations"][name]
    cal = load_calibration(HERE / f"{name}.json", entry["robot"], mode == "degrees", role=entry["role"])
    n = 0
    for motor, case in entry["modes"][mode].items():
        m = cal[motor]
        assert m.norm_mode == case["norm_mode"]
        want = np.array(case["normalized"])
        got = [m.normalize(r) for r in case["raw"]]
        assert got == pytest.approx(list(want), abs=1e-9, rel=0)
        assert [type(x) for x in got] == [float] * len(got)
        np.testing.assert_allclose(m.normalize_array(case["raw"]), want, rtol=0, atol=1e-9)
        # Unnormalize: equal ints, inside and outside the range, fractions truncated toward zero.
        assert [m.unnormalize(v) for v in case["values"]] == case["unnormalized"]
        assert m.unnormalize_array(case["values"]).tolist() == case["unnormalized"]
        n += len(case["raw"]) + len(case["values"])
    assert n > 400


def test_parity_is_exact_not_just_close():
    """Same operations in the same order: not one bit differs from LeRobot's floats (the figure in
    docs/robots.md: python -m pytest -q -s tests/robots/test_calibration.py -k exact)."""
    worst, floats, ints, differ = 0.0, 0, 0, 0
    for name, mode in PARAMS:
        entry = CASES["calibrations"][name]
        cal = load_calibration(HERE / f"{name}.json", entry["robot"], mode == "degrees", role=entry["role"])
        for motor, case in entry["modes"][mode].items():
            got = np.array([cal[motor].normalize(r) for r in case["raw"]])
            worst = max(worst, float(np.abs(got - np.array(case["normalized"])).max()))
            back = [cal[motor].unnormalize(v) for v in case["values"]]
            differ += sum(a != b for a, b in zip(back, case["unnormalized"], strict=True))
            floats, ints = floats + len(got), ints + len(back)
    print(
        f"\nlerobot {CASES['lerobot_version']}: {floats} normalized values, max |diff| {worst}; "
        f"{ints} unnormalized ints, {differ} differ"
    )
    assert worst == 0.0 and differ == 0


def test_drive_mode_follows_lerobot_per_vendor():
    so = load_calibration(HERE / "so101_drive_mode.json", "so101")
    assert so["shoulder_pan"].inverted and so["gripper"].inverted  # Feetech: flipped in software
    m = so["shoulder_pan"]
    assert m.normalize(m.range_min) == 100.0 and m.normalize(m.range_max) == -100.0
    g = so["gripper"]
    assert g.normalize(g.range_min) == 100.0 and g.normalize(g.range_max) == 0.0
    koch = load_calibration(HERE / "koch_leader.json", "koch", role="leader")
    assert koch["elbow_flex"].drive_mode == 1 and not koch["elbow_flex"].inverted  # the servo inverts itself


def test_vector_forms_and_limits():
    cal = load_calibration(HERE / "so101_follower.json", "so101")
    raw = {n: (m.range_min + m.range_max) // 2 for n, m in cal.items()}
    v = cal.normalize(raw)
    assert v.shape == (6,) and np.abs(v[:5]).max() < 0.1 and abs(v[5] - 50) < 0.1
    back = cal.unnormalize(v)
    assert all(abs(back[n] - raw[n]) <= 1 for n in raw)
    lo, hi = cal.limits()
    assert lo.tolist() == [-100.0] * 5 + [0.0] and hi.tolist() == [100.0] * 6
    deg = cal.with_units(True)
    lo, hi = deg.limits()
    m = deg["shoulder_pan"]
    assert lo[0] == pytest.approx((m.range_min - m.range_max) / 2 * 360 / 4095) and hi[0] == -lo[0]
    assert (lo[4], hi[4]) == (-180.0, 180.0) and (lo[5], hi[5]) == (0.0, 100.0)  # full turn; gripper stays %
    with pytest.raises(ValueError, match="non-finite"):
        cal.unnormalize([0, 0, float("nan"), 0, 0, 0])
    with pytest.raises(ValueError, match="expected 6 values"):
        cal.unnormalize([0, 0])


def test_save_writes_lerobots_bytes(tmp_path):
    for name in ("so101_follower", "koch_leader"):
        entry = CASES["calibrations"][name]
        cal = load_calibration(HERE / f"{name}.json", entry["robot"], role=entry["role"])
        out = save_calibration(cal, tmp_path / "sub" / f"{name}.json")
        assert out.read_text() == (HERE / f"{name}.json").read_text()  # byte for byte what draccus wrote
        assert is_calibration_file(out)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["koch_leader.json", "so101_follower.json"]


def test_save_is_atomic(tmp_path, monkeypatch):
    cal = load_calibration(HERE / "so101_follower.json", "so101")
    target = tmp_path / "cal.json"
    target.write_text("old")
    monkeypatch.setattr("os.replace", lambda *a: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError):
        save_calibration(cal, target)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["cal.json"]


def _bad(tmp_path, edit) -> str:
    data = json.loads((HERE / "so101_follower.json").read_text())
    edit(data)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data))
    with pytest.raises(CalibrationError) as e:
        load_calibration(p, "so101")
    return str(e.value)


def test_bad_files_name_the_motor_and_field(tmp_path):
    assert "'wrist_roll'" in _bad(tmp_path, lambda d: d.pop("wrist_roll"))
    assert "unknown motor 'elbow'" in _bad(tmp_path, lambda d: d.update(elbow=d["elbow_flex"]))
    msg = _bad(tmp_path, lambda d: d["gripper"].pop("range_max"))
    assert "'gripper'" in msg and "'range_max'" in msg
    msg = _bad(tmp_path, lambda d: d["elbow_flex"].update(range_min=2047.5))
    assert "'elbow_flex'" in msg and "'range_min'" in msg and "2047.5" in msg
    msg = _bad(tmp_path, lambda d: d["elbow_flex"].update(range_min=4000))
    assert "'elbow_flex'" in msg and "range_min 4000 must be below range_max" in msg
    assert "id 5" in _bad(tmp_path, lambda d: d["wrist_roll"].update(id=9))
    assert "drive_mode" in _bad(tmp_path, lambda d: d["wrist_roll"].update(drive_mode=2))
    assert "unknown field 'offset'" in _bad(tmp_path, lambda d: d["wrist_roll"].update(offset=1))
    (tmp_path / "broken.json").write_text("{nope")
    with pytest.raises(CalibrationError, match="invalid JSON"):
        load_calibration(tmp_path / "broken.json", "so101")
    with pytest.raises(CalibrationError, match="not found.*vla calibrate --robot so101"):
        load_calibration(tmp_path / "missing.json", "so101")
    with pytest.raises(CalibrationError, match="unknown motor 'x' .the koch follower has shoulder_pan"):
        build_calibration({"x": {}}, arm_spec("koch"))


def test_lookup_by_id_where_lerobot_keeps_them(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_LEROBOT_CALIBRATION", raising=False)
    monkeypatch.delenv("HF_LEROBOT_HOME", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert calibration_dir() == tmp_path / "hf" / "lerobot" / "calibration"
    monkeypatch.setenv("HF_LEROBOT_HOME", str(tmp_path / "home"))
    assert calibration_dir() == tmp_path / "home" / "calibration"
    monkeypatch.setenv("HF_LEROBOT_CALIBRATION", str(tmp_path / "cal"))
    root = tmp_path / "cal"
    spec = arm_spec("so101")
    assert find_calibration("blue", spec) is None
    with pytest.raises(CalibrationError, match="vla calibrate --robot so101 --port /dev/x --id blue"):
        resolve_calibration("blue", spec, port="/dev/x")
    # An older LeRobot's folder (so101_follower) is found; new files go to the current one (so_follower).
    old = root / "robots" / "so101_follower" / "blue.json"
    old.parent.mkdir(parents=True)
    old.write_text((HERE / "so101_follower.json").read_text())
    assert load_calibration("blue", "so101").path == old
    assert default_calibration_path("blue", spec) == old
    assert default_calibration_path("red", spec) == root / "robots" / "so_follower" / "red.json"
    leader = arm_spec("koch", "leader")
    assert (
        default_calibration_path("koch-leader", leader) == root / "teleoperators" / "koch_leader" / "koch-leader.json"
    )
    with pytest.raises(CalibrationError, match="--role leader --port PORT`"):
        resolve_calibration(None, leader)


# ---- the procedure, on a fake bus with the servos' arithmetic ----
class FakeBus:
    """Registers per motor; Present_Position = actual - Homing_Offset (Feetech) or + (Dynamixel)."""

    def __init__(self, spec, actual):
        self.spec, self.actual = spec, dict(actual)
        self.regs = {n: {"Homing_Offset": 77, "Min_Position_Limit": 5, "Max_Position_Limit": 4000} for n in spec.names}
        self.writes, self.torque = [], {n: 1 for n in spec.names}
        self.sign = -1 if spec.vendor == "feetech" else 1
        self.trajectory = None  # callable(read index) -> {name: actual}
        self.reads = 0

    def write(self, reg, name, value):
        self.writes.append((reg, name, value))
        self.regs[name][reg] = value

    def read(self, reg, name):
        return self.regs[name].get(reg, 0)

    def sync_read(self, reg, motors=None):
        assert reg == "Present_Position"
        if self.trajectory is not None:
            self.actual.update(self.trajectory(self.reads))
        self.reads += 1
        names = list(motors or self.spec.names)
        return {n: self.actual[n] + self.sign * self.regs[n]["Homing_Offset"] for n in names}

    def disable_torque(self, motors=None):
        for n in motors or self.spec.names:
            self.torque[n] = 0

    def enable_torque(self, motors=None):
        for n in motors or self.spec.names:
            self.torque[n] = 1


@pytest.mark.parametrize("robot, role", [("so101", "follower"), ("koch", "leader")])
def test_calibrate_arm_as_lerobot_does(robot, role):
    spec = arm_spec(robot, role)
    middle = {n: 1000 + 300 * i for i, n in enumerate(spec.names)}
    bus = FakeBus(spec, middle)
    asked = []
    moving = [n for n in spec.names if n not in spec.full_turn]

    def trajectory(i):  # each moving joint swings +-(400 + 10 * index) around the middle pose
        return {n: middle[n] + int((400 + 10 * k) * np.sin(i / 3)) for k, n in enumerate(moving)}

    bus.trajectory = trajectory
    cal = calibrate_arm(bus, spec, ask=lambda p: asked.append(p) or "", range_samples=40, poll_hz=1e6)
    assert len(asked) == 1 and "middle" in asked[0]
    assert all(t == 0 for t in bus.torque.values())
    for n, m in cal.items():
        pos_at_middle = middle[n] + bus.sign * m.homing_offset
        assert pos_at_middle == 2047, n  # the middle pose reads half a turn
        assert m.homing_offset == half_turn_homings({n: middle[n]}, spec)[n]
        assert bus.regs[n]["Homing_Offset"] == m.homing_offset
        assert (bus.regs[n]["Min_Position_Limit"], bus.regs[n]["Max_Position_Limit"]) == (m.range_min, m.range_max)
        if n in spec.full_turn:
            assert (m.range_min, m.range_max) == (0, 4095)
        else:
            k = moving.index(n)
            amp = 400 + 10 * k
            assert 2047 - amp <= m.range_min < 2047 - amp * 0.9 and 2047 + amp * 0.9 < m.range_max <= 2047 + amp
        assert m.drive_mode == spec.drive_modes.get(n, 0)
    assert not mismatched_motors(bus, cal, spec)
    if robot == "koch":
        assert ("Drive_Mode", "elbow_flex", 1) in bus.writes
        assert cal["elbow_flex"].drive_mode == 1
    # Offsets are reset (0, whole-turn limits) before the middle pose is read, as LeRobot's reset_calibration.
    first_offset = next(w for w in bus.writes if w[0] == "Homing_Offset")
    assert first_offset[2] == 0


def test_ranges_until_enter_and_a_joint_that_never_moved():
    spec = arm_spec("so101")
    bus = FakeBus(spec, {n: 2000 for n in spec.names})
    bus.regs["shoulder_pan"]["Homing_Offset"] = 0
    bus.trajectory = lambda i: {"shoulder_pan": 2000 + (i % 7) * 10}
    stop = threading.Event()
    stop.set()
    with pytest.raises(CalibrationError, match="shoulder_lift, elbow_flex.*did not move"):
        record_ranges(bus, list(spec.names[:3]), until=stop)
    lo, hi = record_ranges(bus, ["shoulder_pan"], samples=10, poll_hz=1e6)
    assert (lo["shoulder_pan"], hi["shoulder_pan"]) == (2000, 2060)

    # Interactive: ranges are recorded until ask() returns (the user pressed Enter).
    answered = threading.Event()
    bus2 = FakeBus(spec, {n: 2000 for n in spec.names})
    bus2.trajectory = lambda i: {n: 2000 + (50 if i % 2 else -50) for n in spec.names}

    def ask(prompt):
        if "Enter when done" in prompt:
            answered.wait(5)
        return ""

    t = threading.Timer(0.2, answered.set)
    t.start()
    cal = calibrate_arm(bus2, spec, ask=ask, poll_hz=200)
    assert bus2.reads > 5 and cal["elbow_flex"].range_max - cal["elbow_flex"].range_min == 100


def test_vla_calibrate_on_a_virtual_leader(tmp_path):
    """`vla calibrate` end to end: the virtual bus's scripted hand moves the leader while ranges are recorded."""
    from typer.testing import CliRunner

    from vla.cli import app
    from vla.robots.arm import ServoArm
    from vla.robots.virtual import VirtualBus

    out = tmp_path / "leader.json"
    with VirtualBus("so101", "leader", link=tmp_path / "leader") as vb:
        argv = ["calibrate", "--robot", "so101", "--role", "leader", "--port", vb.link, "--out", str(out)]
        r = CliRunner().invoke(app, argv + ["--yes", "--range-seconds", "2"])
        assert r.exit_code == 0, r.output
        assert "homing offsets written" in r.output and f"saved the so101 leader calibration to {out}" in r.output
        cal = load_calibration(out, "so101", role="leader")
        for name, m in cal.items():
            assert vb.servo(name).get("Homing_Offset") == m.homing_offset
            assert (vb.servo(name).get("Min_Position_Limit"), vb.servo(name).get("Max_Position_Limit")) == (
                m.range_min,
                m.range_max,
            )
        assert (cal["wrist_roll"].range_min, cal["wrist_roll"].range_max) == (0, 4095)
        assert sum(m.range_max - m.range_min > 100 for m in cal.values()) >= 4  # the hand moved the joints
        leader = ServoArm(vb.link, role="leader", calibration=out)
        leader.connect()
        try:
            q = leader.read_joints()
            assert q.shape == (6,) and (np.abs(q[:5]) <= 100).all() and 0 <= q[5] <= 100
        finally:
            leader.close()
        assert CliRunner().invoke(app, argv + ["--yes", "--range-seconds", "1"]).exit_code == 2  # no --overwrite
