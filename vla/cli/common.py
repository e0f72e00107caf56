"""Shared pieces of the `vla` command: error reporting, JSON output, the `bench` group."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks; each prints JSON and can save it with --json OUT.")


def fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad user input: reported as one line, no traceback."""
    from vla.data.chunks import StoreError
    from vla.spec import SpecError

    return (StoreError, SpecError, FileNotFoundError)


def emit(result: dict, json_out: Optional[Path]) -> None:
    text = json.dumps(result, indent=2)
    typer.echo(text)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n")
