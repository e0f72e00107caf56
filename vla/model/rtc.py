"""Real-time chunking (RTC): a new chunk that agrees with the actions already committed.

While a chunk is being computed the robot keeps executing the previous one, so the new chunk's
first `inference_delay` actions are already decided (they run before it arrives), and the next
ones, up to the `execution_horizon`, should blend from the old plan into the new one. The
sampler is told the previous chunk (`prev_chunk`, index 0 = the action at the new chunk's first
step) and bends its flow towards it.

Time convention (vla's, openpi's code and LeRobot's; the reverse of the RTC paper's tau): flow time
t = 1 is pure noise and t = 0 the data. The expert predicts a velocity v pointing from the data
to the noise, so the clean chunk estimated from a noisy x_t is x_t - t * v, and Euler steps go
x <- x + dt * v with dt < 0.

Modes (`MODES`), all of the flow models (pi0, pi0.5, pi0 on every backbone):
    inpaint       after every Euler step the weighted positions are reset towards the previous
                  chunk noised to the current time (vla.model.pi0.model.Pi0Model.denoise); cheap,
                  the model's own velocity is not changed
    guided        training-free PiGDM guidance as published (arXiv 2506.07339): the velocity is
                  corrected by the vector-Jacobian product of the weighted error between the old
                  plan and the clean estimate, through the denoiser (one backward pass per step)
    guided-nojac  LeRobot's RTCProcessor: the same weights and clamp, but the denoiser is run
                  without gradients, so the correction is the weighted error itself (no backward)
    trained       training-time RTC (arXiv 2512.05964): a model trained with `rtc_max_delay`
                  gets the executed prefix as clean tokens at flow time 0 at every step; no
                  guidance pass (vla.model.pi0.model)

`guided_velocity` is the guided step as a pure function; `prefix_weights` the soft mask W over
the chunk (1 on the first `inference_delay` actions, decaying to 0 at the execution horizon,
0 after); `guidance_weight` the clamped PiGDM weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from vla.spec import SpecError

MODES = ("inpaint", "guided", "guided-nojac", "trained")
SCHEDULES = ("zeros", "ones", "linear", "exp")
GUIDED_MODES = ("guided", "guided-nojac")
DEFAULT_SCHEDULE = "linear"
DEFAULT_MAX_GUIDANCE_WEIGHT = 10.0  # the paper's beta and LeRobot's default


def prefix_weights(
    inference_delay: int, execution_horizon: int, horizon: int, schedule: str = DEFAULT_SCHEDULE, *, device=None
) -> torch.Tensor:
    """The soft mask W [horizon] over a chunk's steps (float32).

    Steps before `inference_delay` (d) get 1 (they run before the new chunk arrives); steps from
    the execution horizon (e, capped at `horizon`) on get 0; between them the schedule decides:
        zeros   0 (only the delayed steps are held)
        ones    1 (everything before e is held)
        linear  (e - i) / (e - d + 1): from just below 1 down to just above 0
        exp     the linear value w times (e^w - 1) / (e - 1)
    A delay beyond the horizon holds everything before e.
    """
    if schedule not in SCHEDULES:
        raise SpecError(f"RTC schedule must be one of {SCHEDULES}, got {schedule!r}")
    for name, v in (("inference_delay", inference_delay), ("execution_horizon", execution_horizon)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
            raise SpecError(f"RTC {name} must be an int >= 0, got {v!r}")
    end = min(int(execution_horizon), horizon)
    start = min(int(inference_delay), end)
    i = torch.arange(horizon, dtype=torch.float64, device=device)
    held = i < start
    if schedule == "zeros":
        w = held.double()
    elif schedule == "ones":
        w = (i < end).double()
    else:
        ramp = ((end - i) / (end - start + 1)).clamp(0.0, 1.0) * (i < end)
        if schedule == "exp":
            ramp = ramp * torch.expm1(ramp) / (math.e - 1)
        w = torch.where(held, torch.ones_like(ramp), ramp)
    return w.float()


def guidance_weight(time, max_guidance_weight: float = DEFAULT_MAX_GUIDANCE_WEIGHT) -> torch.Tensor:
    """The PiGDM guidance weight at flow time `time` (float or tensor; float64 result).

    With tau = 1 - t (the paper's time, 1 = clean): c = (1 - tau) / tau * ((1 - tau)^2 + tau^2)
    / (1 - tau)^2, i.e. (t^2 + (1 - t)^2) / (t (1 - t)), clamped to `max_guidance_weight` (beta).
    At t = 1 (noise) it is beta; at t = 0 (the chunk is final) it is 0, as the published code.
    """
    if not max_guidance_weight > 0:
        raise SpecError(f"RTC max_guidance_weight must be > 0, got {max_guidance_weight!r}")
    t = torch.as_tensor(time, dtype=torch.float64)
    beta = torch.tensor(float(max_guidance_weight), dtype=torch.float64, device=t.device)
    inner = (t > 0) & (t < 1)
    ts = torch.where(inner, t, torch.full_like(t, 0.5))  # no 0/0 in the branch not taken
    w = (ts**2 + (1 - ts) ** 2) / (ts * (1 - ts))
    w = torch.where(inner, w, torch.where(t >= 1, beta, torch.zeros_like(t)))
    return torch.minimum(w, beta)


def guided_velocity(
    x_t: torch.Tensor,
    prev_chunk: torch.Tensor | None,
    inference_delay: int,
    time,
    denoise: Callable[[torch.Tensor], torch.Tensor],
    execution_horizon: int,
    schedule: str = DEFAULT_SCHEDULE,
    max_guidance_weight: float = DEFAULT_MAX_GUIDANCE_WEIGHT,
    jacobian: bool = True,
    *,
    dim_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """One guided velocity: v - c(t) * correction, where v = denoise(x_t).

    x_t [b, h, a] or [h, a]: the noisy chunk at flow time `time` (a float, or one per row [b]);
    `denoise(x) -> v` is called with a tensor of x_t's shape. prev_chunk [b or 1, h', a'] or
    [h', a'] (h' <= h, a' <= a; None: no guidance, v is returned): the previous chunk from the new
    chunk's first step on, zero-padded to [h, a]; a longer one is cut to h. The execution horizon
    is capped at h'. dim_mask [a] or [b, a] (optional): which action dims are guided (a model's
    padded dims carry no plan).

    The clean estimate is A = x_t - t * v and the weighted error e = (prev - A) * W (W =
    `prefix_weights`). jacobian=True (the paper): correction = e^T dA/dx_t, one vector-Jacobian
    product through `denoise`. jacobian=False (LeRobot's RTCProcessor, which evaluates the
    denoiser before enabling gradients): correction = e. c(t) = `guidance_weight`.
    """
    if prev_chunk is None:
        return denoise(x_t)
    if x_t.dim() not in (2, 3):
        raise SpecError(f"RTC x_t must be [b, h, a] or [h, a], got shape {tuple(x_t.shape)}")
    unbatched = x_t.dim() == 2
    x = x_t[None] if unbatched else x_t
    b, h, a = x.shape
    prev = prev_chunk[None] if prev_chunk.dim() == 2 else prev_chunk
    if prev.dim() != 3 or prev.shape[0] not in (1, b) or prev.shape[2] > a or prev.shape[1] < 1:
        raise SpecError(
            f"RTC prev_chunk must be [{b} or 1, h' >= 1, a' <= {a}] (or unbatched [h', a']) for x_t "
            f"{tuple(x_t.shape)}, got {tuple(prev_chunk.shape)}"
        )
    n = min(prev.shape[1], h)
    target = x.new_zeros(prev.shape[0], h, a)
    target[:, :n, : prev.shape[2]] = prev[:, :n].to(x)
    w = prefix_weights(inference_delay, min(execution_horizon, prev.shape[1]), h, schedule, device=x.device)
    w = w.to(x.dtype)[None, :, None]  # [1, h, 1]
    if dim_mask is not None:
        w = w * dim_mask.to(x.dtype, copy=False).reshape(-1, 1, a)
    t = _per_row(time, b, x)
    f = (lambda z: denoise(z[0])[None]) if unbatched else denoise
    if jacobian:
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "RTC guided (with the Jacobian) needs autograd: call it outside torch.inference_mode() "
                "(torch.no_grad() is fine)"
            )
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)  # a clone: x may be an inference tensor
            v = f(xg)
            clean = xg - t * v
            err = ((target - clean) * w).detach()
            (correction,) = torch.autograd.grad(clean, xg, err)
        v = v.detach()
    else:
        v = f(x)
        correction = (target - (x - t * v)) * w
    c = guidance_weight(time, max_guidance_weight).to(x.device, x.dtype)
    c = c.reshape(-1, 1, 1) if c.dim() else c
    out = v - c * correction
    return out[0] if unbatched else out


def _per_row(time, b: int, like: torch.Tensor):
    """A flow time (float, 0-dim or [b] tensor) broadcastable against [b, h, a]."""
    if torch.is_tensor(time) and time.dim():
        if time.numel() not in (1, b):
            raise SpecError(f"RTC time must be a float or one per row [{b}], got shape {tuple(time.shape)}")
        return time.to(like.device, like.dtype).reshape(-1, 1, 1)
    return float(time)


@dataclass(frozen=True)
class RTCRequest:
    """What the sampler needs for one RTC call (model side: normalized, padded tensors).

    prev_chunk [b, h', a_max]: the previous chunk in the model's normalized units from the new
    chunk's first step on; dim_mask [b, a_max]: each row's real action dims.
    """

    mode: str
    prev_chunk: torch.Tensor
    inference_delay: int
    execution_horizon: int
    schedule: str = DEFAULT_SCHEDULE
    max_guidance_weight: float = DEFAULT_MAX_GUIDANCE_WEIGHT
    dim_mask: torch.Tensor | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise SpecError(f"RTC mode must be one of {MODES}, got {self.mode!r}")
        prefix_weights(self.inference_delay, self.execution_horizon, 1, self.schedule)  # checks the ints
        if not self.max_guidance_weight > 0:
            raise SpecError(f"RTC max_guidance_weight must be > 0, got {self.max_guidance_weight!r}")
        if self.prev_chunk.dim() != 3 or self.prev_chunk.shape[1] < 1:
            raise SpecError(f"RTC prev_chunk must be [b, h' >= 1, a], got {tuple(self.prev_chunk.shape)}")

    @property
    def needs_grad(self) -> bool:
        """Whether sampling needs autograd (guided with the Jacobian)."""
        return self.mode == "guided"

    def padded(self, horizon: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """prev_chunk zero-padded (or cut) to [b, horizon, width], as `like`'s dtype and device."""
        p = self.prev_chunk
        out = like.new_zeros(p.shape[0], horizon, width)
        n, a = min(p.shape[1], horizon), min(p.shape[2], width)
        out[:, :n, :a] = p[:, :n, :a].to(like)
        return out

    def inpaint_weights(self, horizon: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """Mode inpaint: per-position weights [b, horizon, width] (the schedule's W over the
        steps, 0 on padded dims), the execution horizon capped at the previous chunk's length."""
        w = prefix_weights(
            self.inference_delay, min(self.execution_horizon, self.prev_chunk.shape[1]), horizon, self.schedule
        )
        w = w.to(like.device, like.dtype)[None, :, None].expand(self.prev_chunk.shape[0], -1, width)
        if self.dim_mask is not None:
            w = w * self.dim_mask[:, None, :width].to(like.device, like.dtype)
        return w

    def prefix_length(self, horizon: int, max_delay: int) -> int:
        """Mode trained: how many leading actions are fed clean: the delay, capped by the previous
        chunk's length, the horizon and the largest delay the model was trained with."""
        return min(self.inference_delay, self.prev_chunk.shape[1], horizon, max_delay)
