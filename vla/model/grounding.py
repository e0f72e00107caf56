"""Grounding tokens: the instruction picks what to look at in the images, in one hop.

pi0 as published fuses language and vision late: image and text tokens meet only inside the
decoder, and the action expert reads them through joint attention. Trained from scratch on a
CPU budget that multi-hop path (read the colour word, find that colour among the image tokens,
read out its position) is not learned (README, "Status and known shortfalls"). This module is
the early-fusion path the literature points to (RT-1's FiLM, VIMA / SmolVLA's query pooling):

    instruction  = attention pool of the text token embeddings (one learned query)   [b, d]
    queries      = K learned queries, FiLM-modulated by the instruction               [b, K, d]
    grounding    = the queries cross-attending over every real image token, + an MLP  [b, K, d]

The K grounding tokens join the end of the prefix (so the KV cache holds them and every
denoising step reads them); a pi0 model also adds a projection of them to its state token, the
expert's most direct input.

Dense supervision (pi0.5's "knowledge insulation", ECoT): `env_loss` regresses training-only
scene facts (vla.spec.ENV_STATE: the named object's and the goal's positions, z-scored) from the
grounding tokens, so the vision tower and the instruction pool learn to find the named object
from a regression gradient instead of only through the flow-matching loss. Policies never read
ENV_STATE: at inference the tokens are computed from images and instruction alone.

With a keypoint stem (`grounding_keypoints = M`, vla.model.keypoints) the queries also carry
where the instruction-conditioned heatmaps of every camera peak, through an MLP with a
per-embodiment bias (each robot's cameras sit elsewhere, so the same pixel means another place).
"""

from __future__ import annotations

import torch
from torch import nn

from vla.model.keypoints import Keypoints


class Grounding(nn.Module):
    def __init__(
        self,
        width: int,
        tokens: int,
        *,
        heads: int = 4,
        env_dim: int = 0,
        keypoints: int = 0,
        cameras: int = 1,
        embodiments: int = 1,
    ):
        super().__init__()
        if width % heads:
            heads = 1
        scale = width**-0.5
        self.tokens, self.width = tokens, width
        self.text_query = nn.Parameter(torch.randn(1, 1, width) * scale)
        self.text_norm = nn.LayerNorm(width)
        self.text_pool = nn.MultiheadAttention(width, heads, batch_first=True)
        self.queries = nn.Parameter(torch.randn(1, tokens, width) * scale)
        self.film = nn.Linear(width, 2 * width)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.image_norm = nn.LayerNorm(width)
        self.image_pool = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width)
        )
        self.env_head = nn.Linear(tokens * width, env_dim) if env_dim else None
        self.keypoints = None
        if keypoints:
            self.keypoints = Keypoints(width, keypoints)
            hidden = 4 * width
            self.kp_in = nn.Linear(self.keypoints.out_dim(cameras), hidden)
            self.kp_embodiment = nn.Embedding(embodiments, hidden)
            self.kp_out = nn.Sequential(nn.GELU(), nn.Linear(hidden, tokens * width))

    def forward(
        self,
        image: torch.Tensor,
        image_valid: torch.Tensor,
        text: torch.Tensor,
        text_valid: torch.Tensor,
        pixels: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        embodiment: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """image tokens [b, n, d] + valid [b, n], text embeddings [b, l, d] + valid [b, l] -> [b, K, d].
        With a keypoint stem also the camera images `pixels` [b, c, 3, S, S] in [-1, 1], their
        `pixel_mask` [b, c] and each row's `embodiment` index [b] (long)."""
        b = image.shape[0]
        dtype = self.queries.dtype
        image, text = image.to(dtype), text.to(dtype)
        t = self.text_norm(text)
        lang, _ = self.text_pool(self.text_query.expand(b, -1, -1), t, t, key_padding_mask=_ignored(text_valid))
        gamma, beta = self.film(lang).chunk(2, dim=-1)  # [b, 1, d] each
        q = self.queries * (1 + gamma) + beta
        if self.keypoints is not None:
            if pixels is None or pixel_mask is None or embodiment is None:
                raise ValueError("grounding with a keypoint stem needs the images, their mask and the embodiment")
            kp = self.keypoints(pixels, pixel_mask, lang[:, 0])
            hid = self.kp_in(kp.to(dtype)) + self.kp_embodiment(embodiment)
            q = q + self.kp_out(hid).view(b, self.tokens, self.width)
        k = self.image_norm(image)
        pooled, _ = self.image_pool(q, k, k, key_padding_mask=_ignored(image_valid))
        g = q + pooled
        return g + self.mlp(g)

    def predict(self, g: torch.Tensor) -> torch.Tensor:
        """Grounding tokens [b, K, d] -> the z-scored scene facts they encode [b, e]."""
        if self.env_head is None:
            raise RuntimeError("this grounding module has no env-state head (env_dim = 0)")
        return self.env_head(g.flatten(1).float())

    def env_loss(self, g: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Per-sample MSE [b] of the scene facts predicted from grounding tokens g [b, K, d]
        against z-scored `target` [b, e]; 0 where `valid` [b] is False."""
        pred = self.predict(g)
        if pred.shape[-1] != target.shape[-1]:
            raise ValueError(
                f"env-state loss: the model predicts {pred.shape[-1]} dims, the data has {target.shape[-1]} "
                f"(set env_state_dim in the preset's [model])"
            )
        err = ((pred - target.to(pred)) ** 2).mean(-1)
        return torch.where(valid.to(err.device), err, torch.zeros_like(err))


def _ignored(valid: torch.Tensor) -> torch.Tensor:
    """key_padding_mask (True = ignore) from validity; a row with nothing valid attends to all of
    it instead of producing NaN (its tokens are padding the model never uses)."""
    ignore = ~valid.bool()
    return ignore & ~ignore.all(dim=1, keepdim=True)
