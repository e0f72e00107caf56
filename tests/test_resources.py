"""vla.resources: every built-in name resolves through the one loader; user paths keep working."""

from pathlib import Path

import pytest

from vla.resources import FOLDERS, TOML_KINDS, builtin_names, content_dir, load_toml, resolve_toml
from vla.spec import SpecError

ROOT = Path(__file__).resolve().parents[1]


def _loaders():
    from vla.config import load_preset
    from vla.resources import load_embodiment
    from vla.runtime.launch import load_launch
    from vla.sim.collect import load_recipe
    from vla.sim.suites import load_suite

    return {
        "preset": load_preset,
        "embodiment": load_embodiment,
        "suite": load_suite,
        "recipe": load_recipe,
        "launch": load_launch,
    }


ALL_NAMES = [(kind, name) for kind in TOML_KINDS for name in builtin_names(kind)]


def test_every_kind_has_builtins_and_the_folders_are_the_repositorys():
    for folder in FOLDERS:  # a source checkout reads the top-level folders in place (symlinks)
        assert content_dir(folder) == (ROOT / folder).resolve()
    assert {"pi0-tiny", "fast-tiny"} <= set(builtin_names("preset"))
    assert {"arm7", "arm5", "bimanual"} <= set(builtin_names("embodiment"))
    assert "quickstart" in builtin_names("suite") and "quickstart" in builtin_names("recipe")
    assert "arm7-reach-sim" in builtin_names("launch")


@pytest.mark.parametrize("kind,name", ALL_NAMES, ids=[f"{k}-{n}" for k, n in ALL_NAMES])
def test_every_builtin_name_resolves_and_loads(kind, name):
    p = resolve_toml(name, kind)
    assert p == content_dir(TOML_KINDS[kind].folder) / f"{name}.toml" and p.is_file()
    assert _loaders()[kind](name) is not None


def test_every_builtin_robot_has_its_mjcf():
    from vla.sim.robots import ROBOTS

    for robot in ROBOTS.values():
        assert robot.mjcf.is_file() and robot.mjcf.parent == content_dir("envs/robots")


def test_user_paths_win_and_readme_paths_work_from_anywhere(tmp_path, monkeypatch):
    own = tmp_path / "mine.toml"
    own.write_text('name = "mine"\n')
    assert load_toml(own, "preset") == ({"name": "mine"}, own)
    assert load_toml(str(own), "recipe")[1] == own
    monkeypatch.chdir(tmp_path)
    # `vla collect datasets/quickstart.toml` as the README writes it, outside a checkout: the installed copy
    assert resolve_toml("datasets/quickstart.toml", "recipe") == content_dir("datasets") / "quickstart.toml"
    assert resolve_toml("envs/suites/reach-goal.toml", "suite") == content_dir("envs/suites") / "reach-goal.toml"
    # ... unless the user has their own file there
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "quickstart.toml").write_text('name = "theirs"\n')
    assert load_toml("datasets/quickstart.toml", "recipe")[0] == {"name": "theirs"}


def test_bad_names_and_files_say_what_exists(tmp_path):
    with pytest.raises(SpecError, match=r"unknown suite 'nope'; valid suites are \[.*'quickstart'"):
        load_toml("nope", "suite")
    with pytest.raises(SpecError, match=r"preset file not found: .*missing.toml; built-in presets .*'pi0-tiny'"):
        load_toml(tmp_path / "missing.toml", "preset")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(SpecError, match=r"bad.toml: invalid TOML"):
        load_toml(bad, "launch")
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(SpecError, match=r"cannot read launch file .*dir.toml"):
        load_toml(tmp_path / "dir.toml", "launch")
    with pytest.raises(ValueError, match="unknown TOML kind 'robot'"):
        load_toml("arm7", "robot")
    with pytest.raises(ValueError, match="content folder must be one of"):
        content_dir("tests")


def test_no_module_finds_files_relative_to_its_own_source():
    """Content is found through vla.resources (importlib.resources), which works in a wheel too."""
    offenders = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "vla").rglob("*.py")) if "__file__" in p.read_text()]
    assert offenders == []
