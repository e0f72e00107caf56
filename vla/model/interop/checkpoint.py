"""Checkpoint directories: everything needed to rebuild a policy, written atomically.

    config.json         CheckpointConfig: format/version, model type + resolved model config,
                        norm mode, embodiments, provenance (preset, train, data), step, and the
                        sha256 of model.safetensors (corruption check on load)
    model.safetensors   weights for inference (the EMA weights when EMA is on)
    norm_stats.json     per embodiment and key
    tokenizer.json      text tokenizer (may be absent in a converted checkpoint: token ids only)
    <assets>            the model type's data-derived assets (FAST: fast/<embodiment>/)
    train_state.pt      raw weights, optimizer, schedule, EMA, step: for --resume
    metrics.jsonl, loss.png   training log and curve (written by the trainer)
A checkpoint is written into a temporary sibling folder and renamed over the old one, so a
crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from vla.data.frame_files import StoreError
from vla.data.stats import NormStats, load_stats, save_stats
from vla.model.interop.atomic import atomic_dir
from vla.model.interop.layout import canonical_keys, match_module_keys
from vla.model.interop.weight_io import assign_weights, params_on_meta, read_safetensors
from vla.model.registry import model_type
from vla.model.text import TextTokenizer
from vla.model.transforms import build_transforms
from vla.outputs import describe, is_checkpoint
from vla.spec import Embodiment, SpecError

FORMAT, VERSION = "vla-checkpoint", 1


class CheckpointError(StoreError):
    """A checkpoint directory is missing, incomplete or corrupt."""


@dataclass(frozen=True)
class CheckpointConfig:
    """config.json: the fully resolved config a checkpoint is rebuilt from (never the presets)."""

    model_type: str
    model: Any  # the type's config dataclass (vla.model.registry), embodiments filled in
    norm_mode: str
    embodiments: dict[str, Embodiment]
    step: int = 0
    params: int = 0
    text_vocab: int = 0  # rows of the token embedding (0: the tokenizer's vocab size, as before this field)
    # Provenance, recorded as given: the preset, the trainer's TrainConfig, the stores and mixture weights.
    preset: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    data: list = field(default_factory=list)
    weights: list | None = None
    source: dict = field(default_factory=dict)  # a converted checkpoint: where its weights came from

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "policy": {"type": self.model_type, "config": self.model.to_dict(), "norm_mode": self.norm_mode},
            "embodiments": {n: e.to_dict() for n, e in self.embodiments.items()},
            "preset": self.preset,
            "train": self.train,
            "data": [str(p) for p in self.data],
            "weights": self.weights,
            "params": self.params,
            "step": self.step,
            "text_vocab": self.text_vocab,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, d: dict, where: str = "config.json") -> "CheckpointConfig":
        """Parse config.json; a missing or malformed field is named (never a bare KeyError)."""
        if d.get("format") != FORMAT:
            raise CheckpointError(f"{where}: not a vla checkpoint (format={d.get('format')!r})")
        if not isinstance(d.get("version"), int) or d["version"] > VERSION:
            raise CheckpointError(
                f"{where}: checkpoint format version {d.get('version')!r}; this vla reads "
                f"version <= {VERSION} (written by a newer vla?)"
            )

        def need(path: str):
            node = d
            for part in path.split("."):
                if not isinstance(node, dict) or part not in node:
                    raise CheckpointError(f"{where}: missing field {path!r} (written by an older or other tool?)")
                node = node[part]
            return node

        kind = need("policy.type")
        try:
            mt = model_type(kind)
            model = mt.make_config(need("policy.config"))
            embodiments = {n: Embodiment.from_dict(e) for n, e in need("embodiments").items()}
        except (SpecError, TypeError, KeyError, ValueError) as e:
            raise CheckpointError(f"{where}: {e}") from None
        norm_mode = need("policy.norm_mode")
        if not embodiments:
            raise CheckpointError(f"{where}: field 'embodiments' is empty")
        return cls(
            kind,
            model,
            norm_mode,
            embodiments,
            step=int(d.get("step") or 0),
            params=int(d.get("params") or 0),
            text_vocab=int(d.get("text_vocab") or 0),
            preset=d.get("preset") or {},
            train=d.get("train") or {},
            data=list(d.get("data") or []),
            weights=d.get("weights"),
            source=d.get("source") or {},
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _not_a_checkpoint(path: Path) -> CheckpointError:
    return CheckpointError(f"{path} is {describe(path)}, not a vla checkpoint: it is never replaced")


def save_checkpoint(
    out: str | Path,
    *,
    weights: dict[str, torch.Tensor],
    config: CheckpointConfig,
    stats: NormStats,
    text: TextTokenizer | None,
    assets: dict | None = None,
    train_state: dict | None = None,
    extra_files: dict[str, Path] | None = None,
) -> Path:
    out = Path(out)
    with atomic_dir(out, refuse=_not_a_checkpoint, replaces=is_checkpoint) as tmp:  # only ever replaces a checkpoint
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in canonical_keys(weights).items()},
            str(tmp / "model.safetensors"),
        )
        save_stats(stats, tmp / "norm_stats.json")
        if text is not None:
            text.save(tmp / "tokenizer.json")
        model_type(config.model_type).model.save_assets(assets or {}, tmp)
        if train_state is not None:
            torch.save(train_state, tmp / "train_state.pt")
        for name, src in (extra_files or {}).items():
            if Path(src).exists():
                shutil.copy2(src, tmp / name)
        meta = {**config.to_json(), "files": {"model.safetensors": _sha256(tmp / "model.safetensors")}}
        (tmp / "config.json").write_text(json.dumps(meta, indent=2))
    return out


class Checkpoint:
    """A loaded checkpoint directory (read-only view). `config` is config.json as written;
    `resolved` the typed CheckpointConfig parsed from it."""

    def __init__(self, path: str | Path, *, verify: bool = True):
        self.path = Path(path)
        cfg_path = self.path / "config.json"
        if not cfg_path.exists():
            raise CheckpointError(f"{self.path}: not a checkpoint (no config.json)")
        try:
            self.config = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{cfg_path}: corrupt JSON: {e}") from None
        if not isinstance(self.config, dict):
            raise CheckpointError(f"{cfg_path}: expected a JSON object, got {type(self.config).__name__}")
        self.resolved = CheckpointConfig.from_json(self.config, str(cfg_path))
        for name in ("model.safetensors", "norm_stats.json"):
            if not (self.path / name).exists():
                raise CheckpointError(f"{self.path}: incomplete checkpoint, missing {name}")
        if verify:
            want = self.config.get("files", {}).get("model.safetensors")
            got = _sha256(self.path / "model.safetensors")
            if want != got:
                raise CheckpointError(
                    f"{self.path}/model.safetensors is corrupted: sha256 {got[:12]}... does not "
                    f"match the {str(want)[:12]}... recorded at save time"
                )
        self.embodiments = self.resolved.embodiments

    def weights(self) -> dict[str, torch.Tensor]:
        """{key: tensor}, each read into its own fresh memory (vla.model.interop.weight_io: no mapping of
        the file stays behind, nothing is held twice)."""
        try:
            return read_safetensors(self.path / "model.safetensors")
        except Exception as e:
            raise CheckpointError(f"{self.path}/model.safetensors cannot be read: {e}") from None

    def stats(self) -> NormStats:
        return load_stats(self.path / "norm_stats.json")

    def text(self) -> TextTokenizer | None:
        """The text tokenizer, or None when the checkpoint has none (the model then takes token ids)."""
        p = self.path / "tokenizer.json"
        return TextTokenizer.load(p) if p.exists() else None

    def assets(self) -> dict:
        """The model type's data-derived assets (FAST: {"fast": {embodiment: FastTokenizer}})."""
        try:
            return model_type(self.resolved.model_type).model.load_assets(self.path)
        except SpecError as e:
            raise CheckpointError(str(e)) from None

    def train_state(self) -> dict:
        p = self.path / "train_state.pt"
        if not p.exists():
            raise CheckpointError(f"{self.path}: no train_state.pt to resume from")
        return torch.load(p, weights_only=False)


def build_from_checkpoint(ckpt: Checkpoint, *, weights: bool = True):
    """-> (model in eval mode, Transforms, resolved model config) rebuilt from the checkpoint alone."""
    rc = ckpt.resolved
    mt = model_type(rc.model_type)
    text, stats, assets = ckpt.text(), ckpt.stats(), ckpt.assets()
    vocab = rc.text_vocab or (text.vocab_size if text is not None else 0)
    if not vocab:
        raise CheckpointError(
            f"{ckpt.path}: no tokenizer.json and no text_vocab in config.json: the token embedding's size is unknown"
        )
    if not weights:
        model = mt.build(rc.model, text_vocab=vocab, assets=assets)
    else:  # one copy of the weights at the peak: parameters built on meta, the file's tensors assigned
        with params_on_meta():
            model = mt.build(rc.model, text_vocab=vocab, assets=assets)
        loaded = match_module_keys(ckpt.weights(), set(model.state_dict()))
        wrong = _shape_mismatches(model, loaded)
        if wrong:
            raise CheckpointError(f"{ckpt.path}: {_explain_mismatch(mt, rc, vocab, assets, loaded, wrong)}")
        missing, unexpected = assign_weights(model, loaded)
        if missing or unexpected:
            raise CheckpointError(
                f"{ckpt.path}: weights do not match the config (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
    model.eval()
    tf = build_transforms(
        mt.model,
        rc.model,
        embodiments=rc.embodiments,
        stats=stats,
        norm_mode=rc.norm_mode,
        text=text,
        assets=assets,
        text_vocab=vocab,
    )
    return model, tf, rc.model


def _shape_mismatches(model, weights: dict) -> list[tuple[str, tuple, tuple]]:
    """(key, the config's shape, the file's shape) of every tensor whose shapes differ. One-element
    tensors are left to the modules' load hooks (a 0-dim scalar saved by an older vla loads as [1])."""
    own = model.state_dict()
    return [
        (k, tuple(own[k].shape), tuple(v.shape))
        for k, v in weights.items()
        if k in own and own[k].shape != v.shape and not own[k].numel() == v.numel() == 1
    ]


def _int_fields(d: dict, prefix: str = "") -> dict[str, int]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_int_fields(v, f"{prefix}{k}."))
        elif isinstance(v, int) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out


def _with_field(d: dict, path: str, value) -> dict:
    d = json.loads(json.dumps(d))
    node = d
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    return d


def _explain_mismatch(mt, rc: CheckpointConfig, vocab: int, assets: dict, weights: dict, wrong: list) -> str:
    """One line naming the config.json field that contradicts the weights: of the fields whose
    value is one of the differing sizes, the one whose change to the file's size makes the most
    shapes agree (models rebuilt on the meta device: no memory, no time)."""
    from vla.model.interop.weight_io import params_on_meta

    key, want, got = wrong[0]
    base = rc.model.to_dict()
    fields = _int_fields(base)
    pairs = {(w, g) for _, ws, gs in wrong if len(ws) == len(gs) for w, g in zip(ws, gs) if w != g}
    best, best_left = None, len(wrong)
    for path, value in fields.items():
        for w, g in pairs:
            if value != w:
                continue
            try:
                cfg = mt.make_config(_with_field(base, path, g))
                with params_on_meta():
                    trial = mt.build(cfg, text_vocab=vocab, assets=assets)
            except Exception:  # an inconsistent trial config: not this field
                continue
            left = len(_shape_mismatches(trial, weights))
            if left < best_left:
                best, best_left = (path, w, g), left
    example = f"e.g. {key}: {list(got)} in model.safetensors, {list(want)} from config.json"
    if best is None:
        return f"config.json does not describe model.safetensors ({len(wrong)} tensors differ in shape, {example})"
    path, w, g = best
    return (
        f"config.json says policy.config.{path} = {w}, but model.safetensors was written with {g} "
        f"({len(wrong)} tensors differ, {example}): restore that field to {g}, or use the config.json written with "
        "these weights"
    )
