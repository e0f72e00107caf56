import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from helpers import tiny_embodiment  # noqa: E402


@pytest.fixture
def emb():
    return tiny_embodiment()
