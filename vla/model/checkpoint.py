"""Checkpoint directories: everything needed to rebuild a policy, written atomically.

    config.json         format/version, policy type + resolved config, norm mode, embodiments,
                        preset, step, sha256 of model.safetensors (corruption check on load)
    model.safetensors   weights for inference (the EMA weights when EMA is on)
    norm_stats.json     per embodiment and key
    tokenizer.json      text tokenizer
    fast/<embodiment>/  FAST tokenizers (fast policies only)
    train_state.pt      raw weights, optimizer, schedule, EMA, step: for --resume
    metrics.jsonl, loss.png   training log and curve (written by the trainer)
A checkpoint is written into a temporary sibling folder and renamed over the old one, so a
crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vla.data.chunks import StoreError
from vla.data.stats import NormStats, load_stats, save_stats
from vla.model.fast import FastTokenizer
from vla.model.text import TextTokenizer
from vla.spec import Embodiment

FORMAT, VERSION = "vla-checkpoint", 1


class CheckpointError(StoreError):
    """A checkpoint directory is missing, incomplete or corrupt."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(out: str | Path, *, weights: dict[str, torch.Tensor], config: dict, stats: NormStats,
                    text: TextTokenizer, fast: dict[str, FastTokenizer] | None = None,
                    train_state: dict | None = None, extra_files: dict[str, Path] | None = None) -> Path:
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / "model.safetensors"))
        save_stats(stats, tmp / "norm_stats.json")
        text.save(tmp / "tokenizer.json")
        for name, tok in (fast or {}).items():
            tok.save(tmp / "fast" / name)
        if train_state is not None:
            torch.save(train_state, tmp / "train_state.pt")
        for name, src in (extra_files or {}).items():
            if Path(src).exists():
                shutil.copy2(src, tmp / name)
        config = {"format": FORMAT, "version": VERSION, **config,
                  "files": {"model.safetensors": _sha256(tmp / "model.safetensors")}}
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


class Checkpoint:
    """A loaded checkpoint directory (read-only view)."""

    def __init__(self, path: str | Path, *, verify: bool = True):
        self.path = Path(path)
        cfg_path = self.path / "config.json"
        if not cfg_path.exists():
            raise CheckpointError(f"{self.path}: not a checkpoint (no config.json)")
        try:
            self.config = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{cfg_path}: corrupt JSON: {e}") from None
        if self.config.get("format") != FORMAT:
            raise CheckpointError(f"{cfg_path}: not a vla checkpoint (format={self.config.get('format')!r})")
        for name in ("model.safetensors", "norm_stats.json", "tokenizer.json"):
            if not (self.path / name).exists():
                raise CheckpointError(f"{self.path}: incomplete checkpoint, missing {name}")
        if verify:
            want = self.config.get("files", {}).get("model.safetensors")
            got = _sha256(self.path / "model.safetensors")
            if want != got:
                raise CheckpointError(f"{self.path}/model.safetensors is corrupted: sha256 {got[:12]}... does not "
                                      f"match the {str(want)[:12]}... recorded at save time")
        self.embodiments = {n: Embodiment.from_dict(d) for n, d in self.config["embodiments"].items()}

    def weights(self) -> dict[str, torch.Tensor]:
        try:
            return load_file(str(self.path / "model.safetensors"))
        except Exception as e:
            raise CheckpointError(f"{self.path}/model.safetensors cannot be read: {e}") from None

    def stats(self) -> NormStats:
        return load_stats(self.path / "norm_stats.json")

    def text(self) -> TextTokenizer:
        return TextTokenizer.load(self.path / "tokenizer.json")

    def fast(self) -> dict[str, FastTokenizer]:
        d = self.path / "fast"
        return {p.name: FastTokenizer.load(p) for p in sorted(d.iterdir())} if d.exists() else {}

    def train_state(self) -> dict:
        p = self.path / "train_state.pt"
        if not p.exists():
            raise CheckpointError(f"{self.path}: no train_state.pt to resume from")
        return torch.load(p, weights_only=False)


def build_from_checkpoint(ckpt: Checkpoint, *, weights: bool = True):
    """-> (model in eval mode, Transforms, resolved policy config) rebuilt from the checkpoint alone."""
    from vla.model.fast_policy import ActionVocab
    from vla.model.registry import build_policy, policy_config
    from vla.model.transforms import Transforms

    pol = ckpt.config["policy"]
    cfg = policy_config(pol["type"], pol["config"])
    text, stats, fast = ckpt.text(), ckpt.stats(), ckpt.fast()
    fast_sizes = {n: t.vocab_size for n, t in fast.items()} or None
    model = build_policy(pol["type"], cfg, text_vocab=text.vocab_size, fast_sizes=fast_sizes)
    if weights:
        missing, unexpected = model.load_state_dict(ckpt.weights(), strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{ckpt.path}: weights do not match the config (missing {missing[:5]}, "
                                  f"unexpected {unexpected[:5]})")
    model.eval()
    vocab = ActionVocab(text.vocab_size, fast_sizes) if fast_sizes else None
    tf = Transforms(ckpt.embodiments, stats, pol["norm_mode"], text, image_size=cfg.backbone.image_size,
                    cameras=cfg.cameras, max_tokens=cfg.max_tokens, horizon=cfg.horizon, fast=fast or None,
                    fast_vocab=vocab, max_action_tokens=getattr(cfg, "max_action_tokens", 0),
                    delta_actions=getattr(cfg, "delta_actions", False))
    return model, tf, cfg
