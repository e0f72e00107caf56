"""Real-robot commands: `vla calibrate`, `vla virtual-bus`, `vla record` and `vla bench robot`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from vla.cli.common import bench_app, emit, fail, json_path, local_store, show_on_stdout, user_errors


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


def _camera_size(value: str) -> tuple[int, int]:
    h, sep, w = value.lower().partition("x")
    if not (sep and h.isdigit() and w.isdigit()):
        raise typer.BadParameter(f"expected HxW in pixels, e.g. 480x640, got {value!r}")
    return int(h), int(w)


def virtual_bus_command(
    robot: str = typer.Option(..., help="so100, so101 or koch."),
    role: str = typer.Option("follower", help="follower (goal positions drive the arm) or leader (a scripted hand)."),
    link: Path = typer.Option(..., help="Path of the port to create, e.g. /tmp/so101 (refused if it exists)."),
    cameras: str = typer.Option("", help="Cameras to render, comma-separated: front, wrist [default: none]."),
    camera_size: str = typer.Option("480x640", help="Rendered image size, HxW."),
    camera_fps: float = typer.Option(30.0, help="Rendered frames per second."),
    noise: Optional[float] = typer.Option(None, help="Present position noise, std in encoder ticks [default: 1]."),
    latency_ms: Optional[float] = typer.Option(
        None, help="Reply latency on top of the bytes' time on the wire at the servo's baud rate [default: 0.5]."
    ),
    seed: int = typer.Option(0, help="Seeds the assembly offsets, the noise and the leader's demonstration."),
):
    """A virtual arm on a pseudo-terminal: servos that speak the vendor's protocol (Feetech for
    SO-100/SO-101, Dynamixel 2.0 for Koch) with their control tables, backed by a MuJoCo arm, until Ctrl-C.
    Drive it like a real arm: vla calibrate --port LINK, LeRobot's buses, ... Cameras: LINK.cam-NAME."""
    import signal
    import threading

    from vla.robots.virtual.bus import DEFAULT_LATENCY_MS, DEFAULT_NOISE, VirtualBus

    try:
        size = _camera_size(camera_size)
    except typer.BadParameter as e:
        fail(f"--camera-size: {e}")
    names = tuple(c.strip() for c in cameras.split(",") if c.strip())
    if seed < 0:
        fail(f"--seed must be >= 0, got {seed}")
    try:
        vb = VirtualBus(
            robot,
            role,
            link,
            cameras=names,
            camera_size=size,
            camera_fps=camera_fps,
            noise=DEFAULT_NOISE if noise is None else noise,
            latency_ms=DEFAULT_LATENCY_MS if latency_ms is None else latency_ms,
            seed=seed,
        )
    except ValueError as e:
        fail(str(e))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        vb.start()
    except user_errors() as e:
        fail(str(e))
    try:
        motors = ", ".join(f"{n}={m.id}" for n, m in vb.motors.items())
        typer.echo(f"virtual {robot} {role} on {vb.link} (-> {vb.pty.tty_name}); motors {motors}")
        for name, path in vb.camera_paths().items():
            typer.echo(f"camera {name}: {path} ({size[0]}x{size[1]} at {camera_fps:g} fps)")
        typer.echo("Ctrl-C to stop", err=True)
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        vb.stop()
    typer.echo(f"stopped; removed {vb.link}")


def _size(text: Optional[str], flag: str) -> Optional[tuple[int, int]]:
    """HEIGHTxWIDTH ("480x640") -> (480, 640); a bad value ends the command with one error line."""
    if text is None:
        return None
    h, sep, w = text.lower().partition("x")
    if not (sep and h.isdigit() and w.isdigit() and int(h) > 0 and int(w) > 0):
        fail(f"{flag}: expected HEIGHTxWIDTH in pixels, e.g. 480x640, got {text!r}")
    return int(h), int(w)


def record_command(
    robot: str = typer.Option(..., help="so100, so101 or koch."),
    leader_port: str = typer.Option(..., help="The leader arm's serial port (a virtual bus's link works too)."),
    follower_port: str = typer.Option(..., help="The follower arm's serial port."),
    out: Path = typer.Option(
        ...,
        help="Episode store: created, or appended to when it holds this robot's episodes.",
        callback=local_store,
    ),
    task: str = typer.Option(..., help='What the episodes show, e.g. "pick up the red cube" (stored with each).'),
    episodes: int = typer.Option(1, help="Episodes to keep."),
    seconds: float = typer.Option(20.0, help="Length of each episode (a key may end one early)."),
    reset_seconds: float = typer.Option(
        5.0, help="Pause between episodes to reset the scene; the follower keeps following, unrecorded."
    ),
    fps: Optional[float] = typer.Option(None, help="Loop and recording rate [default: the robot's, 30 Hz]."),
    cameras: Optional[str] = typer.Option(
        None, help='The follower\'s cameras, "front=0,wrist=/dev/video2" (also video:PATH, virtual:LINK).'
    ),
    camera_size: Optional[str] = typer.Option(
        None, help="HEIGHTxWIDTH of the recorded frames [default: the robot's TOML sizes, else 480x640]."
    ),
    leader_calibration: Optional[str] = typer.Option(
        None, help="Leader calibration: an id in LeRobot's calibration folder or a JSON file [default: <robot>-leader]."
    ),
    follower_calibration: Optional[str] = typer.Option(
        None, help="Follower calibration: an id or a JSON file [default: <robot>-follower]."
    ),
    rt_priority: int = typer.Option(0, help="Run the loop SCHED_FIFO at this priority (Linux; 0 = normal)."),
    json_out: Optional[Path] = typer.Option(
        None, "--json", help="Also write the summary to this JSON file.", callback=json_path
    ),
):
    """Record episodes by teleoperation: the follower follows the leader at the robot's rate; its joints
    (state), the leader's joints (action) and the cameras (JPEG) go into the store, one commit per episode.
    On a terminal: right arrow / n = next episode, left arrow / r = record it again, esc / q = stop;
    otherwise every episode runs --seconds. Ctrl-C drops the episode in progress and keeps the others."""
    from vla.robots.session import record
    from vla.runtime.robot import RobotError

    size = _size(camera_size, "--camera-size")
    if not 0 <= rt_priority <= 99:
        fail(f"--rt-priority must be in 0..99, got {rt_priority}")
    show_on_stdout("vla.robots.session")
    try:
        r = record(
            robot,
            leader_port,
            follower_port,
            out,
            task=task,
            episodes=episodes,
            seconds=seconds,
            fps=fps,
            reset_seconds=reset_seconds,
            cameras=cameras,
            camera_size=size,
            leader_calibration=leader_calibration,
            follower_calibration=follower_calibration,
            rt_priority=rt_priority,
        )
    except (*user_errors(), RobotError, TimeoutError) as e:
        fail(str(e))
    typer.echo(
        f"recorded {len(r['episodes'])} episode(s) into {r['store']} ({r['outcome']}; "
        f"{r['rerecorded']} re-recorded, {r['dropped_frames']} frames dropped)"
    )
    if json_out:
        emit(r, json_out)
    if r["error"]:
        fail(f"the store writer failed ({r['error']}): the episodes listed above are saved, the rest are not")


@bench_app.command("robot")
def bench_robot(
    json_out: Optional[Path] = typer.Option(
        None, "--json", help="Also write the results to this JSON file.", callback=json_path
    ),
    robot: str = typer.Option("so101", help="so100, so101 or koch."),
    seconds: float = typer.Option(10.0, help="Length of the recorded teleoperation run."),
    reps: int = typer.Option(300, help="Bus round trips to time."),
    fps: float = typer.Option(30.0, help="Loop, recording and camera rate."),
    camera_size: str = typer.Option("480x640", help="HEIGHTxWIDTH of the cameras."),
    cameras: str = typer.Option("front,wrist", help="Virtual cameras on the follower (names, comma-separated)."),
    leader_port: Optional[str] = typer.Option(None, help="A real leader arm's port (with --follower-port)."),
    follower_port: Optional[str] = typer.Option(None, help="A real follower arm's port."),
    leader_calibration: Optional[str] = typer.Option(None, help="Real leader: calibration id or file."),
    follower_calibration: Optional[str] = typer.Option(None, help="Real follower: calibration id or file."),
    real_cameras: Optional[str] = typer.Option(None, help='Real follower: its cameras, "front=0,wrist=2".'),
    rt_priority: int = typer.Option(
        50, help="Run the loop (and virtual buses) SCHED_FIFO at this priority (Linux; 0 = normal scheduling)."
    ),
):
    """Bus round trip (sync read + sync write of every motor), teleoperation loop jitter and dropped frames
    while recording the cameras, and tracking error; on virtual buses unless real ports are given."""
    from vla.bench.robot import run
    from vla.runtime.robot import RobotError

    size = _size(camera_size, "--camera-size")
    if not 0 <= rt_priority <= 99:
        fail(f"--rt-priority must be in 0..99, got {rt_priority}")
    try:
        r = run(
            robot=robot,
            seconds=seconds,
            reps=reps,
            fps=fps,
            cameras=tuple(c.strip() for c in cameras.split(",") if c.strip()),
            camera_size=size,
            leader_port=leader_port,
            follower_port=follower_port,
            leader_calibration=leader_calibration,
            follower_calibration=follower_calibration,
            real_cameras=real_cameras,
            rt_priority=rt_priority,
        )
    except (*user_errors(), RobotError, TimeoutError) as e:
        fail(str(e))
    emit(r, json_out)
