"""`vla bench load`: the peak memory of loading a checkpoint, on a full-size pi0.

The checkpoint: pi0 at the geometry of transformers' default `PI0Config()` (openpi's pi0_base:
PaliGemma-3B backbone, 300M-class expert) with random weights, written under OUT, either by
building vla's model at that geometry (`via="direct"`) or the way a user gets one, `vla convert`
of transformers' `PI0ForConditionalGeneration` (`via="convert"`, which measures the conversion
too). Both give the same checkpoint: 3.24B parameters, 12.95 GB in fp32 (transformers' model has
3.50B, 14.0 GB: convert drops its expert's unused token embedding, 257152 x 1024). `size="small"`
/ `"tiny"` shrink every width and depth for a test.

Every step runs in a fresh process (`python -m vla.bench.load STEP ARGS`), so each peak is the
step's own: the high-water mark of the process's resident memory (VmHWM), which counts pages of
a mapped file as well as private memory. Loading is what every consumer of a checkpoint does:
`Checkpoint(path)` (with its sha256 check) and `build_from_checkpoint`, then one read of every
weight, so a loader that left weights unread in a mapped file would still be charged for them.
The target: that peak <= 1.2x the bytes of model.safetensors (the process's own baseline, torch
and the libraries, included). Reported beside it: the peak after the runtime's
`prepare_for_inference` (what `vla serve` holds), which fuses q/k/v and gate/up into copies only
for models of up to vla.model.contract.FUSE_MAX_PARAMS parameters (a CPU latency trade for small
models, vla.model.layers.attention.FusedLayer), so a full-size pi0 serves at its loading peak.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from vla.outputs import claim_folder
from vla.spec import SpecError

log = logging.getLogger(__name__)

TARGET = 1.2
SIZES = ("full", "small", "tiny")
VIAS = ("direct", "convert")
MARKER = ".vla-bench-load"  # how an older vla marked its OUT (vla.outputs.claim_folder marks it now)
_RESULT = "VLA_BENCH_LOAD_RESULT "  # prefix of the one stdout line a step reports on


def pi0_config(size: str):
    """transformers' PI0Config: its defaults ("full", pi0_base), or every width and depth shrunk."""
    from transformers import PI0Config

    if size == "full":
        return PI0Config()
    if size not in SIZES:
        raise SpecError(f"size {size!r}: expected one of {list(SIZES)}")
    w, depth, vocab, hd = (512, 4, 16384, 64) if size == "small" else (64, 2, 512, 16)
    heads = w // hd
    return PI0Config(
        vlm_config={
            "text_config": {
                "hidden_size": w,
                "num_hidden_layers": depth,
                "intermediate_size": 4 * w,
                "num_attention_heads": heads,
                "num_key_value_heads": 1,
                "head_dim": hd,
                "vocab_size": vocab,
            },
            "vision_config": {
                "hidden_size": w // 2,
                "intermediate_size": 2 * w,
                "num_hidden_layers": depth // 2,
                "num_attention_heads": 2,
                "patch_size": 14,
                "image_size": 56,
                "vision_use_head": False,
            },
            "projection_dim": w,
            "image_token_id": vocab - 1,
        },
        dit_config={
            "hidden_size": w // 2,
            "num_hidden_layers": depth,
            "intermediate_size": 2 * w,
            "num_attention_heads": heads,
            "num_key_value_heads": 1,
            "head_dim": hd,
        },
    )


def run(out: str | Path, *, size: str = "full", via: str = "direct", keep: bool = False) -> dict:
    """Write the checkpoint under OUT/work, load it in a fresh process, report the peaks.
    OUT/work is removed afterwards unless `keep`."""
    if size not in SIZES:
        raise SpecError(f"--size {size!r}: expected one of {list(SIZES)}")
    if via not in VIAS:
        raise SpecError(f"--via {via!r}: expected one of {list(VIAS)}")
    out = claim_folder(out, "bench load", legacy=lambda p: (p / MARKER).exists())
    work, src, ckpt = out / "work", out / "work" / "source", out / "work" / "ckpt"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    result: dict = {"size": size, "via": via, "target_ratio": TARGET, "machine_memory_bytes": _machine_memory()}
    try:
        if via == "direct":
            log.info("building pi0 (%s) with random weights -> %s", size, ckpt)
            result["build"] = _step("build", size=size, src=str(src), ckpt=str(ckpt))
        else:
            log.info("building transformers' PI0 (%s) with random weights -> %s", size, src)
            result["build"] = _step("build_transformers", size=size, src=str(src))
            log.info("vla convert %s %s", src, ckpt)
            result["convert"] = _step("convert", src=str(src), ckpt=str(ckpt))
            shutil.rmtree(src)  # the disk back before loading
        log.info("loading %s in a fresh process", ckpt)
        load = _step("load", ckpt=str(ckpt))
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    n = load["checkpoint_bytes"]
    result.update(
        params=load["params"],
        checkpoint_bytes=n,
        peak_bytes=load["peak_bytes"],
        ratio=round(load["peak_bytes"] / n, 3),
        met=load["peak_bytes"] <= TARGET * n,
        load_seconds=load["load_seconds"],
        verify_seconds=load["verify_seconds"],
        baseline_bytes=load["baseline_bytes"],
        load_delta_ratio=round((load["peak_bytes"] - load["baseline_bytes"]) / n, 3),
        rss_after_load_bytes=load["rss_after_load_bytes"],
        inference_views_peak_bytes=load["inference_views_peak_bytes"],
        inference_views_ratio=round(load["inference_views_peak_bytes"] / n, 3),
        method=(
            "each step in a fresh process; peak = VmHWM (resident high-water mark, private and "
            "file-mapped pages) of Checkpoint() + build_from_checkpoint + one read of every weight, "
            "baseline (torch and libraries imported) included; inference_views_peak_bytes: the same "
            "process after model.prepare_for_inference(), as vla serve holds it"
        ),
    )
    if keep:
        result["checkpoint"] = str(ckpt)
    return result


# ---- the steps, each in its own process ----


def _step(name: str, **args) -> dict:
    cmd = [sys.executable, "-m", "vla.bench.load", name, json.dumps(args)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    lines = [ln[len(_RESULT) :] for ln in proc.stdout.splitlines() if ln.startswith(_RESULT)]
    if proc.returncode != 0 or not lines:
        why = "killed (out of memory?)" if proc.returncode < 0 else f"exit code {proc.returncode}"
        raise RuntimeError(f"vla bench load: step {name!r} failed ({why}); its stderr is above")
    report = json.loads(lines[-1])
    if "error" in report:
        raise SpecError(report["error"])
    return report


def _status(field: str) -> int:
    """VmHWM / VmRSS of this process in bytes (Linux); elsewhere ru_maxrss for both."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _machine_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _need_disk(path: Path, nbytes: int) -> None:
    free = shutil.disk_usage(path).free
    if free < nbytes * 1.05:
        raise SpecError(
            f"{path}: {free / 1e9:.1f} GB free, the checkpoint needs {nbytes / 1e9:.1f} GB: use another --out"
        )


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def _build(size: str, src: str, ckpt: str) -> dict:
    """vla's pi0 at the PI0Config geometry, as `vla convert` would configure it, random weights."""
    import torch

    from vla.config import load_preset
    from vla.model.interop.checkpoint import CheckpointConfig, save_checkpoint
    from vla.model.interop.convert import DEFAULT_PRESETS, default_embodiment, source_geometry
    from vla.model.registry import model_type

    t0 = time.perf_counter()
    pi0_config(size).save_pretrained(src)  # config.json only: the geometry, read as convert reads it
    base = load_preset(DEFAULT_PRESETS["pi0"])
    p = load_preset(DEFAULT_PRESETS["pi0"], {"model": _merge(base.model, source_geometry(Path(src)))})
    mt = model_type("pi0")
    cfg0 = mt.make_config(p.model)
    emb = default_embodiment(cfg0, None, cfg0.backbone.image_size)
    cfg = mt.make_config(p.model, embodiments={emb.name: (emb.state_dim, emb.action_dim)})
    vocab = cfg.backbone.vocab_size
    with torch.device("meta"):
        nbytes = sum(t.numel() * t.element_size() for t in mt.build(cfg, text_vocab=vocab).state_dict().values())
    _need_disk(Path(ckpt).parent, nbytes)
    torch.manual_seed(0)
    weights = mt.build(cfg, text_vocab=vocab).state_dict()
    rc = CheckpointConfig(
        "pi0",
        cfg,
        p.norm_mode,
        {emb.name: emb},
        preset=p.to_dict(),
        text_vocab=vocab,
        params=sum(t.numel() for t in weights.values()),
        source={"bench": f"vla bench load: random weights at transformers' PI0Config geometry ({size})"},
    )
    save_checkpoint(ckpt, weights=weights, config=rc, stats={}, text=None)
    return {"seconds": round(time.perf_counter() - t0, 1), "peak_bytes": _status("VmHWM")}


def _build_transformers(size: str, src: str) -> dict:
    import torch
    from transformers import PI0ForConditionalGeneration

    t0 = time.perf_counter()
    cfg = pi0_config(size)
    with torch.device("meta"):
        nbytes = sum(t.numel() * t.element_size() for t in PI0ForConditionalGeneration(cfg).state_dict().values())
    _need_disk(Path(src).parent, 2 * nbytes)  # the source and the converted checkpoint
    torch.manual_seed(0)
    PI0ForConditionalGeneration(cfg).save_pretrained(src)
    return {"seconds": round(time.perf_counter() - t0, 1), "peak_bytes": _status("VmHWM")}


def _convert(src: str, ckpt: str) -> dict:
    from vla.model.interop.convert import convert

    t0 = time.perf_counter()
    convert(src, ckpt)
    return {"seconds": round(time.perf_counter() - t0, 1), "peak_bytes": _status("VmHWM")}


def _load(ckpt: str) -> dict:
    import torch

    from vla.model.interop.checkpoint import Checkpoint, build_from_checkpoint

    baseline = _status("VmRSS")
    t0 = time.perf_counter()
    ck = Checkpoint(ckpt)
    t1 = time.perf_counter()
    model, _, _ = build_from_checkpoint(ck)
    t2 = time.perf_counter()
    with torch.no_grad():
        for t in model.state_dict().values():
            t.sum()  # every page read: weights still in a mapped file become resident here
    peak, rss = _status("VmHWM"), _status("VmRSS")
    model.prepare_for_inference()
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "checkpoint_bytes": (Path(ckpt) / "model.safetensors").stat().st_size,
        "baseline_bytes": baseline,
        "peak_bytes": peak,
        "rss_after_load_bytes": rss,
        "verify_seconds": round(t1 - t0, 1),
        "load_seconds": round(t2 - t0, 1),
        "inference_views_peak_bytes": _status("VmHWM"),
    }


STEPS = {"build": _build, "build_transformers": _build_transformers, "convert": _convert, "load": _load}


def main(argv: list[str]) -> None:
    name, args = argv[0], json.loads(argv[1])
    try:
        report = STEPS[name](**args)
    except SpecError as e:
        report = {"error": str(e)}
    print(_RESULT + json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
