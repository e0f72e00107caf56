"""PaliGemma-layout VLM backbone from Hugging Face transformers modules.

    images -> SigLIP vision tower -> linear projector -> image tokens   [b, c * p, d]
    token ids -> Gemma embedding (scaled by sqrt(d))  -> text tokens    [b, l, d]
    both -> the Gemma decoder layers (run by vla.model.attention, jointly with an expert)

Built from a config (random init, tiny sizes for CPU) or loaded from a local PaliGemma
checkpoint directory (`BackboneConfig(pretrained="path/to/paligemma")`); never downloads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import GemmaConfig, GemmaModel, SiglipVisionConfig, SiglipVisionModel

from vla.spec import SpecError


@dataclass(frozen=True)
class GemmaSize:
    """Width/depth/heads of one Gemma stack (the backbone's language model or the action expert)."""

    width: int
    depth: int
    mlp: int
    heads: int = 8
    kv_heads: int = 1
    head_dim: int = 256
    # Std of the random init of every weight matrix and of the token embedding; None keeps
    # transformers' Gemma default (0.02, right for widths near 2048). Fan-in (1 / sqrt(width),
    # 0.125 at width 64) made a tiny pi0 learn to read a target's position from the image in a
    # direct test (2 of 3 seeds vs 0 of 2 at 0.02, 1,500 steps) but did not change the goal
    # error of a 10-minute quickstart-style run (README, "Status and known shortfalls").
    init_std: float | None = None

    def __post_init__(self):
        for k in ("width", "depth", "mlp", "heads", "kv_heads", "head_dim"):
            if getattr(self, k) <= 0:
                raise SpecError(f"GemmaSize.{k} must be > 0, got {getattr(self, k)}")
        if self.init_std is not None and not self.init_std > 0:
            raise SpecError(f"GemmaSize.init_std must be > 0 (or unset for transformers' 0.02), got {self.init_std}")
        if self.heads % self.kv_heads:
            raise SpecError(f"GemmaSize: heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")

    def gemma_config(self, vocab_size: int) -> GemmaConfig:
        return GemmaConfig(vocab_size=vocab_size, hidden_size=self.width, intermediate_size=self.mlp,
                           num_hidden_layers=self.depth, num_attention_heads=self.heads,
                           num_key_value_heads=self.kv_heads, head_dim=self.head_dim, max_position_embeddings=8192,
                           hidden_activation="gelu_pytorch_tanh", attn_implementation="sdpa",
                           **({"initializer_range": self.init_std} if self.init_std else {}))


@dataclass(frozen=True)
class BackboneConfig:
    image_size: int = 224
    patch_size: int = 14
    vision_width: int = 1152
    vision_depth: int = 27
    vision_heads: int = 16
    vision_mlp: int = 4304
    text: GemmaSize = GemmaSize(width=2048, depth=18, mlp=16384)
    vocab_size: int = 257152
    # A local PaliGemma checkpoint dir (HF layout); sizes above must then match it.
    pretrained: str | None = None
    # How a randomly initialized vision tower starts its (learned) patch position embeddings:
    # "sincos" = 2D sine-cosine of each patch's row and column (geometry given from step 0),
    # "random" = the transformers default (normal noise; the layout must be learned from data).
    vision_pos_init: str = "sincos"

    def __post_init__(self):
        if isinstance(self.text, dict):
            object.__setattr__(self, "text", GemmaSize(**self.text))
        if self.image_size % self.patch_size:
            raise SpecError(f"BackboneConfig: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.vision_width % self.vision_heads:
            raise SpecError(f"BackboneConfig: vision_width {self.vision_width} not divisible by vision_heads {self.vision_heads}")
        if self.vision_pos_init not in ("sincos", "random"):
            raise SpecError(f"BackboneConfig: vision_pos_init must be 'sincos' or 'random', got {self.vision_pos_init!r}")

    @property
    def tokens_per_image(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict:
        return asdict(self)


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


class Backbone(nn.Module):
    def __init__(self, cfg: BackboneConfig, vocab_size: int | None = None):
        super().__init__()
        self.cfg = cfg
        if cfg.pretrained:
            self._load_pretrained(cfg, vocab_size)
            return
        vis = SiglipVisionConfig(hidden_size=cfg.vision_width, intermediate_size=cfg.vision_mlp,
                                 num_hidden_layers=cfg.vision_depth, num_attention_heads=cfg.vision_heads,
                                 image_size=cfg.image_size, patch_size=cfg.patch_size, vision_use_head=False,
                                 attn_implementation="sdpa")
        self.vision_tower = SiglipVisionModel(vis)
        if cfg.vision_pos_init == "sincos":
            with torch.no_grad():
                grid = cfg.image_size // cfg.patch_size
                self.vision_tower.embeddings.position_embedding.weight.copy_(sincos_2d(grid, cfg.vision_width))
        self.projector = nn.Linear(cfg.vision_width, cfg.text.width)
        self.language_model = GemmaModel(cfg.text.gemma_config(vocab_size or cfg.vocab_size))

    def _load_pretrained(self, cfg: BackboneConfig, vocab_size: int | None) -> None:
        from transformers import PaliGemmaForConditionalGeneration

        path = Path(cfg.pretrained)
        if not (path / "config.json").exists():
            raise SpecError(f"pretrained backbone dir {path} has no config.json (expected a PaliGemma checkpoint)")
        pg = PaliGemmaForConditionalGeneration.from_pretrained(path, local_files_only=True)
        core = pg.model
        self.vision_tower = core.vision_tower
        self.projector = core.multi_modal_projector.linear
        self.language_model = core.language_model
        got = (self.language_model.config.hidden_size, self.language_model.config.num_hidden_layers)
        if got != (cfg.text.width, cfg.text.depth):
            raise SpecError(f"pretrained backbone {path}: width/depth {got} != preset {(cfg.text.width, cfg.text.depth)}")
        if vocab_size and vocab_size > self.language_model.config.vocab_size:
            # FAST appends its action ids after the text vocabulary: new rows, randomly initialized.
            self.language_model.resize_token_embeddings(vocab_size)

    @property
    def width(self) -> int:
        return self.language_model.config.hidden_size

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [b, c, 3, S, S] in [-1, 1] -> image tokens [b, c * p, d]."""
        b, c = pixels.shape[:2]
        feats = self.vision_tower(pixel_values=pixels.flatten(0, 1)).last_hidden_state  # [b*c, p, dv]
        tokens = self.projector(feats)
        return tokens.reshape(b, c * tokens.shape[1], tokens.shape[2])

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [b, l] -> [b, l, d] (Gemma's embedding, scaled by sqrt(d))."""
        return self.language_model.embed_tokens(ids)
