"""PaliGemma: SigLIP vision tower -> linear projector -> Gemma decoder (pi0 / pi0.5 as published).

    vision_tower  SiglipVisionModel (no pooling head)          [b*c, p, dv], p = (S / patch)^2
    projector     Linear(dv, d)
    language_model GemmaModel; its embedding scales by sqrt(d) inside embed_tokens
A checkpoint dir: PaliGemmaForConditionalGeneration's layout (its lm_head is tied to the embedding).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import GemmaModel, SiglipVisionConfig, SiglipVisionModel

from vla.model.backbones.base import VLMBackbone
from vla.model.backbones.config import GemmaSize


class PaliGemmaBackbone(VLMBackbone):
    family = "paligemma"

    def _build(self, vocab_size: int, lm_head: bool) -> None:
        cfg = self.cfg
        vis = SiglipVisionConfig(**self.siglip_vision_fields(), vision_use_head=False, attn_implementation="sdpa")
        tower = SiglipVisionModel(vis)
        self._set_vision_tower(tower, tower.embeddings.position_embedding)
        self.projector = nn.Linear(cfg.vision_width, cfg.text.width)
        self.language_model = GemmaModel(cfg.text.gemma_config(vocab_size))

    def _load(self, path: Path, lm_head: bool) -> None:
        from transformers import PaliGemmaForConditionalGeneration

        core = PaliGemmaForConditionalGeneration.from_pretrained(path, local_files_only=True).model
        self.vision_tower = core.vision_tower
        self.projector = core.multi_modal_projector.linear
        self.language_model = core.language_model

    def encode_images(self, pixels: torch.Tensor):
        b, c = pixels.shape[:2]
        feats = self.vision_tower(pixel_values=pixels.flatten(0, 1)).last_hidden_state  # [b*c, p, dv]
        tokens = self.projector(feats)
        return tokens.reshape(b, c * tokens.shape[1], tokens.shape[2]), None

    def make_expert(self, size: GemmaSize) -> nn.Module:
        return GemmaModel(size.gemma_config(vocab_size=8))  # its token embedding is unused
