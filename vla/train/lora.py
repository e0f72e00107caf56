"""LoRA through PEFT, and the merged weights a LoRA run serves with.

Which stacks get adapters, on which projections and at which rank is the preset's
`[train.lora]` table (or `vla train --lora RANK`):

    [train.lora]
    rank = 16        # the base rank; 0 = no LoRA. `--lora RANK` sets it.
    alpha = 1.0      # lora_alpha = alpha * a stack's rank (openpi: alpha = rank, a scaling of 1)
    [train.lora.stacks]
    backbone = { scale = 1, targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] }
    expert = { scale = 2, targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] }

A stack's rank is rank * scale, so `--lora 16` with the defaults is openpi's pi0 LoRA: rank 16 on
the VLM's Gemma (attention and MLP projections), 32 on the action expert. Stacks: `backbone` (the
VLM's Gemma decoder), `expert` (the action expert), `vision` (the SigLIP encoder). A stack that
has adapters is frozen apart from them (openpi freezes all of the LLM's weights but the LoRA
ones); everything else trains unless `freeze` says otherwise (vla.train.freeze).

Adapters are injected into the model in place (`peft.inject_adapter_in_model`): each targeted
`nn.Linear` becomes a PEFT `lora.Linear` that is called exactly as before, so vla's own layer
code (vla.model.layers.attention) runs it unchanged. Checkpoints hold the merged weights
(W + scaling * B @ A) in the plain key layout, so serving needs no PEFT; the adapter itself is
saved beside them in PEFT's file names (`adapter_model.safetensors`, `adapter_config.json`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from vla.spec import SpecError

GEMMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Where each stack lives in a flow-matching model (vla.model.pi0.model / pi05).
STACK_PATHS = {"backbone": "backbone.language_model", "expert": "expert", "vision": "backbone.vision_tower"}
ADAPTER = "default"  # PEFT's adapter name


@dataclass(frozen=True)
class LoraStack:
    scale: float = 1.0  # this stack's rank = LoraSpec.rank * scale
    targets: tuple[str, ...] = GEMMA_TARGETS

    def __post_init__(self):
        object.__setattr__(self, "targets", tuple(self.targets))
        if not self.scale > 0:
            raise SpecError(f"lora: a stack's scale must be > 0, got {self.scale}")
        if not self.targets:
            raise SpecError("lora: a stack needs at least one target module")


def _default_stacks() -> dict:
    return {"backbone": LoraStack(1.0), "expert": LoraStack(2.0)}  # openpi: 16 on the 2B, 32 on the 300M


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 0  # 0: no LoRA
    alpha: float = 1.0  # lora_alpha = alpha * stack rank
    stacks: dict = field(default_factory=_default_stacks)

    def __post_init__(self):
        if self.rank < 0:
            raise SpecError(f"lora: rank must be >= 0 (0 = off), got {self.rank}")
        if not self.alpha > 0:
            raise SpecError(f"lora: alpha must be > 0, got {self.alpha}")
        stacks = {k: v if isinstance(v, LoraStack) else LoraStack(**v) for k, v in self.stacks.items()}
        unknown = sorted(set(stacks) - set(STACK_PATHS))
        if unknown:
            raise SpecError(f"lora: unknown stack(s) {unknown}; stacks: {sorted(STACK_PATHS)}")
        if not stacks:
            raise SpecError(f"lora: no stacks named; stacks: {sorted(STACK_PATHS)}")
        object.__setattr__(self, "stacks", stacks)

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    def stack_rank(self, name: str) -> int:
        return max(1, round(self.rank * self.stacks[name].scale))

    def to_dict(self) -> dict:
        return asdict(self)


def stack_linears(model: nn.Module, name: str) -> dict[str, nn.Linear]:
    """The nn.Linear modules of one stack's repeated layers (`layers`, or a vision tower's
    `blocks`), by full module name."""
    root = model.get_submodule(STACK_PATHS[name])
    return {
        f"{STACK_PATHS[name]}.{n}": m
        for n, m in root.named_modules()
        if isinstance(m, nn.Linear) and (".layers." in f".{n}" or ".blocks." in f".{n}")
    }


def check_supported(model: nn.Module, kind: str) -> None:
    """LoRA needs the stacks of a flow-matching model; FAST is refused."""
    missing = [n for n in ("backbone", "expert") if not _has(model, STACK_PATHS[n])]
    if missing:
        linears = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise SpecError(
            f"--lora: a {kind} model has no {' / '.join(missing)} stack; LoRA applies to the flow-matching "
            f"types (pi0, pi05), whose stacks are {sorted(STACK_PATHS)}. (FAST's action tokens are new rows "
            f"of the Gemma token embedding, which LoRA would leave frozen; its Linear modules: {linears})"
        )


def _has(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
        return True
    except AttributeError:
        return False


def target_modules(model: nn.Module, spec: LoraSpec) -> dict[str, int]:
    """-> {full module name: rank} for every Linear the spec targets; unknown names are an error
    listing the modules each stack has."""
    out: dict[str, int] = {}
    for name, stack in spec.stacks.items():
        if not _has(model, STACK_PATHS[name]):
            raise SpecError(f"lora: this model has no {name!r} stack ({STACK_PATHS[name]})")
        linears = stack_linears(model, name)
        leaves = sorted({n.rsplit(".", 1)[-1] for n in linears})
        unknown = [t for t in stack.targets if t not in leaves]
        if unknown:
            raise SpecError(f"lora: stack {name!r} has no module(s) {unknown}; its modules are {leaves}")
        r = spec.stack_rank(name)
        out.update({n: r for n in linears if n.rsplit(".", 1)[-1] in stack.targets})
    return out


def apply_lora(model: nn.Module, spec: LoraSpec, kind: str) -> dict[str, int]:
    """Inject LoRA adapters in place. Returns {module: rank}. Trainability is set afterwards by
    vla.train.freeze (PEFT marks only the adapters trainable; the trainer decides the rest)."""
    from peft import LoraConfig, inject_adapter_in_model

    check_supported(model, kind)
    targets = target_modules(model, spec)
    cfg = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha * spec.rank,
        lora_dropout=0.0,
        bias="none",
        target_modules=sorted(targets),
        rank_pattern={re.escape(n): r for n, r in targets.items()},
        alpha_pattern={re.escape(n): spec.alpha * r for n, r in targets.items()},
    )
    # PEFT keeps cfg on the model itself (`model.peft_config[ADAPTER]`), where its own
    # get_peft_model_state_dict reads it; vla stores nothing on the model.
    inject_adapter_in_model(cfg, model, adapter_name=ADAPTER)
    return targets


def lora_stacks(spec: LoraSpec) -> list[str]:
    """Module-path prefixes of the stacks that carry adapters (frozen apart from them)."""
    return [STACK_PATHS[n] for n in spec.stacks] if spec.enabled else []


def is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def scalings(model: nn.Module) -> dict[str, float]:
    """{module name: scaling} of every LoRA layer (module names as in the model's state dict)."""
    from peft.tuners.lora import LoraLayer

    return {n: float(m.scaling[ADAPTER]) for n, m in model.named_modules() if isinstance(m, LoraLayer)}


def merged_weights(state: dict[str, torch.Tensor], scale: dict[str, float]) -> dict[str, torch.Tensor]:
    """A LoRA model's state dict -> plain weights: W + scaling * B @ A, in the un-adapted key layout
    (`x.q_proj.base_layer.weight` -> `x.q_proj.weight`), adapters dropped. Computed in float32."""
    out = {}
    for k, v in state.items():
        if is_adapter(k):
            continue
        out[k.replace(".base_layer.", ".")] = v
    for name, s in scale.items():
        a, b = state[f"{name}.lora_A.{ADAPTER}.weight"], state[f"{name}.lora_B.{ADAPTER}.weight"]
        w = state[f"{name}.base_layer.weight"]
        out[f"{name}.weight"] = w.float() + s * (b.float() @ a.float())  # float32 even over a bf16 base
    return out


def adapter_files(model: nn.Module, state: dict[str, torch.Tensor], tmp: Path) -> dict[str, Path]:
    """Write the adapter (from `state`: the weights being saved) in PEFT's file layout into `tmp`
    by PEFT's own functions (get_peft_model_state_dict, LoraConfig.save_pretrained), so PEFT loads
    it back; -> {name in the checkpoint: file} for save_checkpoint's extra_files."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    tmp.mkdir(parents=True, exist_ok=True)
    # PEFT's own files drop the adapter name from the keys (`...q_proj.lora_A.weight`).
    weights = get_peft_model_state_dict(model, state_dict=state, adapter_name=ADAPTER, save_embedding_layers=False)
    weights = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
    save_file(weights, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    model.peft_config[ADAPTER].save_pretrained(str(tmp))
    return {p.name: p for p in (tmp / "adapter_model.safetensors", tmp / "adapter_config.json")}
