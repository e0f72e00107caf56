"""`noise_scale`: a checkpoint's sampling noise, overridden at load (vla eval --noise-scale)."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vla.cli import app
from vla.runtime.policy import load_policy
from vla.spec import SpecError

from runtime.conftest import arm_a_obs


def test_zero_noise_gives_one_chunk_per_observation(tiny_ckpt):
    published = load_policy(tiny_ckpt)
    assert published.model.cfg.noise_scale == 1.0  # the test preset leaves pi0's default
    a, b = published.infer(arm_a_obs())["actions"], published.infer(arm_a_obs())["actions"]
    assert not np.allclose(a, b), "fresh noise, a fresh sample"
    zero = load_policy(tiny_ckpt, noise_scale=0.0)
    assert zero.model.cfg.noise_scale == 0.0 and zero.cfg.noise_scale == 0.0
    torch.manual_seed(1)
    c = zero.infer(arm_a_obs())["actions"]
    torch.manual_seed(2)
    np.testing.assert_array_equal(zero.infer(arm_a_obs())["actions"], c)
    assert not np.allclose(c, a)


def test_bad_noise_scale_is_refused(tiny_ckpt):
    with pytest.raises(SpecError, match="noise_scale must be a number in"):
        load_policy(tiny_ckpt, noise_scale=1.5)
    runner = CliRunner()
    r = runner.invoke(app, ["eval", str(tiny_ckpt), "--noise-scale", "-1"])
    assert r.exit_code == 2 and "--noise-scale must be in [0, 1]" in r.output
    r = runner.invoke(app, ["eval", "expert", "--noise-scale", "0"])
    assert r.exit_code == 2 and "not a checkpoint directory" in r.output
