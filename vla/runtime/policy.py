"""The inference Policy: a checkpoint directory -> `infer(obs) -> {"actions": [h, a], ...}`.

Everything is rebuilt from the checkpoint (config, weights, norm stats, tokenizers), never
from the current presets. Observations are validated against the checkpoint's embodiments;
an embodiment without norm stats is refused. The model is used only through its contract
(vla.model.contract), whatever its type.

A model may report rows it could not decode (FAST: token sequences that do not yield h x a
values). The reply says so (`malformed: True`), the count is kept in `stats`, and the actions
are the model's best effort, never a silent all-zero chunk. The control loop treats a
malformed chunk as no fresh plan.

Real-time chunking (vla.model.rtc): `infer(obs, rtc={...})` asks for a chunk that agrees with
the previous one. The dict's keys (`RTC_KEYS`):
    mode                 "inpaint" | "guided" | "guided-nojac" | "trained" (`metadata["rtc"]["modes"]`
                         says which this checkpoint supports: "trained" only if trained with
                         rtc_max_delay)
    prev_chunk           float [h', a] in robot units at the policy rate, index 0 = the action at
                         the new chunk's first step (h' = 0: nothing to agree with, a plain chunk)
    inference_delay      int: policy steps that run before the new chunk arrives
    execution_horizon    int: the step where the prefix weights reach 0 (LeRobot's meaning; capped
                         at h'; default h')
    schedule             "zeros" | "ones" | "linear" | "exp" (default "linear")
    max_guidance_weight  float > 0 (default 10)
The previous chunk is normalized like the checkpoint's actions (relative to the state, for a
delta-action checkpoint). The older `guide` / `guide_weights` pair is inpainting with weights
of the caller's choosing.

`compile=True` runs the sampler through `torch.compile` where the model type supports it
(pi0: about twice as fast on a CPU, after a one-time compile of minutes on 2 cores;
inductor's cache makes later processes start in seconds). `warmup()` pays that cost up front,
before a control loop depends on the latency.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from vla.model.device import resolve_device
from vla.model.interop.checkpoint import Checkpoint, build_from_checkpoint
from vla.model.rtc import DEFAULT_MAX_GUIDANCE_WEIGHT, DEFAULT_SCHEDULE, MODES, SCHEDULES, RTCRequest
from vla.spec import EMBODIMENT, STATE, TASK, SpecError, image_key

log = logging.getLogger(__name__)

RTC_KEYS = ("mode", "prev_chunk", "inference_delay", "execution_horizon", "schedule", "max_guidance_weight")


class Policy:
    def __init__(
        self,
        path: str | Path,
        *,
        device: str | None = None,
        num_steps: int | None = None,
        compile: bool = False,
        noise_scale: float | None = None,
    ):
        """noise_scale: override the checkpoint's (pi0, pi0.5: the initial noise of each chunk's
        denoising; 1 = as published, 0 = one chunk per observation)."""
        self.ckpt = Checkpoint(path)
        self.model, self.tf, self.cfg = build_from_checkpoint(self.ckpt)
        if noise_scale is not None:
            if not hasattr(self.model.cfg, "noise_scale"):
                raise SpecError(f"noise_scale: this {self.ckpt.resolved.model_type} model samples from no noise")
            self.cfg = self.model.cfg = replace(self.model.cfg, noise_scale=noise_scale)  # checked there
        if self.tf.missing_stats:  # e.g. converted without stats: actions in robot units are undefined
            raise SpecError(
                f"{self.ckpt.path} has no norm stats for {self.tf.missing_stats}, so it cannot run a "
                "robot: fine-tune it on your data first (vla train PRESET --init CKPT --data STORE), "
                "which computes them"
            )
        self.kind = self.ckpt.resolved.model_type
        self.device = resolve_device(device, "cpu")
        self.model.to(self.device)
        self.model.prepare_for_inference()
        self.num_steps = num_steps
        self.stats = {"calls": 0, "malformed": 0}
        self._rtc_warned: set[int] = set()  # trained-mode delays past the checkpoint's, already logged
        self._default = next(iter(self.ckpt.embodiments)) if len(self.ckpt.embodiments) == 1 else None
        self.compiled = bool(compile) and self.model.enable_compile()
        if compile and not self.compiled:
            log.warning("this %s model has no compiled sampler; it runs eagerly", self.kind)

    def warmup(self) -> float:
        """One inference per embodiment on a blank observation (compiles, when compiling); -> seconds."""
        t0 = time.perf_counter()
        for name, emb in self.ckpt.embodiments.items():
            obs = {image_key(c.name): np.zeros(c.shape, np.uint8) for c in emb.cameras}
            obs.update({STATE: np.zeros(emb.state_dim, np.float32), TASK: "warm up", EMBODIMENT: name})
            self.infer(obs)
        self.stats["calls"] = 0
        return time.perf_counter() - t0

    @property
    def metadata(self) -> dict:
        """What a client needs to know (sent first on every server connection)."""
        return {
            "policy_type": self.kind,
            "checkpoint": str(self.ckpt.path),
            "step": self.ckpt.resolved.step,
            "action_horizon": self.cfg.horizon,
            "noise_scale": getattr(self.cfg, "noise_scale", None),  # pi0 / pi0.5: the initial noise's scale
            "embodiments": {n: e.to_dict() for n, e in self.ckpt.embodiments.items()},
            # real-time chunking: the modes `infer(rtc=...)` takes, and the largest clean prefix a
            # "trained" request is fed (the rtc_max_delay the checkpoint was trained with; 0: none)
            "rtc": {
                "modes": list(self.model.rtc_modes()),
                "schedules": list(SCHEDULES),
                "trained_max_delay": self.cfg.rtc_max_delay,
            },
        }

    def reset(self) -> None:
        """Stateless between calls; kept for the PolicyLike contract."""

    def infer(
        self,
        obs: dict,
        *,
        noise: np.ndarray | None = None,
        guide: np.ndarray | None = None,
        guide_weights: np.ndarray | None = None,
        rtc: dict | None = None,
    ) -> dict:
        """One observation -> {"actions": float32 [h, a] in robot units, "malformed", "policy_timing"}.

        rtc: real-time chunking (module docstring), for models that support it (pi0, pi0.5; others
        ignore it). guide / guide_weights: inpainting with the caller's weights: `guide` [h, a] in
        robot units is the plan the new chunk should agree with, `guide_weights` [h] in [0, 1]
        how strongly. noise [h, a]: the chunk's initial noise, used as given (not scaled by the
        checkpoint's noise_scale); without it, noise_scale x N(0, I) is drawn.
        """
        if rtc is not None:
            rtc = _check_rtc(rtc)
            rtc = {**rtc, "prev_chunk": rtc["prev_chunk"][None]}
        return self.infer_batch(
            [obs],
            noise=None if noise is None else noise[None],
            guide=None if guide is None else guide[None],
            guide_weights=None if guide_weights is None else guide_weights[None],
            rtc=rtc,
        )[0]

    def infer_batch(
        self,
        observations: list[dict],
        *,
        noise: np.ndarray | None = None,
        guide: np.ndarray | None = None,
        guide_weights: np.ndarray | None = None,
        rtc: dict | None = None,
    ) -> list[dict]:
        """As `infer`, one row per observation; rtc["prev_chunk"] is then [b, h', a]."""
        if rtc is not None:
            if guide is not None:
                raise SpecError(
                    "give either guide/guide_weights or rtc, not both (rtc mode 'inpaint' is the guide path)"
                )
            rtc = _check_rtc(rtc, batched=True)
        grad = rtc is not None and rtc["mode"] == "guided" and bool(self.model.rtc_modes())
        # Guided RTC differentiates through the denoiser, which inference tensors do not allow.
        with torch.inference_mode(not grad), torch.no_grad():
            return self._infer_batch(observations, noise, guide, guide_weights, rtc)

    def _infer_batch(self, observations, noise, guide, guide_weights, rtc) -> list[dict]:
        t0 = time.perf_counter()
        batch = self.tf.from_observations(observations, self._default)
        names = batch[EMBODIMENT]
        states = [np.asarray(o[STATE], np.float32) for o in observations]  # delta-action checkpoints need them
        batch = {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        if noise is None:  # drawn here, not inside a (maybe compiled) sampler: one graph, and the same
            nz = self.model.initial_noise(names)  # draws, seed for seed, as eager
        else:
            nz = torch.as_tensor(noise, dtype=torch.float32)
        g = gw = None
        if guide is not None and self.model.supports_guidance:
            g = torch.from_numpy(self.tf.normalize_actions(np.asarray(guide, np.float32), names, states)).to(
                self.device
            )
            gw = torch.as_tensor(np.asarray(guide_weights, np.float32), device=self.device)
        req = self._rtc_request(rtc, names, states) if rtc is not None else None
        out = self.model.sample(
            batch,
            num_steps=self.num_steps,
            noise=None if nz is None else nz.to(self.device),
            guide=g,
            guide_weights=gw,
            rtc=req,
        )
        actions = self.tf.to_actions(out.actions, names, states)
        malformed = [bool(m) for m in out.malformed.tolist()]
        dt = (time.perf_counter() - t0) * 1000
        self.stats["calls"] += len(names)
        self.stats["malformed"] += sum(malformed)
        return [{"actions": a, "malformed": m, "policy_timing": {"infer_ms": dt}} for a, m in zip(actions, malformed)]

    def _rtc_request(self, rtc: dict, names: list[str], states: list) -> RTCRequest | None:
        """A checked rtc dict -> the model's request (the previous chunk normalized), None when
        there is nothing to agree with or the model has no RTC modes."""
        modes = self.model.rtc_modes()
        prev = rtc["prev_chunk"]
        if not modes or prev.shape[1] == 0:
            if not modes:
                log.debug("real-time chunking is not supported by this %s model; decoding unguided", self.kind)
            return None
        if rtc["mode"] not in modes:
            trained = " (it was not trained with rtc_max_delay)" if rtc["mode"] == "trained" else ""
            raise SpecError(
                f"rtc mode {rtc['mode']!r} is not supported by this checkpoint{trained}; it has {list(modes)}"
            )
        if prev.shape[0] != len(names):
            raise SpecError(f"rtc prev_chunk: expected one chunk per observation ({len(names)}), got {prev.shape[0]}")
        for n in set(names):
            a = self.ckpt.embodiments[n].action_dim
            if prev.shape[2] != a:
                raise SpecError(f"rtc prev_chunk: expected [h', {a}] (the actions of {n!r}), got [h', {prev.shape[2]}]")
        late = rtc["inference_delay"]
        if rtc["mode"] == "trained" and late > self.cfg.rtc_max_delay and late not in self._rtc_warned:
            self._rtc_warned.add(late)  # once per delay: a control loop asks many times a second
            log.warning(
                "rtc trained: inference_delay %d is beyond the %d this checkpoint was trained with; "
                "the first %d actions are fed clean",
                rtc["inference_delay"],
                self.cfg.rtc_max_delay,
                self.cfg.rtc_max_delay,
            )
        norm = self.tf.normalize_actions(prev, names, states)
        return RTCRequest(
            mode=rtc["mode"],
            prev_chunk=torch.from_numpy(norm).to(self.device),
            inference_delay=rtc["inference_delay"],
            execution_horizon=rtc.get("execution_horizon", prev.shape[1]),
            schedule=rtc.get("schedule", DEFAULT_SCHEDULE),
            max_guidance_weight=rtc.get("max_guidance_weight", DEFAULT_MAX_GUIDANCE_WEIGHT),
        )


def _check_rtc(rtc, *, batched: bool = False) -> dict:
    """An rtc dict as a client sends it -> the same with numpy/Python values checked (SpecError
    naming the key otherwise). prev_chunk float32 [h', a] ([b, h', a] when batched)."""
    if not isinstance(rtc, dict):
        raise SpecError(f"rtc must be a map with keys {list(RTC_KEYS)}, got {type(rtc).__name__}")
    unknown = sorted(set(map(str, rtc)) - set(RTC_KEYS))
    if unknown:
        raise SpecError(f"rtc: unknown keys {unknown}; known: {list(RTC_KEYS)}")
    missing = [k for k in ("mode", "prev_chunk", "inference_delay") if k not in rtc]
    if missing:
        raise SpecError(f"rtc: missing keys {missing}")
    out = dict(rtc)
    if out["mode"] not in MODES:
        raise SpecError(f"rtc mode must be one of {list(MODES)}, got {out['mode']!r}")
    prev = np.asarray(out["prev_chunk"])
    if prev.ndim != 2 + batched or not (np.issubdtype(prev.dtype, np.floating) or prev.size == 0):
        want = "[b, h', a]" if batched else "[h', a]"
        raise SpecError(f"rtc prev_chunk: expected float {want} in robot units, got {prev.dtype} {prev.shape}")
    if not np.isfinite(prev).all():
        raise SpecError("rtc prev_chunk: non-finite values")
    out["prev_chunk"] = prev.astype(np.float32, copy=False)
    for k in ("inference_delay", "execution_horizon"):
        if k in out:
            v = out[k]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise SpecError(f"rtc {k}: expected an int >= 0 (policy steps), got {v!r}")
            out[k] = int(v)
    if "schedule" in out and out["schedule"] not in SCHEDULES:
        raise SpecError(f"rtc schedule must be one of {list(SCHEDULES)}, got {out['schedule']!r}")
    if "max_guidance_weight" in out:
        v = out["max_guidance_weight"]
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not np.isfinite(v) or v <= 0:
            raise SpecError(f"rtc max_guidance_weight: expected a number > 0, got {v!r}")
        out["max_guidance_weight"] = float(v)
    return out


def load_policy(path: str | Path, **kwargs) -> Policy:
    return Policy(path, **kwargs)
