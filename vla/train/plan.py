"""A run, planned before any step: what model, on what data, with which stats, tokenizer and
assets, from which step. One builder per way to start, each runnable (and tested) without training:

    plan_fresh(preset, tcfg, data)               a new model: geometry from the preset, camera slots
                                                 from the data; stats, tokenizer and assets fitted
    plan_from_init(preset, tcfg, init, data)     --init CKPT: its geometry (checked against the
                                                 preset), tokenizer, assets, stats and weights
                                                 (vla.train.init); stats of new robots from the data
    plan_resume(preset, tcfg, out, data)         --resume: everything from the checkpoint at OUT,
                                                 its train_state.pt included, from its step on

The model's geometry is settled before any data is read, so a mismatch costs nothing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from vla.config import Preset
from vla.data.sampler import WindowDataset
from vla.data.stats import NormStats, compute_norm_stats
from vla.data.store import EpisodeStore
from vla.model.interop.checkpoint import Checkpoint, CheckpointConfig
from vla.model.registry import model_type
from vla.model.text import TextTokenizer
from vla.model.transforms import Transforms, build_transforms
from vla.spec import Embodiment, SpecError
from vla.train.config import TrainConfig
from vla.train.init import check_same_type, init_config, init_inputs
from vla.train.lora import LoraSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    preset: Preset
    train: TrainConfig
    model: Any  # the type's config (vla.model.registry): the data's embodiments and camera slots filled in
    embodiments: dict[str, Embodiment]
    dataset: WindowDataset  # the windows of `data`, decoded at the model's input size
    stats: NormStats
    text: TextTokenizer
    text_vocab: int  # rows of the token embedding
    assets: dict  # the model type's data-derived assets (FAST tokenizers)
    norm_mode: str
    data: tuple[str, ...]
    weights: list[float] | None = None  # mixture weights, one per store
    start: int = 0  # the first step to train
    state: dict | None = None  # train_state.pt of the run resumed: weights, optimizer, EMA
    init: Checkpoint | None = None  # --init: its weights go into the new model
    source: dict = field(default_factory=dict)  # provenance recorded in config.json

    def transforms(self) -> Transforms:
        """The model's input transforms (resize, normalize, pad, tokenize) for this run's data."""
        return build_transforms(
            model_type(self.preset.type).model,
            self.model,
            embodiments=self.embodiments,
            stats=self.stats,
            norm_mode=self.norm_mode,
            text=self.text,
            assets=self.assets,
            text_vocab=self.text_vocab,
        )

    def checkpoint_config(self, params: int) -> CheckpointConfig:
        """config.json of this run's checkpoints (each save sets its step). params: as served."""
        return CheckpointConfig(
            self.preset.type,
            self.model,
            self.norm_mode,
            self.embodiments,
            preset=self.preset.to_dict(),
            train=asdict(self.train),
            data=list(self.data),
            weights=self.weights,
            params=params,
            text_vocab=self.text_vocab,
            source=self.source,
        )


def plan_fresh(
    preset: Preset, tcfg: TrainConfig, data: list[str], weights: list[float] | None = None, *, progress: bool = True
) -> RunPlan:
    """A new model: the preset's geometry with as many camera slots as the data needs; norm stats
    computed, a text tokenizer trained (or the preset's pretrained one) and the type's assets fitted."""
    mt = model_type(preset.type)
    base = mt.make_config(preset.model)
    stores, ds = _windows(data, base, weights)
    cams = max(len(e.cameras) for e in ds.embodiments.values())
    if cams > base.cameras:  # a new model: as many camera slots as the data needs
        wide = sorted(n for n, e in ds.embodiments.items() if len(e.cameras) == cams)
        log.info("camera slots: %d (the preset has %d; %s has %d cameras)", cams, base.cameras, wide, cams)
        base = replace(base, cameras=cams)
    model_cfg = _with_data(base, ds, tcfg)
    stats = compute_norm_stats(stores, progress=progress)
    text = (
        TextTokenizer.load(preset.text.pretrained)
        if preset.text.pretrained
        else TextTokenizer.train([i.task for s in stores for i in s.infos()], preset.text.vocab_size)
    )
    assets = mt.model.fit_assets(model_cfg, ds, stats, preset.norm_mode, seed=tcfg.seed, chunks=tcfg.fast_fit_chunks)
    return RunPlan(
        preset=preset,
        train=tcfg,
        model=model_cfg,
        embodiments=ds.embodiments,
        dataset=ds,
        stats=stats,
        text=text,
        text_vocab=text.vocab_size,
        assets=assets,
        norm_mode=preset.norm_mode,
        data=tuple(str(p) for p in data),
        weights=weights,
    )


def plan_from_init(
    preset: Preset,
    tcfg: TrainConfig,
    init: str | Path,
    data: list[str],
    weights: list[float] | None = None,
    *,
    progress: bool = True,
) -> RunPlan:
    """--init: the checkpoint's geometry (which must agree with the preset's), norm mode, text
    tokenizer, assets and weights; norm stats of the robots it has none for from the data."""
    mt = model_type(preset.type)
    ck = Checkpoint(init)
    check_same_type(ck, preset)
    base = init_config(ck, preset, mt)
    stores, ds = _windows(data, base, weights)
    text, assets, stats = init_inputs(ck, preset, ds.embodiments)
    new = sorted(set(ds.embodiments) - set(stats))
    if new:
        log.info("--init: norm stats for %s from the data", new)
        computed = compute_norm_stats(stores, progress=progress)
        stats = {**stats, **{n: computed[n] for n in new}}
    return RunPlan(
        preset=preset,
        train=tcfg,
        model=_with_data(base, ds, tcfg),
        embodiments=ds.embodiments,
        dataset=ds,
        stats=stats,
        text=text,
        text_vocab=ck.resolved.text_vocab or text.vocab_size,
        assets=assets,
        norm_mode=ck.resolved.norm_mode,
        data=tuple(str(p) for p in data),
        weights=weights,
        init=ck,
        source={"init": str(init)},
    )


def plan_resume(
    preset: Preset,
    tcfg: TrainConfig,
    out: str | Path,
    data: list[str],
    weights: list[float] | None = None,
    *,
    lora_rank: int | None = None,
    init: str | Path | None = None,
) -> RunPlan:
    """--resume: continue the checkpoint at `out` from its step, with its geometry, stats,
    tokenizer, assets, LoRA and freezing, and its train_state.pt (weights, optimizer, EMA).
    lora_rank: the rank asked for (an error unless it is the run's). init: the --init of the run
    continued, recorded again in its config."""
    model_type(preset.type)  # an unknown type is named before the checkpoint is read
    ck = Checkpoint(out)
    check_same_type(ck, preset)
    tcfg = _resumed_finetune(tcfg, ck, lora_rank, preset.train.get("freeze"))
    base = ck.resolved.model
    _, ds = _windows(data, base, weights)
    stats, text, assets = ck.stats(), ck.text(), ck.assets()
    state = ck.train_state()
    if state["step"] >= tcfg.steps:
        log.info("checkpoint %s is already at step %d >= %d", out, state["step"], tcfg.steps)
    return RunPlan(
        preset=preset,
        train=tcfg,
        model=_with_data(base, ds, tcfg),
        embodiments=ds.embodiments,
        dataset=ds,
        stats=stats,
        text=text,
        text_vocab=ck.resolved.text_vocab or text.vocab_size,
        assets=assets,
        norm_mode=ck.resolved.norm_mode,
        data=tuple(str(p) for p in data),
        weights=weights,
        start=state["step"],
        state=state,
        source={"init": str(init)} if init else {},
    )


def _windows(data: list[str], base, weights: list[float] | None) -> tuple[list[EpisodeStore], WindowDataset]:
    """The stores and their windows, frames decoded and resized to the model's input in the
    DataLoader workers (issue 16)."""
    stores = [EpisodeStore.open(p) for p in data]
    size = (base.backbone.image_size,) * 2
    return stores, WindowDataset(stores, base.horizon, weights=weights, image_size=size, skip_corrupt=True)


def _with_data(base, ds: WindowDataset, tcfg: TrainConfig):
    """The model config with a state/action head size per embodiment of the data, and the
    trainer's choices that the model carries (gradient checkpointing, training-time RTC)."""
    embodiments = {n: (e.state_dim, e.action_dim) for n, e in ds.embodiments.items()}
    return replace(
        base, grad_checkpoint=tcfg.grad_checkpoint, rtc_max_delay=tcfg.rtc_max_delay, embodiments=embodiments
    )


def _resumed_finetune(tcfg: TrainConfig, ck: Checkpoint, lora_rank: int | None, freeze: str | None) -> TrainConfig:
    """A resumed run keeps the LoRA and freezing of the run it continues (they shape the weights in
    its train_state.pt); asking for others is an error naming both."""
    rec = ck.resolved.train or {}
    rec_lora = LoraSpec(**rec["lora"]) if rec.get("lora") else LoraSpec()
    rec_freeze = rec.get("freeze", "none")
    if lora_rank is not None and lora_rank != rec_lora.rank:
        raise SpecError(
            f"--resume: {ck.path} was trained with LoRA rank {rec_lora.rank}, this run asks for {lora_rank}"
        )
    if freeze is not None and freeze != rec_freeze:
        raise SpecError(f"--resume: {ck.path} was trained with freeze={rec_freeze!r}, this run asks for {freeze!r}")
    return replace(tcfg, lora=rec_lora, freeze=rec_freeze)
