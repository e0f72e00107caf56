"""Cross-attention attachment of the action expert (SmolVLA's recipe), beside pi0's joint attention.

The VLM runs over the prefix alone and keeps every layer's keys/values (post-RoPE), exactly the
prefix KV cache of joint attention. Expert layer j pairs with VLM layer j * (vlm depth / expert
depth) and is one of two kinds:
    self   (j % self_attn_every == 0): the suffix attends to [that VLM layer's prefix keys/values,
           its own keys/values], text-like positions after the prefix: joint attention seen from
           the suffix, so it needs the VLM's head count, kv-head count and head dim
    cross  (the others): the suffix's queries attend to the prefix only, through the expert's own
           k/v projections applied to that VLM layer's keys and values (k_proj, v_proj map the
           VLM's kv width to the expert's); queries take RoPE at 0, 1, ... (suffix-relative), the
           projected keys none. Any width, heads and head dim.
With self_attn_every = 0 every layer cross-attends. SmolVLA (LeRobot): every 2nd layer self, the
first 16 of SmolVLM2's 32 layers, an expert of 0.75x width. LeRobot decides self vs cross on the
VLM layer index; here it is the expert layer index (the same when depths are equal, as SmolVLA's).
Because the prefix never sees the suffix, training and sampling both run the prefix first and
the expert on its cache; the cross layers' projected keys/values are computed once per
observation (`expert_context`) and reused by every denoising step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.gemma.modeling_gemma import repeat_kv, rotate_half

from vla.model.layers.adarms import apply_norm
from vla.model.layers.attention import KVCache, layer_out_mlp, layer_qkv


@dataclass(frozen=True)
class CrossPlan:
    vlm_layer: tuple[int, ...]  # per expert layer, the VLM layer it reads
    is_self: tuple[bool, ...]  # per expert layer: self (joint) or cross

    @classmethod
    def make(cls, vlm_depth: int, expert_depth: int, self_attn_every: int) -> "CrossPlan":
        stride = vlm_depth // expert_depth
        return cls(
            tuple(j * stride for j in range(expert_depth)),
            tuple(self_attn_every > 0 and j % self_attn_every == 0 for j in range(expert_depth)),
        )


def adapt_expert(expert: nn.Module, plan: CrossPlan, vlm_kv_width: int) -> None:
    """Cross layers read the VLM's keys/values: their k_proj / v_proj take the VLM's kv width."""
    for layer, is_self in zip(expert.layers, plan.is_self):
        if is_self:
            continue
        layer._vla_cross = True  # FusedLayer leaves it alone (vla.model.layers.attention.fusable)
        attn = layer.self_attn
        for name in ("k_proj", "v_proj"):
            old = getattr(attn, name)
            new = nn.Linear(vlm_kv_width, old.out_features, bias=old.bias is not None)
            nn.init.normal_(new.weight, std=expert.config.initializer_range)
            if new.bias is not None:
                nn.init.zeros_(new.bias)
            setattr(attn, name, new)


def expert_context(expert: nn.Module, plan: CrossPlan, cache: KVCache) -> KVCache:
    """Per expert layer what it attends to besides itself: a self layer the VLM layer's k/v
    [b, kvh, lp, hd] as cached, a cross layer those projected by its own k/v projections."""
    out = []
    for layer, vl, is_self in zip(expert.layers, plan.vlm_layer, plan.is_self):
        k, v = cache[vl]
        if is_self:
            out.append((k, v))
            continue
        attn = layer.self_attn
        out.append((_project(attn.k_proj, k, attn.head_dim), _project(attn.v_proj, v, attn.head_dim)))
    return out


def _project(proj: nn.Linear, x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """VLM keys or values [b, kvh, lp, hd] -> the expert's [b, kvh_e, lp, hd_e] through `proj`."""
    b, _, lp, _ = x.shape
    flat = x.transpose(1, 2).reshape(b, lp, -1).to(proj.weight.dtype)  # [b, lp, kvh * hd]
    return proj(flat).view(b, lp, -1, head_dim).transpose(1, 2)


def _query(layer, h, cos, sin, cond):
    """A cross layer's queries [b, heads, l, hd] (RoPE applied) and its residual gate."""
    attn = layer.self_attn
    b, n, _ = h.shape
    x, gate = apply_norm(layer.input_layernorm, h, cond)
    q = attn.q_proj(x).view(b, n, -1, attn.head_dim)
    if getattr(attn, "q_norm", None) is not None:
        q = attn.q_norm(q)
    q = q.transpose(1, 2)
    return q * cos[:, None] + rotate_half(q) * sin[:, None], gate


def expert_forward(
    expert: nn.Module,
    plan: CrossPlan,
    h: torch.Tensor,
    context: KVCache,
    *,
    self_bias: torch.Tensor,
    cross_bias: torch.Tensor,
    self_rope,
    cross_rope,
    cond: torch.Tensor | None = None,
) -> torch.Tensor:
    """The suffix h [b, ls, w] through the expert -> final-normed hidden [b, ls, w].

    self_bias [b, 1, ls, lp + ls] / cross_bias [b, 1, ls, lp]: additive masks (attn_bias);
    self_rope / cross_rope: (cos, sin) of the suffix's positions after the prefix / from 0."""
    for layer, ctx, is_self in zip(expert.layers, context, plan.is_self):
        if is_self:
            q, k, v, gate = layer_qkv(layer, h, *self_rope, cond)
            k, v, bias = torch.cat([ctx[0], k], 2), torch.cat([ctx[1], v], 2), self_bias
        else:
            q, gate = _query(layer, h, *cross_rope, cond)
            (k, v), bias = ctx, cross_bias
        groups = q.shape[1] // k.shape[1]
        out = F.scaled_dot_product_attention(q, repeat_kv(k, groups), repeat_kv(v, groups), attn_mask=bias)
        h = layer_out_mlp(layer, h, out.transpose(1, 2).flatten(2), cond, gate)
    return apply_norm(expert.norm, h, cond)[0]
