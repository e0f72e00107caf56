"""The policy types, by name: config class and model class (one explicit dict)."""

from __future__ import annotations

from vla.model.fast_policy import ActionVocab, FastConfig, FastPolicy
from vla.model.pi0 import Pi0Config, Pi0Policy
from vla.spec import SpecError

POLICIES = {
    "pi0": (Pi0Config, Pi0Policy),
    "fast": (FastConfig, FastPolicy),
}


def policy_config(kind: str, d: dict):
    if kind not in POLICIES:
        raise SpecError(f"unknown policy type {kind!r}; known: {sorted(POLICIES)}")
    cls = POLICIES[kind][0]
    try:
        return cls(**d)
    except TypeError as e:
        raise SpecError(f"policy {kind!r} config: {e}") from None


def build_policy(kind: str, cfg, *, text_vocab: int, fast_sizes: dict[str, int] | None = None):
    """Instantiate the model for a resolved config (embodiments filled in)."""
    if kind == "pi0":
        return Pi0Policy(cfg, text_vocab)
    if kind == "fast":
        if not fast_sizes:
            raise SpecError("fast policy needs its FAST tokenizers' vocab sizes")
        return FastPolicy(cfg, ActionVocab(text_vocab, fast_sizes))
    raise SpecError(f"unknown policy type {kind!r}; known: {sorted(POLICIES)}")
