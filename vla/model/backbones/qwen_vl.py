"""The Qwen-VL line: Qwen2.5-VL, Qwen3-VL and Qwen3-VL-MoE.

    vision_tower   the family's ViT (Qwen2.5-VL: windowed attention; Qwen3-VL: learned positions
                   resampled to the grid, DeepStack taps) with its 2x2 patch merger at the end:
                   flattened (2-frame) patches [n * g^2 * m^2, 3 * 2 * P * P] -> tokens [n * g^2, d]
    language_model Qwen2.5-VL's (Qwen2 layers, q/k/v biases) or Qwen3-VL's (q/k RMS norms per head;
                   MoE MLPs in qwen3_vl_moe) text decoder, with multimodal RoPE
Each camera is one still image of S x S (g = S / (P m) merged tokens per side), patchified as the
Qwen2-VL image processor does (the frame repeated over the 2-frame temporal patch), normalized
with CLIP's mean and std. No <|vision_start|>/<|vision_end|> tokens around it (as SmolVLA
feeds its VLM); positions follow the model's get_rope_index for an image block (see
vla.model.backbones.base). DeepStack (Qwen3-VL): the merged features of chosen vision layers are
added to the image tokens' hidden states after the first decoder layers.
A checkpoint dir: Qwen2_5_VL / Qwen3VL / Qwen3VLMoe ForConditionalGeneration's layout. The
action expert is a Llama stack with the decoder's RoPE base.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import LlamaModel

from vla.model.backbones.base import VLMBackbone, mrope_sections
from vla.model.backbones.config import GemmaSize
from vla.model.backbones.smolvlm import llama_config
from vla.spec import SpecError

TEMPORAL_PATCH = 2
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def patchify(x: torch.Tensor, patch: int, merge: int) -> torch.Tensor:
    """[n, C, S, S] -> [n, g*g, C * 2 * P * P] in the merger's order (rows of m x m windows), the
    frame repeated over the temporal patch (as transformers' Qwen2-VL image processor)."""
    n, ch, h, w = x.shape
    gh, gw = h // patch, w // patch
    x = x.reshape(n, ch, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 2, 5, 3, 6, 1, 4, 7)  # [n, gh/m, gw/m, m, m, C, P, P]
    x = x.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, TEMPORAL_PATCH, -1, -1)
    return x.reshape(n, gh * gw, ch * TEMPORAL_PATCH * patch * patch)


class QwenVLBackbone(VLMBackbone):
    """Shared by the Qwen-VL families; subclasses name their transformers classes."""

    pixel_mean, pixel_std = CLIP_MEAN, CLIP_STD
    interleaved_mrope = False

    # ---- transformers classes and configs, per family ----
    def hf_classes(self):
        raise NotImplementedError

    def text_config(self, vocab_size: int) -> dict:
        t, cfg = self.cfg.text, self.cfg
        rope = {
            "rope_type": "default",
            "rope_theta": cfg.rope_theta,
            "mrope_section": mrope_sections(t.head_dim, self.interleaved_mrope),
        }
        if self.interleaved_mrope:
            rope["mrope_interleaved"] = True
        return dict(t.decoder_fields(vocab_size), rope_parameters=rope, bos_token_id=None, eos_token_id=None)

    def vision_config(self) -> dict:
        """The vision tower's config fields both Qwen-VL generations share; each adds its own."""
        cfg = self.cfg
        return dict(
            depth=cfg.vision_depth,
            hidden_size=cfg.vision_width,
            intermediate_size=cfg.vision_mlp,
            num_heads=cfg.vision_heads,
            patch_size=cfg.patch_size,
            spatial_merge_size=cfg.token_merge,
            temporal_patch_size=TEMPORAL_PATCH,
            out_hidden_size=cfg.text.width,
        )

    def hf_config(self, vocab_size: int):
        config_cls = self.hf_classes()[0]
        return config_cls(
            text_config=self.text_config(vocab_size),
            vision_config=self.vision_config(),
            image_token_id=vocab_size - 1,
            video_token_id=vocab_size - 2,
            vision_start_token_id=vocab_size - 3,
            vision_end_token_id=vocab_size - 4,
            attn_implementation="sdpa",
        )

    # ---- build / load ----
    def _build(self, vocab_size: int, lm_head: bool) -> None:
        _, core_cls, _ = self.hf_classes()
        core = core_cls(self.hf_config(vocab_size))
        self._set_vision_tower(core.visual, getattr(core.visual, "pos_embed", None))  # Qwen3-VL's table only
        self.language_model = core.language_model

    def _load(self, path: Path, lm_head: bool) -> None:
        full = self.hf_classes()[2].from_pretrained(path, local_files_only=True)
        self.vision_tower, self.language_model = full.model.visual, full.model.language_model
        if lm_head and not full.config.tie_word_embeddings:
            self.lm_head = full.lm_head
        merge, patch = self.vision_tower.spatial_merge_size, self.vision_tower.patch_size
        if (merge, patch) != (self.cfg.token_merge, self.cfg.patch_size):
            raise SpecError(
                f"pretrained backbone {path}: (patch merge, patch size) {(merge, patch)} != preset "
                f"{(self.cfg.token_merge, self.cfg.patch_size)}"
            )

    # ---- the interface ----
    def encode_images(self, pixels: torch.Tensor):
        b, c, _, size, _ = pixels.shape
        patch, merge = self.cfg.patch_size, self.cfg.token_merge
        g = size // patch
        x = patchify(self.normalize(pixels.flatten(0, 1)), patch, merge)  # [n, g*g, 6 P P]
        grid = torch.tensor([[1, g, g]], device=pixels.device).expand(b * c, 3)
        dtype = next(self.vision_tower.parameters()).dtype
        out = self.vision_tower(x.flatten(0, 1).to(dtype), grid_thw=grid)
        per = g * g // merge**2
        tokens = out.pooler_output.reshape(b, c * per, -1)
        deep = getattr(out, "deepstack_features", None)
        return tokens, ([d.reshape(b, c * per, -1) for d in deep] if deep else None)

    def prefix_positions(self, image_mask: torch.Tensor, per_image: int, token_mask: torch.Tensor):
        """Multimodal RoPE positions [3, b, lp] (t, h, w) and the next text position [b].

        A real camera's g x g block starting at s: t = s, h = s + row, w = s + col; the next block
        (or the text) starts at s + g. Missing cameras take no positions (as padding in
        get_rope_index); text continues 1D over its real tokens."""
        b, c = image_mask.shape
        g = int(round(per_image**0.5))
        cams = image_mask.long()
        start = (torch.cumsum(cams, 1) - cams) * g  # [b, c] start of each camera's block
        rows = torch.arange(g, device=cams.device).repeat_interleave(g)
        cols = torch.arange(g, device=cams.device).repeat(g)
        s = start.repeat_interleave(per_image, 1)  # [b, c * p]
        img = torch.stack([s, s + rows.repeat(c)[None], s + cols.repeat(c)[None]])  # [3, b, c * p]
        img = img * image_mask.repeat_interleave(per_image, 1)[None]
        text_start = cams.sum(1) * g
        txt = text_start[:, None] + torch.cumsum(token_mask.long(), 1) - 1
        pos = torch.cat([img, txt[None].expand(3, -1, -1)], 2)
        return pos, text_start + token_mask.sum(1)

    def make_expert(self, size: GemmaSize) -> nn.Module:
        return LlamaModel(llama_config(size, 8, self.rope_theta))  # its token embedding is unused


class Qwen25VLBackbone(QwenVLBackbone):
    family = "qwen2_5_vl"

    def hf_classes(self):
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLModel

        return Qwen2_5_VLConfig, Qwen2_5_VLModel, Qwen2_5_VLForConditionalGeneration

    def vision_config(self) -> dict:
        cfg = self.cfg
        return dict(
            super().vision_config(),
            # windows of 4 x 4 merged tokens (112 px at patch 14), full attention every 8th
            # block from the 8th (Qwen2.5-VL: 7, 15, 23, 31), the last one at least
            window_size=4 * cfg.token_merge * cfg.patch_size,
            fullatt_block_indexes=list(range(min(7, cfg.vision_depth - 1), cfg.vision_depth, 8)),
        )


class Qwen3VLBackbone(QwenVLBackbone):
    family = "qwen3_vl"
    interleaved_mrope = True

    def hf_classes(self):
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLModel

        return Qwen3VLConfig, Qwen3VLModel, Qwen3VLForConditionalGeneration

    def vision_config(self) -> dict:
        cfg = self.cfg
        grid = cfg.image_size // cfg.patch_size
        return dict(
            super().vision_config(),
            num_position_embeddings=grid * grid,
            deepstack_visual_indexes=list(cfg.deepstack),
        )

    def _load(self, path: Path, lm_head: bool) -> None:
        super()._load(path, lm_head)
        got = tuple(self.vision_tower.deepstack_visual_indexes)
        if got != self.cfg.deepstack:
            raise SpecError(
                f"pretrained backbone {path}: deepstack layers {list(got)} != preset {list(self.cfg.deepstack)}"
            )


class Qwen3VLMoeBackbone(Qwen3VLBackbone):
    family = "qwen3_vl_moe"

    def hf_classes(self):
        from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration, Qwen3VLMoeModel

        return Qwen3VLMoeConfig, Qwen3VLMoeModel, Qwen3VLMoeForConditionalGeneration

    def text_config(self, vocab_size: int) -> dict:
        cfg = self.cfg
        return dict(
            super().text_config(vocab_size),
            num_experts=cfg.moe_experts,
            num_experts_per_tok=cfg.moe_top_k,
            moe_intermediate_size=cfg.moe_mlp,
        )

    def _check_loaded(self, path: Path) -> None:
        super()._check_loaded(path)
        c = self.language_model.config
        got = (c.num_experts, c.num_experts_per_tok, c.moe_intermediate_size)
        want = (self.cfg.moe_experts, self.cfg.moe_top_k, self.cfg.moe_mlp)
        if got != want:
            raise SpecError(f"pretrained backbone {path}: (moe_experts, moe_top_k, moe_mlp) {got} != preset {want}")

    def moe_idle_params(self) -> int:
        """Routed experts a token is not sent to: (experts - top_k) / experts of every MoE block's experts."""
        c = self.language_model.config
        idle = 0
        for layer in self.language_model.layers:
            experts = getattr(layer.mlp, "experts", None)
            if experts is not None:
                n = sum(p.numel() for p in experts.parameters())
                idle += n * (c.num_experts - c.num_experts_per_tok) // c.num_experts
        return idle
