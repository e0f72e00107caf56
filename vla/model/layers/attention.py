"""Joint attention over several decoder stacks, and the block-causal masks of pi0.

pi0 runs two token streams through the same number of layers: the prefix (images + language)
through the backbone's decoder weights and the suffix (state + actions) through the action
expert's. In every layer each stream makes its own q/k/v with its own weights, attention runs
once over the concatenated tokens, and each stream continues with its own output projection
and MLP. Both stacks must share head count, kv-head count and head dim.

Decoder layers of every backbone family (vla.model.backbones) run here through their modules:
Gemma / Llama / Qwen norms, q/k/v projections with or without biases, per-head q/k norms
(Qwen3, before RoPE), and `layer.mlp(x)` (dense or mixture-of-experts). `FusedLayer` (inference)
takes only the layers it understands: (1 + w) Gemma norms with a tanh-GELU MLP, or Llama-style
w norms with a SiLU MLP, no q/k norms; others run on their modules.

Mask rule (big_vision / openpi `make_attn_mask`): each token has an autoregressive flag ar;
token i may attend to token j iff cumsum(ar)[j] <= cumsum(ar)[i] and j is a real token.
So a block of ar=0 tokens is bidirectional, and a token with ar=1 opens a new block that
earlier blocks cannot see: the prefix never attends to the suffix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import GemmaModel
from transformers.activations import GELUTanh, SiLUActivation
from transformers.models.gemma.modeling_gemma import GemmaRMSNorm, apply_rotary_pos_emb, repeat_kv

from vla.model.layers.adarms import AdaRMSNorm, apply_norm, gated

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


class FusedLayer:
    """Inference-only view of one Gemma decoder layer with merged projections.

    One matmul makes [q, k, rotate_half(q), rotate_half(k), v] (the RoPE rotation folded into
    the weights, so RoPE is one multiply-add over q and k together), another makes gate and
    up; the RMSNorm scales (1 + w) are folded into the columns of those matmuls, so each norm
    is a bare x / rms(x). With one kv head (MQA, as Gemma-2B and our presets), attention runs
    as two plain matmuls over [l * heads, head_dim] rows with no repeat or transpose. About a
    third of the kernel launches of the stock modules, which is what bounds a small model's
    latency on a CPU. Built by `fuse_for_inference`; never used with grad enabled.
    """

    def __init__(self, layer, norm_offset: float = 1.0, act: str = "gelu_tanh"):
        attn, mlp = layer.self_attn, layer.mlp
        hd = attn.head_dim
        self.head_dim, self.heads = hd, attn.q_proj.out_features // hd
        self.kv_heads = attn.k_proj.out_features // hd

        def rot(w):  # rows of rotate_half(W x), per head: [-second half; first half]
            w = w.reshape(-1, hd, *w.shape[1:])
            return torch.cat([-w[:, hd // 2 :], w[:, : hd // 2]], 1).reshape(-1, *w.shape[2:])

        wq, wk, wv = attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight
        ln1 = norm_offset + layer.input_layernorm.weight.float()  # Gemma (1 + w), Llama-style w
        ln2 = norm_offset + layer.post_attention_layernorm.weight.float()
        w_in = torch.cat([wq, wk, rot(wq), rot(wk), wv])
        self.w_in = (w_in * ln1.to(w_in.dtype)[None]).detach()
        self.b_in = None  # q/k/v biases (Qwen2), rotated as their rows
        if attn.q_proj.bias is not None:
            bq, bk, bv = attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias
            self.b_in = torch.cat([bq, bk, rot(bq), rot(bk), bv]).detach()
        self.qk = wq.shape[0] + wk.shape[0]
        self.q_width = wq.shape[0]
        self.o = attn.o_proj.weight.detach()
        gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
        self.gate_up = (gate_up * ln2.to(gate_up.dtype)[None]).detach()
        self.down = mlp.down_proj.weight.detach()
        norm = layer.input_layernorm
        eps = norm.eps if hasattr(norm, "eps") else norm.variance_epsilon
        self.eps = torch.tensor(eps, device=self.o.device)  # 0-d: added in place by unit_rms
        self.mlp_width = self.down.shape[1]
        self.scale = attn.scaling
        self.act = act

    def qkv(self, h: torch.Tensor, cos_qk: torch.Tensor, sin_qk: torch.Tensor):
        """h [b, n, d] -> q [b, n, heads * hd], k [b, n, kv_heads * hd], v, RoPE applied.

        cos_qk / sin_qk: [b, n, (heads + kv_heads) * hd], the tables tiled over the heads.
        """
        y = unit_rms(h, self.eps) @ self.w_in.T
        if self.b_in is not None:
            y = y + self.b_in
        qk = torch.addcmul(y[..., : self.qk] * cos_qk, y[..., self.qk : 2 * self.qk], sin_qk)
        return qk[..., : self.q_width], qk[..., self.q_width :], y[..., 2 * self.qk :]

    def out_mlp(self, h: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        h = h + attn_out @ self.o.T
        g, u = (unit_rms(h, self.eps) @ self.gate_up.T).split(self.mlp_width, -1)
        g = F.gelu(g, approximate="tanh") if self.act == "gelu_tanh" else F.silu(g)
        return h + (g * u) @ self.down.T


LLAMA_STYLE_NORMS = ("LlamaRMSNorm", "Qwen2RMSNorm", "Qwen2_5_VLRMSNorm")  # w * x / rms(x), weight init 1


def fusable(layer) -> tuple[float, str] | None:
    """(norm offset, activation) of a decoder layer FusedLayer can take, or None."""
    attn, mlp, norms = layer.self_attn, layer.mlp, (layer.input_layernorm, layer.post_attention_layernorm)
    if getattr(attn, "q_norm", None) is not None or attn.o_proj.bias is not None:
        return None
    if getattr(layer, "_vla_cross", False):  # a cross-attention layer (vla.model.layers.cross_attention)
        return None
    if not all(hasattr(mlp, k) for k in ("gate_proj", "up_proj", "down_proj")) or any(
        getattr(mlp, k).bias is not None for k in ("gate_proj", "up_proj", "down_proj")
    ):
        return None
    act = getattr(mlp, "act_fn", None)
    act = "gelu_tanh" if isinstance(act, GELUTanh) else "silu" if isinstance(act, (SiLUActivation, nn.SiLU)) else None
    if act is None:
        return None
    if all(isinstance(n, GemmaRMSNorm) for n in norms):
        return 1.0, act
    if all(type(n).__name__ in LLAMA_STYLE_NORMS for n in norms):
        return 0.0, act
    return None


def unit_rms(h: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """h / sqrt(mean(h^2) + eps) in four kernels (torch's rms_norm takes about twice as long on small rows).

    eps: a 0-d tensor on h's device (kept by FusedLayer, so the hot path allocates none).
    """
    n = torch.linalg.vector_norm(h, dim=-1, keepdim=True)
    return h * torch.addcmul(eps, n, n, value=1.0 / h.shape[-1]).rsqrt_()


def tile_rope(cos: torch.Tensor, sin: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) [b, l, hd] -> tiled over `heads` q/k heads: [b, l, heads * hd] each."""
    return cos.repeat(1, 1, heads), sin.repeat(1, 1, heads)


def fuse_for_inference(*stacks: GemmaModel) -> None:
    """Attach FusedLayer views to every layer it understands (call again after the weights
    change). Layers with adaptive norms (pi0.5's expert) are left as they are: their norm scales
    depend on the time; so are layers of other styles (q/k norms, MoE MLPs: see `fusable`)."""
    for stack in stacks:
        for layer in stack.layers:
            kind = None if isinstance(layer.input_layernorm, AdaRMSNorm) else fusable(layer)
            if kind is not None:
                layer._vla_fused = FusedLayer(layer, *kind)
            elif hasattr(layer, "_vla_fused"):
                del layer._vla_fused


def _fused(layer) -> "FusedLayer | None":
    return None if torch.is_grad_enabled() else getattr(layer, "_vla_fused", None)


def layer_qkv(layer, h, cos, sin, cond=None):
    """A decoder layer's attention inputs for hidden states h [b, l, d].

    -> q [b, heads, l, hd], k, v [b, kv_heads, l, hd] (RoPE applied), and the attention
    residual's gate (adaptive norms only, else None). Uses the layer's fused form when one is
    attached and grad is off. Shared by joint attention and cross-attention.
    """
    b, n, _ = h.shape
    f = _fused(layer)
    if f is None:
        attn = layer.self_attn
        x, gate = apply_norm(layer.input_layernorm, h, cond)
        q = attn.q_proj(x).view(b, n, -1, attn.head_dim)
        k = attn.k_proj(x).view(b, n, -1, attn.head_dim)
        if getattr(attn, "q_norm", None) is not None:  # Qwen3: RMS norm per head, before RoPE
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = attn.v_proj(x).view(b, n, -1, attn.head_dim).transpose(1, 2)
        return (*apply_rotary_pos_emb(q, k, cos, sin), v, gate)
    q, k, v = f.qkv(h, *tile_rope(cos, sin, f.heads + f.kv_heads))
    hd = f.head_dim
    return (
        q.reshape(b, n, -1, hd).transpose(1, 2),
        k.reshape(b, n, -1, hd).transpose(1, 2),
        v.reshape(b, n, -1, hd).transpose(1, 2),
        None,
    )


def layer_out_mlp(layer, h, seg, cond=None, attn_gate=None):
    """The rest of a decoder layer after attention: h [b, l, d] plus the output projection of
    the attention output seg [b, l, heads * hd] (gated by attn_gate), then the post-attention
    norm and MLP residual. cond: the adaptive-norm condition or None. -> [b, l, d].
    """
    f = _fused(layer)
    if f is None:
        h = h + gated(layer.self_attn.o_proj(seg), attn_gate)
        x, gate = apply_norm(layer.post_attention_layernorm, h, cond)
        return h + gated(layer.mlp(x), gate)
    return f.out_mlp(h, seg)


def _mqa_layer(fs: list[FusedLayer], hs, tiled, row_bias, past_kv, keep_kv):
    """One layer of joint attention on fused MQA layers (inference).

    Rows of the attention matmuls are (token, head) pairs in token-major order, so q needs no
    transpose and the output is [b, l, heads * head_dim] as it comes; `row_bias` is the mask
    bias with each query row repeated per head, `tiled` each stream's RoPE tables tiled over
    its q and k heads (both built once per forward by joint_forward).
    """
    qs, ks, vs = [], [], []
    for f, h, (cos_qk, sin_qk) in zip(fs, hs, tiled):
        q, k, v = f.qkv(h, cos_qk, sin_qk)
        qs.append(q), ks.append(k), vs.append(v)
    q, k, v = (torch.cat(x, 1) if len(x) > 1 else x[0] for x in (qs, ks, vs))
    if past_kv is not None:
        k = torch.cat([past_kv[0][:, 0], k], 1)
        v = torch.cat([past_kv[1][:, 0], v], 1)
    b, lq, hd = q.shape[0], q.shape[1], fs[0].head_dim
    heads = q.shape[2] // hd
    scores = torch.baddbmm(row_bias, q.reshape(b, lq * heads, hd), k.transpose(1, 2), alpha=fs[0].scale)
    out = torch.bmm(scores.softmax(-1), v).view(b, lq, heads * hd)
    new_hs, start = [], 0
    for f, h in zip(fs, hs):
        new_hs.append(f.out_mlp(h, out[:, start : start + h.shape[1]]))
        start += h.shape[1]
    return new_hs, ((k[:, None], v[:, None]) if keep_kv else None)  # cache layout [b, 1, l, head_dim]


def _layer(stacks, hs, layer_idx, cos_sin, bias, past_kv, keep_kv, conds):
    """One layer of joint attention. hs: per active stream [b, l_s, d_s]; conds: per active
    stream the adaptive-norm condition or None."""
    qs, ks, vs, gates = [], [], [], []
    for stack, h, (cos, sin), cond in zip(stacks, hs, cos_sin, conds):
        q, k, v, gate = layer_qkv(stack.layers[layer_idx], h, cos, sin, cond)
        qs.append(q), ks.append(k), vs.append(v), gates.append(gate)
    q, k, v = (torch.cat(x, 2) if len(x) > 1 else x[0] for x in (qs, ks, vs))
    if past_kv is not None:
        k = torch.cat([past_kv[0], k], 2)
        v = torch.cat([past_kv[1], v], 2)
    groups = q.shape[1] // k.shape[1]
    out = F.scaled_dot_product_attention(q, repeat_kv(k, groups), repeat_kv(v, groups), attn_mask=bias)
    out = out.transpose(1, 2).flatten(2)  # [b, l, heads * head_dim]
    new_hs, start = [], 0
    for stack, h, cond, gate in zip(stacks, hs, conds, gates):
        seg = out[:, start : start + h.shape[1]]
        start += h.shape[1]
        new_hs.append(layer_out_mlp(stack.layers[layer_idx], h, seg, cond, gate))
    return new_hs, ((k, v) if keep_kv else None)


def joint_forward(
    stacks: list[GemmaModel | None],
    embeds: list[torch.Tensor | None],
    allowed: torch.Tensor,
    positions: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    *,
    past: KVCache | None = None,
    keep_kv: bool = False,
    grad_checkpoint: bool = False,
    conds: list[torch.Tensor | None] | None = None,
    layer_adds: list[torch.Tensor] | None = None,
) -> tuple[list[torch.Tensor | None], KVCache | None]:
    """Run the active streams (embeds not None) through every layer with joint attention.

    allowed: [b, l_q, l_past + l_q] bool over all active tokens in stream order (after `past`),
        or the additive float bias [b, 1, l_q, l_k] made from it by `attn_bias` (callers that
        repeat a call, like the denoising loop, build it once).
    positions: RoPE positions of the active tokens, [b, l_q] (or [3, b, l_q] for multimodal RoPE:
        vla.model.backbones), or their (cos, sin) from `rope`.
    conds: per stream, the condition of its adaptive norms (pi0.5's expert: the flow time), or None.
    layer_adds: added to the first stream's hidden states after layers 0, 1, ... (Qwen3-VL's
        DeepStack image features, zero elsewhere); ignored when that stream is inactive.
    Returns the final-normed hidden states per stream (None for inactive ones) and, with
    keep_kv, every layer's k/v (past included) for reuse by later calls.
    """
    active = [i for i, e in enumerate(embeds) if e is not None]
    act_stacks = [stacks[i] for i in active]
    hs = [embeds[i] for i in active]
    act_conds = [conds[i] if conds is not None else None for i in active]
    depth = len(act_stacks[0].layers)
    cos, sin = positions if isinstance(positions, tuple) else rope(act_stacks[0], hs[0], positions)
    cos_sin, start = [], 0
    for h in hs:
        cos_sin.append((cos[:, start : start + h.shape[1]], sin[:, start : start + h.shape[1]]))
        start += h.shape[1]
    bias = allowed if allowed.is_floating_point() else attn_bias(allowed, hs[0].dtype)
    fused = [[_fused(st.layers[li]) for st in act_stacks] for li in range(depth)]
    mqa = all(f is not None and f.kv_heads == 1 for fs in fused for f in fs)
    if mqa:  # query rows (token, head), token-major: the same bias row for every head of a token
        heads = fused[0][0].heads
        row_bias = bias[:, 0].repeat_interleave(heads, dim=1) if bias.shape[2] > 1 else bias[:, 0]
        tiled = [tile_rope(c, s_, heads + 1) for c, s_ in cos_sin]
    cache: KVCache = []
    for li in range(depth):
        layer_past = past[li] if past is not None else None
        if mqa:
            hs, kv = _mqa_layer(fused[li], hs, tiled, row_bias, layer_past, keep_kv)
        elif grad_checkpoint and torch.is_grad_enabled():
            hs, kv = checkpoint(
                _layer, act_stacks, hs, li, cos_sin, bias, layer_past, keep_kv, act_conds, use_reentrant=False
            )
        else:
            hs, kv = _layer(act_stacks, hs, li, cos_sin, bias, layer_past, keep_kv, act_conds)
        if keep_kv:
            cache.append(kv)
        if layer_adds is not None and active[0] == 0 and li < len(layer_adds):
            hs[0] = hs[0] + layer_adds[li].to(hs[0].dtype)
    outs: list[torch.Tensor | None] = [None] * len(embeds)
    for i, stack, h, cond in zip(active, act_stacks, hs, act_conds):
        outs[i] = apply_norm(stack.norm, h, cond)[0]
    return outs, (cache if keep_kv else None)
