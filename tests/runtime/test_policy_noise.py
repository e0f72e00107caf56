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
    assert zero.metadata["noise_scale"] == 0.0 and published.metadata["noise_scale"] == 1.0  # told to clients
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
    r = runner.invoke(app, ["serve", str(tiny_ckpt), "--port", "0", "--noise-scale", "2"])
    assert r.exit_code == 2 and "--noise-scale must be in [0, 1]" in r.output
    r = runner.invoke(app, ["eval", "expert", "--noise-scale", "0"])
    assert r.exit_code == 2 and "not a checkpoint directory" in r.output
    assert load_policy(tiny_ckpt, noise_scale=np.float32(0.5)).cfg.noise_scale == 0.5  # any real number


def test_a_fast_checkpoint_refuses_a_noise_scale(tmp_path, two_stores):
    from vla.config import load_preset
    from vla.train.trainer import train

    from train.conftest import write_preset

    ck = train(
        load_preset(write_preset(tmp_path / "f.toml", "fast")), two_stores, tmp_path / "ck", steps=2, progress=False
    )
    with pytest.raises(SpecError, match="this fast model samples from no noise"):
        load_policy(ck, noise_scale=0.0)
    # Evaluated in worker processes, the checkpoint is checked before any episode runs.
    r = CliRunner().invoke(app, ["eval", str(ck), "--workers", "2", "--noise-scale", "0", "--episodes", "1"])
    assert r.exit_code == 2 and "--noise-scale: this fast model samples from no noise" in r.output
