"""FeetechBus and DynamixelBus, on the vendors' SDKs, against virtual buses on pseudo-terminals."""

import time

import pytest

from vla.robots.bus import (
    BusError,
    Motor,
    MotorNotAnswering,
    PortNotFound,
    WrongModel,
    bus_class,
    make_bus,
    standard_motors,
)
from vla.robots.dynamixel import DynamixelBus
from vla.robots.feetech import FeetechBus
from vla.robots.tables import get_model
from vla.robots.virtual import VirtualBus

pytestmark = pytest.mark.sim

VENDOR = {"so101": FeetechBus, "koch": DynamixelBus}


@pytest.fixture(params=["so101", "koch"])
def rig(request, tmp_path):
    """(virtual follower bus, a connected client bus of the robot's vendor)."""
    robot = request.param
    with VirtualBus(robot, "follower", tmp_path / robot, noise=0.0) as vb:
        bus = VENDOR[robot](vb.link, standard_motors(robot), timeout_ms=20)
        bus.connect()
        yield vb, bus
        bus.close()


def test_handshake_ping_read_write(rig):
    vb, bus = rig
    assert bus.is_connected
    for name, m in bus.motors.items():
        assert bus.ping(name) == get_model(m.model).model_number
        assert bus.ping(m.id) == bus.ping(name)  # a motor by name or by id
    assert len({bus.firmware(n) for n in bus.motors}) == 1
    bus.write("Return_Delay_Time", "wrist_roll", 7)
    assert bus.read("Return_Delay_Time", "wrist_roll") == 7
    assert vb.servo("wrist_roll").get("Return_Delay_Time") == 7  # it landed in the servo's control table
    present = bus.sync_read("Present_Position")
    assert list(present) == list(bus.motors) and all(0 <= v < 4096 for v in present.values())
    assert bus.sync_read("Present_Position", ["gripper", 1]) == {
        "gripper": present["gripper"],
        "shoulder_pan": present["shoulder_pan"],
    }


def test_goal_position_moves_the_mujoco_joint(rig):
    vb, bus = rig
    bus.enable_torque()
    assert all(v == 1 for v in bus.sync_read("Torque_Enable").values())
    start = bus.sync_read("Present_Position")
    q0 = vb.joint("elbow_flex")
    bus.sync_write(
        "Goal_Position", {"elbow_flex": start["elbow_flex"] + 400, "shoulder_pan": start["shoulder_pan"] - 200}
    )
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        now = bus.sync_read("Present_Position")
        if (
            abs(now["elbow_flex"] - start["elbow_flex"] - 400) <= 3
            and abs(now["shoulder_pan"] - start["shoulder_pan"] + 200) <= 3
        ):
            break
        time.sleep(0.05)
    assert abs(now["elbow_flex"] - (start["elbow_flex"] + 400)) <= 3, now
    assert abs(now["shoulder_pan"] - (start["shoulder_pan"] - 200)) <= 3, now
    assert vb.joint("elbow_flex") - q0 == pytest.approx(400 * 2 * 3.14159265 / 4096, abs=0.01)  # 400 ticks, in rad
    bus.disable_torque()
    assert all(v == 0 for v in bus.sync_read("Torque_Enable").values())
    assert vb.servo("elbow_flex").target_ticks is None  # free


def test_torque_lock_and_eeprom(rig):
    vb, bus = rig
    bus.enable_torque(["gripper"])
    if isinstance(bus, FeetechBus):  # LeRobot's convention: torque on locks the EEPROM, off unlocks it
        assert bus.read("Lock", "gripper") == 1
        bus.disable_torque("gripper")
        assert bus.read("Lock", "gripper") == 0
    else:  # Dynamixel refuses EEPROM writes while torque is on
        with pytest.raises(BusError, match="torque disabled"):
            bus.write("Homing_Offset", "gripper", 10)
        bus.disable_torque("gripper")
    bus.write("Homing_Offset", "gripper", -100)
    assert bus.read("Homing_Offset", "gripper") == -100
    raw = vb.servo("gripper").mem[get_model(bus.motors["gripper"].model).address("Homing_Offset")[0]]
    assert raw == (100 if isinstance(bus, FeetechBus) else 0x9C)  # sign-magnitude vs two's complement low byte
    with pytest.raises(BusError, match="read-only"):
        bus.write("Present_Position", "gripper", 5)
    with pytest.raises(BusError, match="no register 'Goal_Positon'"):
        bus.read("Goal_Positon", "gripper")
    with pytest.raises(BusError, match="no motor named 'elbow'"):
        bus.read("Present_Position", "elbow")


def test_homing_offset_follows_the_servo_convention(rig):
    """LeRobot's half-turn homing: the offset it computes makes the present position read 2047."""
    vb, bus = rig
    bus.disable_torque()
    pos = bus.sync_read("Present_Position")
    for name, p in pos.items():
        offset = p - 2047 if isinstance(bus, FeetechBus) else 2047 - p  # Feetech: present = actual - offset
        bus.write("Homing_Offset", name, offset)
    assert all(abs(v - 2047) <= 1 for v in bus.sync_read("Present_Position").values())


def test_wrong_model_number(tmp_path):
    motors = standard_motors("so101")
    motors["elbow_flex"] = Motor(3, "sts3250")  # the arm has another servo model at id 3
    with VirtualBus("so101", "follower", tmp_path / "p", motors=motors) as vb:
        bus = FeetechBus(vb.link, standard_motors("so101"), timeout_ms=20)
        with pytest.raises(WrongModel) as e:
            bus.connect()
        assert "'elbow_flex' (id 3): expected sts3215 (model number 777), got model number 2825" in str(e.value)
        assert str(vb.link) in str(e.value) and not bus.is_connected


def test_missing_port_and_motor_not_answering(tmp_path):
    with pytest.raises(PortNotFound, match=r"no serial port at /dev/nonexistent-tty: .*ls /dev/ttyACM\*"):
        FeetechBus("/dev/nonexistent-tty", standard_motors("so101")).connect()
    with VirtualBus("koch", "follower", tmp_path / "k") as vb:
        vb.set_online(4, False)
        bus = DynamixelBus(vb.link, standard_motors("koch"), timeout_ms=10, retries=1)
        with pytest.raises(MotorNotAnswering, match=r"no answer from 'wrist_flex' \(id 4\)"):
            bus.connect()
        bus.connect(handshake=False)
        with pytest.raises(MotorNotAnswering, match=r"sync read of Present_Position failed at 'wrist_flex' \(id 4\)"):
            bus.sync_read("Present_Position")
        with pytest.raises(MotorNotAnswering, match=r"read Present_Position of 'wrist_flex' \(id 4\).*2 tries"):
            bus.read("Present_Position", "wrist_flex")
        vb.set_online(4, True)
        assert len(bus.sync_read("Present_Position")) == 6  # a retry after the motor is back succeeds
        bus.close()
        assert not bus.is_connected
        with pytest.raises(BusError, match="not connected"):
            bus.read("Present_Position", "gripper")


def test_bus_construction_checks():
    with pytest.raises(ValueError, match="not a feetech servo"):
        FeetechBus("/dev/null", {"a": Motor(1, "xl330-m288")})
    with pytest.raises(ValueError, match="unique"):
        FeetechBus("/dev/null", {"a": Motor(1, "sts3215"), "b": Motor(1, "sts3215")})
    with pytest.raises(ValueError, match="cannot run at 2000000 baud"):
        FeetechBus("/dev/null", {"a": Motor(1, "sts3215")}, baudrate=2_000_000)
    with pytest.raises(ValueError, match="unknown servo model"):
        Motor(1, "sts9999")
    assert bus_class("dynamixel") is DynamixelBus
    assert isinstance(make_bus("so100", "/dev/x"), FeetechBus) and isinstance(
        make_bus(2.0, "/dev/x", {"a": Motor(1, "xl430-w250")}), DynamixelBus
    )
    assert [m.model for m in standard_motors("koch", "leader").values()] == ["xl330-m077"] * 6


def test_sign_encodings():
    sts, xl = get_model("sts3215"), get_model("xl430-w250")
    assert sts.encode("Homing_Offset", -5) == (1 << 11) | 5 and sts.decode("Homing_Offset", (1 << 11) | 5) == -5
    assert sts.encode("Goal_Position", -1) == 0x8001 and sts.decode("Present_Position", 2047) == 2047
    assert xl.encode("Homing_Offset", -1) == 0xFFFFFFFF and xl.decode("Present_Position", 0xFFFFFFFE) == -2
    assert sts.encode("Lock", 1) == 1
    for model, reg, bad in ((sts, "Homing_Offset", 2048), (sts, "Lock", 256), (xl, "Goal_Position", 2**31)):
        with pytest.raises(ValueError):
            model.encode(reg, bad)


def test_a_late_reply_that_trips_the_sdk_is_a_failed_try():
    """scservo_sdk's ping reads the model number from a reply it takes to be its own: a late reply to
    an earlier try (no parameters) made it index past the data (IndexError) instead of a retry."""
    import scservo_sdk as scs

    bus = FeetechBus("/dev/null", {"m": Motor(1, "sts3215")}, retries=2)
    bus._recover = lambda: None
    bus._packet = scs.PacketHandler(0)
    tries = iter([IndexError("list index out of range"), (777, scs.COMM_SUCCESS, 0)])

    def op():
        nxt = next(tries)
        if isinstance(nxt, Exception):
            raise nxt
        return nxt

    assert bus._retry(op, "ping 'm' (id 1)") == 777


def test_the_handshake_waits_for_a_motor_silent_at_first(tmp_path):
    """The first packets after a port opens can go unanswered: the handshake pings a silent motor twice
    more (HANDSHAKE_PAUSE_S apart) before it calls it missing."""
    import threading

    with VirtualBus("so101", "follower", tmp_path / "s") as vb:
        vb.set_online(1, False)
        threading.Timer(0.1, vb.set_online, (1, True)).start()
        bus = FeetechBus(vb.link, standard_motors("so101"), timeout_ms=10, retries=0)
        bus.connect()
        assert bus.is_connected
        bus.close()
