"""The inference Policy: a checkpoint directory -> `infer(obs) -> {"actions": [h, a], ...}`.

Everything is rebuilt from the checkpoint (config, weights, norm stats, tokenizers), never
from the current presets. Observations are validated against the checkpoint's embodiments;
an embodiment without norm stats is refused. The model is used only through its contract
(vla.model.contract), whatever its type.

A model may report rows it could not decode (FAST: token sequences that do not yield h x a
values). The reply says so (`malformed: True`), the count is kept in `stats`, and the actions
are the model's best effort, never a silent all-zero chunk. The control loop treats a
malformed chunk as no fresh plan.

`compile=True` runs the sampler through `torch.compile` where the model type supports it
(pi0: about twice as fast on a CPU, after a one-time compile of minutes on 2 cores;
inductor's cache makes later processes start in seconds). `warmup()` pays that cost up front,
before a control loop depends on the latency.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from vla.model.device import resolve_device
from vla.model.interop.checkpoint import Checkpoint, build_from_checkpoint
from vla.spec import EMBODIMENT, STATE, TASK, SpecError, image_key

log = logging.getLogger(__name__)


class Policy:
    def __init__(
        self, path: str | Path, *, device: str | None = None, num_steps: int | None = None, compile: bool = False
    ):
        self.ckpt = Checkpoint(path)
        self.model, self.tf, self.cfg = build_from_checkpoint(self.ckpt)
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
            "embodiments": {n: e.to_dict() for n, e in self.ckpt.embodiments.items()},
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
    ) -> dict:
        """One observation -> {"actions": float32 [h, a] in robot units, "malformed", "policy_timing"}.

        guide / guide_weights: real-time chunking, for models that support guidance (pi0).
        `guide` [h, a] in robot units is the plan the new chunk should agree with,
        `guide_weights` [h] in [0, 1] how strongly. Other models ignore them.
        """
        return self.infer_batch(
            [obs],
            noise=None if noise is None else noise[None],
            guide=None if guide is None else guide[None],
            guide_weights=None if guide_weights is None else guide_weights[None],
        )[0]

    @torch.inference_mode()
    def infer_batch(
        self,
        observations: list[dict],
        *,
        noise: np.ndarray | None = None,
        guide: np.ndarray | None = None,
        guide_weights: np.ndarray | None = None,
    ) -> list[dict]:
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
        out = self.model.sample(
            batch, num_steps=self.num_steps, noise=None if nz is None else nz.to(self.device), guide=g, guide_weights=gw
        )
        actions = self.tf.to_actions(out.actions, names, states)
        malformed = [bool(m) for m in out.malformed.tolist()]
        dt = (time.perf_counter() - t0) * 1000
        self.stats["calls"] += len(names)
        self.stats["malformed"] += sum(malformed)
        return [{"actions": a, "malformed": m, "policy_timing": {"infer_ms": dt}} for a, m in zip(actions, malformed)]


def load_policy(path: str | Path, **kwargs) -> Policy:
    return Policy(path, **kwargs)
