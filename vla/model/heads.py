"""Per-embodiment input/output projections into one shared width (GR00T style).

Each embodiment keeps its own state encoder, action encoder and action decoder, so a model
trained on a 6-D arm and a 14-D bimanual robot never learns padded zeros: rows of a batch
are routed by embodiment name, and outputs come back padded to the batch's widest action
dim together with the mask of real dims.
"""

from __future__ import annotations

import torch
from torch import nn


class EmbodimentLinear(nn.Module):
    """A Linear per embodiment: in_dims[name] -> out, or in -> out_dims[name]."""

    def __init__(self, dims: dict[str, int], width: int, *, direction: str):
        super().__init__()
        assert direction in ("in", "out")
        self.direction, self.width, self.dims = direction, width, dict(dims)
        self.proj = nn.ModuleDict({
            name: nn.Linear(d, width) if direction == "in" else nn.Linear(width, d) for name, d in dims.items()
        })

    def forward(self, x: torch.Tensor, embodiments: list[str]) -> torch.Tensor:
        """in: x [b, ..., d_max] (padded) -> [b, ..., width];  out: x [b, ..., width] -> [b, ..., d_max]."""
        names = sorted(set(embodiments))
        unknown = [n for n in names if n not in self.proj]
        if unknown:
            raise KeyError(f"no head for embodiment(s) {unknown}; this model knows {sorted(self.proj)}")
        if self.direction == "in":
            out_dim = self.width
        else:
            out_dim = max(self.dims[n] for n in names)
        if len(names) == 1:  # common case: a whole batch of one embodiment
            layer = self.proj[names[0]]
            y = layer(x[..., : self.dims[names[0]]]) if self.direction == "in" else layer(x)
            return y if y.shape[-1] == out_dim else nn.functional.pad(y, (0, out_dim - y.shape[-1]))
        out = x.new_zeros(*x.shape[:-1], out_dim)
        for n in names:
            rows = torch.tensor([e == n for e in embodiments], device=x.device)
            layer = self.proj[n]
            y = layer(x[rows][..., : self.dims[n]]) if self.direction == "in" else layer(x[rows])
            out[rows, ..., : y.shape[-1]] = y
        return out

    def dim_mask(self, embodiments: list[str], device=None) -> torch.Tensor:
        """[b, d_max] True where a dim is real for that row's embodiment."""
        d_max = max(self.dims[n] for n in set(embodiments))
        m = torch.zeros(len(embodiments), d_max, dtype=torch.bool, device=device)
        for i, n in enumerate(embodiments):
            m[i, : self.dims[n]] = True
        return m
