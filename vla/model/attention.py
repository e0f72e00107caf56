"""Joint attention over several Gemma stacks, and the block-causal masks of pi0.

pi0 runs two token streams through the same number of layers: the prefix (images + language)
through the backbone's Gemma weights and the suffix (state + actions) through the action
expert's. In every layer each stream makes its own q/k/v with its own weights, attention runs
once over the concatenated tokens, and each stream continues with its own output projection
and MLP. Both stacks must share head count, kv-head count and head dim.

Mask rule (big_vision / openpi `make_attn_mask`): each token has an autoregressive flag ar;
token i may attend to token j iff cumsum(ar)[j] <= cumsum(ar)[i] and j is a real token.
So a block of ar=0 tokens is bidirectional, and a token with ar=1 opens a new block that
earlier blocks cannot see: the prefix never attends to the suffix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers import GemmaModel
from transformers.models.gemma.modeling_gemma import apply_rotary_pos_emb, repeat_kv

KVCache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: k, v [b, kv_heads, l, head_dim]


def make_attn_mask(valid: torch.Tensor, ar: torch.Tensor) -> torch.Tensor:
    """valid [b, l] bool, ar [b, l] int -> allowed [b, l, l] bool (query i, key j)."""
    cum = torch.cumsum(ar.long(), dim=1)
    allowed = (cum[:, None, :] <= cum[:, :, None]) & valid[:, None, :]
    # Padding queries see themselves only, so no softmax row is empty (their outputs are ignored).
    eye = torch.eye(valid.shape[1], dtype=torch.bool, device=valid.device)
    return allowed | (eye[None] & ~valid[:, :, None])


def positions_from_valid(valid: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    pos = torch.cumsum(valid.long(), dim=1) - 1
    return pos if offset is None else pos + offset[:, None]


def attn_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool [b, lq, lk] -> additive float bias [b, 1, lq, lk] for scaled_dot_product_attention."""
    return torch.where(allowed, 0.0, torch.finfo(dtype).min).to(dtype)[:, None]


def rope(stack: GemmaModel, like: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE (cos, sin) for positions [b, l], in the dtype of `like`."""
    return stack.rotary_emb(like, positions)


def _layer(stacks, hs, layer_idx, cos_sin, bias, past_kv, keep_kv):
    """One layer of joint attention. hs: per active stream [b, l_s, d_s]."""
    qs, ks, vs = [], [], []
    for stack, h, (cos, sin) in zip(stacks, hs, cos_sin):
        layer = stack.layers[layer_idx]
        attn = layer.self_attn
        x = layer.input_layernorm(h)
        b, n, _ = x.shape
        q = attn.q_proj(x).view(b, n, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(b, n, -1, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(b, n, -1, attn.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        qs.append(q), ks.append(k), vs.append(v)
    q, k, v = torch.cat(qs, 2), torch.cat(ks, 2), torch.cat(vs, 2)
    if past_kv is not None:
        k = torch.cat([past_kv[0], k], 2)
        v = torch.cat([past_kv[1], v], 2)
    groups = q.shape[1] // k.shape[1]
    out = F.scaled_dot_product_attention(q, repeat_kv(k, groups), repeat_kv(v, groups), attn_mask=bias)
    out = out.transpose(1, 2).flatten(2)  # [b, l, heads * head_dim]
    new_hs, start = [], 0
    for stack, h in zip(stacks, hs):
        layer = stack.layers[layer_idx]
        seg = out[:, start:start + h.shape[1]]
        start += h.shape[1]
        h = h + layer.self_attn.o_proj(seg)
        h = h + layer.mlp(layer.post_attention_layernorm(h))
        new_hs.append(h)
    return new_hs, ((k, v) if keep_kv else None)


def joint_forward(stacks: list[GemmaModel | None], embeds: list[torch.Tensor | None], allowed: torch.Tensor,
                  positions: torch.Tensor | tuple[torch.Tensor, torch.Tensor], *, past: KVCache | None = None,
                  keep_kv: bool = False, grad_checkpoint: bool = False
                  ) -> tuple[list[torch.Tensor | None], KVCache | None]:
    """Run the active streams (embeds not None) through every layer with joint attention.

    allowed: [b, l_q, l_past + l_q] bool over all active tokens in stream order (after `past`),
        or the additive float bias [b, 1, l_q, l_k] made from it by `attn_bias` (callers that
        repeat a call, like the denoising loop, build it once).
    positions: [b, l_q] RoPE positions of the active tokens, or their (cos, sin) from `rope`.
    Returns the final-normed hidden states per stream (None for inactive ones) and, with
    keep_kv, every layer's k/v (past included) for reuse by later calls.
    """
    active = [i for i, e in enumerate(embeds) if e is not None]
    act_stacks = [stacks[i] for i in active]
    hs = [embeds[i] for i in active]
    depth = len(act_stacks[0].layers)
    cos, sin = positions if isinstance(positions, tuple) else rope(act_stacks[0], hs[0], positions)
    cos_sin, start = [], 0
    for h in hs:
        cos_sin.append((cos[:, start:start + h.shape[1]], sin[:, start:start + h.shape[1]]))
        start += h.shape[1]
    bias = allowed if allowed.is_floating_point() else attn_bias(allowed, hs[0].dtype)
    cache: KVCache = []
    for li in range(depth):
        layer_past = past[li] if past is not None else None
        if grad_checkpoint and torch.is_grad_enabled():
            hs, kv = checkpoint(_layer, act_stacks, hs, li, cos_sin, bias, layer_past, keep_kv, use_reentrant=False)
        else:
            hs, kv = _layer(act_stacks, hs, li, cos_sin, bias, layer_past, keep_kv)
        if keep_kv:
            cache.append(kv)
    outs: list[torch.Tensor | None] = [None] * len(embeds)
    for i, stack, h in zip(active, act_stacks, hs):
        outs[i] = stack.norm(h)
    return outs, (cache if keep_kv else None)
