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
        self.proj = nn.ModuleDict(
            {name: nn.Linear(d, width) if direction == "in" else nn.Linear(width, d) for name, d in dims.items()}
        )

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


class SharedLinear(nn.Module):
    """One Linear over a fixed padded width shared by every embodiment (openpi's convention:
    state and actions zero-padded to 32 dims). `dims` names each embodiment's real width, for
    the loss mask; the padded dims still flow through the model, as in the published weights."""

    def __init__(self, dims: dict[str, int], width: int, *, padded: int, direction: str):
        super().__init__()
        assert direction in ("in", "out")
        too_wide = {n: d for n, d in dims.items() if d > padded}
        if too_wide:
            raise ValueError(f"embodiment dims {too_wide} exceed the shared head's {padded} dims")
        self.direction, self.width, self.padded, self.dims = direction, width, padded, dict(dims)
        self.linear = nn.Linear(padded, width) if direction == "in" else nn.Linear(width, padded)

    def forward(self, x: torch.Tensor, embodiments: list[str]) -> torch.Tensor:
        """in: x [b, ..., d <= padded] -> [b, ..., width];  out: x [b, ..., width] -> [b, ..., padded]."""
        if self.direction == "in" and x.shape[-1] != self.padded:
            x = nn.functional.pad(x[..., : self.padded], (0, self.padded - min(x.shape[-1], self.padded)))
        return self.linear(x)

    def dim_mask(self, embodiments: list[str], device=None) -> torch.Tensor:
        """[b, padded] True where a dim is real for that row's embodiment (unknown: every dim)."""
        m = torch.zeros(len(embodiments), self.padded, dtype=torch.bool, device=device)
        for i, n in enumerate(embodiments):
            m[i, : self.dims.get(n, self.padded)] = True
        return m


def make_head(dims: dict[str, int], width: int, *, direction: str, shared: int = 0) -> nn.Module:
    """Per-embodiment heads (shared = 0) or one head over `shared` padded dims."""
    if shared:
        return SharedLinear(dims, width, padded=shared, direction=direction)
    return EmbodimentLinear(dims, width, direction=direction)
