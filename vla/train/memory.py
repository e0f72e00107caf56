"""GPU memory of a training setup, computed from the model itself (no GPU needed).

Per GPU, in bytes, for the trainer as it runs on CUDA (bf16 autocast over float32 trainable
weights, AdamW, EMA, gradient checkpointing):

    weights      float32 trainable + frozen (bfloat16 with frozen_bf16, float32 under FSDP),
                 sharded 1/N under FSDP; plus the bfloat16 working copies: autocast's cached
                 cast of every trainable weight during the forward (one process / DDP), or the
                 gathered units under FSDP (the root unit for the whole step, two layer units)
    gradients    float32, trainable only (DDP: bucket views, no second copy); 1/N under FSDP
                 plus one unit's unsharded bfloat16 gradient and its float32 reduce copy
    optimizer    AdamW's two float32 moments per trainable parameter (1/N under FSDP)
    ema          one float32 copy per trainable parameter (1/N under FSDP)
    activations  what autograd keeps for the backward at the per-GPU batch (global batch / GPUs)

Parameters are counted on the model built on the meta device with the setup's LoRA and freezing
applied (vla.train.lora / freeze), so the counts are the trainer's. Activations are measured,
not guessed: the model's own training forward (`compute_loss`) runs on the meta device in
bfloat16 at the real token counts and widths, and a saved-tensor hook adds up the bytes of every
tensor the loss's graph still keeps at the end of the forward (each storage once, parameters
excluded; a branch that does not reach the loss is freed during the forward, as on the GPU). Attention is counted as CUDA's
memory-efficient kernel keeps it (queries, keys, values, output, log-sum-exp and the mask; no
L x L matrix). Three runs - one Gemma layer and one vision layer, then two of either - give the
bytes per layer and the rest; with gradient checkpointing the trainer keeps each layer's input
hidden states and recomputes one layer at a time in the backward, so

    activations = rest + depth * (layer inputs) + vision_depth * (vision layer inputs, when
                  the tower trains) + max(one Gemma layer, one vision layer)

Not counted: the CUDA context and allocator fragmentation (typically 0.5-2 GB), the data
loader's pinned batches, transient gradient buffers inside one layer's backward.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode

from vla.train.freeze import set_trainable
from vla.train.lora import apply_lora

GB = 1e9
METHOD = (
    "parameters counted on the model built on the meta device with the setup's LoRA/freezing; activations "
    "measured by running the training forward on the meta device in bfloat16 at the real token counts with a "
    "saved-tensor hook (attention as CUDA's memory-efficient kernel keeps it), per layer from 1- and 2-layer "
    "runs, with per-layer gradient checkpointing; float32 trainable weights, gradients, AdamW moments and EMA; "
    "frozen weights bfloat16 (float32 sharded under FSDP); not counted: CUDA context, fragmentation"
)


@dataclass(frozen=True)
class Setup:
    name: str
    gpus: int = 1
    fsdp: bool = False
    lora_rank: int = 0
    freeze: str = "none"


def default_setups() -> list[Setup]:
    return [
        Setup("full fine-tune, 1 GPU (DDP: the same per GPU)"),
        Setup("full, FSDP over 2", gpus=2, fsdp=True),
        Setup("full, FSDP over 4", gpus=4, fsdp=True),
        Setup("full, FSDP over 8", gpus=8, fsdp=True),
        Setup("LoRA 16/32 (openpi's), 1 GPU", lora_rank=16),
        Setup("LoRA 16/32 + frozen vision, 1 GPU", lora_rank=16, freeze="vision"),
        Setup("frozen VLM (expert only), 1 GPU", freeze="vlm"),
    ]


class _Attention(torch.autograd.Function):
    """What CUDA's memory-efficient kernel keeps for the backward: q, k, v, the output, the
    float32 log-sum-exp per query and the mask (no L x L probabilities)."""

    @staticmethod
    def forward(ctx, q, k, v, mask):
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse, *([mask] if mask is not None else []))
        return out

    @staticmethod
    def backward(ctx, grad):  # never run: the meta forward only counts
        raise NotImplementedError


class _EfficientAttention(TorchFunctionMode):
    """Within the mode, F.scaled_dot_product_attention keeps what CUDA's memory-efficient kernel
    keeps for the backward (the meta device would take the math path, which keeps the L x L
    probabilities). A torch function mode, not a patch of torch.nn.functional: it applies only
    on the thread that enters it and only until it exits; every other call passes through."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, k, v, *rest = args
            return _Attention.apply(q, k, v, rest[0] if rest else kwargs.get("attn_mask"))
        return func(*args, **kwargs)


def _build(mt, cfg, text_vocab: int, lora, freeze: str) -> nn.Module:
    with torch.device("meta"):
        model = mt.build(cfg, text_vocab=text_vocab)
        if lora.enabled:
            apply_lora(model, lora, mt.name)
    set_trainable(model, freeze, lora, report=False)
    return model


def _saved_bytes(mt, cfg, text_vocab: int, lora, freeze: str, batch: int) -> int:
    """Bytes autograd keeps for the backward of one training forward (see the module docstring)."""
    model = _build(mt, cfg, text_vocab, lora, freeze).to(torch.bfloat16)
    # Storages are told apart by StorageWeakRef (equal for views of one storage); data_ptr()
    # cannot serve: it is 0 for every storage on the meta device.
    params = {StorageWeakRef(p.untyped_storage()) for p in model.parameters()}
    example = cfg.example_batch(batch, vocab_size=min(text_vocab, 300))
    example = {k: v.to("meta") if torch.is_tensor(v) else v for k, v in example.items()}
    example["images"] = example["images"].to(torch.bfloat16)
    saved = []

    def pack(t):
        saved.append(weakref.ref(t))
        return t

    model.train()
    with _EfficientAttention(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model.compute_loss(example, torch.Generator().manual_seed(0))
    # What the graph of the loss still holds (a branch that does not reach the loss is freed
    # during the forward, as on the GPU); each storage once.
    kept = {}
    for ref in saved:
        t = ref()
        if t is not None and (key := StorageWeakRef(t.untyped_storage())) not in params:
            kept[key] = t.untyped_storage().nbytes()
    del loss
    return sum(kept.values())


def _units(model: nn.Module) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """FSDP units as vla.train.fsdp makes them -> ([(elements, trainable)] per layer unit, root)."""
    from vla.train.fsdp import decoder_units, vision_layers

    layers = [u for st in model.decoder_stacks() for layer in st.layers for u in decoder_units(layer)]
    layers += [[v] for v in vision_layers(model)]
    seen, units = set(), []
    for mods in layers:
        ps = [p for m in mods for p in m.parameters()]
        seen.update(id(p) for p in ps)
        units.append((sum(p.numel() for p in ps), sum(p.numel() for p in ps if p.requires_grad)))
    rest = [p for p in model.parameters() if id(p) not in seen]
    return units, (sum(p.numel() for p in rest), sum(p.numel() for p in rest if p.requires_grad))


def estimate(
    mt,
    cfg,
    text_vocab: int,
    setup: Setup,
    lora,
    *,
    batch: int = 32,
    grad_checkpoint: bool = True,
    ema: bool = True,
    frozen_bf16: bool = True,
) -> dict:
    """One setup -> {"trainable_params", "batch_per_gpu", bytes per kind, "total"} (bytes per GPU)."""
    lora = replace(lora, rank=setup.lora_rank)
    model = _build(mt, cfg, text_vocab, lora, setup.freeze)
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n = setup.gpus if setup.fsdp else 1
    b = max(1, batch // setup.gpus)
    if setup.fsdp:
        units, (root, root_train) = _units(model)
        big = max(u[0] for u in units)
        big_train = max(u[1] for u in units)
        weights = 4 * total / n + 2 * root + 2 * 2 * big
        grads = 4 * train / n + (2 + 4) * (root_train + big_train)
    else:
        frozen_bytes = 2 if frozen_bf16 else 4
        weights = 4 * train + frozen_bytes * (total - train) + 2 * train
        grads = 4 * train
    acts = _activations(mt, cfg, text_vocab, lora, setup.freeze, b, grad_checkpoint)
    out = {
        "trainable_params": train,
        "batch_per_gpu": b,
        "weights": weights,
        "gradients": grads,
        "optimizer": 8 * train / n,
        "ema": 4 * train / n if ema else 0.0,
        "activations": acts,
    }
    out["total"] = sum(out[k] for k in ("weights", "gradients", "optimizer", "ema", "activations"))
    return out


def _activations(mt, cfg, text_vocab: int, lora, freeze: str, b: int, grad_checkpoint: bool) -> float:
    s11 = _saved_bytes(mt, cfg.with_depths(1, 1), text_vocab, lora, freeze, b)
    gemma = _saved_bytes(mt, cfg.with_depths(2, 1), text_vocab, lora, freeze, b) - s11
    vision = _saved_bytes(mt, cfg.with_depths(1, 2), text_vocab, lora, freeze, b) - s11
    rest = s11 - gemma - vision
    depth, vdepth = cfg.backbone.text.depth, cfg.backbone.vision_depth
    if not grad_checkpoint:
        return rest + depth * gemma + vdepth * vision
    layer_in = 2 * b * sum(n * width for n, width in layer_streams(mt, cfg))
    vision_in = 2 * b * cfg.cameras * cfg.backbone.tokens_per_image * cfg.backbone.vision_width if vision > 0 else 0
    return rest + depth * layer_in + vdepth * vision_in + max(gemma, vision)


def layer_streams(mt, cfg) -> list[tuple[int, int]]:
    """(tokens per sample, width) of each stream through the decoder layers, as the model type
    states them (vla.model.contract.ActionModel.layer_streams): pi0's prefix (the images of every
    camera slot + text + any grounding tokens) and suffix (state token + actions); FAST's one
    sequence (prefix + state token + action tokens)."""
    return mt.model.layer_streams(cfg)
