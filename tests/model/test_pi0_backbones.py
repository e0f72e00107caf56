"""pi0 / pi0.5 / FAST on the new backbone families (the tiny presets), and the two ways the action
expert attaches (joint attention per layer, SmolVLA-style cross-attention)."""

import dataclasses

import pytest
import torch

from vla.config import load_preset
from vla.model.backbones.config import GemmaSize
from vla.model.fast.model import ActionVocab, FastConfig, FastModel
from vla.model.layers.attention import fuse_for_inference
from vla.model.pi0.model import Pi0Config, Pi0Model
from vla.model.pi0.pi05 import Pi05Config, Pi05Model
from vla.spec import SpecError

TINY = ("pi0-smolvlm2-tiny", "pi0-qwen25vl-tiny", "pi0-moe-tiny")
EMB = {"a": (3, 2), "b": (5, 4)}


def preset_config(name: str, cls=Pi0Config, **kw):
    """The preset's model config at a test size (short horizon, 48 px cameras, 2-layer vision)."""
    model = dict(load_preset(name).model)
    bb = dict(model.pop("backbone"), image_size=48, vision_depth=1)
    if bb.get("deepstack"):
        bb["deepstack"] = [0]
    d = dict(model, backbone=bb, horizon=6, num_steps=3, max_tokens=5, embodiments=EMB)
    d.update(kw)
    return cls(**d)


def train_steps(m, batch, steps: int, lr: float = 3e-3) -> tuple[float, float]:
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    first = None
    for _ in range(steps):
        loss = m.compute_loss(batch, torch.Generator().manual_seed(0)).mean()  # fixed noise/time: a fixed objective
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, loss.item()


@pytest.mark.parametrize("name", TINY)
def test_tiny_preset_learns_and_samples_with_the_prefix_cache_as_without(name):
    torch.manual_seed(0)
    cfg = preset_config(name)
    m = Pi0Model(cfg, 64)
    batch = cfg.example_batch(3, vocab_size=64)
    first, last = train_steps(m, batch, 15)
    assert last < 0.6 * first, (first, last)
    m.eval()
    batch["image_mask"][1, 1] = False  # a missing camera
    noise = torch.randn(3, cfg.horizon, 4)
    cached = m.sample_actions(batch, noise=noise, use_cache=True)
    full = m.sample_actions(batch, noise=noise, use_cache=False)
    assert cached.shape == (3, cfg.horizon, 4) and torch.isfinite(cached).all()
    assert (cached - full).abs().max() < 1e-4
    fuse_for_inference(*m.decoder_stacks())  # takes the layers it understands, leaves the rest
    assert (m.sample_actions(batch, noise=noise) - cached).abs().max() < 1e-4


@pytest.mark.parametrize("name", TINY)
def test_prefix_outputs_do_not_depend_on_the_suffix(name):
    """The block-causal rule holds on every backbone: the prefix cache is the same whatever the
    suffix (so it is computed once per observation)."""
    torch.manual_seed(0)
    cfg = preset_config(name)
    m = Pi0Model(cfg, 64).eval()
    batch = cfg.example_batch(2, vocab_size=64)
    with torch.no_grad():
        p = m.prefix(batch)
        cache = m.prefix_cache(p)
        assert len(cache) == cfg.backbone.text.depth
        actions = [m.sample_actions(batch, noise=torch.randn(2, cfg.horizon, 4), num_steps=1) for _ in range(2)]
        again = m.prefix_cache(m.prefix(batch))
    assert not torch.allclose(*actions)
    assert all(torch.equal(k, k2) and torch.equal(v, v2) for (k, v), (k2, v2) in zip(cache, again))


def test_llama_and_qwen2_layers_fuse_and_match_their_modules():
    """FusedLayer folds Llama-style w norms, SiLU and Qwen2's q/k/v biases; q/k-norm and MoE
    layers (Qwen3) and cross-attention layers are left to their modules."""
    torch.manual_seed(1)
    for name in TINY:
        cfg = preset_config(name)
        m = Pi0Model(cfg, 64).eval()
        with torch.no_grad():  # biases are zero at init: make them matter
            for p_ in m.parameters():
                if p_.dim() == 1:
                    p_.add_(0.1 * torch.randn_like(p_))
        batch = cfg.example_batch(2, vocab_size=64)
        noise = torch.randn(2, cfg.horizon, 4)
        ref = m.sample_actions(batch, noise=noise)
        fuse_for_inference(*m.decoder_stacks())
        fused = [hasattr(layer, "_vla_fused") for st in m.decoder_stacks() for layer in st.layers]
        if name == "pi0-moe-tiny":  # backbone: q/k norms + MoE; expert: layer 0 self (fused), layer 1 cross
            assert fused == [False] * 4 + [True, False]
        elif name == "pi0-smolvlm2-tiny":  # expert layers 1 and 3 cross-attend
            assert fused == [True] * 4 + [True, False, True, False]
        else:
            assert all(fused)
        assert (m.sample_actions(batch, noise=noise) - ref).abs().max() < 1e-4, name


def test_cross_attention_frees_the_expert_geometry():
    """attach = "cross" with self_attn_every = 0: any expert width, heads and head dim, half the depth."""
    torch.manual_seed(0)
    odd = GemmaSize(width=40, depth=2, mlp=80, heads=5, kv_heads=1, head_dim=8)
    cfg = preset_config("pi0-smolvlm2-tiny", expert=odd, self_attn_every=0)
    m = Pi0Model(cfg, 64)
    assert m.cross_plan.vlm_layer == (0, 2) and m.cross_plan.is_self == (False, False)
    assert m.expert.layers[0].self_attn.k_proj.weight.shape == (8, 2 * 32)  # VLM kv width in, expert kv width out
    batch = cfg.example_batch(2, vocab_size=64)
    first, last = train_steps(m, batch, 15)
    assert last < first
    m.eval()
    noise = torch.randn(2, cfg.horizon, 4)
    assert (
        m.sample_actions(batch, noise=noise) - m.sample_actions(batch, noise=noise, use_cache=False)
    ).abs().max() < 1e-4


def test_expert_geometry_that_cannot_attend_jointly_names_expected_actual_and_cross_mode():
    odd = GemmaSize(width=40, depth=4, mlp=80, heads=5, kv_heads=1, head_dim=8)
    with pytest.raises(
        SpecError,
        match=r"expert.heads must equal the backbone's for joint attention: expected 4, got 5; "
        r"or attach the expert by cross-attention \(attach = \"cross\"",
    ):
        preset_config("pi0-qwen25vl-tiny", expert=odd)
    with pytest.raises(
        SpecError,
        match=r"self-attention layers of attach = \"cross\" \(every 2\): expected 4, got 5; "
        r"or set self_attn_every = 0",
    ):
        preset_config("pi0-smolvlm2-tiny", expert=odd)
    with pytest.raises(SpecError, match="expert.depth must divide the backbone's 4, got 3"):
        preset_config("pi0-smolvlm2-tiny", expert=dataclasses.replace(odd, depth=3), self_attn_every=0)
    with pytest.raises(SpecError, match="attach must be"):
        preset_config("pi0-smolvlm2-tiny", attach="interleaved")


@pytest.mark.parametrize("name", ["pi0-smolvlm2-tiny", "pi0-moe-tiny"])
def test_pi05_on_new_backbones(name):
    """pi0.5's adaptive-RMS expert on a Llama-style expert, attached jointly or by cross-attention."""
    torch.manual_seed(0)
    cfg = preset_config(name, cls=Pi05Config)
    m = Pi05Model(cfg, 64)
    batch = cfg.example_batch(2, vocab_size=64)
    first, last = train_steps(m, batch, 15)
    assert last < first
    m.eval()
    noise = torch.randn(2, cfg.horizon, 4)
    assert (
        m.sample_actions(batch, noise=noise) - m.sample_actions(batch, noise=noise, use_cache=False)
    ).abs().max() < 1e-4


@pytest.mark.parametrize("name", TINY)
def test_fast_decodes_on_new_backbones(name):
    """FAST: action ids appended to the vocabulary, cross-entropy falls, greedy decoding with the
    KV cache gives the same ids as decoding without it (the full sequence re-run each token)."""
    torch.manual_seed(0)
    model = dict(load_preset(name).model)
    bb = dict(model["backbone"], image_size=48, vision_depth=1)
    if bb.get("deepstack"):
        bb["deepstack"] = [0]
    cfg = FastConfig(backbone=bb, horizon=4, cameras=2, max_tokens=5, max_action_tokens=8, embodiments={"a": (3, 2)})
    m = FastModel(cfg, ActionVocab(64, {"a": 20}))
    assert m.backbone.language_model.embed_tokens.num_embeddings == 64 + 20 + 2
    batch = cfg.example_batch(2, vocab_size=64, fast_sizes={"a": 20})
    first, last = train_steps(m, batch, 20)
    assert last < 0.7 * first, (first, last)
    m.eval()
    ids = m.generate(batch, max_new=5)
    assert all(64 <= i < 84 or i == m.vocab.eos_id for row in ids for i in row)
    # Without the cache: the whole [prefix][ACT][ids so far] sequence every step, argmax of the last.
    with torch.no_grad():
        from vla.model.layers.attention import joint_forward, make_attn_mask

        allowed = m.vocab.allowed("a")
        for row, want in enumerate(ids):
            one = {k: (v[row : row + 1] if torch.is_tensor(v) else v[row : row + 1]) for k, v in batch.items()}
            seq = [m.vocab.act_id]
            for _ in range(len(want)):
                p = m.prefix(one)
                p = p.extend(m.backbone.embed_tokens(torch.tensor([seq])), torch.ones(1, len(seq), dtype=torch.bool))
                ar = torch.zeros_like(p.valid, dtype=torch.long)
                ar[:, -len(seq) :] = 1
                (h,), _ = joint_forward(
                    [m.backbone.language_model],
                    [p.embeds],
                    make_attn_mask(p.valid, ar),
                    p.positions,
                    layer_adds=p.layer_adds,
                )
                seq.append(int(m.logits(h[:, -1]).masked_fill(~allowed, float("-inf")).argmax()))
            assert seq[1:] == want, (row, seq, want)


def test_a_config_from_before_backbone_families_loads_as_paligemma_joint():
    """config.json of older checkpoints has none of the new fields: their defaults are today's pi0."""
    from model.tiny_configs import tiny_pi0

    d = tiny_pi0().to_dict()
    for k in ("attach", "self_attn_every"):
        d.pop(k)
    for k in ("family", "token_merge", "rope_theta", "moe_experts", "moe_top_k", "moe_mlp", "deepstack"):
        d["backbone"].pop(k)
    cfg = Pi0Config(**d)
    assert cfg == tiny_pi0() and cfg.attach == "joint" and cfg.backbone.family == "paligemma"
