"""pi0.5: pi0's layout with the flow time in adaptive norms and the state in the prompt.

Differences from pi0 (vla.model.pi0.model), as in the published pi0.5 weights:
    suffix  = [h action tokens] = action_in(x_t)                     ar = 1, 0, 0, ... (no state token)
    time    = swish(time_mlp_out(swish(time_mlp_in(sincos(t)))))   [b, w], both layers [w, w]
    expert  every RMSNorm is adaptive under that condition (vla.model.layers.adarms), and each
            residual branch is scaled by the norm's gate
    prompt  "Task: <instruction>, State: <256-bin discretized state>;\\nAction: " (the state
            enters only as text; vla.model.transforms, prompt_format "pi05"), quantile norm.
Everything else (prefix, KV cache, flow matching, RTC guidance, heads) is pi0's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from vla.model.layers.adarms import make_adaptive
from vla.model.pi0.model import Pi0Config, Pi0Model, sincos_time
from vla.spec import SpecError


@dataclass(frozen=True, kw_only=True)
class Pi05Config(Pi0Config):
    kind: ClassVar[str] = "pi05"

    max_tokens: int = 200
    prompt_format: str = "pi05"

    def __post_init__(self):
        super().__post_init__()
        if self.grounding is not None and self.grounding.env_state_input:
            raise SpecError(
                "pi05: grounding.env_state_input feeds the predicted scene facts into the state token, and "
                "pi0.5 has none (its state is in the prompt): set env_state_input = false"
            )


class Pi05Model(Pi0Model):
    uses_state_token = False
    adaptive_time = True

    def __init__(self, cfg: Pi05Config, vocab_size: int):
        super().__init__(cfg, vocab_size)
        make_adaptive(self.expert)

    def _state_token(self, state, emb, dtype, grounding=None):
        return None  # the state is in the prompt

    def _time_terms(self, t: torch.Tensor) -> torch.Tensor:
        """Flow times [n] -> the adaptive norms' condition [n, w]."""
        w_in = self.time_mlp_in.weight
        x = nn.functional.silu(self.time_mlp_in(sincos_time(t, self.cfg.expert.width).to(w_in.dtype)))
        return nn.functional.silu(self.time_mlp_out(x))

    def _suffix_at(self, state_tok, x_t: torch.Tensor, emb: list[str], term: torch.Tensor):
        """term: one condition [1 or b, w], or one per action token [1 or b, h, w] (per-token flow
        times: training-time RTC)."""
        tokens = self.action_in(x_t, emb)
        b = tokens.shape[0]
        return tokens, term.to(tokens.dtype).expand(b, *term.shape[1:])
