"""Checkpoint key layouts of pi0 / pi0.5 weights written by other projects, and vla's own.

    openpi / LeRobot (the Hub's pi0_base, pi05_base; LeRobot-saved files add a "model." prefix)
        paligemma_with_expert.paligemma.model.vision_tower.vision_model.*   SigLIP
        paligemma_with_expert.paligemma.model.multi_modal_projector.linear.*
        paligemma_with_expert.paligemma.model.language_model.*              Gemma layers, norm
        paligemma_with_expert.paligemma.lm_head.weight                      the (tied) token embedding
        paligemma_with_expert.gemma_expert.model.*                          the action expert
        state_proj, action_in_proj, action_out_proj,
        action_time_mlp_in / _out (pi0)  or  time_mlp_in / _out (pi0.5)
    transformers' PI0ForConditionalGeneration
        model.vlm.{vision_tower, multi_modal_projector.linear, language_model}.*, model.dit.*,
        embed_action_time.{state_proj, action_in_proj, action_time_mlp_in, action_time_mlp_out},
        action_out_proj
    vla (vla.model.pi0.model / pi05 with a shared head)
        backbone.{vision_tower, projector, language_model}.*, expert.*,
        state_in.linear, action_in.linear, action_out.linear, time_mlp_in, time_mlp_out

The SigLIP tower's own prefix moved between transformers versions (`vision_tower.vision_model.*`
in older ones, `vision_tower.*` in 5.x): `match_module_keys` maps a file's keys onto whichever
the running module has, so a vla checkpoint loads across transformers versions.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch

from vla.spec import SpecError

LEROBOT = "lerobot"
TRANSFORMERS = "transformers"
# Not weights: LeRobot < 0.4 kept its normalization buffers in the policy's state dict (its stats
# are read from policy_preprocessor.json or the dataset instead).
IGNORED = re.compile(r"^(normalize_inputs|normalize_targets|unnormalize_outputs)\.")

# (pattern in the source layout, replacement in vla's layout), tried in order; a key matching
# no rule is reported. None drops the key (weights the model does not use).
_COMMON_LEROBOT = [
    (r"^paligemma_with_expert\.paligemma\.model\.vision_tower\.(?:vision_model\.)?", "backbone.vision_tower."),
    (r"^paligemma_with_expert\.paligemma\.model\.multi_modal_projector\.linear\.", "backbone.projector."),
    (r"^paligemma_with_expert\.paligemma\.model\.language_model\.(?:model\.)?", "backbone.language_model."),
    (r"^paligemma_with_expert\.paligemma\.lm_head\.weight$", "backbone.language_model.embed_tokens.weight"),
    (r"^paligemma_with_expert\.gemma_expert\.model\.embed_tokens\.", None),
    (r"^paligemma_with_expert\.gemma_expert\.model\.", "expert."),
    (r"^paligemma_with_expert\.gemma_expert\.lm_head\.", None),
    (r"^action_in_proj\.", "action_in.linear."),
    (r"^action_out_proj\.", "action_out.linear."),
]
RULES = {
    (LEROBOT, "pi0"): _COMMON_LEROBOT
    + [
        (r"^state_proj\.", "state_in.linear."),
        (r"^action_time_mlp_in\.", "time_mlp_in."),
        (r"^action_time_mlp_out\.", "time_mlp_out."),
    ],
    (LEROBOT, "pi05"): _COMMON_LEROBOT
    + [
        (r"^time_mlp_in\.", "time_mlp_in."),
        (r"^time_mlp_out\.", "time_mlp_out."),
    ],
    (TRANSFORMERS, "pi0"): [
        (r"^model\.vlm\.vision_tower\.head\.", None),  # SigLIP's pooling head: unused by PI0
        (r"^model\.vlm\.vision_tower\.(?:vision_model\.)?", "backbone.vision_tower."),
        (r"^model\.vlm\.multi_modal_projector\.linear\.", "backbone.projector."),
        (r"^model\.vlm\.language_model\.", "backbone.language_model."),
        (r"^model\.dit\.embed_tokens\.", None),
        (r"^model\.dit\.", "expert."),
        (r"^embed_action_time\.state_proj\.", "state_in.linear."),
        (r"^embed_action_time\.action_in_proj\.", "action_in.linear."),
        (r"^embed_action_time\.action_time_mlp_in\.", "time_mlp_in."),
        (r"^embed_action_time\.action_time_mlp_out\.", "time_mlp_out."),
        (r"^action_out_proj\.", "action_out.linear."),
    ],
}

# vla -> openpi / LeRobot (export). The expert's lm_head is written as zeros by the exporter.
_TO_LEROBOT = [
    (
        r"^backbone\.vision_tower\.(?:vision_model\.)?",
        "paligemma_with_expert.paligemma.model.vision_tower.vision_model.",
    ),
    (r"^backbone\.projector\.", "paligemma_with_expert.paligemma.model.multi_modal_projector.linear."),
    (r"^backbone\.language_model\.embed_tokens\.weight$", "paligemma_with_expert.paligemma.lm_head.weight"),
    (r"^backbone\.language_model\.", "paligemma_with_expert.paligemma.model.language_model."),
    (r"^expert\.embed_tokens\.", None),
    (r"^expert\.", "paligemma_with_expert.gemma_expert.model."),
    (r"^state_in\.linear\.", "state_proj."),
    (r"^action_in\.linear\.", "action_in_proj."),
    (r"^action_out\.linear\.", "action_out_proj."),
]
TO_LEROBOT = {
    "pi0": _TO_LEROBOT + [(r"^time_mlp_in\.", "action_time_mlp_in."), (r"^time_mlp_out\.", "action_time_mlp_out.")],
    "pi05": _TO_LEROBOT + [(r"^time_mlp_in\.", "time_mlp_in."), (r"^time_mlp_out\.", "time_mlp_out.")],
}


def detect(keys) -> tuple[str, str, str]:
    """Source keys -> (layout, model type "pi0" | "pi05", prefix to strip). Unknown -> SpecError."""
    keys = [k for k in keys if not IGNORED.match(k)]
    prefix = "model." if any(k.startswith("model.paligemma_with_expert.") for k in keys) else ""
    bare = [k[len(prefix) :] for k in keys]
    if any(k.startswith("paligemma_with_expert.") for k in bare):
        adaptive = any(re.search(r"gemma_expert\.model\.(layers\.\d+\.\w+_layernorm|norm)\.dense\.", k) for k in bare)
        has_time_mlp = any(k.startswith("time_mlp_in.") for k in bare)
        has_pi0 = any(k.startswith(("state_proj.", "action_time_mlp_in.")) for k in bare)
        if (adaptive or has_time_mlp) and has_pi0:
            raise SpecError(
                "the weights mix pi0 keys (state_proj, action_time_mlp_*) with pi0.5 keys (time_mlp_*, "
                "adaptive expert norms): not a checkpoint of either"
            )
        return LEROBOT, ("pi05" if adaptive or has_time_mlp else "pi0"), prefix
    if any(k.startswith("model.vlm.") for k in keys) and any(k.startswith("embed_action_time.") for k in keys):
        return TRANSFORMERS, "pi0", ""
    groups = group_keys(keys)
    raise SpecError(
        "unknown weight layout: expected openpi/LeRobot (paligemma_with_expert.*) or transformers PI0 "
        f"(model.vlm.*, embed_action_time.*) keys; found groups {groups}"
    )


def group_keys(keys, n: int = 8) -> list[str]:
    """The first n key groups (first two dotted parts, numbers elided) with their counts."""
    counts: OrderedDict[str, int] = OrderedDict()
    for k in keys:
        g = ".".join(re.sub(r"\.\d+(?=\.|$)", ".N", k).split(".")[:3])
        counts[g] = counts.get(g, 0) + 1
    return [f"{g} ({c})" for g, c in list(counts.items())[:n]]


def rename(weights: dict[str, torch.Tensor], rules, *, strip: str = "") -> tuple[dict[str, torch.Tensor], list[str]]:
    """Apply the first matching rule to each key -> (renamed weights, keys no rule matched)."""
    out, unmatched = {}, []
    compiled = [(re.compile(p), r) for p, r in rules]
    for key, value in weights.items():
        if IGNORED.match(key):
            continue
        k = key[len(strip) :] if strip and key.startswith(strip) else key
        for pat, rep in compiled:
            if pat.search(k):
                if rep is not None:
                    new = pat.sub(rep, k, count=1)
                    if new in out:
                        raise SpecError(f"two source keys map to {new!r} (one is {key!r})")
                    out[new] = value
                break
        else:
            unmatched.append(key)
    return out, unmatched


def vision_alias(key: str) -> str:
    """The same SigLIP tower key at the other `vision_model.` level (older transformers have it,
    5.x does not)."""
    if "vision_tower.vision_model." in key:
        return key.replace("vision_tower.vision_model.", "vision_tower.", 1)
    return key.replace("vision_tower.", "vision_tower.vision_model.", 1)


def expected_key(key: str, expected) -> str | None:
    """`key` as `expected` (a module's state_dict keys) spells it: itself or its vision alias;
    None when neither is there."""
    if key in expected:
        return key
    alt = vision_alias(key)
    return alt if alt in expected else None


def match_module_keys(weights: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Map a vla checkpoint's keys onto a module's: the SigLIP tower with or without its
    `vision_model.` level, whichever `expected` (the module's state_dict keys) uses."""
    return {expected_key(k, expected) or k: v for k, v in weights.items()}


def canonical_keys(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """vla's saved layout: the SigLIP tower without the `vision_model.` level."""
    return {k.replace("vision_tower.vision_model.", "vision_tower.", 1): v for k, v in weights.items()}
