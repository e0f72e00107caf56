"""An independent plain-torch reference of pi0 / pi0.5 inference (flow-matching action sampling).

It imports nothing from `vla`: it is written from the published math so that tests can check vla's
converted models against it. Weights come as a dict in the LeRobot / openpi PyTorch checkpoint layout
(no `model.` prefix); every step recomputes the whole joint forward (no KV cache), in float64 by default.

Where each fact was confirmed (openpi = Physical-Intelligence/openpi, LeRobot = huggingface/lerobot):
  [pi0]    openpi src/openpi/models/pi0.py: Pi0.embed_prefix / embed_suffix / sample_actions, make_attn_mask,
           posemb_sincos.
  [gemma]  openpi src/openpi/models/gemma.py: RMSNorm (incl. adaptive), Embedder.encode, Attention,
           FeedForward, Block, _apply_rope, _gated_residual.
  [siglip] openpi src/openpi/models/siglip.py: _Module (conv stem, learned posemb, pre-LN encoder,
           encoder_norm, `head` Dense = the projector), MlpBlock (nn.gelu, tanh approximation by default).
  [pt]     openpi src/openpi/models_pytorch/pi0_pytorch.py: PI0Pytorch.embed_prefix (text * sqrt(width), images
           unscaled), sample_actions; transformers_replace/models/gemma/modeling_gemma.py: GemmaRMSNorm with
           `dense` [3w, w] for adaRMS; transformers_replace/models/paligemma: get_image_features (no scaling).
  [lr]     LeRobot src/lerobot/policies/pi05/modeling_pi05.py: PI05Pytorch.embed_suffix, compute_layer_complete,
           PI05Policy._fix_pytorch_state_dict_keys (lm_head -> embed_tokens, no `.weight` on adaRMS norms);
           src/lerobot/policies/pi_gemma.py: PiGemmaRMSNorm (`dense`, chunk order scale, shift, gate);
           src/lerobot/policies/pi0/modeling_pi0.py: state_proj / action_time_mlp_{in,out}.
Checks: pi0 against transformers' PI0ForConditionalGeneration (test_pi_reference.py, fp32 and fp64); the pi0.5
joint forward was also compared once, in float64, with LeRobot's PiGemmaModel layers driven by its
compute_layer_complete (max |diff| 3e-7, their float32 RoPE / RMS statistics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PALI = "paligemma_with_expert.paligemma."
VISION = PALI + "model.vision_tower.vision_model."
PROJECTOR = PALI + "model.multi_modal_projector.linear"
LM = PALI + "model.language_model."
EMBED = PALI + "lm_head.weight"  # the tied token embedding, stored only here [lr: _fix_pytorch_state_dict_keys]
EXPERT = "paligemma_with_expert.gemma_expert.model."
EXPERT_LM_HEAD = "paligemma_with_expert.gemma_expert.lm_head.weight"  # present in converted files, never used

EPS = 1e-6  # Gemma RMSNorm and SigLIP LayerNorm (flax default epsilon) [gemma: RMSNorm] [siglip]
ROPE_THETA = 10_000.0  # [gemma: _apply_rope max_wavelength]
MIN_PERIOD, MAX_PERIOD = 4e-3, 4.0  # [pi0: embed_suffix -> posemb_sincos]


@dataclass(frozen=True)
class VisionGeometry:
    image_size: int
    patch_size: int
    width: int
    depth: int
    heads: int
    mlp: int


@dataclass(frozen=True)
class TextGeometry:
    width: int
    depth: int
    mlp: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int


@dataclass(frozen=True)
class ExpertGeometry:
    width: int
    depth: int
    mlp: int  # heads / kv_heads / head_dim are the text model's (shared attention) [gemma: Attention asserts]


@dataclass(frozen=True)
class Geometry:
    vision: VisionGeometry
    text: TextGeometry
    expert: ExpertGeometry
    chunk: int  # action horizon
    max_dim: int = 32  # state and action width, openpi's padded convention
    pi05: bool = False

    @property
    def tokens_per_image(self) -> int:
        return (self.vision.image_size // self.vision.patch_size) ** 2


def tiny_geometry(pi05: bool = False, chunk: int = 4) -> Geometry:
    """A CPU-sized geometry for tests."""
    return Geometry(
        vision=VisionGeometry(image_size=16, patch_size=4, width=24, depth=2, heads=2, mlp=48),
        text=TextGeometry(width=32, depth=2, mlp=64, heads=4, kv_heads=1, head_dim=8, vocab_size=50),
        expert=ExpertGeometry(width=16, depth=2, mlp=32),
        chunk=chunk,
        pi05=pi05,
    )


# ----------------------------------------------------------------------------------------------- weights


def random_lerobot_weights(geom: Geometry, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float32 weights in the LeRobot / openpi PyTorch key layout, scaled so every path matters."""
    g = torch.Generator().manual_seed(seed)

    def normal(*shape, std):
        return torch.randn(*shape, generator=g) * std

    w: dict[str, torch.Tensor] = {}

    def linear(name, out_f, in_f, bias=True):
        w[name + ".weight"] = normal(out_f, in_f, std=in_f**-0.5)
        if bias:
            w[name + ".bias"] = normal(out_f, std=0.05)

    def layer_norm(name, dim):
        w[name + ".weight"] = 1.0 + normal(dim, std=0.1)
        w[name + ".bias"] = normal(dim, std=0.05)

    v, t, e = geom.vision, geom.text, geom.expert
    p = v.patch_size
    w[VISION + "embeddings.patch_embedding.weight"] = normal(v.width, 3, p, p, std=(3 * p * p) ** -0.5)
    w[VISION + "embeddings.patch_embedding.bias"] = normal(v.width, std=0.05)
    w[VISION + "embeddings.position_embedding.weight"] = normal(geom.tokens_per_image, v.width, std=0.2)
    for i in range(v.depth):
        layer = f"{VISION}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            linear(layer + "self_attn." + proj, v.width, v.width)
        layer_norm(layer + "layer_norm1", v.width)
        layer_norm(layer + "layer_norm2", v.width)
        linear(layer + "mlp.fc1", v.mlp, v.width)
        linear(layer + "mlp.fc2", v.width, v.mlp)
    layer_norm(VISION + "post_layernorm", v.width)
    linear(PROJECTOR, t.width, v.width)
    w[EMBED] = normal(t.vocab_size, t.width, std=0.2)

    def gemma_stack(base, width, mlp, adaptive):
        def norm(name):
            if adaptive:  # [pt/lr: GemmaRMSNorm.dense = Linear(cond_dim=w, 3w)], no `.weight`
                w[name + ".dense.weight"] = normal(3 * width, width, std=0.5 * width**-0.5)
                bias = normal(3 * width, std=0.1)
                bias[2 * width :] += 1.0  # gates near one, so the residual branches stay alive
                w[name + ".dense.bias"] = bias
            else:
                w[name + ".weight"] = normal(width, std=0.2)

        for i in range(t.depth):
            layer = f"{base}layers.{i}."
            linear(layer + "self_attn.q_proj", t.heads * t.head_dim, width, bias=False)
            linear(layer + "self_attn.k_proj", t.kv_heads * t.head_dim, width, bias=False)
            linear(layer + "self_attn.v_proj", t.kv_heads * t.head_dim, width, bias=False)
            linear(layer + "self_attn.o_proj", width, t.heads * t.head_dim, bias=False)
            linear(layer + "mlp.gate_proj", mlp, width, bias=False)
            linear(layer + "mlp.up_proj", mlp, width, bias=False)
            linear(layer + "mlp.down_proj", width, mlp, bias=False)
            norm(layer + "input_layernorm")
            norm(layer + "post_attention_layernorm")
        norm(base + "norm")

    gemma_stack(LM, t.width, t.mlp, adaptive=False)
    gemma_stack(EXPERT, e.width, e.mlp, adaptive=geom.pi05)
    w[EXPERT_LM_HEAD] = normal(t.vocab_size, e.width, std=0.2)

    linear("action_in_proj", e.width, geom.max_dim)
    linear("action_out_proj", geom.max_dim, e.width)
    if geom.pi05:  # [pi0: Pi0.__init__ pi05 branch] [lr: PI05Pytorch.__init__]
        linear("time_mlp_in", e.width, e.width)
        linear("time_mlp_out", e.width, e.width)
    else:
        linear("state_proj", e.width, geom.max_dim)
        linear("action_time_mlp_in", e.width, 2 * e.width)
        linear("action_time_mlp_out", e.width, e.width)
    return w


# ----------------------------------------------------------------------------------------------- pieces


def _lin(w, name, x):
    return F.linear(x, w[name + ".weight"], w.get(name + ".bias"))


def _layer_norm(w, name, x):
    return F.layer_norm(x, x.shape[-1:], w[name + ".weight"], w[name + ".bias"], EPS)


def _gelu(x):
    return F.gelu(x, approximate="tanh")  # flax nn.gelu default; HF "gelu_pytorch_tanh" [gemma/siglip]


def _attend(q, k, v, mask):
    """q [b, n, H, d] (already scaled), k/v [b, n, K, d], mask [b, n_q, n_k] bool -> [b, n, H*d]."""
    group = q.shape[2] // k.shape[2]  # query head h reads kv head h // group [gemma: "B T (K G) H"]
    k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
    logits = torch.einsum("bqhd,bkhd->bhqk", q, k)
    logits = logits.masked_fill(~mask[:, None], float("-inf"))
    out = torch.einsum("bhqk,bkhd->bqhd", logits.softmax(-1), v)
    return out.flatten(2)


def siglip(w, geom: Geometry, images: torch.Tensor) -> torch.Tensor:
    """images [n, 3, S, S] in [-1, 1] -> projected image tokens [n, patches, text width]. [siglip: _Module]"""
    v = geom.vision
    stem = VISION + "embeddings.patch_embedding"
    x = F.conv2d(images, w[stem + ".weight"], w[stem + ".bias"], stride=v.patch_size)
    x = x.flatten(2).transpose(1, 2)  # row-major patch order, as the JAX reshape [b, h*w, c]
    x = x + w[VISION + "embeddings.position_embedding.weight"]  # learned posemb ("learn")
    n, length, _ = x.shape
    head_dim = v.width // v.heads
    full = torch.ones(n, length, length, dtype=torch.bool)
    for i in range(v.depth):
        layer = f"{VISION}encoder.layers.{i}."
        h = _layer_norm(w, layer + "layer_norm1", x)
        q, k, val = (_lin(w, layer + f"self_attn.{p}_proj", h).view(n, length, v.heads, head_dim) for p in "qkv")
        x = x + _lin(w, layer + "self_attn.out_proj", _attend(q * head_dim**-0.5, k, val, full))
        h = _layer_norm(w, layer + "layer_norm2", x)
        x = x + _lin(w, layer + "mlp.fc2", _gelu(_lin(w, layer + "mlp.fc1", h)))
    x = _layer_norm(w, VISION + "post_layernorm", x)
    return _lin(w, PROJECTOR, x)  # pool_type "none" then the `head` Dense to the text width; no scaling [pt]


def rms_norm(w, name: str, x: torch.Tensor, cond: torch.Tensor | None):
    """Gemma RMSNorm -> (out, gate). With `name.dense` and a condition it is adaptive [gemma: RMSNorm]:
    (scale, shift, gate) = chunk(dense(cond), 3); out = normed * (1 + scale) + shift."""
    normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS)
    if cond is None:
        return normed * (1.0 + w[name + ".weight"]), None
    scale, shift, gate = _lin(w, name + ".dense", cond)[:, None, :].chunk(3, dim=-1)
    return normed * (1.0 + scale) + shift, gate


def rope(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x [b, n, heads, d], positions [b, n]: split-half rotation == HF's rotate_half [gemma: _apply_rope]."""
    half = x.shape[-1] // 2
    timescale = ROPE_THETA ** (2.0 * torch.arange(half, dtype=x.dtype) / x.shape[-1])
    radians = (positions.to(x.dtype)[..., None] / timescale)[:, :, None, :]
    sin, cos = radians.sin(), radians.cos()
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def joint_forward(w, geom: Geometry, prefix, suffix, mask, positions, cond=None):
    """One pass of the two-stream transformer [gemma: Module / Block]: in every layer the prefix uses the VLM's
    weights and the suffix the expert's; q/k/v of both are concatenated and attended once under `mask`
    [b, n, n]. `cond` (pi0.5) drives the expert's adaptive norms. Returns the normed (prefix, suffix)."""
    t = geom.text
    streams = [[LM, prefix, None], [EXPERT, suffix, cond]]
    sizes = [prefix.shape[1], suffix.shape[1]]
    for i in range(t.depth):
        qs, ks, vs, gates = [], [], [], []
        for base, x, c in streams:
            layer = f"{base}layers.{i}."
            h, gate = rms_norm(w, layer + "input_layernorm", x, c)
            b, n, _ = h.shape
            qs.append(_lin(w, layer + "self_attn.q_proj", h).view(b, n, t.heads, t.head_dim))
            ks.append(_lin(w, layer + "self_attn.k_proj", h).view(b, n, t.kv_heads, t.head_dim))
            vs.append(_lin(w, layer + "self_attn.v_proj", h).view(b, n, t.kv_heads, t.head_dim))
            gates.append(gate)
        q = rope(torch.cat(qs, 1), positions) * t.head_dim**-0.5  # [gemma: q *= head_dim ** -0.5 after RoPE]
        k = rope(torch.cat(ks, 1), positions)
        attn = _attend(q, k, torch.cat(vs, 1), mask).split(sizes, dim=1)
        for s, (base, x, c) in enumerate(streams):
            layer = f"{base}layers.{i}."
            out = _lin(w, layer + "self_attn.o_proj", attn[s])
            x = x + out if gates[s] is None else x + gates[s] * out  # [gemma: _gated_residual]
            h, gate = rms_norm(w, layer + "post_attention_layernorm", x, c)
            mlp = _lin(
                w,
                layer + "mlp.down_proj",
                _gelu(_lin(w, layer + "mlp.gate_proj", h)) * _lin(w, layer + "mlp.up_proj", h),
            )
            streams[s][1] = x + mlp if gate is None else x + gate * mlp
    return tuple(rms_norm(w, base + "norm", x, c)[0] for base, x, c in streams)  # final norms, gate unused


def sincos(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[b] -> [b, dim]: periods from 4e-3 to 4.0 (geometric) over dim/2 frequencies, [sin, cos]. [pi0: posemb_sincos]"""
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=t.dtype)
    period = MIN_PERIOD * (MAX_PERIOD / MIN_PERIOD) ** fraction
    angle = t[:, None] * (2 * math.pi / period)[None]
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


# ----------------------------------------------------------------------------------------------- model


def embed_prefix(w, geom: Geometry, batch):
    """[image tokens of every camera slot][text tokens] and their validity [pi0: embed_prefix]."""
    images = batch["images"]
    b, c = images.shape[:2]
    img = siglip(w, geom, images.flatten(0, 1)).view(b, c * geom.tokens_per_image, -1)
    img_valid = batch["image_mask"].bool().repeat_interleave(geom.tokens_per_image, dim=1)
    text = w[EMBED][batch["tokens"]] * math.sqrt(geom.text.width)  # [gemma: Embedder.encode] [pt: embed_prefix]
    return torch.cat([img, text], 1), torch.cat([img_valid, batch["token_mask"].bool()], 1)


def embed_suffix(w, geom: Geometry, state, x_t, t):
    """-> (tokens, block ids, adaRMS condition or None) [pi0: embed_suffix] [lr: embed_suffix]."""
    time = sincos(t, geom.expert.width)
    actions = _lin(w, "action_in_proj", x_t)
    h = geom.chunk
    if geom.pi05:  # actions only; time -> swish(time_mlp_out(swish(time_mlp_in(.)))) is the adaRMS condition
        cond = F.silu(_lin(w, "time_mlp_out", F.silu(_lin(w, "time_mlp_in", time))))
        return actions, torch.ones(h, dtype=torch.long), cond
    mixed = torch.cat([actions, time[:, None].expand(-1, h, -1)], dim=-1)
    actions = _lin(w, "action_time_mlp_out", F.silu(_lin(w, "action_time_mlp_in", mixed)))
    state_token = _lin(w, "state_proj", state)[:, None]
    blocks = torch.tensor([1] + [2] * h)  # state is its own block, the actions one block after it
    return torch.cat([state_token, actions], 1), blocks, None


def attention_mask(prefix_valid: torch.Tensor, suffix_blocks: torch.Tensor) -> torch.Tensor:
    """Block-causal mask [pi0: make_attn_mask]: a token sees valid tokens of its own and earlier blocks (the
    prefix is block 0); invalid tokens are seen by nobody. An invalid query sees only itself (its output is
    never read), so no softmax row is empty."""
    b = prefix_valid.shape[0]
    blocks = torch.cat([torch.zeros(prefix_valid.shape[1], dtype=torch.long), suffix_blocks])
    valid = torch.cat([prefix_valid, torch.ones(b, len(suffix_blocks), dtype=torch.bool)], 1)
    mask = (blocks[None, :] <= blocks[:, None])[None] & valid[:, None, :] & valid[:, :, None]
    eye = torch.eye(len(blocks), dtype=torch.bool)[None]
    return mask | (eye & ~valid[:, :, None])


def velocity(w, geom: Geometry, batch, x_t, t):
    """v(x_t, t) [b, h, max_dim] from the full joint forward (prefix recomputed: no cache)."""
    prefix, prefix_valid = embed_prefix(w, geom, batch)
    suffix, blocks, cond = embed_suffix(w, geom, batch["state"], x_t, t)
    mask = attention_mask(prefix_valid, blocks)
    valid = torch.cat([prefix_valid, torch.ones(suffix.shape[:2], dtype=torch.bool)], 1)
    positions = valid.long().cumsum(1) - 1  # invalid tokens take no positions [pi0: compute_loss]
    _, out = joint_forward(w, geom, prefix, suffix, mask, positions, cond)
    return _lin(w, "action_out_proj", out[:, -geom.chunk :])


def reference_sample(weights, geom: Geometry, batch, noise, num_steps: int = 10, dtype=torch.float64):
    """Euler flow from t = 1 (noise) to t = 0: x <- x + dt * v, dt = -1 / num_steps [pi0: sample_actions].
    Time is 1 + k * dt at step k (openpi accumulates t += dt; the difference is float rounding)."""
    assert geom.expert.depth == geom.text.depth, "both streams share every layer [gemma: Module.setup]"
    w = {k: v.to(dtype) for k, v in weights.items()}
    batch = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in batch.items()}
    x = noise.to(dtype)
    dt = -1.0 / num_steps
    for k in range(num_steps):
        t = torch.full((x.shape[0],), 1.0 + k * dt, dtype=dtype)
        x = x + dt * velocity(w, geom, batch, x, t)
    return x.to(noise.dtype)
