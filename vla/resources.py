"""The built-in declarative content (robots, embodiments, suites, presets, recipes, launch files)
and the one loader every "name or path -> TOML" lookup goes through.

The content lives in the repository's top-level folders `envs/`, `policies/`, `datasets/` and
`launch/`, where a user edits it. `vla/content/` holds relative symlinks to those folders, so an
editable install reads them in place, and a wheel (or sdist) carries real copies as package data
(see `[tool.setuptools.package-data]` in pyproject.toml). Code finds them only through
`importlib.resources`, never relative to a module's own source file.

    content_dir("envs/robots") / "arm7.xml"
    d, path = load_toml("pi0-tiny", "preset")            # a built-in name ...
    d, path = load_toml("my/preset.toml", "preset")      # ... or a user's file

A name is looked up in the kind's folder; an existing file, or anything ending in `.toml`, is a
path. A relative path that names a built-in file as the README writes it (`datasets/quickstart.toml`,
`launch/arm7-reach-sim.toml`) and does not exist in the current directory falls back to the
installed copy, so the README's commands also work outside a source checkout.
"""

from __future__ import annotations

import importlib.resources
import logging
from dataclasses import dataclass
from pathlib import Path

from vla.spec import Embodiment, SpecError, read_toml

log = logging.getLogger(__name__)

FOLDERS = ("envs", "policies", "datasets", "launch")  # top-level content folders, linked from vla/content/


@dataclass(frozen=True)
class TomlKind:
    """One kind of named TOML: where the built-in ones live and what an error calls them."""

    folder: str  # under the content root, e.g. "envs/suites"
    noun: str  # "suite"
    plural: str  # "suites"
    file_noun: str  # what a missing / malformed file is called: "suite file"


TOML_KINDS = {
    "preset": TomlKind("policies", "policy preset", "presets", "preset file"),
    "embodiment": TomlKind("envs/embodiments", "embodiment", "embodiments", "embodiment file"),
    "suite": TomlKind("envs/suites", "suite", "suites", "suite file"),
    "recipe": TomlKind("datasets", "recipe", "recipes", "recipe file"),
    "launch": TomlKind("launch", "launch file", "launch files", "launch file"),
}


def content_dir(folder: str) -> Path:
    """The installed folder of built-in content: "envs", "policies", "datasets", "launch", or a
    sub-folder of one ("envs/robots")."""
    parts = Path(folder).parts
    if not parts or parts[0] not in FOLDERS or ".." in parts:
        raise ValueError(f"content folder must be one of {list(FOLDERS)} or a sub-folder of one, got {folder!r}")
    root = importlib.resources.files("vla") / "content"
    if not isinstance(root, Path):  # e.g. imported from a zip: MuJoCo and the loaders need real files
        raise SpecError(
            f"vla's built-in content is not on the file system ({root!r}); install vla from a "
            "wheel or a source checkout"
        )
    d = root.joinpath(*parts)
    if not d.is_dir():
        raise SpecError(
            f"vla's built-in content folder {folder!r} is missing ({d}); the installation is "
            "incomplete: reinstall vla (a source checkout needs the symlinks in vla/content/)"
        )
    return d.resolve()  # through the symlinks of a source checkout, so messages show envs/..., policies/...


def _kind(kind: str) -> TomlKind:
    if kind not in TOML_KINDS:
        raise ValueError(f"unknown TOML kind {kind!r}; known: {sorted(TOML_KINDS)}")
    return TOML_KINDS[kind]


def builtin_names(kind: str) -> list[str]:
    """Names of the built-in TOMLs of one kind ("preset", "embodiment", "suite", "recipe", "launch")."""
    return sorted(p.stem for p in content_dir(_kind(kind).folder).glob("*.toml"))


def resolve_toml(name_or_path: str | Path, kind: str) -> Path:
    """A built-in name or a user's path -> the TOML file to read (not read, not checked to exist)."""
    k = _kind(kind)
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.suffix == ".toml":
        # `datasets/quickstart.toml` as the README writes it, run outside a source checkout.
        sub = Path(k.folder).parts
        if not p.is_absolute() and p.parts[: len(sub)] == sub and len(p.parts) == len(sub) + 1:
            bundled = content_dir(k.folder) / p.name
            if bundled.is_file():
                log.debug("%s not in %s; using the installed %s", p, Path.cwd(), bundled)
                return bundled
        return p
    candidate = content_dir(k.folder) / f"{p}.toml"
    if candidate.is_file():
        return candidate
    raise SpecError(
        f"unknown {k.noun} {str(name_or_path)!r}; valid {k.plural} are {builtin_names(kind)} "
        f"({k.noun} not found: pass one of these names or a path to a .toml file)"
    )


def load_toml(name_or_path: str | Path, kind: str) -> tuple[dict, Path]:
    """A built-in name or a user's path -> (the parsed TOML, the file it came from).

    Unknown names and missing files raise SpecError listing the built-in names; bad TOML raises
    SpecError naming the file (vla.spec.read_toml).
    """
    p = resolve_toml(name_or_path, kind)
    if not p.exists():
        k = _kind(kind)
        raise SpecError(f"{k.file_noun} not found: {p}; built-in {k.plural} (pass the name) are {builtin_names(kind)}")
    return read_toml(p, _kind(kind).file_noun), p


def embodiment_dir() -> Path:
    """The folder of built-in embodiment TOMLs (envs/embodiments/, installed with the package)."""
    return content_dir("envs/embodiments")


def load_embodiment(name_or_path: str | Path) -> Embodiment:
    """Load an embodiment by built-in name (envs/embodiments/<name>.toml) or TOML path."""
    d, p = load_toml(name_or_path, "embodiment")
    try:
        return Embodiment.from_dict(d)
    except SpecError as e:
        raise SpecError(f"{p}: {e}") from None
