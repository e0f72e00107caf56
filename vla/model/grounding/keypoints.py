"""Instruction-conditioned spatial-softmax keypoints: where in each camera image the named thing is.

A patch-16 ViT at 96 px sees a 6 x 6 grid per camera; trained from scratch on ~100 scenes a task
it memorizes the scenes instead of learning to localize (README, `vla bench learn`: the named
object's position 1 cm off in training scenes, 9-14 cm in new ones). Diffusion policy and DrQ
localize with a small conv stem and spatial-softmax keypoints: the coordinates are computed, not
learned, so a detector that fires on the right pixels generalizes to any layout. Here the
instruction picks what fires (FiLM, as RT-1 conditions its vision encoder):

    features  = conv stem (GroupNorm, stride 4) of each camera image          [b*c, C, S/4, S/4]
    features  = FiLM(features; instruction vector)                             (colour-selective)
    maps      = 1x1 conv -> M heatmaps, softmax over the pixels
    keypoints = per heatmap: expected x, y in [-1, 1] and its peak (log-mean-exp of the logits)

The result, [b, c * M * 3] with absent camera slots zeroed, is what vla.model.grounding.tokens turns into
grounding tokens (with the embodiment's own bias, since each robot's cameras sit elsewhere).
"""

from __future__ import annotations

import math

import torch
from torch import nn

PER_KEYPOINT = 3  # x, y, peak


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels // 4), channels)


def _block(c_in: int, c_out: int, kernel: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2), _norm(c_out), nn.GELU()]


class Keypoints(nn.Module):
    def __init__(self, cond_width: int, keypoints: int = 8, channels: int = 32):
        super().__init__()
        self.keypoints, self.channels = keypoints, channels
        half = channels // 2
        self.stem = nn.Sequential(
            *_block(3, half, 5, 2), *_block(half, channels, 3, 2), nn.Conv2d(channels, channels, 3, padding=1)
        )
        self.film = nn.Linear(cond_width, 2 * channels)
        nn.init.zeros_(self.film.weight)  # starts unconditioned; the instruction's say grows from 0
        nn.init.zeros_(self.film.bias)
        self.head = nn.Sequential(_norm(channels), nn.GELU())
        self.maps = nn.Conv2d(channels, keypoints, 1)
        # [1], not a scalar: FSDP2's fully_shard shards every parameter along dim 0 and refuses 0-dim ones.
        self.log_temperature = nn.Parameter(torch.zeros(1))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before FSDP support hold a 0-dim log_temperature: the same value.
        key = prefix + "log_temperature"
        if key in state_dict and state_dict[key].ndim == 0:
            state_dict[key] = state_dict[key].reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def out_dim(self, cameras: int) -> int:
        return cameras * self.keypoints * PER_KEYPOINT

    def forward(self, images: torch.Tensor, image_mask: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """images [b, c, 3, S, S] in [-1, 1], image_mask [b, c], cond [b, w] -> [b, c * M * 3]."""
        b, c = images.shape[:2]
        dtype = self.maps.weight.dtype
        f = self.stem(images.flatten(0, 1).to(dtype))  # [b*c, C, h, w]
        gamma, beta = self.film(cond.to(dtype)).repeat_interleave(c, 0)[..., None, None].chunk(2, dim=1)
        logits = self.maps(self.head(f * (1 + gamma) + beta)) * self.log_temperature.exp()
        x, y, peak = spatial_softmax(logits)
        kp = torch.stack([x, y, peak], -1).reshape(b, c, self.keypoints * PER_KEYPOINT)
        return (kp * image_mask[:, :, None].to(kp.dtype)).flatten(1)


def spatial_softmax(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Heatmap logits [..., h, w] -> expected x (columns) and y (rows) in [-1, 1], and the peak
    (log-mean-exp of the logits: 0 for a flat map, larger the more one spot stands out), each [...]."""
    h, w = logits.shape[-2:]
    attn = logits.flatten(-2).softmax(-1).unflatten(-1, (h, w))
    ys = torch.linspace(-1.0, 1.0, h, device=logits.device, dtype=attn.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=logits.device, dtype=attn.dtype)
    x = (attn.sum(-2) * xs).sum(-1)
    y = (attn.sum(-1) * ys).sum(-1)
    peak = logits.flatten(-2).logsumexp(-1) - math.log(h * w)
    return x, y, peak
