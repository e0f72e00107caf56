"""Grounding tokens (early fusion) and the env-state auxiliary loss (vla.model.grounding.tokens)."""

import numpy as np
import pytest
import torch

from vla.data.stats import KeyStats
from vla.model.grounding.tokens import GroundingConfig
from vla.model.pi0.model import Pi0Model
from vla.model.pi0.pi05 import Pi05Config, Pi05Model
from vla.model.transforms import Transforms
from vla.spec import ENV_STATE, SpecError

from helpers import tiny_embodiment
from model.tiny_configs import tiny_backbone, tiny_pi0

K = 2


def _model(**kw):
    torch.manual_seed(0)
    cfg = tiny_pi0(grounding=GroundingConfig(tokens=K, **kw))
    return cfg, Pi0Model(cfg, 64)


def _with_env(batch, valid):
    b = batch["state"].shape[0]
    return {**batch, "env_state": torch.randn(b, 6), "env_state_valid": torch.tensor(valid)}


def test_config_checks():
    with pytest.raises(SpecError, match="tokens must be an int >= 1, got 0"):
        GroundingConfig(tokens=0)
    with pytest.raises(SpecError, match="env_state_loss must be >= 0, got -1"):
        GroundingConfig(tokens=K, env_state_loss=-1.0)
    with pytest.raises(SpecError, match="env_state_dim must be an int >= 1, got 0"):
        GroundingConfig(tokens=K, env_state_dim=0)
    assert tiny_pi0().grounding is None  # pi0 as published
    # a [model.grounding] table (a dict) becomes the sub-config
    cfg = tiny_pi0(grounding={"tokens": K, "env_state_loss": 1.0})
    assert cfg.grounding == GroundingConfig(tokens=K, env_state_loss=1.0) and cfg.predicts_env_state
    assert not tiny_pi0(grounding={"tokens": K}).predicts_env_state


def test_grounding_tokens_join_the_prefix_and_read_the_instruction():
    cfg, m = _model()
    batch = cfg.example_batch(2, vocab_size=64)
    p, g = m.observe(batch)
    base = m.backbone.embed_prefix(batch["images"], batch["image_mask"], batch["tokens"], batch["token_mask"])
    assert g.shape == (2, K, m.backbone.width)
    assert p.embeds.shape[1] == base.embeds.shape[1] + K and p.valid[:, -K:].all()
    assert torch.equal(p.embeds[:, -K:], g)
    # FiLM starts at zero (queries identical for every instruction); after one nudge the tokens
    # must depend on the instruction, and always on the images.
    with torch.no_grad():
        m.grounding.film.weight.normal_(0, 0.5)
        g = m.observe(batch)[1]
        other = dict(batch, tokens=(batch["tokens"] + 1) % 64)
        assert not torch.allclose(m.observe(other)[1], g)
        assert not torch.allclose(m.observe(dict(batch, images=-batch["images"]))[1], g)


def test_env_state_loss_adds_only_where_valid_and_trains_the_vision_tower():
    cfg, m = _model(env_state_loss=2.0)
    batch = cfg.example_batch(2, vocab_size=64)
    draws = {"noise": torch.randn(batch["actions"].shape), "time": torch.full((2,), 0.5)}
    flow = m.compute_loss({**batch, **draws})
    none = m.compute_loss(_with_env({**batch, **draws}, [False, False]))
    torch.testing.assert_close(none, flow)
    both = _with_env({**batch, **draws}, [True, False])
    loss = m.compute_loss(both)
    aux = m.grounding.env_loss(m.observe(both)[1], both["env_state"], both["env_state_valid"])
    torch.testing.assert_close(loss, flow + 2.0 * aux)
    assert aux[0] > 0 and aux[1] == 0
    assert set(m.loss_terms()) == {"flow_loss", "env_state_loss"}
    # The auxiliary loss alone sends gradient into the vision tower.
    m.zero_grad()
    m.grounding.env_loss(m.observe(both)[1], both["env_state"], both["env_state_valid"]).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.backbone.vision_tower.parameters())


def test_env_state_is_never_an_input():
    """Sampling with and without scene facts in the batch gives the same actions."""
    cfg, m = _model(env_state_loss=1.0)
    m.eval()
    batch = cfg.example_batch(2, vocab_size=64)
    noise = torch.randn(2, cfg.horizon, 4)
    a = m.sample_actions(batch, noise=noise)
    b = m.sample_actions(_with_env(batch, [True, True]), noise=noise)
    assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_cached_sampling_equals_uncached_with_grounding(kind):
    torch.manual_seed(0)
    if kind == "pi0":
        cfg = tiny_pi0(grounding=GroundingConfig(tokens=K))
        m = Pi0Model(cfg, 64).eval()
    else:
        base = tiny_pi0()
        cfg = Pi05Config(backbone=tiny_backbone(), expert=base.expert, horizon=6, num_steps=4, cameras=2,
                         max_tokens=5, embodiments=base.embodiments, grounding=GroundingConfig(tokens=K))  # fmt: skip
        m = Pi05Model(cfg, 64).eval()
    batch = cfg.example_batch(3, vocab_size=64)
    noise = torch.randn(3, cfg.horizon, 4)
    cached = m.sample_actions(batch, noise=noise, use_cache=True)
    full = m.sample_actions(batch, noise=noise, use_cache=False)
    assert (cached - full).abs().max() < 1e-4


def test_transforms_zscore_env_state_and_mark_unknown_rows():
    emb = tiny_embodiment("a")
    env_stats = KeyStats(10, np.ones(6), np.full(6, 2.0), np.zeros(6), np.ones(6), np.zeros(6), np.ones(6))
    stats = {"a": {ENV_STATE: env_stats}}
    tf = Transforms({"a": emb}, stats, "zscore", None, image_size=32, cameras=1, max_tokens=4, horizon=2)
    env = np.array([[3.0] * 6, [np.nan] * 6], np.float32)
    out = tf._env_state(["a", "a"], env)
    assert out["env_state_valid"].tolist() == [True, False]
    np.testing.assert_allclose(out["env_state"][0].numpy(), 1.0, rtol=1e-5)
    no_stats = Transforms({"a": emb}, {"a": {}}, "zscore", None, image_size=32, cameras=1, max_tokens=4, horizon=2)
    assert not no_stats._env_state(["a"], env[:1])["env_state_valid"].any()


def test_env_state_input_feeds_the_predicted_facts_to_the_state_token():
    with pytest.raises(SpecError, match="set env_state_loss > 0"):
        GroundingConfig(tokens=K, env_state_input=True)
    with pytest.raises(SpecError, match="pi0.5 has none"):
        base = tiny_pi0()
        Pi05Config(backbone=base.backbone, expert=base.expert, embodiments=base.embodiments,
                   grounding=GroundingConfig(tokens=K, env_state_loss=1.0, env_state_input=True))  # fmt: skip
    cfg, m = _model(env_state_loss=1.0, env_state_input=True)
    batch = cfg.example_batch(2, vocab_size=64)
    _, g = m.observe(batch)
    tok = m._state_token(batch["state"], batch["embodiment"], torch.float32, g)
    with torch.no_grad():
        m.grounding.env_head.bias.add_(1.0)  # other predicted facts -> another state token
    assert not torch.allclose(m._state_token(batch["state"], batch["embodiment"], torch.float32, g), tok)
    # The flow loss does not train the facts' head (the gradient is stopped); the aux loss does.
    m.zero_grad()
    m.compute_loss(batch).sum().backward()
    assert m.grounding.env_head.weight.grad is None or not m.grounding.env_head.weight.grad.any()
    assert m.env_state_in.weight.grad.abs().sum() > 0
