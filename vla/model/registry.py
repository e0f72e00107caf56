"""The model types, by name: one explicit dict from a preset's `type` to its config dataclass (a
vla.model.contract.ModelConfig) and its `ActionModel` class. Adding a type is one line in MODEL_TYPES."""

from __future__ import annotations

from dataclasses import dataclass, replace

from vla.model.contract import ActionModel, ModelConfig
from vla.model.fast.model import FastConfig, FastModel
from vla.model.pi0.model import Pi0Config, Pi0Model
from vla.model.pi0.pi05 import Pi05Config, Pi05Model
from vla.spec import SpecError


@dataclass(frozen=True)
class ModelType:
    name: str
    config: type[ModelConfig]  # built from a preset's [model] table (+ embodiments from the data)
    model: type[ActionModel]

    def make_config(self, d: dict, **overrides) -> ModelConfig:
        """A preset's [model] table (or a checkpoint's resolved config, in any layout it was
        written in: the type's `from_dict` maps older ones) -> the config dataclass."""
        try:
            cfg = self.config.from_dict(d)
        except TypeError as e:  # unknown or missing field: the message names it
            raise SpecError(f"{self.name} model config: {e}") from None
        return replace(cfg, **overrides) if overrides else cfg

    def build(self, cfg, *, text_vocab: int, assets: dict | None = None) -> ActionModel:
        return self.model.build(cfg, text_vocab=text_vocab, assets=assets or {})


MODEL_TYPES: dict[str, ModelType] = {
    t.name: t
    for t in (
        ModelType("pi0", Pi0Config, Pi0Model),
        ModelType("pi05", Pi05Config, Pi05Model),
        ModelType("fast", FastConfig, FastModel),
    )
}


def model_type(name: str) -> ModelType:
    if name not in MODEL_TYPES:
        raise SpecError(f"unknown model type {name!r}; registered types: {sorted(MODEL_TYPES)}")
    return MODEL_TYPES[name]
