"""Keys that steer a recording from the terminal, read without blocking the loop.

    right arrow or n   end the episode now and keep it (or end the reset pause)
    left arrow or r    drop the episode and record it again
    esc or q           keep the episode and stop recording

Read by a thread from stdin in cbreak mode (no Enter needed; Ctrl-C still works), only when stdin
is a terminal; otherwise (`vla record` under a script, CI) there are no keys and every episode
runs its fixed length. `poll()` returns the newest event once.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading

log = logging.getLogger(__name__)

NEXT, RERECORD, STOP = "next", "rerecord", "stop"
INTERRUPT = "interrupt"  # Ctrl-C / SIGTERM: the episode in progress is dropped (as a kill would lose it)
_ARROWS = {b"C": NEXT, b"D": RERECORD}  # ESC [ C: right, ESC [ D: left
_LETTERS = {b"n": NEXT, b"r": RERECORD, b"q": STOP}
HELP = "keys: right arrow / n = next episode, left arrow / r = record it again, esc / q = stop"


def parse_keys(data: bytes) -> list[str]:
    """Events in a chunk of terminal input. An ESC alone (not the start of an arrow's ESC [ x) is esc."""
    out, i = [], 0
    while i < len(data):
        b = data[i : i + 1]
        if b == b"\x1b":
            if data[i + 1 : i + 2] in (b"[", b"O") and i + 2 < len(data):
                ev = _ARROWS.get(data[i + 2 : i + 3])
                if ev:
                    out.append(ev)
                i += 3
                continue
            out.append(STOP)
        elif b.lower() in _LETTERS:
            out.append(_LETTERS[b.lower()])
        i += 1
    return out


class KeyControl:
    """The keys above, from a terminal; `active` is False (and poll() always None) without one."""

    def __init__(self, fd: int | None = None):
        if fd is None:
            try:
                fd = sys.stdin.fileno()
            except (AttributeError, OSError, ValueError):  # replaced stdin (a test runner), closed stdin
                fd = None
        self.fd = fd
        self.active = False
        self._event: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._old = None
        self._thread: threading.Thread | None = None

    def start(self, *, tty_only: bool = True) -> "KeyControl":
        if self.fd is None:
            return self
        try:
            if tty_only and not os.isatty(self.fd):
                return self
            if os.isatty(self.fd):
                import termios
                import tty

                self._old = termios.tcgetattr(self.fd)
                tty.setcbreak(self.fd)
        except (ImportError, OSError, ValueError):
            return self
        self.active = True
        self._thread = threading.Thread(target=self._run, name="record-keys", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.fd], [], [], 0.1)
                data = os.read(self.fd, 64) if r else b""
            except (OSError, ValueError):
                return
            if r and not data:  # end of input
                return
            for ev in parse_keys(data):
                self.send(ev)

    def send(self, event: str) -> None:
        """Post an event as if its key were pressed (signals use it too). A stop is never overwritten."""
        with self._lock:
            if self._event not in (STOP, INTERRUPT):
                self._event = event

    def poll(self) -> str | None:
        with self._lock:
            ev, self._event = self._event, None
        return ev

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(0.5)
        if self._old is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._old)
            self._old = None
