"""Training-time image augmentation.

`random_shift` (DrQ; diffusion policy's random crop): every image of the batch is padded by
`pad` pixels (edge pixels repeated) and cropped back to its size at a random offset, so a
policy cannot key on the exact pixels of the few hundred scenes it was shown. Applied in the
training loop with a generator seeded by the step, so a resumed run sees the same shifts.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def random_shift(
    images: torch.Tensor, pad: int, generator: torch.Generator, *, rank: int = 0, world: int = 1
) -> torch.Tensor:
    """images [b, c, 3, S, S] -> the same shape, each [3, S, S] image shifted by up to +-pad pixels.

    Under DDP (rank of world) `images` are this rank's rows rank::world of the global batch; the
    offsets are drawn for the whole global batch, so N processes shift as one would."""
    if pad <= 0:
        return images
    b, c, ch, h, w = images.shape
    x = F.pad(images.reshape(b * c, ch, h, w), (pad, pad, pad, pad), mode="replicate")
    off = torch.randint(0, 2 * pad + 1, (2, b * world, c), generator=generator)[:, rank::world].reshape(2, b * c)
    out = torch.stack([x[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(zip(*off.tolist()))])
    return out.reshape(b, c, ch, h, w)
