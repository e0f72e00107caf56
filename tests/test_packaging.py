"""The wheels are complete: built from a copy of the checkout, installed into a fresh venv, and run
from another directory, `vla` finds its presets, robots, embodiments, suites and recipes.

The fresh venv gets only the two built wheels (`pip install --no-deps --no-index`); the third-party
dependencies (torch, mujoco, ...) come from the project's own venv through a `.pth` line pointing
at a folder of links to them, minus `vla` and `vla_client` themselves, so nothing is downloaded
and the checkout is not importable.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.util import find_spec
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CONTENT = ("envs", "policies", "datasets", "launch")


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, **kw)


def _content_files() -> set[str]:
    """Every file of the declarative folders that the wheel must carry (scripts are not content)."""
    return {
        p.relative_to(ROOT).as_posix()
        for d in CONTENT
        for p in (ROOT / d).rglob("*")
        if p.is_file() and p.suffix != ".sh"
    }


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> list[Path]:
    """`pip wheel` of vla and vla-client, from a copy (pip builds in the source tree: build/, *.egg-info)."""
    root = tmp_path_factory.mktemp("wheels")
    src = root / "src"
    skip = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    for d in ("vla", *CONTENT, "packages/vla-client"):
        shutil.copytree(ROOT / d, src / d, symlinks=True, ignore=skip)  # vla/content/* stay relative symlinks
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / f, src / f)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-w", root / "dist"]
    if find_spec("setuptools") is not None:  # build with this venv's setuptools: no index needed
        cmd += ["--no-build-isolation", "--no-index"]
    r = _run([*cmd, src, src / "packages" / "vla-client"], cwd=root, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    found = sorted((root / "dist").glob("*.whl"))
    assert [w.name.split("-")[0] for w in found] == ["vla", "vla_client"], found
    return found


@pytest.fixture(scope="module")
def venv(wheels, tmp_path_factory) -> Path:
    """A fresh venv holding only the two wheels; its other dependencies are the project venv's."""
    root = tmp_path_factory.mktemp("venv")
    venv = root / "venv"
    r = _run([sys.executable, "-m", "venv", "--without-pip", venv], timeout=120)
    assert r.returncode == 0, r.stderr
    deps = root / "deps"
    deps.mkdir()
    ours = ("vla", "__editable__", "_vla")
    for site in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for entry in Path(site).iterdir():
            name = entry.name.lower()
            if name.startswith(ours) or name.endswith(".pth") or name == "__pycache__" or (deps / entry.name).exists():
                continue
            (deps / entry.name).symlink_to(entry)
    py = venv / "bin" / "python"
    fresh_site = Path(
        _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], timeout=60).stdout.strip()
    )
    (fresh_site / "_project_deps.pth").write_text(f"{deps}\n")
    # The project's pip (found through the .pth) installs into the fresh venv: it runs on that venv's python.
    r = _run(
        [py, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check", "-q", *wheels],
        cwd=root,
        timeout=300,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return venv


def test_the_wheel_carries_every_content_file(wheels):
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    missing = sorted(f for f in _content_files() if f"vla/content/{f}" not in names)
    assert not missing, f"not in the wheel (add a glob to [tool.setuptools.package-data]): {missing}"


def test_installed_vla_is_the_wheels_and_holds_its_content(venv, tmp_path):
    code = (
        "import json, vla, vla_client\n"
        "from vla.resources import content_dir\n"
        "print(json.dumps({'vla': vla.__file__, 'client': vla_client.__file__, 'envs': str(content_dir('envs'))}))"
    )
    r = _run([venv / "bin" / "python", "-c", code], cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    got = {k: Path(v) for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items()}
    for path in got.values():
        assert path.is_relative_to(venv) and not path.is_relative_to(ROOT), got
    pkg = got["vla"].parent
    installed = {p.relative_to(pkg / "content").as_posix() for p in (pkg / "content").rglob("*") if p.is_file()}
    assert _content_files() <= installed
    assert {
        "policies/pi0-tiny.toml",
        "envs/robots/arm7.xml",
        "envs/embodiments/arm7.toml",
        "envs/suites/quickstart.toml",
        "datasets/quickstart.toml",
        "launch/arm7-reach-sim.toml",
    } <= installed
    assert not any(p.is_symlink() for p in (pkg / "content").iterdir())  # real copies, not links to a checkout


def test_vla_eval_runs_from_another_directory(venv, tmp_path):
    from vla.sim.suites import load_suite

    r = _run(
        [venv / "bin" / "vla", "eval", "expert", "--suite", "quickstart", "--episodes", "1"], cwd=tmp_path, timeout=300
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    for t in load_suite("quickstart").tasks:
        assert f"{t.robot}/{t.task}" in r.stdout, r.stdout
    # README paths work outside a checkout too: they fall back to the installed copies.
    code = "from vla.sim.collect import load_recipe; print(load_recipe('datasets/quickstart.toml').name)"
    r = _run([venv / "bin" / "python", "-c", code], cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "quickstart", r.stderr[-3000:]
