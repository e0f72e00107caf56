"""Real-time chunking inside the flow models' sampler (every flow preset) and training-time RTC."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vla.model.contract import ActionModel, ActionSample
from vla.model.layers.adarms import AdaRMSNorm
from vla.model.pi0.model import Pi0Model
from vla.model.pi0.pi05 import Pi05Config, Pi05Model
from vla.model.rtc import MODES, RTCRequest
from vla.spec import SpecError

from model.test_pi0_backbones import preset_config
from model.tiny_configs import tiny_pi0

# (name, config builder, model class): pi0 and pi0.5 as published (PaliGemma layout), and pi0 /
# pi0.5 on the other backbone families, joint and cross-attached.
FLOW = {
    "pi0": (lambda **kw: tiny_pi0(**kw), Pi0Model),
    "pi05": (lambda **kw: Pi05Config(**{**_fields(tiny_pi0()), **kw}), Pi05Model),
    "pi0-smolvlm2-tiny": (lambda **kw: preset_config("pi0-smolvlm2-tiny", **kw), Pi0Model),
    "pi0-qwen25vl-tiny": (lambda **kw: preset_config("pi0-qwen25vl-tiny", **kw), Pi0Model),
    "pi0-moe-tiny": (lambda **kw: preset_config("pi0-moe-tiny", **kw), Pi0Model),
    "pi05-smolvlm2-tiny": (lambda **kw: preset_config("pi0-smolvlm2-tiny", cls=Pi05Config, **kw), Pi05Model),
}
D = 2  # the largest trained delay of the models here


def _fields(cfg) -> dict:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


def _model(name: str, **kw):
    build, cls = FLOW[name]
    torch.manual_seed(0)
    cfg = build(rtc_max_delay=D, **kw)
    m = cls(cfg, 64).eval()
    for mod in m.modules():  # pi0.5's adaptive norms start with gate 0 (tokens would not mix): wake them
        if isinstance(mod, AdaRMSNorm):
            torch.nn.init.normal_(mod.dense.weight, std=0.2)
    return m, cfg


@pytest.mark.parametrize("name", FLOW)
def test_every_mode_on_every_flow_preset(name):
    m, cfg = _model(name)
    assert m.rtc_modes() == MODES
    batch = cfg.example_batch(2, vocab_size=64)
    noise = torch.randn(2, cfg.horizon, 4, generator=torch.Generator().manual_seed(1))
    prev = 0.5 * torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(2))  # shorter than the chunk
    real = m.action_out.dim_mask(batch["embodiment"])  # row 0 "a" has 2 action dims, row 1 "b" 4
    free = m.sample_actions(batch, noise=noise)

    def held_error(out, d=2):  # over the real dims of the first d steps
        return ((out[:, :d] - prev[:, :d]).abs() * real[:, None]).sum() / (d * real.sum())

    for mode in MODES:
        out = m.sample_actions(batch, noise=noise, rtc=RTCRequest(mode, prev, 2, 4))
        assert out.shape == free.shape and torch.isfinite(out).all(), mode
        assert held_error(out) < 0.25 * held_error(free), (mode, held_error(out), held_error(free))
        if mode in ("inpaint", "trained"):  # held steps are the previous chunk's, exactly
            assert torch.equal((out[:, :2] - prev[:, :2]) * real[:, None], torch.zeros_like(out[:, :2])), mode
    # steps past the execution horizon and rows' padded dims are the model's own
    guided = m.sample_actions(batch, noise=noise, rtc=RTCRequest("guided-nojac", prev, 2, 3))
    assert not torch.allclose(guided[:, 4:], prev.new_zeros(2, cfg.horizon - 4, 4))


def test_no_request_keeps_the_published_sampler():
    m, cfg = _model("pi0")
    batch = cfg.example_batch(2, vocab_size=64)
    noise = torch.randn(2, cfg.horizon, 4)
    plain = m.sample_actions(batch, noise=noise)
    assert torch.equal(plain, m.sample_actions(batch, noise=noise, rtc=None))
    # a trained request whose delay is 0 has no prefix to feed: the plain chunk
    zero = m.sample_actions(batch, noise=noise, rtc=RTCRequest("trained", torch.ones(2, 3, 4), 0, 3))
    assert torch.equal(plain, zero)


def test_inpaint_request_is_the_guide_path_with_schedule_weights():
    m, cfg = _model("pi0")
    batch = cfg.example_batch(2, vocab_size=64)
    batch["embodiment"] = ["b", "b"]  # every dim real
    noise = torch.randn(2, cfg.horizon, 4)
    prev = torch.randn(2, 5, 4)
    req = RTCRequest("inpaint", prev, 1, 4, schedule="exp")
    w = req.inpaint_weights(cfg.horizon, 4, torch.zeros(()))
    guide = torch.zeros(2, cfg.horizon, 4)
    guide[:, :5] = prev
    want = m.sample_actions(batch, noise=noise, guide=guide, guide_weights=w[..., 0])
    assert torch.allclose(m.sample_actions(batch, noise=noise, rtc=req), want, atol=1e-6)


def test_guided_with_and_without_the_jacobian_differ_and_run_outside_inference_mode():
    m, cfg = _model("pi05")
    batch = cfg.example_batch(2, vocab_size=64)
    noise = torch.randn(2, cfg.horizon, 4)
    prev = torch.randn(2, cfg.horizon, 4)
    jac = m.sample_actions(batch, noise=noise, rtc=RTCRequest("guided", prev, 2, 5))
    nojac = m.sample_actions(batch, noise=noise, rtc=RTCRequest("guided-nojac", prev, 2, 5))
    assert not jac.requires_grad and (jac - nojac).abs().max() > 1e-4
    with torch.inference_mode():  # the caller's inference mode is lifted for the backward pass
        again = m.sample_actions(batch, noise=noise.clone(), rtc=RTCRequest("guided", prev, 2, 5))
    assert torch.allclose(again, jac, atol=1e-5)


def test_trained_mode_needs_a_model_trained_for_it():
    m, cfg = _model("pi0")
    m.cfg = dataclasses.replace(cfg, rtc_max_delay=0)
    assert "trained" not in m.rtc_modes()
    batch = cfg.example_batch(2, vocab_size=64)
    with pytest.raises(SpecError, match="trained for it"):
        m.sample_actions(batch, rtc=RTCRequest("trained", torch.zeros(2, 3, 4), 1, 3))
    with pytest.raises(SpecError, match="rtc_max_delay"):
        tiny_pi0(rtc_max_delay=6)  # the horizon is 6


def test_a_model_without_rtc_decodes_unguided(caplog):
    class Plain(ActionModel):
        def _sample(self, batch, *, num_steps, noise, guide, guide_weights):
            return ActionSample(torch.zeros(1, 2, 3), torch.zeros(1, dtype=torch.bool))

    with caplog.at_level("DEBUG", logger="vla.model.contract"):
        out = Plain().sample({}, rtc=RTCRequest("guided", torch.ones(1, 2, 3), 1, 2))
    assert out.actions.shape == (1, 2, 3) and "not supported" in caplog.text


# ---- training-time RTC ----
@pytest.mark.parametrize("name", ["pi0", "pi05"])
def test_training_time_rtc_loss(name):
    m, cfg = _model(name)
    m.train()
    batch = cfg.example_batch(3, vocab_size=64)
    g = torch.Generator().manual_seed(0)
    draws = m.training_draws(3, batch, g)
    assert draws["rtc_delay"].shape == (3,) and 0 <= draws["rtc_delay"].min() and draws["rtc_delay"].max() <= D
    base = {**batch, "noise": draws["noise"], "time": draws["time"]}
    plain = dataclasses.replace(cfg, rtc_max_delay=0)
    m.cfg = plain
    want = m.compute_loss(base)
    m.cfg = cfg
    # delay 0 everywhere: per-token times equal to the sample's time, the plain loss
    assert torch.allclose(m.compute_loss({**base, "rtc_delay": torch.zeros(3, dtype=torch.long)}), want, atol=1e-6)
    # the prefix is left out of the loss: its noise changes nothing; its actions condition the rest
    d = torch.tensor([2, 1, 0])
    loss = m.compute_loss({**base, "rtc_delay": d})
    noise = base["noise"].clone()
    noise[0, :2] += 5.0
    noise[1, :1] -= 3.0
    assert torch.equal(m.compute_loss({**base, "rtc_delay": d, "noise": noise}), loss)
    acts = base["actions"].clone()
    acts[0, :2] += 1.0
    moved = m.compute_loss({**base, "rtc_delay": d, "actions": acts})
    assert moved[0] != loss[0] and moved[2] == loss[2]
    loss.mean().backward()  # per-token conditioning is differentiable
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in m.parameters())


def test_per_token_time_reaches_the_expert():
    """pi0 mixes each token's time into its action token, pi0.5 into the expert's adaptive norms
    per token: a token's output depends on its own time only through those paths."""
    for name in ("pi0", "pi05"):
        m, cfg = _model(name)
        batch = cfg.example_batch(2, vocab_size=64)
        x = torch.randn(2, cfg.horizon, 4)
        t = torch.full((2, cfg.horizon), 0.5)
        one = m.embed_suffix(batch["state"], x, t[:, 0], batch["embodiment"])
        per = m.embed_suffix(batch["state"], x, t, batch["embodiment"])
        assert torch.allclose(one[0], per[0], atol=1e-6)
        t[:, 0] = 0.0
        mixed = m.embed_suffix(batch["state"], x, t, batch["embodiment"])
        if name == "pi0":  # the state token, then the actions: only the first action token changes
            assert torch.equal(mixed[0][:, 2:], per[0][:, 2:]) and not torch.equal(mixed[0][:, 1], per[0][:, 1])
        else:
            assert mixed[2].shape == (2, cfg.horizon, cfg.expert.width)
            assert torch.equal(mixed[2][:, 1:], mixed[2][:, 1:2].expand(-1, cfg.horizon - 1, -1))
            assert not torch.allclose(mixed[2][:, 0], mixed[2][:, 1])


def test_training_with_rtc_learns_to_continue_the_prefix():
    """Two chunks fit one observation (ambiguous without a prefix): trained with rtc_max_delay,
    the model fed the first steps of one of them continues that one."""
    torch.manual_seed(0)
    cfg = tiny_pi0(rtc_max_delay=3, num_steps=5, embodiments={"a": (3, 2)})
    m = Pi0Model(cfg, 64)
    batch = cfg.example_batch(1, vocab_size=64)
    ramp = torch.linspace(-1, 1, cfg.horizon)[:, None].expand(-1, 2)
    batch = {k: (v.expand(8, *v.shape[1:]) if torch.is_tensor(v) else v * 8) for k, v in batch.items()}
    batch["actions"] = torch.stack([ramp if i % 2 else -ramp for i in range(8)])
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        loss = m.compute_loss(batch, g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    one = {k: (v[:1] if torch.is_tensor(v) else v[:1]) for k, v in batch.items()}
    for sign in (1.0, -1.0):
        want = sign * ramp
        out = m.sample_actions(
            one, noise=torch.randn(1, cfg.horizon, 2), rtc=RTCRequest("trained", want[None, :3], 3, 3)
        )
        own, other = ((out[0, 3:] - w[3:]).abs().mean().item() for w in (want, -want))
        # the two chunks are 1.2 apart on these steps; a model blind to the prefix is >= 0.6 off on average
        assert own < 0.45 and own < 0.5 * other, (sign, own, other)
