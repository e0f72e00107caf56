"""Real-robot commands: `vla calibrate`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from vla.cli.common import fail, show_on_stdout, user_errors


def _scripted_ask(answers: list[str] | None, yes: bool):
    """ask(prompt) for the calibration: the next line of --answers, Enter for --yes, else the keyboard."""
    from vla.robots.calibration import CalibrationError

    queue = list(answers) if answers is not None else None

    def ask(prompt: str) -> str:
        if queue is not None:
            if not queue:
                raise CalibrationError(f"--answers has no answer left for: {prompt}")
            answer = queue.pop(0)
            typer.echo(f"{prompt}: {answer}")
            return answer
        if yes:
            typer.echo(f"{prompt}: (--yes)")
            return ""
        return input(f"{prompt} ")

    return ask


def _range_printer(every_s: float = 1.0):
    last = [0.0]

    def on_sample(mins: dict, pos: dict, maxes: dict) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            typer.echo("  " + "  ".join(f"{n} {mins[n]}..{maxes[n]} ({pos[n]})" for n in pos))

    return on_sample


def calibrate_command(
    robot: str = typer.Option(..., help="so100, so101 or koch."),
    port: str = typer.Option(..., help="The arm's serial port, e.g. /dev/ttyACM0 (a virtual bus's link works too)."),
    role: str = typer.Option("follower", help="follower or leader."),
    calibration_id: Optional[str] = typer.Option(
        None,
        "--id",
        help="Save as <LeRobot calibration folder>/robots|teleoperators/<type>/<ID>.json, where LeRobot "
        "and ServoArm find it by id [default: <robot>-<role>].",
    ),
    out: Optional[Path] = typer.Option(None, help="Save to this JSON file instead (LeRobot's format)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing calibration file."),
    answers: Optional[Path] = typer.Option(
        None, help="Scripted answers: a text file, one line per prompt (needs --range-seconds)."
    ),
    yes: bool = typer.Option(False, "--yes", help="Answer every prompt with Enter (needs --range-seconds)."),
    range_seconds: Optional[float] = typer.Option(
        None, help="Record the ranges of motion for this many seconds [default: until Enter]."
    ),
    baudrate: Optional[int] = typer.Option(None, help="Bus baud rate [default: 1000000]."),
):
    """Calibrate an arm as LeRobot does: torque off, put the arm in the middle of its range (homing
    offsets), then move every joint through its range. Saves LeRobot's calibration JSON."""
    from vla.outputs import check_output, check_parent
    from vla.robots.bus import Motor, bus_class
    from vla.robots.calibration import calibrate_arm, default_calibration_path, is_calibration_file, save_calibration
    from vla.robots.specs import arm_spec
    from vla.runtime.robot import RobotError

    errors = user_errors() + (RobotError,)
    try:
        spec = arm_spec(robot, role)
    except errors as e:
        fail(str(e))
    if calibration_id is not None and out is not None:
        fail("give --id (LeRobot's calibration folder) or --out (a file), not both")
    if calibration_id is not None and (not calibration_id or "/" in calibration_id or calibration_id.startswith(".")):
        fail(f"--id {calibration_id!r}: expected a plain name (use --out for a path)")
    if range_seconds is not None and not range_seconds > 0:
        fail(f"--range-seconds must be > 0, got {range_seconds}")
    if answers is not None and yes:
        fail("give --answers FILE or --yes, not both")
    lines = None
    if answers is not None:
        try:
            lines = answers.read_text().splitlines()
        except OSError as e:
            fail(f"--answers {answers}: cannot read it ({e.strerror or e})")
    if (lines is not None or yes) and range_seconds is None:
        fail("scripted answers need --range-seconds S: nobody is there to press Enter when the joints have moved")
    if out is not None and out.suffix.lower() != ".json":
        fail(f"--out {out}: a calibration file ends in .json")
    target = out if out is not None else default_calibration_path(calibration_id or spec.default_id, spec)
    flag = "--out" if out is not None else "--id"
    try:
        check_output(target, "a calibration file", own=is_calibration_file, overwrite=overwrite, flag=flag)
        check_parent(target, flag)
    except errors as e:
        fail(str(e))

    show_on_stdout("vla.robots.calibration")
    motors = {name: Motor(i, model) for name, (i, model) in spec.motors.items()}
    try:
        bus = bus_class(spec.vendor)(port, motors, baudrate=baudrate)
        bus.connect(handshake=True)
    except (*errors, ValueError) as e:  # ValueError: a baud rate the servos do not support
        fail(str(e))
    try:
        cal = calibrate_arm(
            bus,
            spec,
            ask=_scripted_ask(lines, yes),
            range_seconds=range_seconds,
            on_sample=_range_printer() if sys.stdout.isatty() or range_seconds else None,
        )
        save_calibration(cal, target)
    except errors as e:
        fail(f"{e}; nothing saved")
    except (KeyboardInterrupt, EOFError):
        fail("calibration interrupted; nothing saved")
    finally:
        bus.close()
    typer.echo(f"saved the {spec.robot} {spec.role} calibration to {target}")
    ref = str(target) if out is not None else (calibration_id or spec.default_id)
    typer.echo(
        f'use it: ServoArm(..., calibration="{ref}") or calibration = "{ref}" in the launch file\'s [robot] options'
    )
