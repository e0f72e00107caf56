"""ServoArm on a fake bus (servo registers and homing arithmetic, no serial port): connect, units,
commands, leader / follower roles, degrees, cameras, close; the launch files build it and the safety
layer keeps its actions inside the calibrated range."""

import shutil
import time
import tomllib

import cv2
import numpy as np
import pytest

from vla.robots.arm import ServoArm, arm_embodiment, make_arm
from vla.robots.calibration import CalibrationError, load_calibration
from vla.robots.specs import arm_spec
from vla.runtime.launch import launch_dir, load_launch
from vla.runtime.robot import RobotError, make_robot
from vla.runtime.safety import SafetyConfig, SafetyFilter, per_dim
from vla.spec import STATE, image_key

from helpers import FIXTURES

CAL = FIXTURES / "lerobot_calibration"


class FakeBus:
    """One arm's registers. Present = actual - Homing_Offset (Feetech) / + (Dynamixel); a goal is reached at once."""

    instances: list = []

    def __init__(self, port, motors, *, baudrate=None):
        self.port, self.motors = port, motors
        self.feetech = next(iter(motors.values())).model.startswith("sts")
        self.regs = {n: {"Homing_Offset": 0, "Min_Position_Limit": 0, "Max_Position_Limit": 4095} for n in motors}
        self.actual = {n: 2047 for n in motors}
        self.torque = {n: 0 for n in motors}
        self.log, self.is_connected = [], False
        FakeBus.instances.append(self)

    def connect(self, handshake=True):
        self.is_connected = True

    def close(self, disable_torque=False):
        if disable_torque:
            self.disable_torque()
        self.is_connected = False

    def _sign(self):
        return -1 if self.feetech else 1

    def present(self, n):
        return self.actual[n] + self._sign() * self.regs[n]["Homing_Offset"]

    def read(self, reg, n):
        return self.present(n) if reg == "Present_Position" else self.regs[n].get(reg, 0)

    def write(self, reg, n, value):
        self.log.append((reg, n, value))
        if reg == "Goal_Position":
            self.actual[n] = value - self._sign() * self.regs[n]["Homing_Offset"]
        self.regs[n][reg] = value

    def sync_read(self, reg, motors=None):
        return {n: self.read(reg, n) for n in motors or self.motors}

    def sync_write(self, reg, values):
        for n, v in values.items():
            self.write(reg, n, v)

    def enable_torque(self, motors=None):
        for n in motors or self.motors:
            self.torque[n] = 1
            self.log.append(("Torque_Enable", n, 1))

    def disable_torque(self, motors=None):
        for n in motors or self.motors:
            self.torque[n] = 0
            self.log.append(("Torque_Enable", n, 0))


@pytest.fixture
def fake_bus(monkeypatch):
    FakeBus.instances.clear()
    monkeypatch.setattr("vla.robots.arm.bus_class", lambda vendor: FakeBus)
    return FakeBus.instances


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (40, 30))
    for i in range(4):
        w.write(np.full((30, 40, 3), 60 * i, np.uint8))
    w.release()
    return path


def test_follower_connects_observes_and_moves(fake_bus, clip):
    cal = load_calibration(CAL / "so101_follower.json", "so101")
    arm = ServoArm(
        "/dev/fake",
        robot="so101",
        calibration=CAL / "so101_follower.json",
        cameras=f"front=video:{clip}",
        image_size=24,
    )
    assert arm.embodiment.name == "so101" and arm.embodiment.camera_names == ("front",)
    arm.connect()
    try:
        bus = fake_bus[0]
        # The calibration went into the servos, LeRobot's follower settings too, then torque on where it stood.
        for n, m in cal.items():
            assert (bus.regs[n]["Homing_Offset"], bus.regs[n]["Min_Position_Limit"]) == (m.homing_offset, m.range_min)
            assert bus.regs[n]["P_Coefficient"] == 16 and bus.regs[n]["Operating_Mode"] == 0
        assert bus.regs["gripper"]["Max_Torque_Limit"] == 500 and all(bus.torque.values())
        first_torque_on = next(i for i, e in enumerate(bus.log) if e == ("Torque_Enable", "shoulder_pan", 1))
        assert ("Goal_Position", "shoulder_pan", bus.present("shoulder_pan")) in bus.log[:first_torque_on]

        obs = arm.observe()
        raw = bus.sync_read("Present_Position")
        assert obs[STATE].dtype == np.float32 and obs[STATE].tolist() == pytest.approx(cal.normalize(raw), abs=1e-5)
        assert obs[image_key("front")].shape == (24, 24, 3)
        assert set(obs) == set(arm.embodiment.frame_shapes()) - {"action"}

        target = np.array([10.0, -20.0, 30.0, -40.0, 50.0, 60.0], np.float32)
        arm.send_action(target)
        assert arm.read_joints() == pytest.approx(target, abs=0.1)  # one encoder count is < 0.1 %
        assert bus.regs["gripper"]["Goal_Position"] == cal["gripper"].unnormalize(60.0)
        arm.send_action(np.array([150, -150, 0, 0, 0, 120], np.float32))  # clamped to the calibrated range
        assert arm.read_joints()[[0, 1, 5]] == pytest.approx([100, -100, 100], abs=0.1)
        with pytest.raises(RobotError, match="expected 6 values"):
            arm.send_action(np.zeros(5))
        with pytest.raises(RobotError, match="non-finite"):
            arm.send_action(np.full(6, np.nan))
        arm.stop()
        assert bus.regs["elbow_flex"]["Goal_Position"] == bus.present("elbow_flex")
    finally:
        arm.close()
    assert not any(bus.torque.values()) and not bus.is_connected and not arm.cameras["front"].is_connected
    arm.close()  # twice is fine


def test_max_relative_target_caps_each_step(fake_bus):
    arm = ServoArm("/dev/fake", calibration=CAL / "so101_follower.json", max_relative_target={"shoulder_pan": 5.0})
    arm.connect()
    start = arm.read_joints()
    arm.send_action(start + np.array([30, 3, 0, 0, 0, 0], np.float32))
    moved = arm.read_joints() - start
    assert moved[0] == pytest.approx(5.0, abs=0.1) and moved[1] == pytest.approx(3.0, abs=0.1)
    arm.close()
    with pytest.raises(Exception, match="unknown joints"):
        ServoArm("/dev/fake", max_relative_target={"elbow": 1.0})


def test_leaders_are_read_not_commanded(fake_bus):
    so = make_arm("so101", "leader", "/dev/fake", calibration=CAL / "so101_follower.json")
    so.connect()
    assert not any(fake_bus[0].torque.values())
    assert so.read_joints().shape == (6,)
    with pytest.raises(RobotError, match="leader is moved by hand"):
        so.send_action(np.zeros(6, np.float32))
    so.close()
    # LeRobot's Koch leader: the gripper holds half-open under a current limit (a trigger), the rest is free.
    koch = make_arm("koch", "leader", "/dev/fake", calibration=CAL / "koch_leader.json")
    koch.connect()
    bus = fake_bus[1]
    cal = load_calibration(CAL / "koch_leader.json", "koch", role="leader")
    assert bus.torque == {**{n: 0 for n in cal}, "gripper": 1}
    assert bus.regs["gripper"]["Operating_Mode"] == 5 and bus.regs["elbow_flex"]["Operating_Mode"] == 4
    assert bus.regs["gripper"]["Goal_Position"] == cal["gripper"].unnormalize(50.0)
    assert bus.regs["elbow_flex"]["Drive_Mode"] == 1
    koch.close()
    assert not any(bus.torque.values())  # LeRobot's disconnect: torque off, leaders too


def test_missing_calibration_says_how_to_make_one(fake_bus, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_LEROBOT_CALIBRATION", str(tmp_path))
    arm = ServoArm("/dev/ttyACM7", robot="so101")
    with pytest.raises(CalibrationError, match="run `vla calibrate --robot so101 --port /dev/ttyACM7`"):
        arm.connect()
    assert not fake_bus  # nothing touched the hardware
    # By id, where LeRobot keeps them (here a LeRobot 0.4 file of a Koch follower).
    (tmp_path / "robots" / "koch_follower").mkdir(parents=True)
    src = (CAL / "koch_leader.json").read_text()
    (tmp_path / "robots" / "koch_follower" / "lab.json").write_text(src)
    arm = ServoArm("/dev/fake", robot="koch", calibration="lab")
    arm.connect()
    assert arm.calibration.path == tmp_path / "robots" / "koch_follower" / "lab.json"
    assert (
        fake_bus[0].regs["gripper"]["Operating_Mode"] == 5 and fake_bus[0].regs["elbow_flex"]["Position_P_Gain"] == 1500
    )
    arm.close()


def test_degrees_embodiment_takes_its_limits_from_the_calibration(fake_bus):
    arm = ServoArm("/dev/fake", calibration=CAL / "so101_follower.json", use_degrees=True)
    assert arm.embodiment.name == "so101-deg" and arm.embodiment.actions[0].low == -180.0  # before connect
    arm.connect()
    emb = arm.embodiment
    cal = load_calibration(CAL / "so101_follower.json", "so101", use_degrees=True)
    m = cal["shoulder_pan"]
    assert [d.unit for d in emb.actions] == ["deg"] * 5 + ["%"]
    assert emb.actions[0].low == m.normalize(m.range_min) and emb.actions[0].high == m.normalize(m.range_max)
    assert (emb.actions[5].low, emb.actions[5].high) == (0.0, 100.0)
    arm.send_action(np.array([12.5, 0, 0, 0, 0, 50], np.float32))
    assert arm.read_joints()[0] == pytest.approx(12.5, abs=360 / 4095)
    arm.close()
    assert arm_embodiment(arm_spec("koch"), use_degrees=False).name == "koch"


@pytest.mark.parametrize("name", ["so101-real", "koch-real"])
def test_launch_files_build_the_arm_and_safety_keeps_the_calibrated_range(name):
    cfg = load_launch(name)
    raw = tomllib.loads((launch_dir() / f"{name}.toml").read_text())
    arm = make_robot(cfg.robot)  # not connected: no hardware here
    assert isinstance(arm, ServoArm) and arm.port == raw["robot"]["options"]["port"]
    emb = arm.embodiment
    assert cfg.policy.embodiment == emb.name and cfg.control.hz == emb.control_hz == 30
    names = [d.name for d in emb.actions]
    for what in ("max_velocity", "max_acceleration"):
        assert set(raw["safety"][what]) - {"default"} <= set(names)
        assert (per_dim(getattr(cfg.safety, what), emb, what) > 0).all()
    f = SafetyFilter(emb, SafetyConfig(), dt=1 / 30)
    out = f.filter(0, np.array([150, -150, 20, 0, 0, -5], np.float32))
    assert out.tolist() == [100, -100, 20, 0, 0, 0] and f.counts["position_limit"] == 1


def test_copy_of_a_lerobot_file_connects_as_is(fake_bus, tmp_path):
    path = tmp_path / "my_arm.json"
    shutil.copy(CAL / "so101_drive_mode.json", path)
    arm = ServoArm("/dev/fake", calibration=str(path))
    arm.connect()
    assert arm.calibration["shoulder_pan"].inverted
    arm.send_action(np.array([90, 0, 0, 0, 0, 10], np.float32))
    assert arm.read_joints()[0] == pytest.approx(90, abs=0.1)
    arm.close()


def test_drives_the_virtual_follower(tmp_path):
    """The real path: FeetechBus on a virtual bus's pseudo-terminal, the servos' own homing arithmetic."""
    from vla.robots.bus import Motor
    from vla.robots.calibration import build_calibration, save_calibration, set_half_turn_homings
    from vla.robots.feetech import FeetechBus
    from vla.robots.virtual import VirtualBus

    spec = arm_spec("so101")
    with VirtualBus("so101", "follower", link=tmp_path / "so101") as vb:
        # A calibration made on the servos (homing at the rest pose, ranges +-500 ticks around it).
        with FeetechBus(vb.link, {n: Motor(i, m) for n, (i, m) in spec.motors.items()}) as bus:
            spec.prepare_calibration(bus)
            offsets = set_half_turn_homings(bus, spec)
            assert all(abs(p - 2047) <= 4 for p in bus.sync_read("Present_Position").values())
            bus.write("Homing_Offset", "gripper", 0)  # ServoArm.connect puts the calibration back
        values = {
            n: dict(id=i, drive_mode=0, homing_offset=offsets[n], range_min=1547, range_max=2547)
            for n, (i, _) in spec.motors.items()
        }
        values["wrist_roll"].update(range_min=0, range_max=4095)
        path = save_calibration(build_calibration(values, spec), tmp_path / "follower.json")

        arm = ServoArm(vb.link, calibration=path)
        arm.connect()
        try:
            assert vb.servo("gripper").get("Homing_Offset") == offsets["gripper"]
            assert vb.servo("gripper").get("Max_Torque_Limit") == 500
            state = arm.observe()[STATE]
            assert np.abs(state[:5]).max() < 3 and abs(state[5] - 50) < 3  # the rest pose is the middle
            goal = state + np.array([20, -15, 10, -10, 30, -20], np.float32)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                arm.send_action(goal)
                time.sleep(1 / 30)
                if np.abs(arm.read_joints() - goal).max() < 5:
                    break
            assert np.abs(arm.read_joints() - goal).max() < 5
        finally:
            arm.close()
        assert all(s.get("Torque_Enable") == 0 for s in vb.servos.values())
