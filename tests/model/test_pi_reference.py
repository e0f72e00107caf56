"""The independent pi0 / pi0.5 reference (model/pi_reference.py) is itself checked here: pi0 against
transformers' PI0ForConditionalGeneration on the same random weights, pi0.5 by the properties of its
adaptive-RMSNorm expert."""

import dataclasses
import math

import pytest
import torch

from model import pi_reference as ref

B, CAMS, TEXT = 2, 2, 6


def make_batch(geom: ref.Geometry, seed: int = 0) -> dict:
    """Row 0: both cameras, full text. Row 1: camera slot 0 masked, the last two text tokens padding."""
    g = torch.Generator().manual_seed(seed)
    s = geom.vision.image_size
    return {
        "images": torch.rand(B, CAMS, 3, s, s, generator=g) * 2 - 1,
        "image_mask": torch.tensor([[True, True], [False, True]]),
        "tokens": torch.randint(0, geom.text.vocab_size, (B, TEXT), generator=g),
        "token_mask": torch.tensor([[True] * TEXT, [True] * (TEXT - 2) + [False] * 2]),
        "state": torch.randn(B, geom.max_dim, generator=g),
    }


def make_noise(geom: ref.Geometry, seed: int = 1) -> torch.Tensor:
    return torch.randn(B, geom.chunk, geom.max_dim, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------- pi0 vs transformers


def transformers_pi0(geom: ref.Geometry, weights: dict):
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "PI0ForConditionalGeneration"):
        pytest.skip("transformers without PI0 (needs >= 5.4)")
    v, t, e = geom.vision, geom.text, geom.expert
    config = transformers.PI0Config(
        vlm_config=dict(
            text_config=dict(
                hidden_size=t.width,
                num_hidden_layers=t.depth,
                intermediate_size=t.mlp,
                num_attention_heads=t.heads,
                num_key_value_heads=t.kv_heads,
                head_dim=t.head_dim,
                vocab_size=t.vocab_size,
            ),
            vision_config=dict(
                hidden_size=v.width,
                num_hidden_layers=v.depth,
                intermediate_size=v.mlp,
                num_attention_heads=v.heads,
                patch_size=v.patch_size,
                image_size=v.image_size,
                vision_use_head=False,
            ),
            projection_dim=t.width,
            image_token_id=t.vocab_size,  # as PaliGemma: one past the vocabulary
        ),
        dit_config=dict(
            hidden_size=e.width,
            num_hidden_layers=e.depth,
            intermediate_size=e.mlp,
            num_attention_heads=t.heads,
            num_key_value_heads=t.kv_heads,
            head_dim=t.head_dim,
        ),
        chunk_size=geom.chunk,
        max_state_dim=geom.max_dim,
        max_action_dim=geom.max_dim,
    )
    model = transformers.PI0ForConditionalGeneration(config).eval()
    mapped = {}
    for key, value in weights.items():
        new = key
        for old, repl in (
            (ref.VISION, "model.vlm.vision_tower."),  # 5.24: SiglipVisionModel keys have no `vision_model.`
            (ref.PALI + "model.", "model.vlm."),
            (ref.EMBED, "model.vlm.language_model.embed_tokens.weight"),
            (ref.EXPERT, "model.dit."),
            (ref.EXPERT_LM_HEAD, "model.dit.embed_tokens.weight"),  # unused either side
            ("action_out_proj", "action_out_proj"),
        ):
            if key.startswith(old):
                new = repl + key[len(old) :]
                break
        else:
            new = "embed_action_time." + key  # state_proj, action_in_proj, action_time_mlp_{in,out}
        mapped[new] = value
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    assert not unexpected, unexpected
    assert not [k for k in missing if "embed_scale" not in k and "sinusoid" not in k], missing
    return model


def transformers_inputs(geom: ref.Geometry, batch: dict) -> dict:
    """transformers' PI0 wants image_token_id placeholders for each *valid* camera, then the text; the rest
    of the row is padding (attention_mask 0)."""
    n = geom.tokens_per_image
    length = CAMS * n + TEXT
    ids = torch.zeros(B, length, dtype=torch.long)
    mask = torch.zeros(B, length, dtype=torch.long)
    for r in range(B):
        row = [geom.text.vocab_size] * (n * int(batch["image_mask"][r].sum()))
        row += batch["tokens"][r][batch["token_mask"][r]].tolist()
        ids[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
    return dict(
        state=batch["state"],
        input_ids=ids,
        pixel_values=batch["images"],
        attention_mask=mask,
        pixel_attention_mask=batch["image_mask"],
    )


@pytest.mark.interop
def test_pi0_reference_matches_transformers_pi0():
    geom = ref.tiny_geometry(pi05=False)
    weights = ref.random_lerobot_weights(geom, seed=0)
    batch, noise = make_batch(geom), make_noise(geom)
    model = transformers_pi0(geom, weights)
    with torch.no_grad():
        expected = model.sample_actions(noise=noise.clone(), num_steps=3, **transformers_inputs(geom, batch))
    got = ref.reference_sample(weights, geom, batch, noise, num_steps=3)
    assert got.shape == (B, geom.chunk, geom.max_dim)
    assert expected.abs().max() > 0.5, "the oracle's actions are not trivially small"
    assert (got - expected).abs().max().item() <= 1e-4


@pytest.mark.interop
def test_pi0_reference_matches_transformers_pi0_in_float64():
    """The tight form: transformers' PI0 in float64 with its float32 sinusoid frequencies recomputed in float64
    and times exact in binary (num_steps 4). What is left is transformers' own float32 islands (RoPE angles
    and the RMSNorm statistics), ~1e-7; any real difference in the math is orders of magnitude above that."""
    geom = ref.tiny_geometry(pi05=False)
    weights = ref.random_lerobot_weights(geom, seed=1)
    batch, noise = make_batch(geom, seed=1), make_noise(geom, seed=2).double()
    model = transformers_pi0(geom, weights).double()
    fraction = torch.linspace(0.0, 1.0, geom.expert.width // 2, dtype=torch.float64)
    model.embed_action_time.sinusoid_embeds.sinusoid_freq = (
        2 * math.pi / (ref.MIN_PERIOD * (ref.MAX_PERIOD / ref.MIN_PERIOD) ** fraction)
    )
    inputs = {k: (v.double() if v.is_floating_point() else v) for k, v in transformers_inputs(geom, batch).items()}
    with torch.no_grad():
        expected = model.sample_actions(noise=noise.clone(), num_steps=4, **inputs)
    got = ref.reference_sample(weights, geom, batch, noise, num_steps=4)
    assert (got - expected).abs().max().item() <= 1e-6


@pytest.mark.parametrize("pi05", [False, True])
def test_invalid_tokens_are_ignored_and_valid_ones_matter(pi05):
    """Masked camera pixels and padded token ids change nothing; a valid camera, token or the state does."""
    geom = ref.tiny_geometry(pi05=pi05)
    weights = ref.random_lerobot_weights(geom, seed=3)
    batch, noise = make_batch(geom), make_noise(geom)
    base = ref.reference_sample(weights, geom, batch, noise, num_steps=2)

    def run(**change):
        return ref.reference_sample(weights, geom, {**batch, **change}, noise, num_steps=2)

    images = batch["images"].clone()
    images[1, 0] = -images[1, 0]  # masked slot
    tokens = batch["tokens"].clone()
    tokens[1, -2:] = (tokens[1, -2:] + 7) % geom.text.vocab_size  # padding
    torch.testing.assert_close(run(images=images, tokens=tokens), base, rtol=0, atol=1e-10)
    images = batch["images"].clone()
    images[1, 1] = -images[1, 1]  # the valid camera of row 1
    assert (run(images=images) - base)[1].abs().max() > 1e-3
    tokens = batch["tokens"].clone()
    tokens[0, 0] = (tokens[0, 0] + 1) % geom.text.vocab_size
    assert (run(tokens=tokens) - base)[0].abs().max() > 1e-3
    changed = (run(state=batch["state"] + 1.0) - base).abs().max()
    assert (changed > 1e-3) if not pi05 else (changed == 0), "pi0.5 has its state in the prompt only"


# ----------------------------------------------------------------------------------------------- pi0.5


def _suffix_inputs(geom, weights, t=0.7):
    w = {k: v.double() for k, v in weights.items()}
    batch = {k: (v.double() if v.is_floating_point() else v) for k, v in make_batch(geom).items()}
    prefix, prefix_valid = ref.embed_prefix(w, geom, batch)
    suffix, blocks, cond = ref.embed_suffix(
        w, geom, batch["state"], make_noise(geom).double(), torch.full((B,), t, dtype=torch.float64)
    )
    mask = ref.attention_mask(prefix_valid, blocks)
    valid = torch.cat([prefix_valid, torch.ones(suffix.shape[:2], dtype=torch.bool)], 1)
    return w, prefix, suffix, mask, valid.long().cumsum(1) - 1, cond


def test_pi05_adarms_with_zero_dense_is_plain_rms():
    """dense weight 0 and bias (scale 0, shift 0, gate 1) is the plain Gemma RMSNorm with weight 0, no gating:
    the pi0.5 expert then equals a plain expert whose norm weights are zero, whatever the condition."""
    geom = ref.tiny_geometry(pi05=True)
    w, prefix, suffix, mask, positions, cond = _suffix_inputs(geom, ref.random_lerobot_weights(geom, seed=5))
    width = geom.expert.width
    plain = dict(w)
    for key in [k for k in w if k.startswith(ref.EXPERT) and ".dense." in k]:
        if key.endswith(".weight"):
            w[key] = torch.zeros_like(w[key])
            plain.pop(key)
        else:
            w[key] = torch.cat([torch.zeros(2 * width), torch.ones(width)]).double()
            plain.pop(key)
            plain[key.replace(".dense.bias", ".weight")] = torch.zeros(width, dtype=torch.float64)
    _, ada = ref.joint_forward(w, geom, prefix, suffix, mask, positions, cond)
    _, ada_other_cond = ref.joint_forward(w, geom, prefix, suffix, mask, positions, cond * 3 + 1)
    _, expected = ref.joint_forward(plain, geom, prefix, suffix, mask, positions, None)
    torch.testing.assert_close(ada, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(ada_other_cond, expected, rtol=0, atol=1e-12)
    # the unit itself: (1 + scale) * normed + shift, gate passed back
    x = torch.randn(2, 3, width, dtype=torch.float64)
    out, gate = ref.rms_norm(w, ref.EXPERT + "norm", x, cond)
    torch.testing.assert_close(out, x / x.pow(2).mean(-1, keepdim=True).add(ref.EPS).sqrt(), rtol=0, atol=1e-12)
    torch.testing.assert_close(gate, torch.ones(2, 1, width, dtype=torch.float64), rtol=0, atol=0)


def test_pi05_gates_scale_the_residual_branches():
    """Gates zero in every expert layer: the action tokens pass through untouched and come out as the
    (adaptive) final norm of their input; gates doubled: the output changes."""
    geom = ref.tiny_geometry(pi05=True)
    w, prefix, suffix, mask, positions, cond = _suffix_inputs(geom, ref.random_lerobot_weights(geom, seed=6))
    width = geom.expert.width
    closed, doubled = dict(w), dict(w)
    for key in [k for k in w if k.startswith(ref.EXPERT + "layers.") and ".dense." in k]:
        closed[key] = w[key].clone()
        closed[key][2 * width :] = 0.0  # gate rows of weight and bias
        doubled[key] = w[key].clone()
        doubled[key][2 * width :] *= 2.0
    _, out = ref.joint_forward(closed, geom, prefix, suffix, mask, positions, cond)
    torch.testing.assert_close(out, ref.rms_norm(w, ref.EXPERT + "norm", suffix, cond)[0], rtol=0, atol=1e-12)
    _, base = ref.joint_forward(w, geom, prefix, suffix, mask, positions, cond)
    _, more = ref.joint_forward(doubled, geom, prefix, suffix, mask, positions, cond)
    assert (more - base).abs().max() > 1e-3


def test_pi05_output_depends_on_time_condition():
    geom = ref.tiny_geometry(pi05=True)
    weights = ref.random_lerobot_weights(geom, seed=7)
    w = {k: v.double() for k, v in weights.items()}
    batch = {k: (v.double() if v.is_floating_point() else v) for k, v in make_batch(geom).items()}
    x = make_noise(geom).double()
    v1 = ref.velocity(w, geom, batch, x, torch.full((B,), 1.0, dtype=torch.float64))
    v2 = ref.velocity(w, geom, batch, x, torch.full((B,), 0.4, dtype=torch.float64))
    assert (v1 - v2).abs().max() > 1e-3, "time reaches the expert through adaRMS"
    no_time = dict(w, **{"time_mlp_out.weight": torch.zeros_like(w["time_mlp_out.weight"])})
    u1 = ref.velocity(no_time, geom, batch, x, torch.full((B,), 1.0, dtype=torch.float64))
    u2 = ref.velocity(no_time, geom, batch, x, torch.full((B,), 0.4, dtype=torch.float64))
    torch.testing.assert_close(u1, u2, rtol=0, atol=0)  # the condition is the only way time gets in
    # the prefix never sees the suffix: its outputs are the same at any time and any noisy actions
    outs = []
    for t in (1.0, 0.1):
        w_, prefix, suffix, mask, positions, cond = _suffix_inputs(geom, weights, t=t)
        outs.append(ref.joint_forward(w_, geom, prefix, suffix * (1 + t), mask, positions, cond)[0])
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


@pytest.mark.parametrize("pi05", [False, True])
def test_reference_is_deterministic_and_seeded(pi05):
    geom = ref.tiny_geometry(pi05=pi05)
    a, b, c = (ref.random_lerobot_weights(geom, seed=s) for s in (11, 11, 12))
    assert a.keys() == b.keys() == c.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    batch, noise = make_batch(geom), make_noise(geom)
    first = ref.reference_sample(a, geom, batch, noise, num_steps=2)
    assert torch.equal(first, ref.reference_sample(b, geom, batch, noise, num_steps=2))
    assert torch.isfinite(first).all() and first.dtype == noise.dtype
    assert not torch.allclose(first, ref.reference_sample(a, geom, batch, noise, num_steps=3))


def test_key_layout():
    """The LeRobot/openpi names the brief of issue 15 lists (no `model.` prefix, embedding only as lm_head)."""
    pi0 = ref.random_lerobot_weights(ref.tiny_geometry(pi05=False))
    pi05 = ref.random_lerobot_weights(ref.tiny_geometry(pi05=True))
    geom = ref.tiny_geometry()
    e = geom.expert.width
    assert not any(k.startswith("model.") or "embed_tokens" in k for k in pi0)
    assert pi0[ref.EMBED].shape == (geom.text.vocab_size, geom.text.width)
    assert pi0["action_time_mlp_in.weight"].shape == (e, 2 * e) and "time_mlp_in.weight" not in pi0
    assert "state_proj.weight" not in pi05 and pi05["time_mlp_in.weight"].shape == (e, e)
    layer = ref.EXPERT + "layers.1."
    assert pi0[layer + "input_layernorm.weight"].shape == (e,)
    assert layer + "input_layernorm.weight" not in pi05 and ref.EXPERT + "norm.weight" not in pi05
    for name in (layer + "input_layernorm", layer + "post_attention_layernorm", ref.EXPERT + "norm"):
        assert pi05[name + ".dense.weight"].shape == (3 * e, e) and pi05[name + ".dense.bias"].shape == (3 * e,)
    assert ref.VISION + "encoder.layers.1.self_attn.out_proj.bias" in pi0 and ref.EXPERT_LM_HEAD in pi0
    assert dataclasses.replace(geom, pi05=True).pi05
