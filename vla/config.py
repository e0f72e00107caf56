"""Policy presets: TOML -> frozen dataclasses; lookup by name (policies/<name>.toml) or path.

A preset has four parts, each handed to the component that owns it:
    type, norm_mode         which policy, which normalization (zscore for pi0, quantile for FAST)
    [model]                 the policy config (vla.model.pi0.model.Pi0Config / fast_policy.FastConfig)
    [text]                  text tokenizer (vocab_size, or pretrained dir)
    [train]                 vla.train.trainer.TrainConfig
The type is looked up in vla.model.registry.MODEL_TYPES (an unknown type is refused there,
with the registered types listed), and sizes are checked when the trainer builds the model
config, before any data is read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from vla.resources import content_dir, load_toml
from vla.spec import SpecError

NORM_MODES = ("zscore", "quantile")  # as vla.data.stats.MODES


def presets_dir() -> Path:
    """The folder of built-in policy presets (policies/, installed with the package)."""
    return content_dir("policies")


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 512
    pretrained: str | None = None  # a dir with tokenizer.json (e.g. the PaliGemma checkpoint)


@dataclass(frozen=True)
class Preset:
    name: str
    type: str
    norm_mode: str
    model: dict  # raw; resolved into the policy config once embodiments are known
    text: TextConfig = TextConfig()
    train: dict = field(default_factory=dict)  # raw; vla.train.trainer.TrainConfig(**train)

    def __post_init__(self):
        if not isinstance(self.type, str) or not self.type:
            raise SpecError(f"preset {self.name!r}: 'type' must name a model type (see vla.model.registry)")
        if self.norm_mode not in NORM_MODES:
            raise SpecError(f"preset {self.name!r}: norm_mode must be one of {NORM_MODES}, got {self.norm_mode!r}")
        if isinstance(self.text, dict):
            object.__setattr__(self, "text", TextConfig(**self.text))

    def to_dict(self) -> dict:
        return asdict(self)


def load_preset(name_or_path: str | Path, overrides: dict | None = None) -> Preset:
    d, p = load_toml(name_or_path, "preset")
    d.setdefault("name", p.stem)
    for section, values in (overrides or {}).items():
        d.setdefault(section, {}).update(values)
    unknown = set(d) - {"name", "type", "norm_mode", "model", "text", "train", "description"}
    if unknown:
        raise SpecError(f"{p}: unknown top-level keys {sorted(unknown)}")
    d.pop("description", None)
    try:
        return Preset(**d)
    except SpecError as e:
        raise SpecError(f"{p}: {e}") from None
    except TypeError as e:
        raise SpecError(f"{p}: {e}") from None
