"""`vla bench memory`: per-GPU memory from the model built on the meta device."""

import torch
from torch import nn
from typer.testing import CliRunner

from vla.bench.memory import run
from vla.config import load_preset
from vla.model.registry import model_type
from vla.train.lora import GEMMA_TARGETS
from vla.train.memory import GB, Setup, estimate
from vla.train.trainer import TrainConfig


def _meta(name):
    p = load_preset(name)
    mt = model_type(p.type)
    cfg = mt.make_config(p.model, embodiments={"robot": (32, 32)})
    with torch.device("meta"):
        model = mt.build(cfg, text_vocab=p.text.vocab_size)
    return p, mt, cfg, model


def test_pi0_paligemma_counts_match_the_model_and_openpis_lora():
    p, mt, cfg, model = _meta("pi0-paligemma")
    total = sum(x.numel() for x in model.parameters())
    assert 3.2e9 < total < 3.3e9  # PaliGemma-3B (2.9B) + the 300M-class expert
    # LoRA by hand: rank 16 on the VLM's Gemma projections, 32 on the expert's; both stacks frozen otherwise.
    lora = 0
    for prefix, rank in (("backbone.language_model.", 16), ("expert.", 32)):
        for n, m in model.named_modules():
            if n.startswith(prefix) and isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in GEMMA_TARGETS:
                lora += rank * (m.in_features + m.out_features)
    stacks = sum(
        x.numel() for n, x in model.named_parameters() if n.startswith(("backbone.language_model.", "expert."))
    )
    lora_row = estimate(mt, cfg, p.text.vocab_size, Setup("lora", lora_rank=16), TrainConfig(**p.train).lora)
    assert lora_row["trainable_params"] == total - stacks + lora
    full = estimate(mt, cfg, p.text.vocab_size, Setup("full"), TrainConfig(**p.train).lora)
    assert full["trainable_params"] == total
    # fp32 weights + grads + two AdamW moments + EMA = 20 bytes per parameter, plus autocast's bf16 copies
    assert full["weights"] + full["gradients"] + full["optimizer"] + full["ema"] == 22 * total
    assert 65 * GB < full["total"] < 95 * GB  # openpi: > 70 GB for a full fine-tune
    assert 15 * GB < lora_row["total"] < 30 * GB  # openpi: > 22.5 GB with LoRA
    assert 0 < lora_row["activations"] and lora_row["total"] < full["total"]


def test_fsdp_shards_and_activations_scale_with_the_batch():
    p, mt, cfg, _ = _meta("pi0-paligemma")
    lora = TrainConfig(**p.train).lora
    rows = [estimate(mt, cfg, p.text.vocab_size, Setup(f"fsdp{n}", gpus=n, fsdp=n > 1), lora) for n in (1, 2, 4, 8)]
    assert [r["batch_per_gpu"] for r in rows] == [32, 16, 8, 4]
    assert all(a["total"] > b["total"] for a, b in zip(rows, rows[1:]))
    assert all(a["optimizer"] == 2 * b["optimizer"] for a, b in zip(rows[1:], rows[2:]))
    # Activations are measured at each batch size: linear in it (every kept tensor is per sample)
    assert abs(rows[1]["activations"] / rows[2]["activations"] - 2) < 0.02
    no_ckpt = estimate(mt, cfg, p.text.vocab_size, Setup("x", gpus=8, fsdp=True), lora, grad_checkpoint=False)
    assert no_ckpt["activations"] > 3 * rows[3]["activations"]  # checkpointing is what makes batch 32 fit


def test_bench_memory_command_prints_json_and_markdown(tmp_path):
    from vla.cli import app

    r = run(["pi0-tiny"], batch=8, setups=[Setup("full"), Setup("lora", lora_rank=4), Setup("vlm", freeze="vlm")])
    rows = r["presets"]["pi0-tiny"]["setups"]
    assert [x["setup"] for x in rows] == ["full", "lora", "vlm"]
    assert rows[0]["trainable_params"] == r["presets"]["pi0-tiny"]["params"]
    assert rows[0]["trainable_params"] > max(rows[1]["trainable_params"], rows[2]["trainable_params"])
    res = CliRunner().invoke(
        app, ["bench", "memory", "pi0-tiny", "--batch", "4", "--markdown", "--json", str(tmp_path / "m.json")]
    )
    assert res.exit_code == 0, res.output
    assert "| pi0-tiny | LoRA 16/32 (openpi's), 1 GPU | 4 |" in res.output and (tmp_path / "m.json").exists()
    bad = CliRunner().invoke(app, ["bench", "memory", "nope"])
    assert bad.exit_code == 2 and "unknown policy preset 'nope'" in bad.output


def test_measure_runs_real_training_steps_beside_the_estimate():
    """--measure (the GPU check): real steps of the one-GPU setups; here on the CPU (no peak memory)."""
    from vla.bench.memory import markdown

    r = run(
        ["pi0-tiny"],
        batch=4,
        setups=[Setup("lora", lora_rank=2), Setup("fsdp", gpus=2, fsdp=True)],
        measure=True,
        steps=1,
        device="cpu",
    )
    lora, fsdp = r["presets"]["pi0-tiny"]["setups"]
    assert lora["measured"]["device"] == "cpu" and lora["measured"]["step_s"] > 0
    assert lora["measured"]["peak_gb"] is None and "measured" not in fsdp  # FSDP needs torchrun
    table = markdown(r)
    assert "measured peak | step s |" in table and table.splitlines()[1].count("|") == 13
