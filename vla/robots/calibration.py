"""Calibration in LeRobot's format and units, and the procedure that makes one.

A calibration file is JSON, one entry per motor: {"id", "drive_mode", "homing_offset", "range_min",
"range_max"} (LeRobot's `MotorCalibration`, saved with indent 4). LeRobot's own files load as they are, from
a path or by id from where LeRobot keeps them (`find_calibration`).

Units are LeRobot's (`MotorsBus._normalize` / `_unnormalize`), so a dataset recorded by either stack agrees
to the bit:
  body joints  range_m100_100: the raw position clamped to [range_min, range_max], mapped to [-100, 100];
               the sign flipped when drive_mode is 1 (Feetech only: a Dynamixel servo inverts itself).
               degrees (use_degrees): (raw - (range_min + range_max) / 2) * 360 / (resolution - 1), no clamp.
  gripper      range_0_100: clamped, mapped to [0, 100]; 100 - x when drive_mode is 1 (Feetech).
Back to raw, the value is clamped to the unit range first (not in degrees) and truncated toward zero.

The procedure (`calibrate_arm`) is LeRobot's: torque off; the user puts the arm in the middle of its range
and the homing offsets are written so that pose reads half a turn (2047); then the user moves every joint
through its range while positions are read (until Enter, or for a fixed time / sample count in scripts);
full-turn joints get the whole encoder turn.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vla.robots.specs import DEGREES, RANGE_0_100, RANGE_M100_100, ArmSpec, arm_spec
from vla.spec import SpecError

log = logging.getLogger(__name__)

FIELDS = ("id", "drive_mode", "homing_offset", "range_min", "range_max")
NORM_MODES = (RANGE_M100_100, RANGE_0_100, DEGREES)


class CalibrationError(SpecError):
    """A calibration file that cannot be used, or a calibration that went wrong."""


@dataclass(frozen=True)
class MotorCalibration:
    """One motor's calibration (the five fields LeRobot saves) and the units it is read in."""

    id: int
    drive_mode: int
    homing_offset: int
    range_min: int
    range_max: int
    norm_mode: str = RANGE_M100_100
    resolution: int = 4096
    apply_drive_mode: bool = True  # Feetech: yes; Dynamixel: the servo applies its Drive_Mode itself

    def __post_init__(self):
        if self.norm_mode not in NORM_MODES:
            raise CalibrationError(f"norm_mode must be one of {NORM_MODES}, got {self.norm_mode!r}")
        if self.range_max <= self.range_min:
            raise CalibrationError(
                f"range_min {self.range_min} must be below range_max {self.range_max} (calibrate again)"
            )

    @property
    def inverted(self) -> bool:
        return bool(self.apply_drive_mode and self.drive_mode)

    @property
    def max_res(self) -> int:
        return self.resolution - 1

    # Scalar forms: LeRobot's arithmetic in LeRobot's order, so results agree to the last bit.
    def normalize(self, raw: int) -> float:
        lo, hi = self.range_min, self.range_max
        if self.norm_mode == DEGREES:
            return (raw - (lo + hi) / 2) * 360 / self.max_res
        bounded = min(hi, max(lo, raw))
        if self.norm_mode == RANGE_M100_100:
            norm = ((bounded - lo) / (hi - lo)) * 200 - 100
            return -norm if self.inverted else norm
        norm = ((bounded - lo) / (hi - lo)) * 100
        return 100 - norm if self.inverted else norm

    def unnormalize(self, value: float) -> int:
        if not math.isfinite(value):
            raise ValueError(f"motor id {self.id}: cannot command a non-finite position {value}")
        lo, hi = self.range_min, self.range_max
        if self.norm_mode == DEGREES:
            return int((value * self.max_res / 360) + (lo + hi) / 2)
        if self.norm_mode == RANGE_M100_100:
            value = -value if self.inverted else value
            bounded = min(100.0, max(-100.0, value))
            return int(((bounded + 100) / 200) * (hi - lo) + lo)
        value = 100 - value if self.inverted else value
        bounded = min(100.0, max(0.0, value))
        return int((bounded / 100) * (hi - lo) + lo)

    # Array forms: the same operations elementwise in float64 (identical results, see the tests).
    def normalize_array(self, raw) -> np.ndarray:
        x = np.asarray(raw, np.float64)
        lo, hi = float(self.range_min), float(self.range_max)
        if self.norm_mode == DEGREES:
            return (x - (lo + hi) / 2) * 360 / self.max_res
        b = np.minimum(hi, np.maximum(lo, x))
        if self.norm_mode == RANGE_M100_100:
            norm = ((b - lo) / (hi - lo)) * 200 - 100
            return -norm if self.inverted else norm
        norm = ((b - lo) / (hi - lo)) * 100
        return 100 - norm if self.inverted else norm

    def unnormalize_array(self, values) -> np.ndarray:
        v = np.asarray(values, np.float64)
        if not np.isfinite(v).all():
            raise ValueError(f"motor id {self.id}: cannot command non-finite positions")
        lo, hi = float(self.range_min), float(self.range_max)
        if self.norm_mode == DEGREES:
            out = (v * self.max_res / 360) + (lo + hi) / 2
        elif self.norm_mode == RANGE_M100_100:
            v = -v if self.inverted else v
            out = ((np.minimum(100.0, np.maximum(-100.0, v)) + 100) / 200) * (hi - lo) + lo
        else:
            v = 100 - v if self.inverted else v
            out = (np.minimum(100.0, np.maximum(0.0, v)) / 100) * (hi - lo) + lo
        return np.trunc(out).astype(np.int64)

    def limits(self) -> tuple[float, float]:
        """The calibrated range in this motor's units (what normalize returns at range_min / range_max,
        ordered low to high)."""
        if self.norm_mode == DEGREES:
            return (self.normalize(self.range_min), self.normalize(self.range_max))
        return (-100.0, 100.0) if self.norm_mode == RANGE_M100_100 else (0.0, 100.0)

    def to_json(self) -> dict:
        return {f: int(getattr(self, f)) for f in FIELDS}


class Calibration(Mapping):
    """An arm's calibration: motor name -> MotorCalibration, in the arm's motor order, with vector forms."""

    def __init__(self, motors: dict[str, MotorCalibration], *, robot: str, role: str, use_degrees: bool, path=None):
        self.motors = dict(motors)
        self.robot, self.role, self.use_degrees = robot, role, use_degrees
        self.path = Path(path) if path is not None else None

    def __getitem__(self, name: str) -> MotorCalibration:
        return self.motors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.motors)

    def __len__(self) -> int:
        return len(self.motors)

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        return f"Calibration({self.robot} {self.role}, {len(self)} motors, use_degrees={self.use_degrees}{where})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.motors)

    def normalize(self, raw: Mapping[str, int]) -> np.ndarray:
        """Raw positions by motor name -> float64 [n] in the arm's units and motor order."""
        return np.array([self.motors[n].normalize_array(raw[n]) for n in self.motors], np.float64)

    def unnormalize(self, values) -> dict[str, int]:
        """Values [n] in the arm's units and motor order -> raw positions by name (for sync_write)."""
        v = np.asarray(values, np.float64).reshape(-1)
        if v.shape != (len(self),):
            raise ValueError(f"expected {len(self)} values ({', '.join(self.motors)}), got shape {v.shape}")
        return {n: int(m.unnormalize_array(x)) for (n, m), x in zip(self.motors.items(), v, strict=True)}

    def limits(self) -> tuple[np.ndarray, np.ndarray]:
        lim = [m.limits() for m in self.motors.values()]
        return np.array([a for a, _ in lim], np.float64), np.array([b for _, b in lim], np.float64)

    def with_units(self, use_degrees: bool) -> "Calibration":
        """The same calibration read in the other unit mode."""
        spec = arm_spec(self.robot, self.role)
        motors = {n: replace(m, norm_mode=spec.norm_mode(n, use_degrees)) for n, m in self.motors.items()}
        return Calibration(motors, robot=self.robot, role=self.role, use_degrees=use_degrees, path=self.path)

    def to_json(self) -> dict:
        return {n: m.to_json() for n, m in self.motors.items()}


def build_calibration(
    values: Mapping[str, Mapping], spec: ArmSpec, *, use_degrees: bool = False, source: str = "calibration"
) -> Calibration:
    """LeRobot-format entries (motor -> the five fields) checked against the arm -> Calibration.
    Every problem names the motor and the field."""
    if not isinstance(values, Mapping):
        raise CalibrationError(f"{source}: expected a JSON object of motors, got {type(values).__name__}")
    missing = [n for n in spec.names if n not in values]
    unknown = [n for n in values if n not in spec.motors]
    arm = f"the {spec.robot} {spec.role} has {', '.join(spec.names)}"
    if unknown:
        raise CalibrationError(f"{source}: unknown motor {unknown[0]!r} ({arm}); is it another robot's file?")
    if missing:
        raise CalibrationError(f"{source}: no entry for motor {missing[0]!r} ({arm})")
    motors = {}
    for name in spec.names:
        entry = values[name]
        if not isinstance(entry, Mapping):
            raise CalibrationError(f"{source}: motor {name!r}: expected an object, got {type(entry).__name__}")
        extra = sorted(set(entry) - set(FIELDS))
        if extra:
            raise CalibrationError(
                f"{source}: motor {name!r}: unknown field {extra[0]!r}; expected {', '.join(FIELDS)}"
            )
        for f in FIELDS:
            if f not in entry:
                raise CalibrationError(f"{source}: motor {name!r}: missing field {f!r}")
            v = entry[f]
            if isinstance(v, bool) or not isinstance(v, int):
                raise CalibrationError(f"{source}: motor {name!r} field {f!r}: expected an integer, got {v!r}")
        motor_id = spec.motors[name][0]
        if entry["id"] != motor_id:
            raise CalibrationError(
                f"{source}: motor {name!r} field 'id' is {entry['id']}, the {spec.robot} arm uses id {motor_id}: "
                "is it another robot's file?"
            )
        if entry["drive_mode"] not in (0, 1):
            raise CalibrationError(
                f"{source}: motor {name!r} field 'drive_mode': expected 0 or 1, got {entry['drive_mode']}"
            )
        try:
            motors[name] = MotorCalibration(
                **{f: entry[f] for f in FIELDS},
                norm_mode=spec.norm_mode(name, use_degrees),
                resolution=spec.resolution(name),
                apply_drive_mode=spec.apply_drive_mode,
            )
        except CalibrationError as e:
            raise CalibrationError(f"{source}: motor {name!r}: {e}") from None
    return Calibration(motors, robot=spec.robot, role=spec.role, use_degrees=use_degrees)


# ---- where LeRobot keeps calibrations ----
def calibration_dir() -> Path:
    """LeRobot's calibration folder: $HF_LEROBOT_CALIBRATION, else $HF_LEROBOT_HOME/calibration, else
    $HF_HOME/lerobot/calibration, else $XDG_CACHE_HOME (or ~/.cache)/huggingface/lerobot/calibration."""
    if os.environ.get("HF_LEROBOT_CALIBRATION"):
        return Path(os.environ["HF_LEROBOT_CALIBRATION"]).expanduser()
    if os.environ.get("HF_LEROBOT_HOME"):
        return Path(os.environ["HF_LEROBOT_HOME"]).expanduser() / "calibration"
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(os.path.expandvars(hf_home)).expanduser() / "lerobot" / "calibration"


def _kind(spec: ArmSpec) -> str:
    return "robots" if spec.role == "follower" else "teleoperators"


def calibration_candidates(calibration_id: str, spec: ArmSpec) -> list[Path]:
    """Where a calibration with this id may be, in LeRobot's layout (newest type name first)."""
    root = calibration_dir() / _kind(spec)
    return [root / t / f"{calibration_id}.json" for t in spec.lerobot_types]


def default_calibration_path(calibration_id: str, spec: ArmSpec) -> Path:
    """Where `vla calibrate --id` writes: an existing file of that id, else the current LeRobot's place."""
    found = find_calibration(calibration_id, spec)
    return found if found is not None else calibration_candidates(calibration_id, spec)[0]


def find_calibration(calibration_id: str, spec: ArmSpec) -> Path | None:
    return next((p for p in calibration_candidates(calibration_id, spec) if p.is_file()), None)


def looks_like_path(ref: str | Path) -> bool:
    s = str(ref)
    return isinstance(ref, Path) or s.endswith(".json") or os.sep in s or "/" in s or Path(s).is_file()


def resolve_calibration(ref: str | Path | None, spec: ArmSpec, port: str = "PORT") -> Path:
    """A path, or an id looked up where LeRobot keeps calibrations (None: the arm's default id)."""
    if ref is not None and looks_like_path(ref):
        p = Path(ref).expanduser()
        if not p.is_file():
            raise CalibrationError(
                f"calibration file not found: {p}; make one with `vla calibrate --robot {spec.robot}"
                f"{'' if spec.role == 'follower' else ' --role leader'} --port {port} --out {p}`"
            )
        return p
    cal_id = spec.default_id if ref is None else str(ref)
    found = find_calibration(cal_id, spec)
    if found is None:
        looked = ", ".join(str(p) for p in calibration_candidates(cal_id, spec))
        id_flag = "" if ref is None else f" --id {cal_id}"
        raise CalibrationError(
            f"no calibration {cal_id!r} for the {spec.robot} {spec.role} (looked in {looked}): run "
            f"`vla calibrate --robot {spec.robot}{'' if spec.role == 'follower' else ' --role leader'} "
            f"--port {port}{id_flag}`"
        )
    return found


def load_calibration(
    path: str | Path | None = None, robot: str = "so101", use_degrees: bool = False, *, role: str = "follower"
) -> Calibration:
    """A LeRobot calibration file (path, or id under LeRobot's calibration folder) -> Calibration:
    motor name -> MotorCalibration with `normalize(raw) -> float` and `unnormalize(value) -> int`."""
    spec = arm_spec(robot, role)
    p = resolve_calibration(path, spec)
    try:
        data = json.loads(p.read_text())
    except OSError as e:
        raise CalibrationError(f"cannot read calibration file {p}: {e.strerror or e}") from None
    except ValueError as e:
        raise CalibrationError(f"{p}: not a calibration file (invalid JSON: {e})") from None
    cal = build_calibration(data, spec, use_degrees=use_degrees, source=str(p))
    cal.path = p
    return cal


def is_calibration_file(path: str | Path) -> bool:
    """A JSON object of motors with LeRobot's five calibration fields (what `vla calibrate` replaces)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(data, dict)
        and bool(data)
        and all(isinstance(e, dict) and set(e) == set(FIELDS) for e in data.values())
    )


def save_calibration(calibration: Calibration | Mapping[str, Mapping], path: str | Path) -> Path:
    """Write LeRobot's format (indent 4, as draccus writes it) atomically: a temp file beside `path`,
    renamed over it, so a crash never leaves half a calibration."""
    from vla.outputs import file_mode

    data = (
        calibration.to_json() if isinstance(calibration, Calibration) else {n: dict(e) for n, e in calibration.items()}
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=4))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---- on the motors ----
def write_calibration(bus, calibration: Calibration, spec: ArmSpec) -> None:
    """Homing offsets and position limits into the servos (torque must be off), as LeRobot writes them."""
    for name, m in calibration.items():
        bus.write("Homing_Offset", name, m.homing_offset)
        bus.write("Min_Position_Limit", name, m.range_min)
        bus.write("Max_Position_Limit", name, m.range_max)
        if spec.vendor == "dynamixel":
            bus.write("Drive_Mode", name, m.drive_mode)


def mismatched_motors(bus, calibration: Calibration, spec: ArmSpec) -> list[str]:
    """Motors whose stored offsets / limits (and Dynamixel drive mode) differ from the calibration."""
    out = []
    for name, m in calibration.items():
        held = (
            bus.read("Homing_Offset", name),
            bus.read("Min_Position_Limit", name),
            bus.read("Max_Position_Limit", name),
        )
        want = (m.homing_offset, m.range_min, m.range_max)
        if spec.vendor == "dynamixel":
            held, want = held + (bus.read("Drive_Mode", name),), want + (m.drive_mode,)
        if held != want:
            out.append(name)
    return out


def half_turn_homings(positions: Mapping[str, int], spec: ArmSpec) -> dict[str, int]:
    """Offsets that make the present positions read half a turn (2047 on 12 bits). Feetech reads
    Present = Actual - Homing_Offset; Dynamixel reads Present = Actual + Homing_Offset."""
    out = {}
    for name, pos in positions.items():
        half = int(spec.resolution(name) - 1) // 2
        out[name] = pos - half if spec.vendor == "feetech" else half - pos
    return out


def set_half_turn_homings(bus, spec: ArmSpec) -> dict[str, int]:
    """Reset offsets and limits (offset 0, limits the whole turn), read where the arm is, write the offsets."""
    for name in spec.names:
        bus.write("Homing_Offset", name, 0)
        bus.write("Min_Position_Limit", name, 0)
        bus.write("Max_Position_Limit", name, spec.resolution(name) - 1)
    offsets = half_turn_homings(bus.sync_read("Present_Position", list(spec.names)), spec)
    for name, offset in offsets.items():
        bus.write("Homing_Offset", name, offset)
    return offsets


def record_ranges(
    bus,
    motors: list[str],
    *,
    seconds: float | None = None,
    samples: int | None = None,
    until: threading.Event | None = None,
    poll_hz: float = 50.0,
    on_sample: Callable[[dict, dict, dict], None] | None = None,
) -> tuple[dict[str, int], dict[str, int]]:
    """Lowest and highest positions seen while the user moves the joints; stops after `seconds`, after
    `samples` reads, or when `until` is set (the user pressed Enter), whichever comes first."""
    if seconds is None and samples is None and until is None:
        raise ValueError("record_ranges needs seconds, samples or until")
    first = bus.sync_read("Present_Position", motors)
    mins, maxes = dict(first), dict(first)
    start, n = time.monotonic(), 1
    period = 1.0 / poll_hz
    while True:
        if seconds is not None and time.monotonic() - start >= seconds:
            break
        if samples is not None and n >= samples:
            break
        if until is not None and until.is_set():
            break
        t0 = time.monotonic()
        pos = bus.sync_read("Present_Position", motors)
        n += 1
        for name in motors:
            mins[name] = min(mins[name], pos[name])
            maxes[name] = max(maxes[name], pos[name])
        if on_sample is not None:
            on_sample(mins, pos, maxes)
        time.sleep(max(0.0, period - (time.monotonic() - t0)))
    still = [name for name in motors if mins[name] == maxes[name]]
    if still:
        raise CalibrationError(
            f"{', '.join(still)} did not move while the ranges were recorded: move every joint through "
            "its whole range (give more time with --range-seconds)"
        )
    return mins, maxes


def calibrate_arm(
    bus,
    spec: ArmSpec,
    *,
    ask: Callable[[str], str],
    range_seconds: float | None = None,
    range_samples: int | None = None,
    poll_hz: float = 50.0,
    on_sample: Callable[[dict, dict, dict], None] | None = None,
) -> Calibration:
    """Run LeRobot's calibration on a connected bus and write the result into the servos; returns it
    (saving is the caller's). `ask(prompt)` waits for the user (Enter) and returns the answer; with neither
    `range_seconds` nor `range_samples`, the range recording runs until `ask` returns."""
    spec.prepare_calibration(bus)
    log.info("torque off on the %s %s", spec.robot, spec.role)
    ask(
        f"Move the {spec.robot} {spec.role} to the middle of its range of motion (every joint halfway), then press Enter"
    )
    offsets = set_half_turn_homings(bus, spec)
    log.info("homing offsets written: %s", ", ".join(f"{n} {o}" for n, o in offsets.items()))

    moving = [n for n in spec.names if n not in spec.full_turn]
    prompt = f"Move every joint except {' and '.join(spec.full_turn)} through its whole range of motion, one by one" + (
        "" if range_seconds or range_samples else "; press Enter when done"
    )
    until, answered, failure = None, None, []
    if range_seconds is None and range_samples is None:
        until = threading.Event()

        def wait_for_enter():
            try:
                ask(prompt)
            except BaseException as e:  # EOF on stdin, Ctrl-C: stop recording and report it
                failure.append(e)
            finally:
                until.set()

        answered = threading.Thread(target=wait_for_enter, name="calibrate-enter", daemon=True)
        answered.start()
    else:
        log.info("%s (recording for %s)", prompt, f"{range_seconds} s" if range_seconds else f"{range_samples} reads")
    mins, maxes = record_ranges(
        bus, moving, seconds=range_seconds, samples=range_samples, until=until, poll_hz=poll_hz, on_sample=on_sample
    )
    if answered is not None:
        answered.join()
        if failure:
            raise CalibrationError(f"calibration stopped while recording ranges: {failure[0]!r}")
    for name in spec.full_turn:
        mins[name], maxes[name] = 0, spec.resolution(name) - 1
    values = {
        name: {
            "id": spec.motors[name][0],
            "drive_mode": spec.drive_modes.get(name, 0),
            "homing_offset": offsets[name],
            "range_min": mins[name],
            "range_max": maxes[name],
        }
        for name in spec.names
    }
    cal = build_calibration(values, spec, source=f"{spec.robot} {spec.role} calibration")
    write_calibration(bus, cal, spec)
    log.info("ranges: %s", ", ".join(f"{n} {m.range_min}..{m.range_max}" for n, m in cal.items()))
    return cal
