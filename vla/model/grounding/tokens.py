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

With a keypoint stem (`keypoints = M`, vla.model.grounding.keypoints) the queries also carry where the
instruction-conditioned heatmaps of every camera peak, through an MLP with a per-embodiment bias
(each robot's cameras sit elsewhere, so the same pixel means another place).

A pi0 or pi0.5 config holds a `GroundingConfig` as its `grounding` (a preset's [model.grounding]
table); None is the model as published. Presets and checkpoints written before that table had
these fields flat in [model] (`grounding_tokens`, `grounding_keypoints`, `env_state_*`):
`grounding_from_flat` maps them, in this one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vla.model.grounding.keypoints import Keypoints
from vla.spec import SpecError


@dataclass(frozen=True)
class GroundingConfig:
    tokens: int  # K grounding tokens that join the prefix (and, in pi0, the state token)
    # M > 0: the queries also carry M instruction-conditioned spatial-softmax keypoints per camera
    # from a small conv stem (vla.model.grounding.keypoints); 0: image tokens only.
    keypoints: int = 0
    # Weight of the auxiliary loss that regresses the training-only scene facts
    # (vla.spec.ENV_STATE, z-scored) from the grounding tokens; rows without them add nothing.
    # 0: no auxiliary loss (the grounding tokens then learn from the flow loss alone).
    env_state_loss: float = 0.0
    env_state_dim: int = 6  # len(vla.spec.ENV_STATE_LAYOUT), the built-in tasks' layout
    # pi0: the scene facts the grounding tokens predict (z-scored, gradient stopped) also enter
    # the state token through their own projection, so the expert reads the named object's and
    # the goal's positions as numbers, as a policy on privileged state would, but predicted from
    # the images and the instruction. Needs env_state_loss > 0 and a state token (not pi0.5).
    env_state_input: bool = False

    def __post_init__(self):
        def whole(v, low: int) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= low

        if not whole(self.tokens, 1):
            raise SpecError(
                f"grounding: tokens must be an int >= 1, got {self.tokens!r} (for the model as published, "
                "leave out [model.grounding])"
            )
        if not whole(self.keypoints, 0):
            raise SpecError(f"grounding: keypoints must be an int >= 0, got {self.keypoints!r}")
        if not whole(self.env_state_dim, 1):
            raise SpecError(f"grounding: env_state_dim must be an int >= 1, got {self.env_state_dim!r}")
        if isinstance(self.env_state_loss, bool) or not isinstance(self.env_state_loss, (int, float)):
            raise SpecError(f"grounding: env_state_loss must be a number >= 0, got {self.env_state_loss!r}")
        if not self.env_state_loss >= 0:
            raise SpecError(f"grounding: env_state_loss must be >= 0, got {self.env_state_loss}")
        if self.env_state_input and not self.env_state_loss:
            raise SpecError(
                "grounding: env_state_input feeds the predicted scene facts: set env_state_loss > 0 "
                f"(got {self.env_state_loss})"
            )

    @property
    def env_dim(self) -> int:
        """Width of the env-state head: env_state_dim under an auxiliary loss, else 0 (no head)."""
        return self.env_state_dim if self.env_state_loss else 0


# The old flat layout of a pi0 / pi0.5 [model] table or config.json -> GroundingConfig's fields.
FLAT_FIELDS = {
    "grounding_tokens": "tokens",
    "grounding_keypoints": "keypoints",
    "env_state_loss": "env_state_loss",
    "env_state_dim": "env_state_dim",
    "env_state_input": "env_state_input",
}


def grounding_from_flat(d: dict, where: str = "pi0") -> dict:
    """A model config dict in the old flat layout -> the same dict with `grounding` (a field dict,
    or None when grounding_tokens = 0: the layout before wrote all five fields, zero when unused).
    A dict without flat fields is returned as it is."""
    flat = {k: d[k] for k in FLAT_FIELDS if k in d}
    if not flat:
        return d
    rest = {k: v for k, v in d.items() if k not in FLAT_FIELDS}
    if "grounding" in d:
        raise SpecError(
            f"{where}: both [model.grounding] and the older flat fields {sorted(flat)}: keep the table "
            f"(its fields: {', '.join(f'{k} -> {v}' for k, v in FLAT_FIELDS.items() if k in flat)})"
        )
    if not flat.get("grounding_tokens", 0):
        used = [
            k
            for k in ("grounding_keypoints", "env_state_loss", "env_state_input")
            if flat.get(k) not in (None, 0, False)
        ]
        if used:
            raise SpecError(
                f"{where}: {', '.join(f'{k} = {flat[k]!r}' for k in used)} feed the grounding tokens: set "
                "grounding_tokens > 0 (better: a [model.grounding] table with tokens > 0)"
            )
        return {**rest, "grounding": None}
    return {**rest, "grounding": {FLAT_FIELDS[k]: v for k, v in flat.items()}}


class Grounding(nn.Module):
    @classmethod
    def build(cls, cfg: GroundingConfig, width: int, *, heads: int, cameras: int, embodiments: int) -> "Grounding":
        """The module of a GroundingConfig, over prefix tokens of `width` (`embodiments`: rows of
        the keypoints' per-embodiment bias)."""
        return cls(
            width,
            cfg.tokens,
            heads=heads,
            env_dim=cfg.env_dim,
            keypoints=cfg.keypoints,
            cameras=cameras,
            embodiments=embodiments,
        )

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
                f"(set env_state_dim in the preset's [model.grounding])"
            )
        err = ((pred - target.to(pred)) ** 2).mean(-1)
        return torch.where(valid.to(err.device), err, torch.zeros_like(err))


def _ignored(valid: torch.Tensor) -> torch.Tensor:
    """key_padding_mask (True = ignore) from validity; a row with nothing valid attends to all of
    it instead of producing NaN (its tokens are padding the model never uses)."""
    ignore = ~valid.bool()
    return ignore & ~ignore.all(dim=1, keepdim=True)
