"""The one contract every model type meets (pi0, pi0.5, FAST, and whatever comes next).

Training, checkpoints and the runtime talk to a model only through these methods, so a new
model type is one config dataclass + one `ActionModel` subclass + one line in
`vla.model.registry.MODEL_TYPES`; nothing else branches on the type.

    build(cfg, text_vocab=, assets=)       the model for a resolved config (classmethod)
    compute_loss(batch, generator) -> [b]  per-sample training loss on a model-side batch
    sample(batch, ...) -> ActionSample     normalized actions [b, h, a_max] + malformed rows [b]
    sample_actions(batch, ...) -> [b, h, a]  the actions alone
    training_draws(n, batch, generator)    random inputs drawn for the whole global batch (DDP)
    initial_noise(embodiments)             the runtime's noise draw (None: the model needs none)

Data-derived pieces beyond weights (FAST's action tokenizers) are the type's *assets*:
fitted once at the start of training (`fit_assets`), saved beside the weights
(`save_assets` / `load_assets`), and turned into worker-side training targets
(`action_targets`). Model-side batch keys are named in `vla.model.pi0.model`'s docstring.

Every type's config derives from `ModelConfig`: the fields all types have (backbone, horizon,
camera slots, token budget, embodiments ...) with their checks, and what the rest of the stack
asks of a config (`from_dict`, `padded_dim`, `predicts_env_state`, `prefix_tokens`,
`with_depths`, `example_batch`), so nothing probes a config with hasattr. What memory
estimation needs of a type's layout is the model class's `layer_streams(cfg)`.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from vla.model.backbones.config import BackboneConfig
from vla.model.rtc import RTCRequest
from vla.model.transforms import PROMPT_FORMATS
from vla.spec import SpecError

log = logging.getLogger(__name__)


@dataclass
class ActionSample:
    actions: torch.Tensor  # [b, h, a_max] normalized, padded to the batch's widest action dim
    malformed: torch.Tensor  # [b] bool: the row's decode failed; its actions are a best effort


# Worker-side hook: (embodiment names, normalized actions [b, h, a_max] numpy) -> extra batch keys.
ActionTargets = Callable[[list, Any], dict]

FUSE_MAX_PARAMS = 300_000_000  # prepare_for_inference fuses projections of models up to this size
COUNT_PREFIX = "count/"  # batch keys the trainer sums over steps and logs (e.g. count/fast_truncated)


def int_at_least(v, low: int) -> bool:
    """Whether a config value is an integer (not a bool) >= low."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= low


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The fields every model type's config has, and their checks. A type's config derives from
    it and adds its own (keyword-only, so a subclass may add fields without defaults)."""

    backbone: BackboneConfig
    horizon: int = 50  # actions per chunk (h)
    cameras: int = 2  # camera slots; an embodiment with fewer cameras masks the rest
    max_tokens: int = 16  # language tokens of the prompt (l)
    # name -> (state_dim, action_dim); filled from the training data's embodiments
    embodiments: dict = field(default_factory=dict)
    grad_checkpoint: bool = False
    # Joint actions relative to the chunk's start state (openpi does this for joint-space robots):
    # the model predicts a_t - s for every action dim that commands a state dim in the same unit
    # (rad or m; never the gripper), so a chunk starts where the robot is by construction.
    delta_actions: bool = False
    # How the instruction becomes text (vla.model.transforms.PROMPT_FORMATS): "plain", or
    # "paligemma" (openpi's pi0: the cleaned text + "\n" after BOS), or "pi05" (state in the prompt).
    prompt_format: str = "plain"
    # Training-time real-time chunking (vla.model.rtc, mode "trained"): D > 0 draws a delay d per
    # sample, uniform over 0..D; the first d actions are given clean (flow time 0) and left out of
    # the loss. Set by the trainer from [train] rtc_max_delay; 0: trained as published.
    rtc_max_delay: int = 0

    kind: ClassVar[str] = "model"  # the type's name in messages
    trains_rtc: ClassVar[bool] = False  # whether the type can be trained with rtc_max_delay > 0

    def __post_init__(self):
        if isinstance(self.backbone, dict):
            object.__setattr__(self, "backbone", BackboneConfig(**self.backbone))
        small = [k for k in ("horizon", "cameras", "max_tokens") if not int_at_least(getattr(self, k), 1)]
        if small:
            got = ", ".join(f"{k} = {getattr(self, k)!r}" for k in small)
            names = " and ".join([", ".join(small[:-1]), small[-1]] if len(small) > 1 else small)
            raise SpecError(f"{self.kind}: {names} must be >= 1, got {got}")
        if not int_at_least(self.rtc_max_delay, 0) or self.rtc_max_delay >= self.horizon:
            raise SpecError(
                f"{self.kind}: rtc_max_delay must be an int in 0..horizon - 1 = {self.horizon - 1}, "
                f"got {self.rtc_max_delay!r}"
            )
        if self.rtc_max_delay and not self.trains_rtc:
            raise SpecError(
                f"{self.kind}: training-time RTC (rtc_max_delay = {self.rtc_max_delay}) is for the flow models "
                "(pi0, pi05); set it to 0"
            )
        if self.prompt_format not in PROMPT_FORMATS:
            raise SpecError(f"{self.kind}: prompt_format must be one of {PROMPT_FORMATS}, got {self.prompt_format!r}")
        emb = {}
        for name, dims in dict(self.embodiments).items():
            dims = tuple(dims) if isinstance(dims, (list, tuple)) else (dims,)
            if len(dims) != 2 or not all(int_at_least(d, 1) for d in dims):
                raise SpecError(
                    f"{self.kind}: embodiments[{name!r}] must be (state_dim, action_dim), both ints >= 1, got {dims}"
                )
            emb[name] = tuple(int(d) for d in dims)
        object.__setattr__(self, "embodiments", emb)

    # ---- what the rest of the stack asks of a config ----
    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """A preset's [model] table or a checkpoint's config.json "policy.config" -> the config.
        A type whose layout changed maps its older layouts here (vla.model.pi0.model.Pi0Config)."""
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def padded_dim(self) -> int:
        """The one width every embodiment's state and actions are zero-padded to (openpi's shared
        heads); 0: each embodiment keeps its own dims."""
        return 0

    @property
    def predicts_env_state(self) -> bool:
        """Whether the model regresses the training-only scene facts (vla.spec.ENV_STATE) as an
        auxiliary loss, and so can be asked for them (`vla bench learn`'s grounding error)."""
        return False

    @property
    def prefix_tokens(self) -> int:
        """Tokens per sample of the observation prefix (every camera slot's image tokens + text)."""
        return self.cameras * self.backbone.tokens_per_image + self.max_tokens

    def with_depths(self, depth: int, vision_depth: int, **more) -> "ModelConfig":
        """The same config with every decoder stack `depth` layers deep and the vision tower
        `vision_depth` (vla.train.memory measures per-layer activations on 1- and 2-layer copies).
        A type with more stacks passes their changes in `more` (one replace: checked once)."""
        bb = self.backbone
        text = replace(bb.text, depth=depth)
        return replace(self, backbone=replace(bb, text=text, vision_depth=vision_depth), **more)

    def example_batch(self, batch_size: int = 2, *, vocab_size: int = 64, seed: int = 0) -> dict:
        """Random model inputs of the right shapes (tests build models with no data on disk)."""
        return example_inputs(self, batch_size, vocab_size=vocab_size, seed=seed)


def example_inputs(cfg: ModelConfig, batch_size: int, *, vocab_size: int, seed: int = 0) -> dict:
    """Random model-side inputs for a config: images, tokens, state, embodiment, normalized actions."""
    if not cfg.embodiments:
        raise SpecError(f"{type(cfg).__name__}: example_batch needs at least one embodiment in the config")
    g = torch.Generator().manual_seed(seed)
    names = sorted(cfg.embodiments)
    padded = cfg.padded_dim  # openpi's convention: everything padded to one width
    s = max(padded, *(d[0] for d in cfg.embodiments.values()))
    a = max(padded, *(d[1] for d in cfg.embodiments.values()))
    size, n_tok = cfg.backbone.image_size, cfg.max_tokens
    tokens = torch.randint(4, vocab_size, (batch_size, n_tok), generator=g)
    token_mask = torch.arange(n_tok)[None] < torch.randint(2, n_tok + 1, (batch_size, 1), generator=g)
    return {
        "images": torch.rand(batch_size, cfg.cameras, 3, size, size, generator=g) * 2 - 1,
        "image_mask": torch.ones(batch_size, cfg.cameras, dtype=torch.bool),
        "tokens": tokens,
        "token_mask": token_mask,
        "state": torch.randn(batch_size, s, generator=g),
        "embodiment": [names[i % len(names)] for i in range(batch_size)],
        "actions": torch.randn(batch_size, cfg.horizon, a, generator=g),
        "action_is_pad": torch.zeros(batch_size, cfg.horizon, dtype=torch.bool),
    }


class ActionModel(nn.Module):
    """Base class of every model type. Subclasses implement `compute_loss` and `_sample`."""

    supports_guidance = False  # real-time chunking (inpainting towards a guide chunk)

    def rtc_modes(self) -> tuple[str, ...]:
        """The real-time chunking modes (vla.model.rtc.MODES) `sample(rtc=...)` honours; () : none
        (a request is then ignored, and the chunk decoded unguided)."""
        return ()

    # ---- construction and assets ----
    @classmethod
    def build(cls, cfg, *, text_vocab: int, assets: dict) -> "ActionModel":
        return cls(cfg, text_vocab)

    @classmethod
    def fit_assets(cls, cfg, dataset, stats, norm_mode: str, *, seed: int = 0, chunks: int = 2000) -> dict:
        """Assets learned from the training data (`dataset`: a vla.data.sampler.WindowDataset)."""
        return {}

    @classmethod
    def save_assets(cls, assets: dict, directory: Path) -> None:
        """Write `assets` into the checkpoint directory being assembled."""

    @classmethod
    def load_assets(cls, directory: Path) -> dict:
        return {}

    @classmethod
    def action_targets(cls, cfg, assets: dict, text_vocab: int) -> ActionTargets | None:
        """Extra training targets computed in the data workers from the normalized actions."""
        return None

    @classmethod
    def layer_streams(cls, cfg: ModelConfig) -> list[tuple[int, int]]:
        """(tokens per sample, width) of each token stream through the decoder layers: what
        memory estimation (vla.train.memory) needs of the type's layout. Default: the prefix alone."""
        return [(cfg.prefix_tokens, cfg.backbone.text.width)]

    def example_batch(self, batch_size: int = 2, *, seed: int = 0) -> dict:
        """A random model-side training batch this model accepts (no data on disk)."""
        return self.cfg.example_batch(batch_size, vocab_size=self.text_vocab, seed=seed)

    # ---- training ----
    def compute_loss(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """The training entry point (so DDP's hooks run): per-sample loss [b]."""
        return self.compute_loss(batch, generator)

    def training_draws(self, batch_size: int, batch: dict, generator: torch.Generator) -> dict:
        """Random inputs for the *global* batch of a step (rows are sliced per DDP rank), so N
        processes draw exactly what one process would. Default: none."""
        return {}

    # ---- inference ----
    def initial_noise(self, embodiments: list[str], generator: torch.Generator | None = None) -> torch.Tensor | None:
        return None

    def sample(
        self,
        batch: dict,
        *,
        num_steps: int | None = None,
        noise: torch.Tensor | None = None,
        guide: torch.Tensor | None = None,
        guide_weights: torch.Tensor | None = None,
        rtc: RTCRequest | None = None,
        **kwargs,
    ) -> ActionSample:
        """rtc: a real-time chunking request (vla.model.rtc.RTCRequest). A model with no RTC
        modes logs it and decodes unguided; mode "guided" runs with autograd (not in inference mode)."""
        if rtc is not None and not self.rtc_modes():
            log.debug("real-time chunking is not supported by %s; decoding unguided", type(self).__name__)
            rtc = None
        if rtc is not None:
            kwargs["rtc"] = rtc
        grad = rtc is not None and rtc.needs_grad
        with torch.inference_mode(not grad), torch.no_grad():
            return self._sample(
                batch, num_steps=num_steps, noise=noise, guide=guide, guide_weights=guide_weights, **kwargs
            )

    def _sample(self, batch: dict, *, num_steps, noise, guide, guide_weights, **kwargs) -> ActionSample:
        raise NotImplementedError

    def sample_actions(self, batch: dict, **kwargs) -> torch.Tensor:
        """Normalized actions [b, h, a_max] for a model-side batch (see `sample`)."""
        return self.sample(batch, **kwargs).actions

    def prepare_for_inference(self) -> None:
        """Fuse what can be fused for eval (weights unchanged, outputs equal within fp error).
        Fusion keeps merged copies of the projections beside the originals; it pays where kernel
        launches bound the latency (small models), so a model of over FUSE_MAX_PARAMS parameters
        is left unfused: a full-size pi0 would otherwise serve at 1.55x its weights' memory."""
        from vla.model.layers.attention import fuse_for_inference

        if sum(p.numel() for p in self.parameters()) > FUSE_MAX_PARAMS:
            return
        fuse_for_inference(*self.decoder_stacks())

    def decoder_stacks(self) -> list[nn.Module]:
        return [self.backbone.language_model]

    def loss_terms(self) -> dict[str, float]:
        """The separate terms of the last compute_loss (batch means), for the training log; {} when
        the loss has one term."""
        return {}

    def enable_compile(self) -> bool:
        """Compile the sampler with torch.compile where the type supports it; -> whether it does."""
        return False
