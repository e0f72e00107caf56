"""vla.model.interop.atomic.atomic_dir: all or nothing, one file mode, refuses the wrong kind."""

import os

import pytest

from vla.model.interop.atomic import atomic_dir
from vla.outputs import file_mode


class Refused(Exception):
    pass


def refuse(p):
    return Refused(str(p))


def leftovers(parent):
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_writes_renames_and_sets_one_mode(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out, refuse=refuse) as tmp:
        assert tmp.parent == tmp_path and not out.exists()
        (tmp / "a.bin").write_bytes(b"x")
        os.chmod(tmp / "a.bin", 0o600)
    assert (out / "a.bin").read_bytes() == b"x"
    assert (out / "a.bin").stat().st_mode & 0o777 == file_mode()
    assert leftovers(tmp_path) == []


def test_error_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(out, refuse=refuse) as tmp:
        (tmp / "a").write_text("half")
        raise RuntimeError("crash")
    assert not out.exists() and leftovers(tmp_path) == []


def test_replaces_only_its_kind(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine").write_text("old")
    with atomic_dir(out, refuse=refuse, replaces=lambda p: (p / "mine").exists()) as tmp:
        (tmp / "mine").write_text("new")
    assert (out / "mine").read_text() == "new" and leftovers(tmp_path) == []

    other = tmp_path / "other"
    other.mkdir()
    (other / "keep").write_text("user data")
    with pytest.raises(Refused), atomic_dir(other, refuse=refuse, replaces=lambda p: False):
        pass
    assert (other / "keep").read_text() == "user data"


def test_without_replaces_anything_there_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()  # even empty
    with pytest.raises(Refused), atomic_dir(out, refuse=refuse):
        pass
    # appeared while writing: refused at the rename, nothing left behind
    late = tmp_path / "late"
    with pytest.raises(Refused), atomic_dir(late, refuse=refuse) as tmp:
        (tmp / "a").write_text("x")
        late.mkdir()
    assert list(late.iterdir()) == [] and leftovers(tmp_path) == []
