import shutil

import numpy as np
import pytest
import torch

from vla.runtime.policy import load_policy

from runtime.conftest import arm_a_obs

pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="torch.compile on CPU needs a C compiler"
)


def test_compiled_policy_gives_the_eager_actions(tiny_ckpt):
    eager, compiled = load_policy(tiny_ckpt), load_policy(tiny_ckpt, compile=True)
    assert compiled.compiled and not eager.compiled
    assert compiled.warmup() > 0 and compiled.stats["calls"] == 0  # warm-up calls are not counted
    # The noise is drawn outside the compiled graph: the same seed gives the same chunk.
    torch.manual_seed(0)
    want = eager.infer(arm_a_obs())["actions"]
    torch.manual_seed(0)
    got = compiled.infer(arm_a_obs())["actions"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert not np.allclose(compiled.infer(arm_a_obs())["actions"], got)  # and fresh noise, a fresh sample
