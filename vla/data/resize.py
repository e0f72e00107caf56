"""Frames at the model's input size: the resize rule of the loader.

The rule is openpi's resize_with_pad, the same as `vla.model.transforms.resize_with_pad`: scale
by min(h_t / h, w_t / w) keeping the aspect, bilinear with antialiasing, round the new size,
and pad the rest with black (uint8 0, which the model's [-1, 1] scaling maps to -1), centred
(top = (h_t - nh) // 2). Transforms skips its own resize when a frame already has the model's
size, so a batch resized here and one resized there differ only by the rounding to uint8 here
(at most 1 level; tested). The resize runs on uint8 (torch's antialiased uint8 kernel, ~5x the
float path) in the DataLoader workers.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vla.spec import SpecError


def parse_size(image_size) -> tuple[int, int] | None:
    """None | int | (h, w) -> (h, w) or None."""
    if image_size is None:
        return None
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    try:
        h, w = (int(x) for x in image_size)
    except (TypeError, ValueError):
        raise SpecError(f"image_size must be (height, width), got {image_size!r}") from None
    if h < 1 or w < 1:
        raise SpecError(f"image_size must be positive, got {(h, w)}")
    return h, w


def fit(h: int, w: int, th: int, tw: int) -> tuple[int, int, int, int]:
    """Source (h, w) into target (th, tw): -> (nh, nw, top, left) of the resized frame."""
    scale = min(th / h, tw / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    return nh, nw, (th - nh) // 2, (tw - nw) // 2


def resize_uint8(img: np.ndarray, nh: int, nw: int) -> np.ndarray:
    """uint8 [h, w, 3] -> uint8 [nh, nw, 3], bilinear with antialiasing."""
    if img.shape[:2] == (nh, nw):
        return img
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]  # channels-last view, no copy
    y = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    return y[0].permute(1, 2, 0).numpy()


def place(img: np.ndarray, out: np.ndarray, src_hw: tuple[int, int]) -> None:
    """Resize a frame whose full size is src_hw (img may be a reduced-scale decode of it) into the
    zero-filled out [th, tw, 3] by the rule above. The new size is computed from the full size, so a
    reduced-scale decode lands on exactly the pixels a full decode would."""
    nh, nw, top, left = fit(*src_hw, *out.shape[:2])
    dst = torch.from_numpy(out).permute(2, 0, 1)[None, :, top : top + nh, left : left + nw]
    if img.shape[:2] == (nh, nw):
        dst.copy_(torch.from_numpy(img).permute(2, 0, 1)[None])
        return
    x = torch.from_numpy(img).permute(2, 0, 1)[None]  # channels-last view of [h, w, 3], no copy
    dst.copy_(F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True))
