"""What a command may write: its OUT, and nothing a user already has.

Every command that writes an output path checks it here before any slow work. An existing path is
refused unless it is an output of the same kind that the command itself wrote earlier and the user
asked to replace (`--overwrite`) or to continue (`vla train --resume`). An empty folder counts as
free. What a refused path already holds is named in the message, so the user sees what was saved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vla.spec import SpecError


class OutputError(SpecError):
    """An output path that a command must not write (it exists and holds something else)."""


def _is_url(path: str | Path) -> bool:
    return "://" in str(path)


def is_checkpoint(path: str | Path) -> bool:
    """A folder a vla checkpoint was written to (config.json with the checkpoint format)."""
    cfg = Path(path) / "config.json"
    try:
        return json.loads(cfg.read_text()).get("format") == "vla-checkpoint"
    except (OSError, ValueError, AttributeError):
        return False


def is_store(path: str | Path) -> bool:
    """A folder holding a zarr group (an episode store)."""
    return (Path(path) / "zarr.json").is_file()


def describe(path: str | Path) -> str:
    """What is at `path`, in a few words, for an error message."""
    p = Path(path)
    if p.is_symlink() and not p.exists():
        return "a broken symbolic link"
    if p.is_file():
        return f"a file of {p.stat().st_size} bytes"
    if not p.is_dir():
        return "not a regular file or folder"
    if is_checkpoint(p):
        return "a vla checkpoint"
    if is_store(p):
        return "an episode store"
    if (p / "meta" / "info.json").is_file():
        return "a LeRobot dataset"
    n = sum(1 for _ in p.iterdir())
    return f"a folder with {n} entr{'y' if n == 1 else 'ies'}"


def is_free(path: str | Path) -> bool:
    """Nothing is there (an empty folder counts as nothing)."""
    p = Path(path)
    if p.is_symlink():
        return False
    return not p.exists() or (p.is_dir() and not any(p.iterdir()))


def check_output(
    path: str | Path,
    what: str,
    *,
    own=None,
    overwrite: bool = False,
    flag: str = "--out",
    more: str = "",
) -> bool:
    """Refuse `path` unless it is free, or is `what` (per the `own(path) -> bool` test) and
    `overwrite` is set. Returns True when an existing output of the same kind will be replaced.
    `more`: a further way out to suggest (e.g. "--resume to continue it")."""
    if _is_url(path) or is_free(path):
        return False
    p = Path(path)
    if own is not None and own(p):
        if overwrite:
            return True
        ways = " or ".join(x for x in (more, "--overwrite to replace it", f"another {flag}") if x)
        raise OutputError(f"{flag} {p} already holds {describe(p)}: pass {ways}")
    raise OutputError(
        f"{flag} {p} already exists and is {describe(p)}, not {what}; vla never replaces what it did not "
        f"write: choose another {flag}"
    )


def check_parent(path: str | Path, flag: str = "--out") -> None:
    """The folder an output goes into must be a folder (or creatable)."""
    if _is_url(path):
        return
    for parent in Path(path).absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{flag} {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK):
                raise OutputError(f"{flag} {path}: no permission to write in {parent}")
            return


def check_file_output(path: str | Path, flag: str, suffixes: tuple[str, ...]) -> None:
    """A result file (--json, a PNG): a folder, or an existing file of another kind, is refused;
    an earlier result of the same kind is replaced."""
    p = Path(path)
    check_parent(p, flag)
    if p.is_dir():
        raise OutputError(f"{flag} {p} is a folder ({describe(p)}); give a file name ending in {suffixes[0]}")
    if p.exists() and p.suffix.lower() not in suffixes:
        raise OutputError(
            f"{flag} {p} exists and is not a {'/'.join(suffixes)} file: vla replaces only its own result "
            f"files; choose a name ending in {suffixes[0]}"
        )
    if p.exists() and p.suffix.lower() == ".json":
        try:
            json.loads(p.read_text())
        except (OSError, ValueError):
            raise OutputError(f"{flag} {p} exists and is not a JSON result; choose another name") from None


def file_mode() -> int:
    """The mode of a new file under the process's umask (0644 under the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def set_modes(root: str | Path) -> None:
    """One mode for every file under `root`: that of a plain new file (safetensors writes 0600)."""
    root = Path(root)
    mode = file_mode()
    files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    for f in files:
        os.chmod(f, mode)


RUN_MARKER = ".vla-run.json"  # in a work folder a command made: {"purpose": ...}


def claim_folder(path: str | Path, purpose: str, *, flag: str = "--out", legacy=None) -> Path:
    """A work folder a command fills over several runs (quickstart, benchmarks, deployments): made
    and marked when free; reused when its marker names the same purpose (or `legacy(path)` says an
    older vla made it); anything else is refused. Returns the folder."""
    p = Path(path)
    check_parent(p, flag)
    if not is_free(p):
        marker = p / RUN_MARKER
        try:
            mine = json.loads(marker.read_text()).get("purpose") == purpose
        except (OSError, ValueError, AttributeError):
            mine = False
        if not (mine or (p.is_dir() and legacy is not None and legacy(p))):
            raise OutputError(
                f"{flag} {p} already exists and is {describe(p)}, not a {purpose} folder vla made; "
                f"vla never writes into what it did not make: choose another {flag}"
            )
    p.mkdir(parents=True, exist_ok=True)
    if not (p / RUN_MARKER).exists():
        (p / RUN_MARKER).write_text(json.dumps({"purpose": purpose}) + "\n")
    return p
