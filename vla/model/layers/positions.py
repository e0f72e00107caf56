"""Fixed 2-D position tables for image patches."""

from __future__ import annotations

import torch

from vla.spec import SpecError


def sincos_2d(grid: int, width: int) -> torch.Tensor:
    """[grid * grid, width] position table, row-major patches: the first half of the channels
    encodes the patch row, the second half its column, each as sines and cosines of geometric
    frequencies (periods from 2 pi patches up to about 2 pi * grid patches)."""
    if width % 4:
        raise SpecError(f"sincos_2d: width {width} must be a multiple of 4")
    q = width // 4
    freqs = 1.0 / (grid ** (torch.arange(q, dtype=torch.float64) / q))
    pos = torch.arange(grid, dtype=torch.float64)[:, None] * freqs[None]  # [grid, q]
    axis = torch.cat([pos.sin(), pos.cos()], dim=1)  # [grid, 2q]
    rows = axis[:, None, :].expand(grid, grid, 2 * q)
    cols = axis[None, :, :].expand(grid, grid, 2 * q)
    return torch.cat([rows, cols], dim=-1).reshape(grid * grid, width).float()
