"""`vla bench memory PRESET...`: GPU memory per GPU of each way to train a preset (vla.train.memory),
next to openpi's published requirements. No GPU and no weights needed: the model is built on the
meta device. With `measure=True` (`--measure`) the one-process setups also run real training
steps on random weights (the trainer's own Trainee, bf16 autocast on CUDA) and report the step
time and, on CUDA, the peak memory allocated, beside the estimate."""

from __future__ import annotations

import torch

from vla.config import load_preset
from vla.model.registry import model_type
from vla.train.memory import GB, METHOD, Setup, default_setups, estimate, layer_streams
from vla.train.trainer import TrainConfig

# openpi README, "Hardware requirements" (pi0 / pi0-FAST, one GPU).
OPENPI = {"inference": "> 8 GB", "lora": "> 22.5 GB", "full": "> 70 GB"}
KINDS = ("weights", "gradients", "optimizer", "ema", "activations", "total")


def run(
    presets: list[str],
    *,
    batch: int = 32,
    grad_checkpoint: bool = True,
    setups: list[Setup] | None = None,
    measure: bool = False,
    steps: int = 3,
    device: str | None = None,
) -> dict:
    out = {
        "batch": batch,
        "grad_checkpoint": grad_checkpoint,
        "unit": "GB (1e9 bytes) per GPU",
        "method": METHOD,
        "openpi_published": OPENPI,
        "presets": {},
    }
    for name in presets:
        p = load_preset(name)
        mt = model_type(p.type)
        tcfg = TrainConfig(**p.train)
        probe = mt.make_config(p.model)
        dims = probe.padded_dim or 32
        cfg = mt.make_config(p.model, embodiments={"robot": (dims, dims)})
        rows = []
        for s in setups or default_setups():
            r = estimate(
                mt,
                cfg,
                p.text.vocab_size,
                s,
                tcfg.lora,
                batch=batch,
                grad_checkpoint=grad_checkpoint,
                ema=tcfg.ema > 0,
                frozen_bf16=tcfg.frozen_bf16,
            )
            rows.append(
                {
                    "setup": s.name,
                    "gpus": s.gpus,
                    "fsdp": s.fsdp,
                    "lora_rank": s.lora_rank,
                    "freeze": s.freeze,
                    "batch_per_gpu": r["batch_per_gpu"],
                    "trainable_params": r["trainable_params"],
                    **{f"{k}_gb": round(r[k] / GB, 2) for k in KINDS},
                }
            )
            if measure and s.gpus == 1:
                rows[-1]["measured"] = measure_steps(
                    p, cfg, s, tcfg, batch=batch, steps=steps, device=device, grad_checkpoint=grad_checkpoint
                )
        with torch.device("meta"):
            params = sum(x.numel() for x in mt.build(cfg, text_vocab=p.text.vocab_size).parameters())
        out["presets"][p.name] = {
            "type": p.type,
            "params": params,
            "tokens_per_sample": [n for n, _ in layer_streams(mt, cfg)],
            "setups": rows,
        }
    return out


def measure_steps(
    preset, cfg, setup: Setup, tcfg, *, batch: int, steps: int, device: str | None, grad_checkpoint: bool
) -> dict:
    """Real training steps of `setup` on random weights and a random batch -> {"step_s" (median
    after one warm-up step), "peak_gb" (CUDA's max_memory_allocated; None on the CPU), "device"}."""
    import time
    from dataclasses import replace

    from vla.train.trainee import Trainee

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    mt = model_type(preset.type)
    tc = replace(
        tcfg, lora=replace(tcfg.lora, rank=setup.lora_rank), freeze=setup.freeze, grad_checkpoint=grad_checkpoint
    )
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    with torch.device(dev):
        model = mt.build(replace(cfg, grad_checkpoint=grad_checkpoint), text_vocab=preset.text.vocab_size)
    t = Trainee(model, tc, dev, kind=preset.type)
    t.model.train()
    example = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in t.model.example_batch(batch).items()}
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda" and tc.bf16):
            loss = t.loss(example, gen)
        t.step(loss, tc.lr)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(dev) / GB if dev.type == "cuda" else None
    del t, model, example, loss
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "device": str(dev),
        "step_s": round(sorted(times[1:])[len(times[1:]) // 2], 4),
        "peak_gb": None if peak is None else round(peak, 2),
    }


def markdown(result: dict) -> str:
    """The README's table of a `run` result."""
    measured = any("measured" in r for p in result["presets"].values() for r in p["setups"])
    head = "| preset | setup | batch / GPU | trainable | weights | grads | AdamW | EMA | activations | **total** |"
    lines = [head + (" measured peak | step s |" if measured else ""), "|---" * (10 + 2 * measured) + "|"]
    for name, p in result["presets"].items():
        for r in p["setups"]:
            cells = [name, r["setup"], str(r["batch_per_gpu"]), f"{r['trainable_params'] / 1e9:.2f} B"]
            cells += [f"{r[f'{k}_gb']:.1f}" for k in KINDS[:-1]] + [f"**{r['total_gb']:.1f}**"]
            if measured:
                m = r.get("measured") or {}
                cells.append("-" if m.get("peak_gb") is None else f"{m['peak_gb']:.1f}")
                cells.append("-" if "step_s" not in m else f"{m['step_s']:.3f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
