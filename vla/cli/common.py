"""Shared pieces of the `vla` command: error reporting, JSON output, the `bench` group."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Optional

import typer

bench_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Benchmarks; each prints JSON and can save it with --json OUT."
)


def fail(msg: str, code: int = 2) -> None:
    """One line on stderr that names the fix, and a non-zero exit: how a user's mistake ends."""
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


class _StdoutHandler(logging.StreamHandler):
    """Plain lines on whatever sys.stdout is when a record arrives (a test runner swaps it)."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value) -> None:
        pass


def show_on_stdout(logger: str) -> None:
    """Show a library logger's INFO lines on stdout as plain text: a command's own progress report.
    The library only logs; the command decides which lines are its console output."""
    lg = logging.getLogger(logger)
    if not any(isinstance(h, _StdoutHandler) for h in lg.handlers):
        lg.addHandler(_StdoutHandler())
    lg.setLevel(logging.INFO)
    lg.propagate = False  # not a second time, prefixed, on stderr through the root handler


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad user input: reported as one line, no traceback."""
    from vla.data.frame_files import StoreError
    from vla.spec import SpecError

    return (StoreError, SpecError, FileNotFoundError)


def check_noise_scale(value: Optional[float]) -> None:
    """--noise-scale (vla eval, vla serve): a pi0 / pi0.5 checkpoint's initial-noise scale, in [0, 1]."""
    if value is not None and not 0.0 <= value <= 1.0:
        fail(f"--noise-scale must be in [0, 1], got {value}")


def json_path(value: Optional[Path]) -> Optional[Path]:
    """--json FILE, checked when the command line is parsed (before any slow work): a folder or a
    file that is not an earlier JSON result is refused, never replaced."""
    if value is not None:
        from vla.outputs import OutputError, check_file_output

        try:
            check_file_output(value, "--json", (".json",))
        except OutputError as e:
            fail(str(e))
    return value


def local_store(value: Optional[Path]) -> Optional[Path]:
    """An option that takes a local store path only: a URL (which Path would fold to `s3:/...`, a folder
    named `s3:` here) is refused with the way to get the store there."""
    if value is not None and re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/", str(value)):
        url = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]+):/+", r"\1://", str(value))
        fail(
            f"{url}: this option takes a local store; write it here, then copy it up with "
            f"`vla data migrate LOCAL {url}` (training and the data commands read URLs directly)"
        )
    return value


def emit(result: dict, json_out: Optional[Path]) -> None:
    text = json.dumps(result, indent=2)
    typer.echo(text)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n")
