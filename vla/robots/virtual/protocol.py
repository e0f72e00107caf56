"""The two wire protocols, server side: split a byte stream into instruction packets, run each against the
virtual servos, and build the status packets they send back.

Feetech protocol 0 (STS/SMS):  FF FF id len inst params.. checksum
    len = params + 2; checksum = ~(id + len + inst + params) & 0xFF. Status: FF FF id len error params.. sum.
    A packet with a bad checksum is ignored (the servo stays silent).
Dynamixel protocol 2.0:        FF FF FD 00 id len_lo len_hi inst params.. crc_lo crc_hi
    len = params + 3; CRC-16 (polynomial 0x8005, as ROBOTIS specifies) over everything before it.
    Byte stuffing: inside inst+params, FF FF FD is sent as FF FF FD FD. Status: inst 0x55, then an error
    byte, then params. A bad CRC gets a CRC Error status.
Both: id 0xFE is broadcast (no reply, except ping, sync read and bulk read, where each addressed servo
replies in turn). Sync/bulk reads answer in the order the ids are listed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from vla.robots.virtual.servo import CRC_ERROR, DATA_LENGTH, INSTRUCTION_ERROR, OK, VirtualServo

BROADCAST = 0xFE
PING, READ, WRITE, REG_WRITE, ACTION, REBOOT = 0x01, 0x02, 0x03, 0x04, 0x05, 0x08
SYNC_READ, SYNC_WRITE, BULK_READ, BULK_WRITE = 0x82, 0x83, 0x92, 0x93
STATUS = 0x55  # Dynamixel's instruction byte of a status packet

# Which instructions a servo answers at each reply level (see VirtualServo.reply_level).
_NEEDS_LEVEL = {PING: 0, READ: 1, SYNC_READ: 1, BULK_READ: 1}

Servos = Callable[[], dict[int, VirtualServo]]  # the servos on the bus by their current ID register


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC = _crc_table()


def crc16(data: bytes | bytearray) -> int:
    crc = 0
    for b in data:
        crc = ((crc << 8) ^ _CRC[((crc >> 8) ^ b) & 0xFF]) & 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Dynamixel byte stuffing of inst+params: an FD after FF FF gets a second FD."""
    if b"\xff\xff\xfd" not in body:
        return body
    out = bytearray()
    for b in body:
        out.append(b)
        if b == 0xFD and len(out) >= 3 and out[-3:-1] == b"\xff\xff":
            out.append(0xFD)
    return bytes(out)


def unstuff(body: bytes) -> bytes:
    return body.replace(b"\xff\xff\xfd\xfd", b"\xff\xff\xfd")


class Feetech:
    """Feetech protocol 0 framing."""

    name = "feetech"

    @staticmethod
    def packets(buf: bytearray) -> Iterator[tuple[int, int, bytes]]:
        """(id, instruction, params) of every complete, valid packet at the front of `buf` (consumed)."""
        while True:
            start = buf.find(b"\xff\xff")
            if start < 0:
                del buf[: max(0, len(buf) - 1)]  # keep a trailing FF: it may start the next header
                return
            del buf[:start]
            if len(buf) < 4:
                return
            if buf[2] == 0xFF:  # FF FF FF: the header starts one byte later
                del buf[:1]
                continue
            length = buf[3]
            if length < 2:
                del buf[:2]
                continue
            total = length + 4
            if len(buf) < total:
                return
            pkt = bytes(buf[:total])
            if (~sum(pkt[2:-1])) & 0xFF != pkt[-1]:
                del buf[:2]  # bad checksum: a real servo ignores the packet
                continue
            del buf[:total]
            yield pkt[2], pkt[4], pkt[5:-1]

    @staticmethod
    def status(motor_id: int, error: int, params: bytes = b"") -> bytes:
        body = bytes([motor_id, len(params) + 2, error & 0xFF]) + params
        return b"\xff\xff" + body + bytes([(~sum(body)) & 0xFF])

    @staticmethod
    def error_byte(code: int) -> int:
        return 0  # Feetech's status byte reports hardware alarms only (voltage, angle, heat, current, load)

    address_size = 1  # addresses and lengths are one byte


class Dynamixel:
    """Dynamixel protocol 2.0 framing."""

    name = "dynamixel"

    @staticmethod
    def packets(buf: bytearray) -> Iterator[tuple[int, int, bytes]]:
        while True:
            start = buf.find(b"\xff\xff\xfd\x00")
            if start < 0:
                del buf[: max(0, len(buf) - 3)]
                return
            del buf[:start]
            if len(buf) < 7:
                return
            length = buf[5] | (buf[6] << 8)
            if length < 3:
                del buf[:4]
                continue
            total = 7 + length
            if len(buf) < total:
                return
            pkt = bytes(buf[:total])
            del buf[:total]
            if crc16(pkt[:-2]) != (pkt[-2] | (pkt[-1] << 8)):
                yield pkt[4], -1, b""  # the servo answers a CRC Error
                continue
            body = unstuff(pkt[7:-2])
            yield pkt[4], body[0], body[1:]

    @staticmethod
    def status(motor_id: int, error: int, params: bytes = b"") -> bytes:
        body = stuff(bytes([STATUS, error & 0xFF]) + params)
        head = bytes([0xFF, 0xFF, 0xFD, 0x00, motor_id, (len(body) + 2) & 0xFF, (len(body) + 2) >> 8])
        crc = crc16(head + body)
        return head + body + bytes([crc & 0xFF, crc >> 8])

    @staticmethod
    def error_byte(code: int) -> int:
        return code

    address_size = 2


def _word(b: bytes, i: int, size: int) -> int:
    return b[i] if size == 1 else b[i] | (b[i + 1] << 8)


def handle(proto, servos: dict[int, VirtualServo], motor_id: int, inst: int, params: bytes) -> list[bytes]:
    """Run one instruction packet; the status packets the servos send back, in order."""
    n = proto.address_size
    out: list[bytes] = []

    def reply(servo: VirtualServo, code: int, data: bytes = b"", instruction: int = inst) -> None:
        if servo.reply_level() >= _NEEDS_LEVEL.get(instruction, 2):
            out.append(proto.status(servo.id, proto.error_byte(code), data))

    if inst == -1:  # Dynamixel CRC mismatch
        s = servos.get(motor_id)
        if s is not None and motor_id != BROADCAST:
            out.append(proto.status(s.id, CRC_ERROR))
        return out

    if inst in (PING, READ, WRITE, REG_WRITE, ACTION) or (inst == REBOOT and proto is Dynamixel):
        targets = sorted(servos.values(), key=lambda s: s.id) if motor_id == BROADCAST else [servos.get(motor_id)]
        for s in targets:
            if s is None:
                continue
            if inst == PING:
                data = b"" if proto is Feetech else s.model_number.to_bytes(2, "little") + bytes([s.model.firmware[0]])
                reply(s, OK, data)
                continue
            if motor_id == BROADCAST and inst == READ:
                continue  # a read has no broadcast form
            if inst == READ:
                if len(params) != 2 * n:
                    reply(s, DATA_LENGTH)
                    continue
                data, code = s.read(_word(params, 0, n), _word(params, n, n))
                reply(s, code, data)
            elif inst == WRITE:
                code = s.write(_word(params, 0, n), params[n:]) if len(params) > n else DATA_LENGTH
                if motor_id != BROADCAST:
                    reply(s, code)
            elif inst == REG_WRITE:
                s.pending = (_word(params, 0, n), bytes(params[n:])) if len(params) > n else None
                if motor_id != BROADCAST:
                    reply(s, OK)
            elif inst == ACTION:
                if s.pending is not None:
                    s.write(*s.pending)
                    s.pending = None
                if motor_id != BROADCAST:
                    reply(s, OK)
            elif inst == REBOOT:
                if motor_id != BROADCAST:
                    reply(s, OK)
                s.power_cycle()
        return out

    if inst == SYNC_READ:
        if len(params) < 2 * n:
            return out
        addr, length = _word(params, 0, n), _word(params, n, n)
        for i in params[2 * n :]:
            s = servos.get(i)
            if s is not None:
                data, code = s.read(addr, length)
                reply(s, code, data)
        return out

    if inst == SYNC_WRITE:
        if len(params) < 2 * n:
            return out
        addr, length = _word(params, 0, n), _word(params, n, n)
        rec = params[2 * n :]
        for k in range(0, len(rec) - length, length + 1):
            s = servos.get(rec[k])
            if s is not None:
                s.write(addr, rec[k + 1 : k + 1 + length])
        return out

    if inst == BULK_READ and proto is Dynamixel:
        for k in range(0, len(params) - 4, 5):
            s = servos.get(params[k])
            if s is not None:
                data, code = s.read(_word(params, k + 1, 2), _word(params, k + 3, 2))
                reply(s, code, data)
        return out

    if inst == BULK_WRITE and proto is Dynamixel:
        k = 0
        while k + 5 <= len(params):
            addr, length = _word(params, k + 1, 2), _word(params, k + 3, 2)
            s = servos.get(params[k])
            if s is not None:
                s.write(addr, params[k + 5 : k + 5 + length])
            k += 5 + length
        return out

    # an instruction this servo does not know: Dynamixel says so, Feetech stays silent
    s = servos.get(motor_id)
    if proto is Dynamixel and s is not None:
        out.append(proto.status(s.id, INSTRUCTION_ERROR))
    return out
