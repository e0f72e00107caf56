"""SmolVLM / SmolVLM2 (SmolVLA's backbone): SigLIP-style tower -> pixel shuffle + linear -> Llama.

    vision_tower   SmolVLMVisionTransformer                   [b*c, p, dv], p = (S / patch)^2
    projector      SmolVLMConnector: pixel shuffle by `token_merge` (r) then Linear(dv * r^2, d)
                                                              [b*c, p / r^2, d]  (SmolVLM2: 1024 -> 64)
    language_model LlamaModel (no embedding scale; RoPE base 100000 in SmolVLM2)
Images enter as SmolVLA feeds them: one tile per camera, no special image tokens around it. A
checkpoint dir: SmolVLMForConditionalGeneration's layout (its lm_head is untied and kept for FAST).
The action expert is a Llama stack, as SmolVLA's (`AutoModel` of the text config at another width).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import LlamaConfig, LlamaModel, SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMModel

from vla.model.backbones.base import VLMBackbone
from vla.model.backbones.config import GemmaSize
from vla.spec import SpecError


def llama_config(size: GemmaSize, vocab_size: int, rope_theta: float, **kw) -> LlamaConfig:
    return LlamaConfig(
        **size.decoder_fields(vocab_size),
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        attn_implementation="sdpa",
        **kw,
    )


class SmolVLMBackbone(VLMBackbone):
    family = "smolvlm"

    def hf_config(self, vocab_size: int) -> SmolVLMConfig:
        """The transformers config of a randomly initialized backbone of this preset's sizes."""
        cfg = self.cfg
        text = llama_config(cfg.text, vocab_size, cfg.rope_theta).to_dict()
        vision = self.siglip_vision_fields()
        return SmolVLMConfig(
            text_config=text,
            vision_config=vision,
            scale_factor=cfg.token_merge,
            image_token_id=vocab_size - 1,
            attn_implementation="sdpa",
        )

    def _build(self, vocab_size: int, lm_head: bool) -> None:
        core = SmolVLMModel(self.hf_config(vocab_size))
        self._set_vision_tower(core.vision_model, core.vision_model.embeddings.position_embedding)
        self.projector, self.language_model = core.connector, core.text_model

    def _load(self, path: Path, lm_head: bool) -> None:
        full = SmolVLMForConditionalGeneration.from_pretrained(path, local_files_only=True)
        core = full.model
        self.vision_tower, self.projector, self.language_model = core.vision_model, core.connector, core.text_model
        if lm_head and not full.config.tie_word_embeddings:
            self.lm_head = full.lm_head
        if core.connector.scale_factor != self.cfg.token_merge:
            raise SpecError(
                f"pretrained backbone {path}: pixel shuffle {core.connector.scale_factor} != preset "
                f"token_merge {self.cfg.token_merge}"
            )

    def encode_images(self, pixels: torch.Tensor):
        b, c = pixels.shape[:2]
        x = self.normalize(pixels.flatten(0, 1)).to(self.vision_tower.embeddings.patch_embedding.weight.dtype)
        feats = self.vision_tower(pixel_values=x).last_hidden_state  # [b*c, p, dv]
        tokens = self.projector(feats)  # [b*c, p / r^2, d]
        return tokens.reshape(b, c * tokens.shape[1], tokens.shape[2]), None

    def make_expert(self, size: GemmaSize) -> nn.Module:
        return LlamaModel(llama_config(size, 8, self.rope_theta))  # its token embedding is unused
