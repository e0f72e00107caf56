"""The inference Policy: a checkpoint directory -> `infer(obs) -> {"actions": [h, a], ...}`.

Everything is rebuilt from the checkpoint (config, weights, norm stats, tokenizers), never
from the current presets. Observations are validated against the checkpoint's embodiments;
an embodiment without norm stats is refused.

FAST decodes that do not yield exactly h x a values are *malformed*: the reply says so
(`malformed: True`), the count is kept in `stats`, a warning is logged, and the actions are a
best-effort low-pass decode (the coefficients that did decode, the rest zero), never a
silent all-zero chunk. The control loop treats a malformed chunk as no fresh plan.

`compile=True` (pi0) runs the denoising through `torch.compile`: about twice as fast on a CPU,
after a one-time compile (minutes on 2 cores; inductor's cache makes later processes start in
seconds). `warmup()` pays that cost up front, before a control loop depends on the latency.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import numpy as np
import torch

from vla.model.checkpoint import Checkpoint, build_from_checkpoint
from vla.spec import EMBODIMENT, STATE, TASK, image_key

log = logging.getLogger(__name__)


class Policy:
    def __init__(self, path: str | Path, *, device: str | None = None, num_steps: int | None = None,
                 compile: bool = False):
        self.ckpt = Checkpoint(path)
        self.model, self.tf, self.cfg = build_from_checkpoint(self.ckpt)
        self.kind = self.ckpt.config["policy"]["type"]
        self.device = torch.device(device or "cpu")
        self.model.to(self.device)
        from vla.model.attention import fuse_for_inference

        fuse_for_inference(*[m for m in (self.model.backbone.language_model, getattr(self.model, "expert", None)) if m is not None])
        self.num_steps = num_steps
        self.stats = {"calls": 0, "malformed": 0}
        self._default = next(iter(self.ckpt.embodiments)) if len(self.ckpt.embodiments) == 1 else None
        self._sample = self.model.sample_actions if self.kind == "pi0" else None
        self.compiled = compile and self.kind == "pi0"
        if compile and not self.compiled:
            log.warning("compile applies to pi0 policies; this %s policy decodes eagerly", self.kind)
        if self.compiled:
            self._sample = torch.compile(functools.partial(type(self.model).sample_actions.__wrapped__, self.model),
                                         dynamic=False)

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
            "policy_type": self.kind, "checkpoint": str(self.ckpt.path), "step": self.ckpt.config.get("step"),
            "action_horizon": self.cfg.horizon,
            "embodiments": {n: e.to_dict() for n, e in self.ckpt.embodiments.items()},
        }

    def reset(self) -> None:
        """Stateless between calls; kept for the PolicyLike contract."""

    def infer(self, obs: dict, *, noise: np.ndarray | None = None, guide: np.ndarray | None = None,
              guide_weights: np.ndarray | None = None) -> dict:
        """One observation -> {"actions": float32 [h, a] in robot units, "malformed", "policy_timing"}.

        guide / guide_weights (pi0 only): real-time chunking. `guide` [h, a] in robot units is
        the plan the new chunk should agree with, `guide_weights` [h] in [0, 1] how strongly.
        """
        return self.infer_batch([obs], noise=None if noise is None else noise[None],
                                guide=None if guide is None else guide[None],
                                guide_weights=None if guide_weights is None else guide_weights[None])[0]

    @torch.inference_mode()
    def infer_batch(self, observations: list[dict], *, noise: np.ndarray | None = None,
                    guide: np.ndarray | None = None, guide_weights: np.ndarray | None = None) -> list[dict]:
        t0 = time.perf_counter()
        batch = self.tf.from_observations(observations, self._default)
        names = batch[EMBODIMENT]
        states = [np.asarray(o[STATE], np.float32) for o in observations]  # delta-action checkpoints need them
        batch = {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        malformed = [False] * len(names)
        if self.kind == "pi0":
            if noise is None:  # drawn here, not inside the (maybe compiled) sampler: one graph, and the same
                a_dim = max(self.cfg.embodiments[n][1] for n in names)  # draws, seed for seed, as eager
                noise = torch.randn(len(names), self.cfg.horizon, a_dim)
            nz = torch.as_tensor(noise, dtype=torch.float32, device=self.device)
            g = gw = None
            if guide is not None:
                g = torch.from_numpy(self.tf.normalize_actions(np.asarray(guide, np.float32), names, states)).to(self.device)
                gw = torch.as_tensor(np.asarray(guide_weights, np.float32), device=self.device)
            out = self._sample(batch, num_steps=self.num_steps, noise=nz, guide=g, guide_weights=gw)
            actions = self.tf.to_actions(out, names, states)
        else:
            if guide is not None:
                log.debug("guided (RTC) sampling is pi0-only; FAST decodes unguided")
            actions, malformed = self._fast(batch, names, states)
        dt = (time.perf_counter() - t0) * 1000
        self.stats["calls"] += len(names)
        self.stats["malformed"] += sum(malformed)
        return [{"actions": a, "malformed": m, "policy_timing": {"infer_ms": dt}} for a, m in zip(actions, malformed)]

    def _fast(self, batch, names, states):
        from vla.model.fast import relaxed_coefficients
        from vla.model.fast_policy import lm_ids_to_fast

        seqs = self.model.generate(batch)
        norm, bad = [], []
        for seq, n in zip(seqs, names):
            tok = self.tf.fast[n]
            ids = lm_ids_to_fast(seq, self.tf.fast_vocab, n)
            r = tok.decode(ids)
            if r.ok:
                norm.append(r.actions)
                bad.append(False)
            else:
                acts, got = relaxed_coefficients(tok, ids)
                log.warning("malformed FAST decode for %s: %d values, expected %d; using a low-pass decode",
                            n, got, tok.horizon * tok.action_dim)
                norm.append(acts)
                bad.append(True)
        a_max = max(x.shape[1] for x in norm)
        padded = np.zeros((len(norm), self.cfg.horizon, a_max), np.float32)
        for i, x in enumerate(norm):
            padded[i, :, : x.shape[1]] = x
        return self.tf.to_actions(torch.from_numpy(padded), names, states), bad


def load_policy(path: str | Path, **kwargs) -> Policy:
    return Policy(path, **kwargs)
