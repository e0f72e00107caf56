"""`vla bench infer`: action-chunk latency, prefix cache effect, FAST decoding, memory, size.

Setup as the issue states: H=50, 10 denoising steps, 2 cameras 96x96, batch 1, 2 CPU threads
(torch.set_num_threads). The camera frames are resized to the preset's model input size inside
the timed call (as the runtime does); the horizon is set to 50 whatever the preset's. Each
model runs in its own spawned process so its peak RSS is its own.
With `compile`, each pi0 preset is also timed through `torch.compile` (as `vla serve
--compile` runs it), with the one-time compile reported in seconds; its process then starts
from inductor's on-disk cache if an earlier run left one (compile_s says which it was). The
compiled path gets the same prefix / step split from a second, 1-step compiled chunk.
Models are randomly initialized from the presets (latency does not depend on the weights; for
FAST the decode is forced to a fixed token count, the typical length of a 50-step chunk).

The other backbone families (vla.model.backbones) are timed on their tiny presets the same way
(`backbones`, not compiled unless asked), with total and *active* parameters (a mixture-of-experts
decoder sends each token to top-k of its routed experts). The full-size presets are too big for
the CPU: `sizes` counts their parameters on the meta device (nothing allocated).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import resource
import statistics
import time

import torch

EMB = {"toy2d": (8, 8)}


def _median_ms(fn, reps: int) -> float:
    fn()
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1000


def _camera_frames() -> torch.Tensor:
    """The two 96x96 RGB camera images of the setup, uint8 [2, 96, 96, 3]."""
    return torch.randint(0, 256, (2, 96, 96, 3), dtype=torch.uint8)


def _pi0(preset_name: str, threads: int, reps: int, compile: bool) -> dict:
    from vla.config import load_preset
    from vla.model.layers.cross_attention import expert_context
    from vla.model.registry import model_type
    from vla.model.transforms import resize_with_pad

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    preset = load_preset(preset_name)
    pi0 = model_type("pi0")
    cfg = pi0.make_config({**preset.model, "embodiments": EMB, "cameras": 2, "horizon": 50})
    model = pi0.build(cfg, text_vocab=preset.text.vocab_size).eval()
    model.prepare_for_inference()
    batch = cfg.example_batch(1, vocab_size=preset.text.vocab_size)
    frames = _camera_frames()
    size = cfg.backbone.image_size

    def chunk(use_cache: bool, sample=model.sample_actions):  # frames -> model input size, then the whole denoising
        batch["images"] = resize_with_pad(frames, size)[None]
        return sample(batch, use_cache=use_cache)

    with torch.no_grad():
        cached = _median_ms(lambda: chunk(True), reps)
        uncached = _median_ms(lambda: chunk(False), max(3, reps // 3))
        valid = model.prefix(batch).valid

        def prefix_pass():  # resize included, as in chunk(); cross-attention: the projected keys/values too
            batch["images"] = resize_with_pad(frames, size)[None]
            cache = model.prefix_cache(model.prefix(batch))
            return expert_context(model.expert, model.cross_plan, cache) if model.cross_plan else cache

        prefix_ms = _median_ms(prefix_pass, reps)
        # one cached denoising step: what the 10 steps add to the prefix pass, per step
        step_ms = (cached - prefix_ms) / cfg.num_steps
    compiled = {}
    if compile:
        import functools

        def compiled_sampler(**kw):  # as the runtime compiles it (vla.runtime.policy)
            return torch.compile(functools.partial(model.denoise, **kw), dynamic=False)

        sample = compiled_sampler()
        with torch.inference_mode():
            t0 = time.perf_counter()
            chunk(True, sample)
            compile_s = time.perf_counter() - t0
            full = _median_ms(lambda: chunk(True, sample), reps)
            # The same split on the compiled path: a 1-step chunk is prefix + one step.
            one = compiled_sampler(num_steps=1)
            chunk(True, one)
            step_c = (full - _median_ms(lambda: chunk(True, one), reps)) / (cfg.num_steps - 1)
            compiled = {
                "chunk_ms_compiled": round(full, 1),
                "compile_s": round(compile_s, 1),
                "cached_step_ms_compiled": round(step_c, 2),
                "cached_step_over_prefix_compiled": round(step_c / (full - cfg.num_steps * step_c), 3),
            }
    return {
        "preset": preset_name,
        **_params(model),
        "backbone": cfg.backbone.family,
        "attach": cfg.attach,
        "model_image_size": size,
        "prefix_tokens": int(valid.sum()),
        "suffix_tokens": 1 + cfg.horizon,
        "chunk_ms_cached": round(cached, 1),
        "chunk_ms_uncached": round(uncached, 1),
        "prefix_pass_ms": round(prefix_ms, 2),
        "cached_step_ms": round(step_ms, 2),
        "cached_step_over_prefix": round(step_ms / prefix_ms, 3),
        **compiled,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _params(model) -> dict:
    total = sum(p.numel() for p in model.parameters())
    out = {"params_m": round(total / 1e6, 2)}
    idle = model.backbone.moe_idle_params()
    if idle:
        out["active_params_m"] = round((total - idle) / 1e6, 2)
    return out


def _sizes(preset_name: str) -> dict:
    """Total and active parameters of a preset at full size, counted on the meta device."""
    from vla.config import load_preset
    from vla.model.registry import model_type

    preset = load_preset(preset_name)
    mt = model_type(preset.type)
    cfg = mt.make_config({**preset.model, "embodiments": EMB})
    with torch.device("meta"):
        model = mt.build(cfg, text_vocab=preset.text.vocab_size)
    parts = {k: round(sum(p.numel() for p in getattr(model, k).parameters()) / 1e6, 1) for k in ("backbone", "expert")}
    total = sum(p.numel() for p in model.parameters())
    active = total - model.backbone.moe_idle_params()
    return {
        "preset": preset_name,
        "backbone": cfg.backbone.family,
        "attach": cfg.attach,
        "params_m": round(total / 1e6, 1),
        "active_params_m": round(active / 1e6, 1),
        "backbone_params_m": parts["backbone"],
        "expert_params_m": parts["expert"],
        "image_tokens_per_camera": cfg.backbone.tokens_per_image,
    }


def _fast(preset_name: str, threads: int, reps: int, tokens: int) -> dict:
    from vla.config import load_preset
    from vla.model.fast.model import ActionVocab, FastModel
    from vla.model.layers.attention import fuse_for_inference
    from vla.model.registry import model_type
    from vla.model.transforms import resize_with_pad

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    preset = load_preset(preset_name)
    cfg = model_type("fast").make_config({**preset.model, "embodiments": EMB, "cameras": 2})
    model = FastModel(cfg, ActionVocab(preset.text.vocab_size, {"toy2d": cfg.fast_vocab_size})).eval()
    fuse_for_inference(model.backbone.language_model)
    model.vocab.eos_id = -1  # never stop early: time exactly `tokens` decode steps
    b = 1
    frames = _camera_frames()
    batch = {
        "images": None,
        "image_mask": torch.ones(b, 2, dtype=torch.bool),
        "tokens": torch.randint(4, 100, (b, cfg.max_tokens)),
        "token_mask": torch.ones(b, cfg.max_tokens, dtype=torch.bool),
        "state": torch.randn(b, 8),
        "embodiment": ["toy2d"],
    }

    def chunk():
        batch["images"] = resize_with_pad(frames, cfg.backbone.image_size)[None]
        return model.generate(batch, max_new=tokens)

    ms = _median_ms(chunk, max(3, reps // 2))
    return {
        "preset": preset_name,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "decoded_tokens": tokens,
        "chunk_ms": round(ms, 1),
        "ms_per_token": round(ms / tokens, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _in_process(fn, *args):
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


BACKBONE_PRESETS = ("pi0-smolvlm2-tiny", "pi0-qwen25vl-tiny", "pi0-moe-tiny")
FULL_SIZE_PRESETS = ("pi0-paligemma", "pi0-smolvlm2", "pi0-qwen25vl-3b", "pi0-qwen3vl-moe")


def run(
    threads: int = 2,
    reps: int = 20,
    fast_tokens: int = 40,
    presets=("pi0-tiny", "pi0-small"),
    compile: bool = True,
    backbones=BACKBONE_PRESETS,
    compile_backbones: bool = False,
    sizes=FULL_SIZE_PRESETS,
) -> dict:
    results = {
        "benchmark": "infer",
        "setup": {"horizon": 50, "denoise_steps": 10, "cameras": "2 x 96x96", "batch": 1, "torch_threads": threads},
    }
    results["pi0"] = [_in_process(_pi0, p, threads, reps, compile) for p in presets]
    results["backbones"] = [_in_process(_pi0, p, threads, reps, compile_backbones) for p in backbones]
    results["sizes"] = [_in_process(_sizes, p) for p in sizes]
    results["fast"] = [_in_process(_fast, "fast-tiny", threads, reps, fast_tokens)]
    results["targets"] = {"pi0-tiny chunk_ms": 25, "cached_step_over_prefix": 0.2}
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}
    return results
