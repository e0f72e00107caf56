"""A preset's [train] table: `TrainConfig`, how a run's request resolves it (`train_config`), and
the learning-rate schedule it defines (`lr_at`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

from vla.config import Preset
from vla.spec import SpecError
from vla.train.freeze import check_mode
from vla.train.lora import LoraSpec

UNCAPPED_STEPS = 10**9  # the step count of a run limited by time alone


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-4
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    clip: float = 1.0
    ema: float = 0.99  # 0 disables
    workers: int = 2
    seed: int = 0
    log_every: int = 10
    save_every: int = 0  # 0: only at the end
    bf16: bool = True  # autocast on CUDA only
    grad_checkpoint: bool = False
    fast_fit_chunks: int = 2000
    freeze: str = "none"  # vla.train.freeze: "none", "vision", "vlm" (expert-only, as SmolVLA)
    frozen_bf16: bool = True  # on CUDA with bf16: frozen weights stored in bfloat16 (vla.train.trainee)
    lora: LoraSpec = field(default_factory=LoraSpec)  # vla.train.lora; rank 0 = off
    image_shift: int = 0  # pixels of random shift of every training image (vla.train.augment); 0 = off
    # Training-time real-time chunking (pi0, pi05; vla.model.rtc): each sample's first d actions,
    # d uniform over 0..rtc_max_delay, are given clean and left out of the loss. Recorded in the
    # checkpoint's model config, so a server offers RTC mode "trained". 0 = off.
    rtc_max_delay: int = 0

    def __post_init__(self):
        object.__setattr__(self, "betas", tuple(self.betas))
        if isinstance(self.lora, dict):
            try:
                object.__setattr__(self, "lora", LoraSpec(**self.lora))
            except TypeError as e:
                raise SpecError(f"train.lora: {e}") from None
        check_mode(self.freeze)
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise SpecError(
                f"train: steps, batch_size and lr must be positive (got {self.steps}, {self.batch_size}, {self.lr})"
            )
        if isinstance(self.rtc_max_delay, bool) or not isinstance(self.rtc_max_delay, int) or self.rtc_max_delay < 0:
            raise SpecError(f"train: rtc_max_delay must be an int >= 0 (policy steps), got {self.rtc_max_delay!r}")
        if self.image_shift < 0:
            raise SpecError(f"train: image_shift must be >= 0, got {self.image_shift}")
        if not 0 <= self.ema < 1:
            raise SpecError(f"train: ema must be in [0, 1), got {self.ema}")


def train_config(
    preset: Preset,
    *,
    steps: int | None = None,
    max_seconds: float | None = None,
    lora_rank: int | None = None,
    world: int = 1,
) -> TrainConfig:
    """The preset's [train] table with the run's overrides: `steps`, a LoRA rank, and, for a run
    limited by `max_seconds` alone, no step cap (the clock ends it). The global batch is split
    over the `world` processes, so it must divide."""
    if max_seconds and not steps:
        steps = UNCAPPED_STEPS
    known = sorted(f.name for f in fields(TrainConfig))
    unknown = sorted(set(preset.train) - set(known))
    if unknown:
        raise SpecError(f"preset {preset.name}: unknown [train] keys {unknown}; known: {known}")
    tcfg = TrainConfig(**{**preset.train, **({"steps": steps} if steps else {})})
    if lora_rank is not None:
        tcfg = replace(tcfg, lora=replace(tcfg.lora, rank=lora_rank))
    if tcfg.batch_size % world:
        raise SpecError(f"batch_size {tcfg.batch_size} must be divisible by the {world} processes")
    return tcfg


def lr_at(step: int, cfg: TrainConfig, time_frac: float = 0.0) -> float:
    """Warmup then cosine to min_lr_ratio * lr. time_frac: the share of a wall-clock budget used so
    far; the cosine follows whichever is further along, steps or time, so a time-limited run
    still ends at the low learning rate."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = max((step - cfg.warmup) / max(1, cfg.steps - cfg.warmup), time_frac)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))
