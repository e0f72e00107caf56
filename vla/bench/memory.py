"""`vla bench memory PRESET...`: GPU memory per GPU of each way to train a preset (vla.train.memory),
next to openpi's published requirements. No GPU and no weights needed: the model is built on the
meta device."""

from __future__ import annotations

import torch

from vla.config import load_preset
from vla.model.registry import model_type
from vla.train.memory import GB, METHOD, Setup, default_setups, estimate, layer_streams
from vla.train.trainer import TrainConfig

# openpi README, "Hardware requirements" (pi0 / pi0-FAST, one GPU).
OPENPI = {"inference": "> 8 GB", "lora": "> 22.5 GB", "full": "> 70 GB"}
KINDS = ("weights", "gradients", "optimizer", "ema", "activations", "total")


def run(presets: list[str], *, batch: int = 32, grad_checkpoint: bool = True,
        setups: list[Setup] | None = None) -> dict:
    out = {"batch": batch, "grad_checkpoint": grad_checkpoint, "unit": "GB (1e9 bytes) per GPU",
           "method": METHOD, "openpi_published": OPENPI, "presets": {}}
    for name in presets:
        p = load_preset(name)
        mt = model_type(p.type)
        tcfg = TrainConfig(**p.train)
        probe = mt.make_config(p.model)
        dims = getattr(probe, "shared_head_dim", 0) or 32
        cfg = mt.make_config(p.model, embodiments={"robot": (dims, dims)})
        rows = []
        for s in setups or default_setups():
            r = estimate(mt, cfg, p.text.vocab_size, s, tcfg.lora, batch=batch, grad_checkpoint=grad_checkpoint,
                         ema=tcfg.ema > 0, frozen_bf16=tcfg.frozen_bf16)
            rows.append({"setup": s.name, "gpus": s.gpus, "fsdp": s.fsdp, "lora_rank": s.lora_rank, "freeze": s.freeze,
                         "batch_per_gpu": r["batch_per_gpu"], "trainable_params": r["trainable_params"],
                         **{f"{k}_gb": round(r[k] / GB, 2) for k in KINDS}})
        with torch.device("meta"):
            params = sum(x.numel() for x in mt.build(cfg, text_vocab=p.text.vocab_size).parameters())
        out["presets"][p.name] = {"type": p.type, "params": params,
                                  "tokens_per_sample": [n for n, _ in layer_streams(mt, cfg)], "setups": rows}
    return out


def markdown(result: dict) -> str:
    """The README's table of a `run` result."""
    lines = ["| preset | setup | batch / GPU | trainable | weights | grads | AdamW | EMA | activations | **total** |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, p in result["presets"].items():
        for r in p["setups"]:
            cells = [name, r["setup"], str(r["batch_per_gpu"]), f"{r['trainable_params'] / 1e9:.2f} B"]
            cells += [f"{r[f'{k}_gb']:.1f}" for k in KINDS[:-1]] + [f"**{r['total_gb']:.1f}**"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
