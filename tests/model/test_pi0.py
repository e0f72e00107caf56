import dataclasses

import pytest
import torch

from vla.model.backbones.config import GemmaSize
from vla.model.layers.attention import fuse_for_inference, joint_forward, make_attn_mask, positions_from_valid
from vla.model.pi0.model import Pi0Policy
from vla.spec import SpecError

from model.tiny_configs import tiny_pi0


def test_mask_rule_is_block_causal():
    valid = torch.tensor([[1, 1, 0, 1, 1, 1, 1]], dtype=torch.bool)  # token 2 is padding
    ar = torch.tensor([[0, 0, 0, 0, 1, 1, 0]])  # prefix 0..3, state 4, actions 5..6
    m = make_attn_mask(valid, ar)[0]
    prefix, state, actions = [0, 1, 3], [4], [5, 6]
    for i in prefix:
        assert m[i, prefix].all() and not m[i, state + actions].any(), "prefix must never see the suffix"
    assert m[4, prefix + state].all() and not m[4, actions].any()
    for i in actions:
        assert m[i, prefix + state + actions].all(), "actions see everything real, bidirectionally"
    assert not m[[0, 1, 3, 4, 5, 6], 2].any(), "nobody attends to padding"
    assert m[2, 2], "a padding query's softmax row is never empty"
    assert positions_from_valid(valid).tolist() == [[0, 1, 1, 2, 3, 4, 5]]


def test_prefix_outputs_do_not_depend_on_suffix():
    """The block-causal mask in the real joint forward: changing the suffix (state, noisy actions,
    time) leaves every prefix output unchanged and changes the suffix outputs. This is what lets
    the prefix KV cache be computed once per observation."""
    torch.manual_seed(0)
    cfg = tiny_pi0()
    m = Pi0Policy(cfg, 64).eval()
    batch = cfg.example_batch(2, vocab_size=64)
    emb = batch["embodiment"]
    prefix, p_valid = m.embed_prefix(batch)
    outs = []
    for state, x, t in (
        (batch["state"], torch.randn(2, cfg.horizon, 5), torch.full((2,), 0.9)),
        (batch["state"] + 5.0, torch.randn(2, cfg.horizon, 5), torch.full((2,), 0.3)),
    ):
        suffix, s_ar, _ = m.embed_suffix(state, x, t, emb)
        valid = torch.cat([p_valid, torch.ones(s_ar.shape, dtype=torch.bool)], 1)
        ar = torch.cat([torch.zeros(p_valid.shape, dtype=torch.long), s_ar], 1)
        with torch.no_grad():
            outs.append(
                joint_forward(
                    [m.backbone.language_model, m.expert],
                    [prefix, suffix],
                    make_attn_mask(valid, ar),
                    positions_from_valid(valid),
                )[0]
            )
    (pre_a, suf_a), (pre_b, suf_b) = outs
    real = p_valid[..., None]
    assert torch.equal(pre_a * real, pre_b * real), "prefix outputs must not see the suffix"
    assert not torch.allclose(suf_a, suf_b), "the suffix must see its own (changed) inputs"


@pytest.mark.parametrize("fused", [False, True])
def test_cached_sampling_equals_uncached(fused):
    torch.manual_seed(1)
    cfg = tiny_pi0()
    m = Pi0Policy(cfg, 64).eval()
    if fused:
        fuse_for_inference(m.backbone.language_model, m.expert)
    batch = cfg.example_batch(3, vocab_size=64)
    batch["image_mask"][1, 1] = False  # a missing camera
    noise = torch.randn(3, cfg.horizon, 4)
    cached = m.sample_actions(batch, noise=noise, use_cache=True)
    full = m.sample_actions(batch, noise=noise, use_cache=False)
    assert cached.shape == (3, cfg.horizon, 4)
    assert (cached - full).abs().max() < 1e-4


def test_fused_inference_path_matches_modules():
    torch.manual_seed(2)
    cfg = tiny_pi0()
    m = Pi0Policy(cfg, 64).eval()
    batch = cfg.example_batch(2, vocab_size=64)
    noise = torch.randn(2, cfg.horizon, 4)
    ref = m.sample_actions(batch, noise=noise)
    fuse_for_inference(m.backbone.language_model, m.expert)
    assert (m.sample_actions(batch, noise=noise) - ref).abs().max() < 1e-5


def test_loss_decreases_on_a_tiny_batch_and_padded_dims_are_masked():
    torch.manual_seed(0)
    cfg = tiny_pi0()
    m = Pi0Policy(cfg, 64)
    batch = cfg.example_batch(4, vocab_size=64)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)

    def g():  # same noise/time each step: a fixed objective
        return torch.Generator().manual_seed(0)

    first = m.compute_loss(batch, g()).mean().item()
    for _ in range(60):
        loss = m.compute_loss(batch, g()).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first, (first, loss.item())
    # Padded action dims (embodiment "a" has 2 of 4) never enter the loss.
    b2 = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
    b2["actions"][0, :, 2:] = 1000.0
    b2["action_is_pad"][1, -2:] = True
    b2["actions"][1, -2:] = 1000.0
    l1, l2 = m.compute_loss(batch, g()), m.compute_loss(b2, g())
    assert torch.allclose(l1[0], l2[0])
    # Steps past the episode's end (the held last action) are trained by default, as openpi does...
    assert l2[1] > 1000
    # ...and masked out with mask_padded_actions.
    m.cfg = dataclasses.replace(cfg, mask_padded_actions=True)
    l3 = m.compute_loss(b2, g())
    assert l3[1] < 100 and torch.allclose(l3[0], l1[0])


def test_multi_embodiment_heads_route_rows():
    torch.manual_seed(0)
    cfg = tiny_pi0(embodiments={"small": (2, 2), "big": (6, 5)})
    m = Pi0Policy(cfg, 64).eval()
    batch = cfg.example_batch(4, vocab_size=64)
    assert sorted(set(batch["embodiment"])) == ["big", "small"]
    out = m.sample_actions(batch)
    assert out.shape == (4, cfg.horizon, 5)
    batch["embodiment"] = ["small", "small", "nope", "big"]
    with pytest.raises(KeyError, match="no head for embodiment"):
        m.sample_actions(batch)


def test_inconsistent_sizes_fail_at_construction():
    with pytest.raises(SpecError, match="expert.depth must equal the backbone's .* expected 2, got 3"):
        tiny_pi0(expert=GemmaSize(width=16, depth=3, mlp=32, heads=2, kv_heads=1, head_dim=16))
    with pytest.raises(SpecError, match="head_dim"):
        tiny_pi0(expert=GemmaSize(width=16, depth=2, mlp=32, heads=2, kv_heads=1, head_dim=8))
    with pytest.raises(SpecError, match="not a multiple of patch_size"):
        from model.tiny_configs import tiny_backbone

        tiny_backbone(image_size=30)


def test_vision_positions_start_as_2d_sincos_of_row_and_column():
    from vla.model.backbones import Backbone
    from vla.model.layers.positions import sincos_2d

    from model.tiny_configs import tiny_backbone

    grid, width = 4, 32
    table = sincos_2d(grid, width)
    assert table.shape == (grid * grid, width)
    rows, cols = table[:, : width // 2], table[:, width // 2 :]
    # Row-major patches: the row half changes only across rows, the column half only across columns.
    assert torch.equal(rows[0], rows[grid - 1]) and not torch.equal(rows[0], rows[grid])
    assert torch.equal(cols[0], cols[grid]) and not torch.equal(cols[0], cols[1])
    # Nearby patches are more alike than far ones (the geometry a fresh tower starts with).
    d = torch.cdist(table, table)
    assert d[0, 1] < d[0, grid - 1] and d[0, grid] < d[0, grid * (grid - 1)]
    torch.manual_seed(0)
    pe = Backbone(
        tiny_backbone(image_size=64, patch_size=16, vision_width=32)
    ).vision_tower.embeddings.position_embedding
    assert torch.equal(pe.weight.detach(), table)
    pe_rand = Backbone(tiny_backbone(image_size=64, patch_size=16, vision_width=32, vision_pos_init="random"))
    assert not torch.equal(pe_rand.vision_tower.embeddings.position_embedding.weight.detach(), table)
    with pytest.raises(SpecError, match="vision_pos_init"):
        tiny_backbone(vision_pos_init="learned")


def test_gemma_init_std_is_transformers_default_unless_set():
    """Random init std is transformers' 0.02 by default; init_std sets it (e.g. fan-in for tiny stacks)."""
    from transformers import GemmaModel

    torch.manual_seed(0)
    for size, want in (
        (GemmaSize(width=64, depth=1, mlp=128, heads=2, kv_heads=1, head_dim=32), 0.02),
        (GemmaSize(width=64, depth=1, mlp=128, heads=2, kv_heads=1, head_dim=32, init_std=0.125), 0.125),
    ):
        m = GemmaModel(size.gemma_config(vocab_size=300))
        for w in (m.layers[0].self_attn.q_proj.weight, m.layers[0].mlp.down_proj.weight, m.embed_tokens.weight):
            assert abs(w.std().item() - want) < 0.1 * want, (w.std().item(), want)
    with pytest.raises(SpecError, match="init_std"):
        GemmaSize(width=64, depth=1, mlp=128, init_std=0.0)


def test_flow_times_follow_beta_and_time_at_one():
    n = 20000
    m = Pi0Policy(tiny_pi0(), 64)
    t = m.sample_time(n, torch.Generator().manual_seed(0))
    assert t.min() >= 0.001 and t.max() < 1.0
    # Beta(1.5, 1): mean 0.6, P(t < 0.5) = 0.5 ** 1.5 = 0.354 (times are scaled into [0.001, 1]).
    assert abs(t.mean().item() - (0.6 * 0.999 + 0.001)) < 0.01
    assert abs((t < 0.5).float().mean().item() - 0.5**1.5) < 0.015
    m.cfg = dataclasses.replace(m.cfg, time_at_one=0.4)
    t2 = m.sample_time(n, torch.Generator().manual_seed(0))
    ones = t2 == 1.0
    assert abs(ones.float().mean().item() - 0.4) < 0.015
    assert abs(t2[~ones].mean().item() - (0.6 * 0.999 + 0.001)) < 0.01
    assert torch.equal(t2, m.sample_time(n, torch.Generator().manual_seed(0)))  # reproducible
    with pytest.raises(SpecError, match="time_at_one"):
        tiny_pi0(time_at_one=1.0)


def test_noise_scale_scales_the_initial_noise_and_defaults_to_pi0():
    m = Pi0Policy(tiny_pi0(), 64)
    emb = ["b", "b"]
    assert m.cfg.noise_scale == 1.0, "pi0 as published samples from N(0, I)"
    drawn = torch.randn(2, m.cfg.horizon, 4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(m.initial_noise(emb, torch.Generator().manual_seed(5)), drawn)
    m.cfg = dataclasses.replace(m.cfg, noise_scale=0.25)
    assert torch.allclose(m.initial_noise(emb, torch.Generator().manual_seed(5)), 0.25 * drawn)
    m.cfg = dataclasses.replace(m.cfg, noise_scale=0.0)
    assert not m.initial_noise(emb, torch.Generator().manual_seed(5)).any()
    m.eval()  # zero noise: one chunk per observation, whatever the generator
    batch = m.cfg.example_batch(2, vocab_size=64)
    a = m.sample_actions(batch, noise=m.initial_noise(batch["embodiment"]))
    b = m.sample_actions(batch, noise=m.initial_noise(batch["embodiment"]))
    assert torch.equal(a, b)
    for bad in (-0.1, 1.5, True, "0"):
        with pytest.raises(SpecError, match="noise_scale"):
            tiny_pi0(noise_scale=bad)


def test_guided_sampling_inpaints_the_frozen_prefix():
    torch.manual_seed(3)
    cfg = tiny_pi0(num_steps=5)
    m = Pi0Policy(cfg, 64).eval()
    batch = cfg.example_batch(2, vocab_size=64)
    noise = torch.randn(2, cfg.horizon, 4)
    free = m.sample_actions(batch, noise=noise)
    guide = torch.full((2, cfg.horizon, 4), 0.7)
    w = torch.zeros(2, cfg.horizon)
    w[:, :2] = 1.0  # first two steps frozen to the guide
    w[:, 2] = 0.5
    out = m.sample_actions(batch, noise=noise, guide=guide, guide_weights=w)
    assert torch.allclose(out[:, :2], guide[:, :2], atol=1e-6), "frozen steps end exactly at the guide"
    assert (out[:, 2] - guide[:, 2]).abs().mean() < (free[:, 2] - guide[:, 2]).abs().mean()
    assert not torch.allclose(out[:, -1], guide[:, -1])
