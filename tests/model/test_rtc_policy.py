"""Real-time chunking end to end: a checkpoint trained with [train] rtc_max_delay, served by the
Policy and the openpi-protocol server with an `rtc` request."""

from __future__ import annotations

import numpy as np
import pytest

from vla.model.interop.checkpoint import Checkpoint
from vla.runtime.client import RemotePolicy, RemotePolicyError
from vla.runtime.policy import load_policy
from vla.runtime.server import PolicyServer, ServerConfig
from vla.spec import SpecError

from runtime.conftest import arm_a_obs
from train.conftest import two_stores, write_preset  # noqa: F401  (two_stores is a fixture used here)


@pytest.fixture(scope="module")
def rtc_ckpt(tmp_path_factory, two_stores):  # noqa: F811
    """A tiny pi0 (horizon 6; armA: 3 actions) trained 2 steps with training-time RTC, D = 2."""
    from vla.config import load_preset
    from vla.train.trainer import train

    root = tmp_path_factory.mktemp("rtc")
    path = write_preset(root / "p.toml")
    path.write_text(path.read_text() + "rtc_max_delay = 2\n")  # [train] is the preset's last table
    return train(load_preset(path), two_stores, root / "ck", steps=2, progress=False)


@pytest.fixture(scope="module")
def policy(rtc_ckpt):
    return load_policy(rtc_ckpt)


def _rtc(mode, prev, delay=2, **kw):
    return {"mode": mode, "prev_chunk": prev, "inference_delay": delay, **kw}


PREV = np.linspace(-0.5, 0.5, 12, dtype=np.float32).reshape(4, 3)  # 4 steps of armA's 3 actions
NOISE = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)


def test_the_checkpoint_records_training_time_rtc(rtc_ckpt, policy, tmp_path):
    ck = Checkpoint(rtc_ckpt)
    assert ck.resolved.model.rtc_max_delay == 2 and ck.resolved.train["rtc_max_delay"] == 2
    meta = policy.metadata["rtc"]
    assert meta["modes"] == ["inpaint", "guided", "guided-nojac", "trained"] and meta["trained_max_delay"] == 2
    # a training choice, not geometry: fine-tuning it with a preset without RTC is allowed
    from vla.config import load_preset
    from vla.model.registry import model_type
    from vla.train.init import init_config

    plain = load_preset(write_preset(tmp_path / "plain.toml"))
    assert init_config(ck, plain, model_type("pi0")).horizon == 6


def test_every_mode_through_the_policy(policy):
    free = policy.infer(arm_a_obs(), noise=NOISE)["actions"]
    for mode in ("inpaint", "guided", "guided-nojac", "trained"):
        out = policy.infer(arm_a_obs(), noise=NOISE, rtc=_rtc(mode, PREV, execution_horizon=4, schedule="exp"))
        a = out["actions"]
        assert a.shape == (6, 3) and a.dtype == np.float32 and np.isfinite(a).all(), mode
        assert np.abs(a[:2] - PREV[:2]).mean() < 0.3 * np.abs(free[:2] - PREV[:2]).mean(), mode
        if mode in ("inpaint", "trained"):  # held steps come back as sent (through the normalization)
            assert np.abs(a[:2] - PREV[:2]).max() < 1e-4, mode
    # nothing to agree with: the plain chunk
    empty = policy.infer(arm_a_obs(), noise=NOISE, rtc=_rtc("guided", np.zeros((0, 3), np.float32)))
    assert np.array_equal(empty["actions"], free)


def test_a_trained_delay_past_the_training_one_is_capped(policy, caplog):
    with caplog.at_level("WARNING", logger="vla.runtime.policy"):
        a = policy.infer(arm_a_obs(), noise=NOISE, rtc=_rtc("trained", PREV, delay=4))["actions"]
    assert "beyond the 2" in caplog.text and np.abs(a[:2] - PREV[:2]).max() < 1e-4


@pytest.mark.parametrize(
    "rtc, match",
    [
        ("guided", "must be a map"),
        ({"mode": "guided", "prev_chunk": PREV}, "missing keys \\['inference_delay'\\]"),
        (_rtc("guided", PREV, horizon=3), "unknown keys \\['horizon'\\]"),
        (_rtc("bidirectional", PREV), "rtc mode must be one of"),
        (_rtc("guided", PREV[:, :2]), "expected \\[h', 3\\]"),
        (_rtc("guided", PREV[0]), "prev_chunk: expected float \\[h', a\\]"),
        (_rtc("guided", PREV, delay=-1), "inference_delay: expected an int >= 0"),
        (_rtc("guided", PREV, delay=1.5), "inference_delay: expected an int >= 0"),
        (_rtc("guided", PREV, schedule="cosine"), "schedule must be one of"),
        (_rtc("guided", PREV, max_guidance_weight=0), "max_guidance_weight"),
        (_rtc("guided", PREV * np.nan), "non-finite"),
    ],
)
def test_bad_requests_name_the_key(policy, rtc, match):
    with pytest.raises(SpecError, match=match):
        policy.infer(arm_a_obs(), rtc=rtc)


def test_guide_and_rtc_together_are_refused(policy):
    with pytest.raises(SpecError, match="not both"):
        policy.infer(arm_a_obs(), guide=PREV, guide_weights=np.ones(4, np.float32), rtc=_rtc("guided", PREV))


def test_the_server_carries_rtc_requests(policy):
    srv = PolicyServer(policy, ServerConfig(port=0)).start()
    try:
        with RemotePolicy(srv.url) as p:
            assert "trained" in p.metadata["rtc"]["modes"]
            plain = p.infer(arm_a_obs())["actions"]  # an openpi-style observation: no rtc
            assert plain.shape == (6, 3)
            for mode in ("guided", "trained"):
                a = p.infer(arm_a_obs(), rtc=_rtc(mode, PREV, execution_horizon=4))["actions"]
                assert np.abs(a[:2] - PREV[:2]).mean() < 0.1, mode
            with pytest.raises(RemotePolicyError, match="error: rtc mode must be one of"):
                p.infer(arm_a_obs(), rtc=_rtc("soft", PREV))
            assert p.infer(arm_a_obs())["actions"].shape == (6, 3)  # the connection stays open
    finally:
        srv.stop()
