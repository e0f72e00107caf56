"""Adaptive RMSNorm (pi0.5's action expert): the flow time conditions every norm of the expert.

    (scale, shift, gate) = chunk(dense(cond), 3)          dense: [3w, w], cond [b, w] or per token [b, l, w]
    y = x / rms(x) * (1 + scale) + shift                  in float32, as Gemma's RMSNorm
and the residual branch that follows the norm is multiplied by `gate` (x + gate * f(y)). The
final norm of the stack is adaptive too (its gate unused). No learned `.weight` scale: the
dense layer's output replaces it. Weight keys `<norm>.dense.{weight,bias}`, as LeRobot's pi05.
"""

from __future__ import annotations

import torch
from torch import nn


class AdaRMSNorm(nn.Module):
    def __init__(self, width: int, cond_width: int | None = None, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.dense = nn.Linear(cond_width or width, 3 * width)
        nn.init.zeros_(self.dense.weight)  # starts as a plain RMSNorm with gate 0 (openpi's init)
        nn.init.zeros_(self.dense.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [b, l, w], cond [b, w_c] (one per row) or [b, l, w_c] (one per token, e.g. per-token
        flow times) -> (normed [b, l, w], gate [b, 1, w] or [b, l, w])."""
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        mod = self.dense(cond)
        scale, shift, gate = (mod[:, None, :] if mod.dim() == 2 else mod).float().chunk(3, dim=-1)
        return (normed * (1.0 + scale) + shift).to(x.dtype), gate.to(x.dtype)


def make_adaptive(stack: nn.Module) -> None:
    """Replace every norm of a GemmaModel (per-layer and final) with an AdaRMSNorm of its width."""
    width = stack.config.hidden_size
    eps = stack.config.rms_norm_eps
    for layer in stack.layers:
        layer.input_layernorm = AdaRMSNorm(width, eps=eps)
        layer.post_attention_layernorm = AdaRMSNorm(width, eps=eps)
    stack.norm = AdaRMSNorm(width, eps=eps)


def apply_norm(norm: nn.Module, x: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A plain norm -> (norm(x), None); an adaptive one -> (normed, gate) under `cond`."""
    if isinstance(norm, AdaRMSNorm):
        if cond is None:
            raise ValueError("an adaptive RMSNorm needs its condition (the flow time)")
        return norm(x, cond)
    return norm(x), None


def gated(y: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    return y if gate is None else y * gate
