"""The virtual bus itself: wire protocols, firmware rules, the leader, cameras, the link, the command."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import serial

from vla.outputs import OutputError
from vla.robots.bus import standard_motors
from vla.robots.dynamixel import DynamixelBus
from vla.robots.feetech import FeetechBus
from vla.robots.tables import get_model
from vla.robots.virtual import VirtualBus, VirtualCamera
from vla.robots.virtual.leader import Trajectory
from vla.robots.virtual.protocol import Dynamixel, Feetech, crc16, stuff, unstuff
from vla.robots.virtual.servo import ACCESS, DATA_LIMIT, OK, Shaft, VirtualServo

pytestmark = pytest.mark.sim


def test_crc_and_stuffing_match_the_dynamixel_sdk():
    from dynamixel_sdk import PacketHandler

    sdk = PacketHandler(2.0)
    rng = random.Random(0)
    for n in (1, 7, 64, 200):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert crc16(data) == sdk.updateCRC(0, list(data), n)
    body = b"\x03\x74\x00\xff\xff\xfd\x00\xff\xff\xfd"
    assert stuff(body) == b"\x03\x74\x00\xff\xff\xfd\xfd\x00\xff\xff\xfd\xfd" and unstuff(stuff(body)) == body


def test_packet_framing_skips_noise_and_bad_checksums():
    buf = bytearray(b"\x00\x17" + Feetech.status(3, 0, b"\x01\x02"))  # noise, then a well-formed packet
    buf[-1] ^= 0xFF  # ... with a broken checksum: ignored, as a Feetech servo ignores it
    assert list(Feetech.packets(buf)) == []
    ping = b"\xff\xff\x01\x02\x01" + bytes([(~(1 + 2 + 1)) & 0xFF])
    buf = bytearray(ping[:3])
    assert list(Feetech.packets(buf)) == [] and buf == ping[:3]  # a partial packet waits for its rest
    buf += ping[3:]
    assert list(Feetech.packets(buf)) == [(1, 1, b"")] and not buf
    pkt = bytearray(Dynamixel.status(5, 0, b"\x10"))
    pkt[-1] ^= 1
    assert list(Dynamixel.packets(bytearray(pkt))) == [(5, -1, b"")]  # a CRC error is reported, not run


def test_servo_firmware_rules():
    xl = VirtualServo(get_model("xl330-m288"), 3, noise=0)
    xl.shaft = Shaft(2100.0, 0.0, 0.0)
    a, n = xl.model.address("Operating_Mode")
    assert xl.write(xl.model.address("Torque_Enable")[0], b"\x01") == OK
    assert xl.get("Goal_Position") == 2100  # torque on holds where it stands
    assert xl.write(a, b"\x04") == ACCESS  # EEPROM is locked while torque is on
    assert xl.write(xl.model.address("Model_Number")[0], b"\x00\x00") == ACCESS  # read-only
    goal = xl.model.address("Goal_Position")[0]
    assert xl.write(goal, (5000).to_bytes(4, "little")) == DATA_LIMIT  # position mode: beyond Max_Position_Limit
    assert xl.write(goal, (2200).to_bytes(4, "little")) == OK and xl.target_ticks == 2200

    sts = VirtualServo(get_model("sts3215"), 1, noise=0)
    sts.shaft = Shaft(3000.0, 0.0, 0.0)
    off = sts.model.address("Homing_Offset")[0]
    assert sts.get("Lock") == 1
    sts.write(off, sts.model.encode("Homing_Offset", 100).to_bytes(2, "little"))  # with Lock 1: takes effect ...
    assert sts.read(sts.model.address("Present_Position")[0], 2)[0] == (2900).to_bytes(2, "little")
    sts.power_cycle()
    assert sts.get("Homing_Offset") == 0  # ... but is not kept at power-off
    sts.write(sts.model.address("Lock")[0], b"\x00")
    sts.write(off, sts.model.encode("Homing_Offset", -50).to_bytes(2, "little"))
    sts.power_cycle()
    assert sts.get("Homing_Offset") == -50 and sts.get("Lock") == 1 and sts.get("Present_Position") == 3050
    sts.write(sts.model.address("Min_Position_Limit")[0], (3000).to_bytes(2, "little"))
    sts.write(sts.model.address("Torque_Enable")[0], b"\x01")
    sts.write(sts.model.address("Goal_Position")[0], (10).to_bytes(2, "little"))
    assert sts.target_ticks == 3000 - 50  # the goal clamped to the angle limits, in the homed frame


def test_raw_wire_checksum_and_crc_errors(tmp_path):
    with VirtualBus("so101", "follower", tmp_path / "f") as vb:
        with serial.Serial(vb.link, 1_000_000, timeout=0.2) as s:
            ping = bytearray(b"\xff\xff\x02\x02\x01" + bytes([(~(2 + 2 + 1)) & 0xFF]))
            s.write(bytes(ping))
            assert s.read(6) == Feetech.status(2, 0)
            ping[-1] ^= 0xFF
            s.write(bytes(ping))
            assert s.read(6) == b""  # a bad checksum gets no answer
    with VirtualBus("koch", "follower", tmp_path / "k") as vb:
        with serial.Serial(vb.link, 1_000_000, timeout=0.2) as s:
            head = bytes([0xFF, 0xFF, 0xFD, 0x00, 1, 3, 0, 0x01])
            crc = crc16(head)
            s.write(head + bytes([crc & 0xFF, (crc >> 8) ^ 1]))
            assert s.read(11) == Dynamixel.status(1, 3)  # CRC Error status


def test_stuffed_values_cross_the_wire(tmp_path):
    """A value whose bytes read FF FF FD is byte-stuffed both ways by the SDK and the virtual servo."""
    with VirtualBus("koch", "follower", tmp_path / "k") as vb:
        bus = DynamixelBus(vb.link, standard_motors("koch"))
        bus.connect()
        bus.write("Homing_Offset", "elbow_flex", 0x00FDFFFF)
        assert bus.read("Homing_Offset", "elbow_flex") == 0x00FDFFFF
        assert bus.sync_read("Homing_Offset")["elbow_flex"] == 0x00FDFFFF
        bus.close()


def test_leaders_replay_their_hand(tmp_path):
    for robot, bus_cls in (("so101", FeetechBus), ("koch", DynamixelBus)):
        with VirtualBus(robot, "leader", tmp_path / robot) as vb:
            bus = bus_cls(vb.link, standard_motors(robot, "leader"))
            bus.connect()
            a = bus.sync_read("Present_Position")
            time.sleep(0.6)
            b = bus.sync_read("Present_Position")
            assert max(abs(a[n] - b[n]) for n in a) > 20, (robot, a, b)  # the hand moves the arm
            bus.enable_torque()
            bus.sync_write("Goal_Position", a)  # a leader is not driven by its goals: the hand wins
            time.sleep(0.3)
            assert bus.sync_read("Present_Position") != a
            bus.close()
    tr = Trajectory(np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 2.0]]), 0.5)
    assert tr.at(0.25)[0] == pytest.approx([0.5, 1.0]) and tr.at(tr.period)[0] == pytest.approx([0.0, 1.0])


def test_link_is_refused_if_it_exists_and_removed_on_stop(tmp_path):
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    with pytest.raises(OutputError, match="never replaces"):
        VirtualBus("so101", "follower", mine).start()
    assert mine.read_text() == "mine"
    vb = VirtualBus("so101", "follower", tmp_path / "port").start()
    assert os.readlink(tmp_path / "port").startswith("/dev/pts/")
    vb.stop()
    assert not os.path.lexists(tmp_path / "port")
    with pytest.raises(ValueError, match="no camera 'top'"):
        VirtualBus("so101", "follower", tmp_path / "x", cameras=["top"])


def test_virtual_camera(tmp_path):
    link = tmp_path / "arm"
    with VirtualBus("so101", "follower", link, cameras=["front", "wrist"], camera_size=(48, 64)) as vb:
        cam = VirtualCamera(link, "wrist", height=48, width=64)
        cam.connect()
        a = cam.read()
        t = time.monotonic()
        b = cam.read()  # a newer frame, within about a frame period
        assert time.monotonic() - t < 0.5
        assert a.shape == b.shape == (48, 64, 3) and a.dtype == np.uint8 and a.std() > 5
        assert cam.height == 48 and cam.width == 64
        with pytest.raises(ValueError, match="renders 48x64"):
            VirtualCamera(link, "front", height=480, width=640).connect()
        bus = FeetechBus(vb.link, standard_motors("so101"))
        bus.connect()
        bus.enable_torque()
        pos = bus.sync_read("Present_Position")
        front = VirtualCamera(link, "front")
        front.connect()
        before = front.read()
        bus.sync_write(
            "Goal_Position", {"shoulder_pan": pos["shoulder_pan"] + 500, "elbow_flex": pos["elbow_flex"] + 500}
        )
        time.sleep(0.8)
        assert np.abs(front.read().astype(int) - before.astype(int)).mean() > 2  # the front camera sees the arm move
        front.close()
        bus.close()
        cam.close()
    assert not Path(f"{link}.cam-wrist").exists()
    with pytest.raises(FileNotFoundError, match="--cameras wrist"):
        VirtualCamera(link, "wrist").connect()


def test_command_runs_until_sigterm_and_cleans_up(tmp_path):
    link = tmp_path / "koch"
    vla = Path(sys.executable).with_name("vla")
    proc = subprocess.Popen([str(vla), "virtual-bus", "--robot", "koch", "--link", str(link)], stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not os.path.lexists(link) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        bus = DynamixelBus(str(link), standard_motors("koch"))
        bus.connect()
        assert len(bus.sync_read("Present_Position")) == 6
        bus.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 0, out
    assert f"virtual koch follower on {link}" in out and "stopped" in out
    assert not os.path.lexists(link)
