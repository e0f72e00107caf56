"""A policy of another project, served by a process in its own environment, as a vla PolicyLike.

`PeerPolicy(python, checkpoint)` starts `python lerobot_side.py serve --checkpoint CKPT` and speaks
wire.py frames over its stdin/stdout: `reset()` -> {"cmd": "reset"}, `infer(obs)` -> {"cmd":
"infer"} with the observation's arrays and instruction, answered by {"actions": [h, a]}. Whatever
the peer writes to stderr goes to `log` (a file), and its last lines are quoted when it fails.
The evaluation harness drives it like any policy; the peer decides how many actions it answers
(LeRobot's `select_action`: one per call, so evaluate it with replan_every=1).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from vla.bench.peers.venv import SIDE_SCRIPT
from vla.bench.peers.wire import WireError, read_msg, write_msg
from vla.spec import EMBODIMENT, TASK


class PeerError(RuntimeError):
    """The peer process failed: it exited, broke the protocol, or answered an error."""


class PeerPolicy:
    def __init__(
        self,
        python: str | Path,
        checkpoint: str | Path,
        *,
        name: str | None = None,
        threads: int = 2,
        log: str | Path | None = None,
        script: str | Path = SIDE_SCRIPT,
        timeout: float = 120.0,
        start_timeout: float = 300.0,
    ):
        self.name = name or Path(checkpoint).name
        self.timeout = timeout
        self._hung = False  # set when an answer did not come: close() then kills at once
        self.log = Path(log) if log else None
        err = open(self.log, "ab") if self.log else subprocess.DEVNULL
        cmd = [str(python), str(script), "serve", "--checkpoint", str(checkpoint), "--threads", str(threads)]
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, bufsize=0)
        finally:
            if self.log:
                err.close()
        try:
            self.metadata = self._read(start_timeout)
            self.metadata.pop("_arrays", None)
        except BaseException:
            self.close()
            raise
        if not self.metadata.get("ready"):
            self.close()
            raise PeerError(f"{self.name}: the peer's first frame is not its metadata: {self.metadata}")

    # ---- PolicyLike ----
    def reset(self) -> None:
        self._call({"cmd": "reset"})

    def infer(self, obs: dict) -> dict:
        arrays = {k: np.asarray(v) for k, v in obs.items() if k.startswith("observation/")}
        head = {"cmd": "infer", "task": str(obs.get(TASK, "")), "embodiment": str(obs.get(EMBODIMENT, ""))}
        _, out = self._call(head, arrays, with_arrays=True)
        if "actions" not in out:
            raise PeerError(f"{self.name}: the peer answered no actions")
        return {"actions": np.asarray(out["actions"], np.float32)}

    # ---- process ----
    def _tail(self, n: int = 5) -> str:
        if not self.log or not self.log.exists():
            return ""
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-n:])

    def _read(self, timeout: float) -> dict:
        try:
            head, arrays = read_msg(self.proc.stdout, timeout)
        except (EOFError, WireError) as e:
            self._hung = True
            code = self.proc.poll()
            if code is None and isinstance(e, EOFError):  # its output closed: it is exiting, wait for the code
                try:
                    code = self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            why = f"exited with code {code}" if code is not None else f"failed: {e}"
            tail = self._tail()
            raise PeerError(
                f"{self.name}: the peer process {why}" + (f"; its log ends: {tail}" if tail else "")
            ) from None
        head["_arrays"] = arrays
        return head

    def _call(self, head: dict, arrays: dict | None = None, *, with_arrays: bool = False):
        if self.proc.poll() is not None:
            raise PeerError(f"{self.name}: the peer process has exited (code {self.proc.returncode}); {self._tail()}")
        try:
            write_msg(self.proc.stdin, head, arrays)
        except (BrokenPipeError, OSError) as e:
            raise PeerError(f"{self.name}: cannot write to the peer process ({e}); {self._tail()}") from None
        reply = self._read(self.timeout)
        got = reply.pop("_arrays")
        if "error" in reply:
            raise PeerError(f"{self.name}: {reply['error']}")
        return (reply, got) if with_arrays else reply

    def close(self) -> None:
        p = getattr(self, "proc", None)
        if p is None or p.stdout.closed:
            return
        try:
            if p.poll() is None and not self._hung:
                write_msg(p.stdin, {"cmd": "close"})
                p.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            pass
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            for f in (p.stdin, p.stdout):
                try:
                    f.close()
                except OSError:
                    pass

    def __enter__(self) -> "PeerPolicy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
