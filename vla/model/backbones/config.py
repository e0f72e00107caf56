"""The VLM backbone's config, and `Backbone(cfg)`: the adapter of the config's family.

    images -> vision tower (-> projector) -> image tokens   [b, c * p, d]
    token ids -> the decoder's token embedding          -> text tokens    [b, l, d]
    both -> the decoder layers (run by vla.model.layers.attention, jointly with an action expert)

Families (vla.model.backbones, one file each, one small interface in backbones/base.py):
    paligemma     SigLIP -> linear projector -> Gemma (pi0 / pi0.5 as published)
    smolvlm       SigLIP-style tower -> pixel shuffle + linear -> Llama (SmolVLM2; SmolVLA's backbone)
    qwen2_5_vl    windowed ViT with a 2x2 patch merger -> Qwen2 decoder with multimodal RoPE
    qwen3_vl      ViT + merger + DeepStack features -> Qwen3 decoder (q/k norms), multimodal RoPE
    qwen3_vl_moe  qwen3_vl with a mixture-of-experts decoder (top-k routed MLPs)

Built from a config (random init, tiny sizes for CPU) or loaded from a local checkpoint directory
in the family's Hugging Face layout (`BackboneConfig(family=..., pretrained="path")`); never
downloads. State-dict keys are `backbone.vision_tower.*`, `backbone.projector.*` (families with a
separate projector) and `backbone.language_model.*` (the decoder stack) for every family.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from transformers import GemmaConfig

from vla.spec import SpecError

FAMILIES = ("paligemma", "smolvlm", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")


@dataclass(frozen=True)
class GemmaSize:
    """Width/depth/heads of one decoder stack (the backbone's language model or the action expert).
    Named for Gemma, pi0's decoder; every family's decoder is sized with it."""

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

    def decoder_fields(self, vocab_size: int) -> dict:
        """The transformers config fields every family's decoder takes from this size (Gemma,
        Llama, Qwen2/3 text configs name them alike); each family adds its own (activation, RoPE)."""
        return dict(
            vocab_size=vocab_size,
            hidden_size=self.width,
            intermediate_size=self.mlp,
            num_hidden_layers=self.depth,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads,
            head_dim=self.head_dim,
            max_position_embeddings=8192,
            **self.init_kwargs(),
        )

    def gemma_config(self, vocab_size: int) -> GemmaConfig:
        return GemmaConfig(
            **self.decoder_fields(vocab_size),
            hidden_activation="gelu_pytorch_tanh",
            attn_implementation="sdpa",
        )

    def init_kwargs(self) -> dict:
        return {"initializer_range": self.init_std} if self.init_std else {}


DecoderSize = GemmaSize  # the family-neutral name


@dataclass(frozen=True)
class BackboneConfig:
    image_size: int = 224
    patch_size: int = 14
    vision_width: int = 1152
    vision_depth: int = 27
    vision_heads: int = 16
    vision_mlp: int = 4304
    # The decoder layers *used*: a pretrained checkpoint with more keeps its first `text.depth`
    # (SmolVLA runs the first 16 of SmolVLM2's 32); its width and heads must match.
    text: GemmaSize = GemmaSize(width=2048, depth=18, mlp=16384)
    vocab_size: int = 257152
    # A local checkpoint dir in the family's Hugging Face layout; sizes above must then match it.
    pretrained: str | None = None
    # How a randomly initialized vision tower starts its (learned) patch position embeddings:
    # "sincos" = 2D sine-cosine of each patch's row and column (geometry given from step 0),
    # "random" = the transformers default (normal noise; the layout must be learned from data).
    # (Qwen2.5-VL's tower has no learned table: rotary positions only.)
    vision_pos_init: str = "sincos"
    family: str = "paligemma"  # one of FAMILIES
    # Patches merged into one image token, per side: SmolVLM's pixel shuffle (4 in SmolVLM2:
    # 1024 patches -> 64 tokens), the Qwen-VL patch merger (2). PaliGemma: 1.
    token_merge: int = 1
    # RoPE base of a randomly initialized decoder (a pretrained one keeps its own). The action
    # expert shares it, as joint attention needs. PaliGemma keeps Gemma's 10000 regardless.
    rope_theta: float = 10000.0
    # Mixture-of-experts decoder (qwen3_vl_moe): routed experts, experts per token, their MLP width.
    moe_experts: int = 0
    moe_top_k: int = 0
    moe_mlp: int = 0
    # Qwen3-VL DeepStack: vision layers whose merged features are added to the image tokens'
    # hidden states after decoder layers 0, 1, ... (one each).
    deepstack: tuple = ()

    def __post_init__(self):
        if isinstance(self.text, dict):
            object.__setattr__(self, "text", GemmaSize(**self.text))
        object.__setattr__(self, "deepstack", tuple(int(i) for i in self.deepstack))
        if self.family not in FAMILIES:
            raise SpecError(f"BackboneConfig: unknown family {self.family!r}; supported: {list(FAMILIES)}")
        if self.token_merge < 1:
            raise SpecError(f"BackboneConfig: token_merge must be >= 1, got {self.token_merge}")
        if self.family == "paligemma" and self.token_merge != 1:
            raise SpecError(
                f"BackboneConfig: paligemma has no token merge: expected token_merge 1, got {self.token_merge}"
            )
        if self.image_size % self.patch_size:
            raise SpecError(
                f"BackboneConfig: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if (self.image_size // self.patch_size) % self.token_merge:
            raise SpecError(
                f"BackboneConfig: the patch grid ({self.image_size // self.patch_size} per side) is not a "
                f"multiple of token_merge {self.token_merge}"
            )
        if self.vision_width % self.vision_heads:
            raise SpecError(
                f"BackboneConfig: vision_width {self.vision_width} not divisible by vision_heads {self.vision_heads}"
            )
        if self.vision_pos_init not in ("sincos", "random"):
            raise SpecError(
                f"BackboneConfig: vision_pos_init must be 'sincos' or 'random', got {self.vision_pos_init!r}"
            )
        moe = (self.moe_experts, self.moe_top_k, self.moe_mlp)
        if self.family == "qwen3_vl_moe":
            if min(moe) < 1 or self.moe_top_k > self.moe_experts:
                raise SpecError(
                    f"BackboneConfig: qwen3_vl_moe needs moe_experts >= moe_top_k >= 1 and moe_mlp >= 1, got {moe}"
                )
        elif any(moe):
            raise SpecError(
                f"BackboneConfig: moe_experts/moe_top_k/moe_mlp are for family 'qwen3_vl_moe', "
                f"not {self.family!r} (got {moe})"
            )
        if self.deepstack and not self.family.startswith("qwen3_vl"):
            raise SpecError(f"BackboneConfig: deepstack is Qwen3-VL's; family {self.family!r} has none")
        bad = [i for i in self.deepstack if not 0 <= i < self.vision_depth]
        if bad or len(self.deepstack) > self.text.depth:
            raise SpecError(
                f"BackboneConfig: deepstack layers {list(self.deepstack)} must be vision layers "
                f"(0..{self.vision_depth - 1}), at most one per decoder layer ({self.text.depth})"
            )
        if self.family == "qwen2_5_vl" and self.text.width != self.text.heads * self.text.head_dim:
            raise SpecError(
                f"BackboneConfig: Qwen2.5-VL's decoder has width = heads * head_dim: expected "
                f"{self.text.heads * self.text.head_dim}, got width {self.text.width}"
            )
        if self.family.startswith("qwen") and self.text.head_dim % 8:
            raise SpecError(
                f"BackboneConfig: multimodal RoPE splits head_dim in sections: head_dim must be a "
                f"multiple of 8, got {self.text.head_dim}"
            )

    @property
    def tokens_per_image(self) -> int:
        return (self.image_size // self.patch_size) ** 2 // self.token_merge**2

    def to_dict(self) -> dict:
        return asdict(self)
