"""`vla run`: bring up a deployment from a launch file, run the control loop, save what happened.

    result = run_deployment("launch/arm7-reach-sim.toml", overrides={"control": {"duration_s": 10}})
    result["timing"]["jitter_ms"]["p99"], result["files"]["histogram_png"]

Starts what the launch file asks for (a `vla sim-robot` child, a child `vla serve` for a local
checkpoint), connects, runs `ControlLoop`, and writes into the run folder: summary.json,
timing.json, ticks.csv, inference.csv, timing.png (tick period and latency histograms),
interventions.jsonl, and the child processes' logs; the run itself becomes episodes in the
episode store. Ctrl-C / SIGTERM stop the robot and close the episode; SIGUSR1 or the e-stop
key is the e-stop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from vla.outputs import check_output, claim_folder, is_store
from vla.runtime.launch import LaunchConfig, load_launch

log = logging.getLogger(__name__)

_CLI = "from vla.cli import main; main()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def child_process(args: list[str], log_path: Path, what: str):
    """A `vla ...` child process whose output goes to log_path; terminated on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CLI, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.info("started %s (pid %d), log %s", what, proc.pid, log_path)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text().splitlines()[-n:])
    except OSError:
        return ""


class StatusLine:
    """Live status: a rewritten line on a terminal, a log line every few seconds otherwise."""

    def __init__(self, loop, every_s: float, stream=None):
        self.loop, self.every_s = loop, every_s
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status", daemon=True)

    def line(self) -> str:
        import numpy as np

        s = self.loop.snapshot
        if not s:
            return "starting..."
        timing = s["timing"]
        recent = timing.ticks[-max(2, int(self.loop.cfg.hz * 2)) :]
        sent = np.array([t[2] for t in recent])
        per = np.diff(sent) * 1000 if len(sent) > 1 else np.zeros(1)
        rate = 1000 / per.mean() if per.mean() > 0 else 0.0
        jit = float(np.quantile(np.abs(per - 1000 / self.loop.cfg.hz), 0.99))
        lat = [x[2] for x in timing.inference[-10:] if x[4]]
        misses = sum(1 for t in timing.ticks if t[1] > timing.miss_tolerance_s * 1000) + timing.skipped
        holds = sum(1 for t in recent if t[3])
        return (
            f"t {s['t']:6.1f}s | {rate:5.1f} Hz | jitter p99 {jit:5.2f} ms | misses {misses} | "
            f"infer {np.median(lat) if lat else float('nan'):5.0f} ms (delay {s['delay_ticks']} ticks) | "
            f"holding {holds}/{len(recent)} | safety {sum(s['safety'].values())} | episodes {s['episodes']}"
        )

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.every_s):
            n += 1
            if self.tty:
                self.stream.write("\r" + self.line()[:160].ljust(160))
                self.stream.flush()
            elif n % 5 == 0:
                log.info("%s", self.line())

    def start(self) -> "StatusLine":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        if self.tty:
            self.stream.write("\n")


class KeyWatcher:
    """E-stop key on a terminal (cbreak mode, Ctrl-C still works); nothing when stdin is not a TTY."""

    def __init__(self, key: str, on_key):
        self.key, self.on_key = key, on_key
        self._stop = threading.Event()
        self._old = None

    def start(self) -> "KeyWatcher":
        try:
            import termios
            import tty

            if not sys.stdin.isatty():
                return self
            fd = sys.stdin.fileno()
            self._old = termios.tcgetattr(fd)
            tty.setcbreak(fd)
        except (ImportError, OSError, ValueError):
            return self
        threading.Thread(target=self._run, name="estop-key", daemon=True).start()
        log.info("press %r for the e-stop, Ctrl-C to stop", self.key)
        return self

    def _run(self) -> None:
        import select

        while not self._stop.is_set():
            r, _, _ = select.select([sys.stdin], [], [], 0.1)
            if r and sys.stdin.read(1) == self.key:
                self.on_key()

    def stop(self) -> None:
        self._stop.set()
        if self._old is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._old)


@contextlib.contextmanager
def _signals(loop):
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {
        signal.SIGINT: lambda *_: loop.request_stop(),
        signal.SIGTERM: lambda *_: loop.request_stop(),
        signal.SIGUSR1: lambda *_: loop.request_estop(),
    }
    old = {s: signal.signal(s, h) for s, h in handlers.items()}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _policy(cfg: LaunchConfig, stack: contextlib.ExitStack, out: Path):
    """Start what the policy needs now; returns a function that connects (so startups overlap)."""
    from vla.runtime.client import PolicyUnavailable, RemotePolicy

    p = cfg.policy
    if p.url:
        return lambda: stack.enter_context(RemotePolicy(p.url, api_key=p.api_key, wait_s=p.start_timeout_s))
    if not Path(p.checkpoint).is_dir():
        from vla.spec import SpecError

        raise SpecError(f"[policy] checkpoint: no such directory {p.checkpoint!r}")
    if not p.isolate:
        from vla.runtime.policy import load_policy

        def load():
            policy = load_policy(p.checkpoint, device=p.device or None, compile=p.compile, noise_scale=p.noise_scale)
            if p.compile:
                policy.warmup()
            return policy

        return load
    port = free_port()
    args = (
        ["serve", p.checkpoint, "--host", "127.0.0.1", "--port", str(port)]
        + (["--device", p.device] if p.device else [])
        + (["--compile"] if p.compile else [])
        + (["--noise-scale", str(p.noise_scale)] if p.noise_scale is not None else [])
    )
    proc = stack.enter_context(child_process(args, out / "policy_server.log", "policy server"))

    def connect():
        deadline = time.monotonic() + p.start_timeout_s
        while True:
            try:
                return stack.enter_context(RemotePolicy(f"ws://127.0.0.1:{port}", wait_s=1.0))
            except PolicyUnavailable:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise PolicyUnavailable(
                        f"the policy server for {p.checkpoint} did not come up:\n{_tail(out / 'policy_server.log')}"
                    ) from None

    return connect


def _robot(cfg: LaunchConfig, stack: contextlib.ExitStack, out: Path):
    from vla.runtime.robot import RobotError, make_robot

    r = cfg.robot
    proc = None
    if r.type == "sim" and r.spawn:
        port = r.port or free_port()
        args = [
            "sim-robot",
            "--env",
            r.env,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--image-size",
            str(r.image_size),
            "--seed",
            str(r.seed),
            "--physics-hz",
            str(r.physics_hz),
        ]
        proc = stack.enter_context(child_process(args, out / "sim_robot.log", "sim robot"))
        r = replace(r, port=port, host="127.0.0.1")
    robot = make_robot(r)
    if proc is not None:
        robot.alive = lambda: proc.poll() is None
    try:
        robot.connect()
    except RobotError as e:
        extra = f"\n{_tail(out / 'sim_robot.log')}" if proc is not None else ""
        raise RobotError(f"{e}{extra}") from None
    stack.callback(robot.close)
    return robot


def _old_run_folder(p: Path) -> bool:
    return (p / "summary.json").exists() or (p / "episodes" / "zarr.json").exists()


def run_deployment(
    launch, *, overrides: dict | None = None, out: str | Path | None = None, status: bool = True
) -> dict:
    """Run a deployment; returns the summary (timing, safety, episodes) with `files` and `store`.

    `launch`: a launch TOML path, a name in launch/, or a dict of the same layout.
    """
    from vla.runtime.control import ControlLoop
    from vla.runtime.recorder import EpisodeRecorder

    cfg = load_launch(launch, overrides)
    out = claim_folder(out if out is not None else cfg.out, "deployment run", legacy=_old_run_folder)
    if cfg.record.enabled and cfg.record.store:
        check_output(cfg.record.store, "an episode store", own=is_store, overwrite=True, flag="[record] store")
    # Short GIL slices: the control thread gets the interpreter back within ~1 ms from any worker thread.
    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    with contextlib.ExitStack() as stack:
        stack.callback(sys.setswitchinterval, old_switch)
        connect_policy = _policy(cfg, stack, out)  # a child server starts loading while the robot comes up
        robot = _robot(cfg, stack, out)
        policy = connect_policy()
        store = Path(cfg.record.store) if cfg.record.store else out / "episodes"
        recorder = EpisodeRecorder(store, robot.embodiment, cfg.control.hz) if cfg.record.enabled else None
        loop = ControlLoop(
            robot,
            policy,
            cfg.control,
            cfg.safety,
            cfg.chunking,
            policy_embodiment=cfg.policy.embodiment or None,
            recorder=recorder,
        )
        status_line = StatusLine(loop, cfg.control.status_every_s).start() if status else None
        keys = KeyWatcher(cfg.safety.estop_key, loop.request_estop).start()
        try:
            with _signals(loop):
                summary = loop.run()
        finally:
            keys.stop()
            if status_line is not None:
                status_line.stop()
            recorded = recorder.close() if recorder is not None else []
    summary["name"] = cfg.name
    summary["recorded"] = recorded
    # Set again after close(): the last writes (and a writer that never finished) happen there.
    summary["recorder_error"] = recorder.error_message() if recorder is not None else None
    summary["recorder_dropped_frames"] = recorder.dropped if recorder is not None else 0  # counted, never silent
    summary["store"] = str(store) if recorder is not None else None
    files = loop.timing.save(out, summary)
    with open(out / "interventions.jsonl", "w") as f:
        for ev in loop.safety.events:
            f.write(json.dumps(ev.to_dict()) + "\n")
    files["interventions"] = str(out / "interventions.jsonl")
    summary["files"] = files
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
