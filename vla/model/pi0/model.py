"""pi0: a VLM backbone plus a flow-matching action expert that attends jointly with it.

The backbone is any family of vla.model.backbones (PaliGemma as published, SmolVLM2, Qwen-VL,
a mixture-of-experts Qwen3-VL). The expert attaches by `attach`:
    "joint"  pi0: every layer attends jointly over prefix + suffix (vla.model.layers.attention); the
             expert needs the backbone's depth, head count, kv-head count and head dim
    "cross"  SmolVLA: the expert reads the VLM's per-layer keys/values, by cross-attention in most
             layers and joint-style self-attention in every `self_attn_every`-th
             (vla.model.layers.cross_attention); its width and depth are free (depth divides the VLM's)

Token layout (see vla.model.layers.attention for the mask rule):
    prefix = [image tokens of every camera slot][language tokens]   ar = 0 (bidirectional)
    suffix = [state token][h action tokens]                          ar = 1, 1, 0, 0, ...
The prefix never sees the suffix, so at inference the prefix KV cache is computed once per
observation and reused by every denoising step.

One optional component that the published pi0 has not: `grounding` (vla.model.grounding.tokens, a
preset's [model.grounding]; None as published) adds early-fusion grounding tokens at the end of
the prefix and a projection of them to the state token.

Flow matching. Convention (as openpi's code, the reverse of the pi0 paper's notation):
t = 1 is pure noise, t = 0 is the data. x_t = t * noise + (1 - t) * actions; the expert
predicts the velocity u = noise - actions; t ~ Beta(1.5, 1) * 0.999 + 0.001, so training
dwells on noisier times. Sampling integrates dx/dt = v from t = 1 to 0 in `num_steps` Euler
steps of dt = -1 / num_steps.

Batch keys (model side, produced by vla.model.transforms):
    images [b, c, 3, S, S] float in [-1, 1]   image_mask [b, c] bool
    tokens [b, l] long   token_mask [b, l] bool   state [b, s] float (normalized, padded)
    embodiment list[str]   actions [b, h, a] float (normalized, padded)   action_is_pad [b, h]
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import nn

from vla.model.backbones import Backbone, Prefix
from vla.model.backbones.config import GemmaSize
from vla.model.contract import ActionModel, ActionSample, ModelConfig, int_at_least
from vla.model.grounding.tokens import Grounding, GroundingConfig, grounding_from_flat
from vla.model.layers.attention import attn_bias, joint_forward, make_attn_mask, rope
from vla.model.layers.cross_attention import CrossPlan, adapt_expert, expert_context, expert_forward
from vla.model.layers.heads import make_head
from vla.model.rtc import GUIDED_MODES, RTCRequest, guided_velocity
from vla.spec import SpecError


@dataclass(frozen=True, kw_only=True)
class Pi0Config(ModelConfig):
    """pi0 as published, plus one optional research component (`grounding`). The fields every
    model type has (backbone, horizon, cameras, max_tokens, embodiments, ...) are ModelConfig's."""

    kind: ClassVar[str] = "pi0"
    trains_rtc: ClassVar[bool] = True

    expert: GemmaSize
    num_steps: int = 10
    # Steps past an episode's end hold its last action. False (as openpi): they are trained, so
    # the policy learns to stay put once done; True: masked out of the loss (their predictions
    # are then unconstrained, and a chunk that runs past the learned end of a task drifts).
    mask_padded_actions: bool = False
    # Fraction of training samples drawn at t = 1 (pure noise) instead of from Beta(1.5, 1). At
    # t = 1 the noisy actions carry nothing, so the expert can only lower its loss by reading the
    # observation; 0 is pi0 as published.
    time_at_one: float = 0.0
    # Sampling only: the standard deviation of the noise each chunk's denoising starts from. 1 is
    # pi0 as published (a draw of N(0, I)); 0 starts every chunk at the zero vector, so the policy
    # answers one observation with one chunk, the flow's most central one (on ALOHA transfer-cube
    # the same checkpoint handed the cube over in 23/50 episodes against 16/50 at 1).
    noise_scale: float = 1.0
    # openpi's convention (0: per-embodiment heads, GR00T style, the default for training from
    # scratch): N > 0 gives one state head and one action head over N zero-padded dims shared by
    # every embodiment, as the published pi0 / pi0.5 weights have (N = 32).
    shared_head_dim: int = 0
    # How the expert attaches to the VLM (module docstring): "joint" (pi0) or "cross" (SmolVLA).
    attach: str = "joint"
    # attach = "cross": expert layers 0, n, 2n, ... self-attend jointly, the others cross-attend
    # (SmolVLA: 2); 0: every layer cross-attends.
    self_attn_every: int = 2
    # Early fusion (vla.model.grounding.tokens), a preset's [model.grounding]: grounding tokens pooled
    # from the image tokens by the instruction join the prefix; None is pi0 as published.
    grounding: GroundingConfig | None = None

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.expert, dict):
            object.__setattr__(self, "expert", GemmaSize(**self.expert))
        if isinstance(self.grounding, dict):
            object.__setattr__(self, "grounding", GroundingConfig(**self.grounding))
        self._check_attachment()
        if not int_at_least(self.num_steps, 1):
            raise SpecError(f"{self.kind}: num_steps must be an int >= 1, got {self.num_steps!r}")
        if not 0.0 <= self.time_at_one < 1.0:
            raise SpecError(f"{self.kind}: time_at_one must be in [0, 1), got {self.time_at_one}")
        if (
            isinstance(self.noise_scale, bool)
            or not isinstance(self.noise_scale, numbers.Real)
            or not (0.0 <= self.noise_scale <= 1.0)
        ):
            raise SpecError(f"{self.kind}: noise_scale must be a number in [0, 1], got {self.noise_scale!r}")
        object.__setattr__(self, "noise_scale", float(self.noise_scale))  # np.float32 in, a JSON number out
        if not int_at_least(self.shared_head_dim, 0):
            raise SpecError(f"{self.kind}: shared_head_dim must be an int >= 0, got {self.shared_head_dim!r}")
        wide = {k: v for k, v in self.embodiments.items() if self.shared_head_dim and max(v) > self.shared_head_dim}
        if wide:
            raise SpecError(f"{self.kind}: embodiment dims {wide} exceed shared_head_dim {self.shared_head_dim}")

    @classmethod
    def from_dict(cls, d: dict) -> "Pi0Config":
        """As ModelConfig.from_dict; a dict in the layout before [model.grounding] (the grounding
        fields flat in [model]) is mapped by vla.model.grounding.tokens.grounding_from_flat."""
        return cls(**grounding_from_flat(d, cls.kind))

    @property
    def padded_dim(self) -> int:
        return self.shared_head_dim

    @property
    def predicts_env_state(self) -> bool:
        return self.grounding is not None and self.grounding.env_state_loss > 0

    @property
    def prefix_tokens(self) -> int:
        return super().prefix_tokens + (self.grounding.tokens if self.grounding is not None else 0)

    def with_depths(self, depth: int, vision_depth: int, **more) -> "Pi0Config":
        return super().with_depths(depth, vision_depth, expert=replace(self.expert, depth=depth), **more)

    def _check_attachment(self) -> None:
        t, e = self.backbone.text, self.expert
        heads = ("heads", "kv_heads", "head_dim")
        if self.attach == "joint":
            for k in ("depth", *heads):
                if getattr(t, k) != getattr(e, k):
                    raise SpecError(
                        f"{self.kind}: expert.{k} must equal the backbone's for joint attention: expected "
                        f"{getattr(t, k)}, got {getattr(e, k)}; or attach the expert by cross-attention "
                        f'(attach = "cross", as SmolVLA: expert width, depth and heads free)'
                    )
        elif self.attach == "cross":
            if t.depth % e.depth:
                raise SpecError(
                    f'{self.kind}: attach = "cross" pairs expert layer j with VLM layer j * (depth ratio): '
                    f"expert.depth must divide the backbone's {t.depth}, got {e.depth}"
                )
            if self.self_attn_every < 0:
                raise SpecError(f"{self.kind}: self_attn_every must be >= 0, got {self.self_attn_every}")
            for k in heads if self.self_attn_every else ():
                if getattr(t, k) != getattr(e, k):
                    raise SpecError(
                        f"{self.kind}: expert.{k} must equal the backbone's for the self-attention layers of "
                        f'attach = "cross" (every {self.self_attn_every}): expected {getattr(t, k)}, '
                        f"got {getattr(e, k)}; or set self_attn_every = 0 (cross-attention only)"
                    )
        else:
            raise SpecError(f'{self.kind}: attach must be "joint" or "cross", got {self.attach!r}')


def sincos_time(t: torch.Tensor, width: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """t [b] -> [b, width] sine-cosine embedding with periods from min_period to max_period."""
    frac = torch.linspace(0.0, 1.0, width // 2, device=t.device, dtype=torch.float64)
    period = min_period * (max_period / min_period) ** frac
    angle = t.double()[:, None] * (2 * math.pi / period)[None]
    return torch.cat([angle.sin(), angle.cos()], dim=-1).to(t.dtype if t.is_floating_point() else torch.float32)


class Pi0Model(ActionModel):
    supports_guidance = True

    def __init__(self, cfg: Pi0Config, vocab_size: int):
        super().__init__()
        if not cfg.embodiments:
            raise SpecError("pi0: the config names no embodiments (they come from the training data)")
        self.cfg, self.text_vocab = cfg, vocab_size
        self.backbone = Backbone(cfg.backbone, vocab_size)
        self.expert = self.backbone.make_expert(cfg.expert)  # its token embedding is unused
        w, shared = cfg.expert.width, cfg.shared_head_dim
        states = {k: v[0] for k, v in cfg.embodiments.items()}
        acts = {k: v[1] for k, v in cfg.embodiments.items()}
        if self.uses_state_token:
            self.state_in = make_head(states, w, direction="in", shared=shared)
        self.action_in = make_head(acts, w, direction="in", shared=shared)
        self.action_out = make_head(acts, w, direction="out", shared=shared)
        self.time_mlp_in = nn.Linear(w if self.adaptive_time else 2 * w, w)
        self.time_mlp_out = nn.Linear(w, w)
        self._embodiment_ids = {n: i for i, n in enumerate(sorted(cfg.embodiments))}
        self.grounding = None  # the optional research component (vla.model.grounding.tokens)
        if cfg.grounding is not None:
            d = self.backbone.width
            self.grounding = Grounding.build(
                cfg.grounding,
                d,
                heads=cfg.backbone.text.heads,
                cameras=cfg.cameras,
                embodiments=len(cfg.embodiments) + 1,  # + one for an embodiment the config does not name
            )
            if self.uses_state_token:
                self.grounding_to_state = nn.Linear(cfg.grounding.tokens * d, w)
                if cfg.grounding.env_state_input:
                    self.env_state_in = nn.Linear(cfg.grounding.env_state_dim, w)
        self._loss_terms: dict[str, torch.Tensor] = {}
        self.cross_plan = None
        if cfg.attach == "cross":
            lm = self.backbone.language_model.config
            kv_width = lm.num_key_value_heads * (
                getattr(lm, "head_dim", None) or lm.hidden_size // lm.num_attention_heads
            )
            self.cross_plan = CrossPlan.make(cfg.backbone.text.depth, cfg.expert.depth, cfg.self_attn_every)
            adapt_expert(self.expert, self.cross_plan, kv_width)

    uses_state_token = True  # pi0: the state is a suffix token; pi0.5 writes it into the prompt
    adaptive_time = False  # pi0: time joins each action token; pi0.5: it conditions adaptive RMSNorms

    @classmethod
    def layer_streams(cls, cfg: Pi0Config) -> list[tuple[int, int]]:
        """The prefix through the VLM's layers, the suffix (state token + actions) through the expert's."""
        suffix = cfg.horizon + int(cls.uses_state_token)
        return [(cfg.prefix_tokens, cfg.backbone.text.width), (suffix, cfg.expert.width)]

    def action_width(self, embodiments: list[str]) -> int:
        """Width of the model's action chunks for a batch: the shared head's, or the widest row's."""
        return self.cfg.shared_head_dim or max(self.cfg.embodiments[n][1] for n in embodiments)

    def _check_embodiments(self, embodiments: list[str]) -> None:
        unknown = sorted(set(embodiments) - set(self.cfg.embodiments))
        if unknown and not self.cfg.shared_head_dim:
            raise KeyError(f"no head for embodiment(s) {unknown}; this model knows {sorted(self.cfg.embodiments)}")

    # ---- embeddings ----
    def prefix(self, batch: dict) -> Prefix:
        """The observation's tokens, validity and positions (vla.model.backbones.base.Prefix)."""
        return self.observe(batch)[0]

    def observe(self, batch: dict) -> tuple[Prefix, torch.Tensor | None]:
        """-> the prefix (with the grounding tokens at its end) and the grounding tokens [b, K, d]
        (None without grounding)."""
        p = self.backbone.embed_prefix(batch["images"], batch["image_mask"], batch["tokens"], batch["token_mask"])
        if self.grounding is None:
            return p, None
        n_img = p.embeds.shape[1] - batch["tokens"].shape[1]  # [image tokens][text tokens]
        extra = {}
        if self.grounding.keypoints is not None:
            extra = {
                "pixels": batch["images"],
                "pixel_mask": batch["image_mask"],
                "embodiment": self._embodiment_index(batch["embodiment"], batch["images"].device),
            }
        g = self.grounding(p.embeds[:, :n_img], p.valid[:, :n_img], p.embeds[:, n_img:], batch["token_mask"], **extra)
        valid = torch.ones(g.shape[:2], dtype=torch.bool, device=g.device)
        return p.extend(g, valid), g

    def _embodiment_index(self, names: list[str], device) -> torch.Tensor:
        """Each row's index into the grounding's embodiment bias; one past the last for a name
        the config does not know."""
        unknown = len(self._embodiment_ids)
        return torch.tensor([self._embodiment_ids.get(n, unknown) for n in names], dtype=torch.long, device=device)

    def embed_prefix(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """-> tokens [b, lp, d], valid [b, lp]."""
        p = self.prefix(batch)
        return p.embeds, p.valid

    def prefix_cache(self, prefix: Prefix):
        """The VLM over the prefix alone (bidirectional) -> every layer's keys/values."""
        ar = torch.zeros(prefix.valid.shape, dtype=torch.long, device=prefix.valid.device)
        _, cache = joint_forward(
            [self.backbone.language_model, None],
            [prefix.embeds, None],
            make_attn_mask(prefix.valid, ar),
            prefix.positions,
            keep_kv=True,
            grad_checkpoint=self.cfg.grad_checkpoint and self.training,
            layer_adds=prefix.layer_adds,
        )
        return cache

    def embed_suffix(self, state: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, emb: list[str], grounding=None):
        """t: flow time [b], or one per action token [b, h] (training-time RTC).
        -> tokens [b, n_state + h, w], ar [b, n_state + h], adaptive-norm condition ([b, w] or
        [b, h, w]) or None."""
        state_tok = self._state_token(state, emb, x_t.dtype, grounding)
        terms = self._time_terms(t) if t.dim() == 1 else self._time_terms(t.reshape(-1)).reshape(*t.shape, -1)
        tokens, cond = self._suffix_at(state_tok, x_t, emb, terms)
        return tokens, self._suffix_ar(x_t.shape[0], x_t.shape[1], x_t.device), cond

    def _suffix_ar(self, b: int, h: int, device) -> torch.Tensor:
        """[state] opens a block (it sees the prefix and itself), the actions open the next."""
        n = int(self.uses_state_token)
        ar = torch.zeros(b, n + h, dtype=torch.long, device=device)
        ar[:, : n + 1] = 1
        return ar

    def _state_token(self, state: torch.Tensor, emb: list[str], dtype, grounding=None) -> torch.Tensor | None:
        tok = self.state_in(state.to(dtype), emb)
        if grounding is not None:  # what the instruction picked out of the images, one hop from the actions
            tok = tok + self.grounding_to_state(grounding.flatten(1).to(tok.dtype))
            if self.cfg.grounding.env_state_input:
                facts = self.grounding.predict(grounding).detach()
                tok = tok + self.env_state_in(facts.to(tok.dtype))
        return tok[:, None]

    def _time_terms(self, t: torch.Tensor) -> torch.Tensor:
        """Per flow time what the suffix needs of it: here the time half of the action MLP's
        first layer, [n] -> [n, 1, w] (computed for all denoising steps at once)."""
        w = self.cfg.expert.width
        w_in = self.time_mlp_in.weight
        return (sincos_time(t, w).to(w_in.dtype) @ w_in[:, w:].T + self.time_mlp_in.bias)[:, None]

    def _suffix_at(self, state_tok, x_t: torch.Tensor, emb: list[str], term: torch.Tensor):
        """-> suffix tokens for noisy actions x_t at the time whose term is given, and the
        condition of the expert's adaptive norms (None: pi0 has none)."""
        return torch.cat([state_tok, self._action_tokens(x_t, emb, term)], 1), None

    def _action_tokens(self, x_t: torch.Tensor, emb: list[str], time_term: torch.Tensor) -> torch.Tensor:
        """Noisy actions + flow time -> [b, h, w]: MLP(concat(action_emb, sincos(t))), as pi0.
        The concat-then-Linear is computed as two halves; the time half comes precomputed."""
        a = self.action_in(x_t, emb)
        hid = a @ self.time_mlp_in.weight[:, : a.shape[-1]].T + time_term.to(a.dtype)
        return self.time_mlp_out(nn.functional.silu(hid))

    def _suffix_out(self, hidden: torch.Tensor, emb: list[str]) -> torch.Tensor:
        return self.action_out(hidden[:, int(self.uses_state_token) :], emb)  # drop the state token

    # ---- training ----
    def sample_time(self, b: int, generator=None, device=None) -> torch.Tensor:
        # Beta(1.5, 1) by its inverse CDF, F(t) = t^1.5 (torch's Beta sampler takes no generator).
        t = torch.rand(b, generator=generator) ** (1 / 1.5) * 0.999 + 0.001
        if self.cfg.time_at_one > 0:
            t = torch.where(torch.rand(b, generator=generator) < self.cfg.time_at_one, torch.ones(b), t)
        return t.to(device)

    def sample_delay(self, b: int, generator=None, device=None) -> torch.Tensor:
        """Training-time RTC: the clean prefix length of each sample, uniform over 0..rtc_max_delay."""
        return torch.randint(0, self.cfg.rtc_max_delay + 1, (b,), generator=generator).to(device)

    def compute_loss(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample flow-matching MSE [b], over real action dims (and steps, see mask_padded_actions).

        With rtc_max_delay = D > 0 (training-time RTC, arXiv 2512.05964) each sample's first d
        actions (d uniform over 0..D) are given clean, at flow time 0 (per-token times), and left
        out of the loss, so the model learns to continue a committed prefix."""
        actions, emb = batch["actions"], batch["embodiment"]
        b, h = actions.shape[:2]
        # The trainer may hand in the noise, times and delays (drawn for the global batch, so DDP
        # ranks see exactly what one process would); otherwise draw them here.
        noise = batch["noise"] if "noise" in batch else torch.randn(actions.shape, generator=generator).to(actions)
        t = batch["time"] if "time" in batch else self.sample_time(b, generator, actions.device)
        t = t.to(actions.dtype)
        held = None  # [b, h] True on the clean prefix (training-time RTC)
        if self.cfg.rtc_max_delay:
            d = batch["rtc_delay"] if "rtc_delay" in batch else self.sample_delay(b, generator, actions.device)
            held = torch.arange(h, device=actions.device)[None] < d.to(actions.device)[:, None]
            t = torch.where(held, torch.zeros_like(t)[:, None], t[:, None])  # per token [b, h]
        tt = t[..., None] if held is not None else t[:, None, None]
        x_t = tt * noise + (1 - tt) * actions
        target = noise - actions
        p, g = self.observe(batch)
        suffix, s_ar, cond = self.embed_suffix(batch["state"], x_t, t, emb, g)
        suffix = suffix.to(p.embeds.dtype)
        if self.cross_plan is not None:  # the prefix first, then the expert on its keys/values
            ctx = expert_context(self.expert, self.cross_plan, self.prefix_cache(p))
            out = expert_forward(
                self.expert, self.cross_plan, suffix, ctx, cond=cond, **self._cross_masks(p, s_ar, suffix)
            )
        else:
            s_valid = torch.ones(s_ar.shape, dtype=torch.bool, device=s_ar.device)
            valid = torch.cat([p.valid, s_valid], 1)
            ar = torch.cat([torch.zeros(p.valid.shape, dtype=torch.long, device=s_ar.device), s_ar], 1)
            (_, out), _ = joint_forward(
                [self.backbone.language_model, self.expert],
                [p.embeds, suffix],
                make_attn_mask(valid, ar),
                _positions_with_suffix(p, s_valid),
                grad_checkpoint=self.cfg.grad_checkpoint and self.training,
                conds=[None, cond],
                layer_adds=p.layer_adds,
            )
        v = self._suffix_out(out, emb).float()
        dim_mask = self.action_out.dim_mask(emb, device=v.device)[:, None, : v.shape[-1]]
        mask = dim_mask.expand(-1, v.shape[1], -1)
        if self.cfg.mask_padded_actions:
            mask = mask & ~batch["action_is_pad"][:, :, None]
        if held is not None:
            mask = mask & ~held[:, :, None]
        mask = mask.float()
        err = (v - target[..., : v.shape[-1]].float()) ** 2 * mask
        loss = err.sum((1, 2)) / mask.sum((1, 2)).clamp(min=1)
        weight = self.cfg.grounding.env_state_loss if self.cfg.grounding is not None else 0.0
        if weight and "env_state" in batch:
            aux = self.grounding.env_loss(g, batch["env_state"], batch["env_state_valid"])
            self._loss_terms = {"flow_loss": loss.detach().mean(), "env_state_loss": aux.detach().mean()}
            loss = loss + weight * aux
        return loss

    def loss_terms(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._loss_terms.items()}

    def _cross_masks(self, p: Prefix, s_ar: torch.Tensor, like: torch.Tensor) -> dict:
        """Masks and RoPE tables of attach = "cross" (vla.model.layers.cross_attention.expert_forward)."""
        ls = s_ar.shape[1]
        s_valid = torch.ones(s_ar.shape, dtype=torch.bool, device=s_ar.device)
        seen = p.valid[:, None, :].expand(-1, ls, -1)  # every real prefix token
        self_allowed = torch.cat([seen, make_attn_mask(s_valid, s_ar)], 2)
        return {
            "self_bias": attn_bias(self_allowed, like.dtype),
            "cross_bias": attn_bias(seen, like.dtype),
            "self_rope": rope(self.expert, like, p.after(s_valid)),
            "cross_rope": rope(self.expert, like, torch.cumsum(s_valid.long(), 1) - 1),
        }

    def training_draws(self, batch_size: int, batch: dict, generator: torch.Generator) -> dict:
        """Noise and flow times of the whole global batch (each DDP rank takes its rows)."""
        noise = torch.randn((batch_size, *batch["actions"].shape[1:]), generator=generator)
        draws = {"noise": noise, "time": self.sample_time(batch_size, generator)}
        if self.cfg.rtc_max_delay:
            draws["rtc_delay"] = self.sample_delay(batch_size, generator)
        return draws

    # ---- inference ----
    def initial_noise(self, embodiments: list[str], generator: torch.Generator | None = None) -> torch.Tensor:
        self._check_embodiments(embodiments)
        noise = torch.randn(len(embodiments), self.cfg.horizon, self.action_width(embodiments), generator=generator)
        return noise if self.cfg.noise_scale == 1.0 else noise * self.cfg.noise_scale  # drawn anyway: same stream

    def rtc_modes(self) -> tuple[str, ...]:
        modes = ("inpaint", "guided", "guided-nojac")
        return (*modes, "trained") if self.cfg.rtc_max_delay else modes

    def _sample(
        self, batch: dict, *, num_steps, noise, guide, guide_weights, use_cache: bool = True, rtc=None
    ) -> ActionSample:
        if rtc is not None and rtc.mode == "inpaint":  # the guide path, with the request's weights
            if guide is not None:
                raise ValueError("give either guide/guide_weights or an RTC request, not both")
            width = self.action_width(batch["embodiment"])
            like = torch.zeros(())  # float32 on the CPU: denoise moves the guide to the chunk's device
            if rtc.dim_mask is None:
                rtc = replace(rtc, dim_mask=self.action_out.dim_mask(batch["embodiment"])[:, :width])
            guide = rtc.padded(self.cfg.horizon, width, like)
            guide_weights = rtc.inpaint_weights(self.cfg.horizon, width, like)
            rtc = None
        if rtc is not None and rtc.mode not in self.rtc_modes():
            raise SpecError(
                f'RTC mode "{rtc.mode}" needs a model trained for it (vla train ... --rtc-max-delay D); '
                f"this {self.cfg.kind} model supports {list(self.rtc_modes())}"
            )
        fn = self.denoise if rtc is not None else self._denoise_fn  # the compiled sampler takes no RTC request
        x = fn(
            batch,
            num_steps=num_steps,
            noise=noise,
            use_cache=use_cache,
            guide=guide,
            guide_weights=guide_weights,
            rtc=rtc,
        )
        return ActionSample(x, torch.zeros(x.shape[0], dtype=torch.bool))

    @property
    def _denoise_fn(self):
        return getattr(self, "_compiled_denoise", None) or self.denoise

    def enable_compile(self) -> bool:
        # The noise is drawn outside (initial_noise), so the graph is the same for every call.
        self._compiled_denoise = torch.compile(self.denoise, dynamic=False)
        return True

    def decoder_stacks(self) -> list[nn.Module]:
        return [self.backbone.language_model, self.expert]

    def denoise(
        self,
        batch: dict,
        *,
        num_steps: int | None = None,
        noise: torch.Tensor | None = None,
        use_cache: bool = True,
        guide: torch.Tensor | None = None,
        guide_weights: torch.Tensor | None = None,
        rtc: RTCRequest | None = None,
    ) -> torch.Tensor:
        """Denoise a chunk -> [b, h, a] (normalized, padded to the batch's widest action dim).

        Inpainting for real-time chunking: `guide` [b, h, a] holds actions the new chunk should
        agree with (the old plan's actions that will run while this chunk is computed) and
        `guide_weights` [b, h] (or per dim [b, h, a]) in [0, 1] how strongly (1: frozen, 0: free).
        After every Euler step the guided positions are pulled towards the guide, noised to the
        current flow time along the same noise: x <- w * (t * noise + (1 - t) * guide) + (1 - w) * x.

        `rtc` (vla.model.rtc), modes "guided" / "guided-nojac": every step's velocity is
        vla.model.rtc.guided_velocity's (the previous chunk as prev_chunk, the model's padded dims
        unguided). Mode "trained" (a model trained with rtc_max_delay): the first d actions are
        the previous chunk's, fed clean at flow time 0 at every step (per-token times).
        """
        emb = batch["embodiment"]
        steps = num_steps or self.cfg.num_steps
        b = len(emb)
        self._check_embodiments(emb)
        a_dim = self.action_width(emb)
        p, g = self.observe(batch)
        prefix, p_valid = p.embeds, p.valid
        x = noise if noise is not None else self.initial_noise(emb)  # given noise is used as given
        x = x.to(prefix.device, prefix.dtype)
        x0 = x.clone()
        if guide is not None:
            if guide_weights is None:
                raise ValueError("guide needs guide_weights [b, h]")
            guide = guide.to(x)[..., : x.shape[-1]]
            gw = guide_weights.to(x)
            gw = gw[..., None] if gw.dim() == 2 else gw[..., : x.shape[-1]]
        held = clean = None  # mode trained: which steps are fed clean, and their values
        if rtc is not None:
            # the previous chunk comes padded to the checkpoint's widest robot; this batch's rows use a_dim
            rtc = replace(rtc, prev_chunk=rtc.prev_chunk[..., :a_dim].to(x))
            if rtc.dim_mask is None:
                rtc = replace(rtc, dim_mask=self.action_out.dim_mask(emb, x.device)[:, :a_dim])
            if rtc.mode == "trained":
                d = rtc.prefix_length(self.cfg.horizon, self.cfg.rtc_max_delay)
                if d > 0:
                    held = (torch.arange(self.cfg.horizon, device=x.device) < d)[None, :, None]
                    clean = rtc.padded(self.cfg.horizon, a_dim, x)
                    x = torch.where(held, clean, x)
        lm, ex = self.backbone.language_model, self.expert
        if use_cache:
            cache = self.prefix_cache(p)
        dt = -1.0 / steps
        # Masks and RoPE tables are the same at every step: build them once.
        s_ar = self._suffix_ar(b, self.cfg.horizon, x.device)
        s_valid = torch.ones(s_ar.shape, dtype=torch.bool, device=x.device)
        if self.cross_plan is not None:
            cross = self._cross_masks(p, s_ar, x)
            ctx = expert_context(ex, self.cross_plan, cache) if use_cache else None
        elif use_cache:
            # Suffix queries see every real prefix token plus the suffix's own blocks.
            allowed = torch.cat([p_valid[:, None, :].expand(-1, s_ar.shape[1], -1), make_attn_mask(s_valid, s_ar)], 2)
            stacks, cos_sin = [None, ex], rope(ex, x, p.after(s_valid))
        else:
            valid = torch.cat([p_valid, s_valid], 1)
            allowed = make_attn_mask(valid, torch.cat([torch.zeros_like(p_valid, dtype=torch.long), s_ar], 1))
            stacks, cos_sin = [lm, ex], self.backbone.rope(x, _positions_with_suffix(p, s_valid))
        if self.cross_plan is None:
            bias = attn_bias(allowed, x.dtype)
        state_tok = self._state_token(batch["state"], emb, x.dtype, g)  # the same at every step
        times = torch.tensor([1.0 + k * dt for k in range(steps)], dtype=x.dtype, device=x.device)
        terms = self._time_terms(times)  # every step's time features at once
        if held is not None:  # per token: flow time 0 on the clean prefix, the step's time after it
            term0 = self._time_terms(times.new_zeros(1)).reshape(1, 1, -1)

        def velocity(x, term):
            suffix, cond = self._suffix_at(state_tok, x, emb, term)
            if self.cross_plan is not None:  # uncached: the prefix's keys/values recomputed every step
                c = ctx if use_cache else expert_context(ex, self.cross_plan, self.prefix_cache(p))
                out = expert_forward(ex, self.cross_plan, suffix, c, cond=cond, **cross)
            elif use_cache:
                (_, out), _ = joint_forward(stacks, [None, suffix], bias, cos_sin, past=cache, conds=[None, cond])
            else:
                (_, out), _ = joint_forward(
                    stacks, [prefix, suffix], bias, cos_sin, conds=[None, cond], layer_adds=p.layer_adds
                )
            return self._suffix_out(out, emb)[..., : x.shape[-1]]

        for k in range(steps):
            term = terms[k : k + 1]
            if held is not None:
                term = torch.where(held, term0, term.reshape(1, 1, -1))
            if rtc is not None and rtc.mode in GUIDED_MODES:
                v = guided_velocity(
                    x,
                    rtc.prev_chunk,
                    rtc.inference_delay,
                    1.0 + k * dt,
                    lambda z, term=term: velocity(z, term),
                    rtc.execution_horizon,
                    rtc.schedule,
                    rtc.max_guidance_weight,
                    jacobian=rtc.mode == "guided",
                    dim_mask=rtc.dim_mask,
                )
            else:
                v = velocity(x, term)
            x = x + dt * v
            if guide is not None:
                t_next = 1.0 + (k + 1) * dt
                x = gw * (t_next * x0 + (1 - t_next) * guide) + (1 - gw) * x
            if held is not None:
                x = torch.where(held, clean, x)
        return x


def _positions_with_suffix(p: Prefix, valid: torch.Tensor) -> torch.Tensor:
    """Positions of the prefix followed by tokens of `valid` [b, n] (text-like), in the prefix's format."""
    after = p.after(valid)
    return torch.cat([p.positions, after[None].expand(3, -1, -1) if p.positions.dim() == 3 else after], -1)


Pi0Policy = Pi0Model  # the name before model types got one contract (vla.model.contract)
