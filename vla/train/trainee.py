"""The model being trained with its optimizer and EMA, however it runs: one process, DDP, or
FSDP2 (vla.train.fsdp); in full, with frozen parts (vla.train.freeze) or with LoRA
(vla.train.lora).

    t = Trainee(model, tcfg, device, rank=, world=, fsdp=, kind=, state=)   # fsdp: None/"full"/"hybrid"; state: a resume
    loss = t.loss(batch, generator)      # under autocast where the trainer wants it
    gnorm = t.step(loss, lr)             # backward, clip, AdamW, EMA
    t.checkpoint(step) -> (weights to serve, train_state, extra files) on rank 0, None elsewhere

Only trainable parameters get gradients, AdamW states and EMA copies. On CUDA with bf16 (and
`frozen_bf16`, the default) frozen parameters are stored in bfloat16, as openpi stores them,
halving their memory; trainable ones stay float32 under autocast. (Under FSDP the sharded
weights stay float32: FSDP gathers them in bfloat16 anyway.) The EMA replaces the trained
parameters in the served weights (frozen ones are equal anyway); with LoRA the served weights
are merged (W + scaling * B @ A, plain key layout, float32) and the adapter is saved beside them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from vla.train import fsdp as fs
from vla.train.freeze import set_trainable
from vla.train.lora import adapter_files, apply_lora, merged_weights, scalings

log = logging.getLogger(__name__)

OPT_BY_NAME = "by_name"  # train_state["optimizer_format"]: keyed by parameter name (any process count)


class Trainee:
    def __init__(
        self,
        model: nn.Module,
        tcfg,
        device: torch.device,
        *,
        rank: int = 0,
        world: int = 1,
        fsdp: bool | str | None = None,
        kind: str = "",
        state: dict | None = None,
    ):
        mode = fs.fsdp_mode(fsdp)
        self.tcfg, self.dev, self.rank, self.world, self.fsdp = tcfg, device, rank, world, mode is not None
        self.lora = tcfg.lora.enabled
        if self.lora:
            apply_lora(model, tcfg.lora, kind)
        self.counts = set_trainable(model, tcfg.freeze, tcfg.lora)
        if device.type == "cuda" and tcfg.bf16 and tcfg.frozen_bf16 and not mode:
            store_frozen(model, torch.bfloat16)
        self._scalings = scalings(model) if self.lora else {}
        self._vision_checkpointing(model)
        if state is not None:  # raw weights load before sharding, as full tensors
            model.load_state_dict(state["model"])
        if mode:  # fully_shard moves each unit to the device as it shards it: no whole model on one GPU
            fs.shard(model, device, bf16=tcfg.bf16, mode=mode)
            self.wrapped = model
        elif world > 1:  # heads of embodiments absent from a rank's slice get no gradient in that step
            self.wrapped = nn.parallel.DistributedDataParallel(
                model.to(device), find_unused_parameters=True, gradient_as_bucket_view=True
            )
        else:
            self.wrapped = model.to(device)
        self.model = model
        self.trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        decay = [p for n, p in self.trainable.items() if p.ndim >= 2 and "embed" not in n]
        no_decay = [p for n, p in self.trainable.items() if not (p.ndim >= 2 and "embed" not in n)]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": tcfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=tcfg.lr,
            betas=tcfg.betas,
        )
        self.ema = {n: p.detach().clone() for n, p in self.trainable.items()} if tcfg.ema > 0 else None
        if state is not None:
            self._load(state)

    def _vision_checkpointing(self, model: nn.Module) -> None:
        """The trainer's gradient checkpointing covers the Gemma layers (vla.model.layers.attention); a
        trainable SigLIP tower is checkpointed per layer too (transformers' own mechanism)."""
        tower = getattr(getattr(model, "backbone", None), "vision_tower", None)
        if not self.tcfg.grad_checkpoint or tower is None or not any(p.requires_grad for p in tower.parameters()):
            return
        kwargs = {"use_reentrant": False}
        if hasattr(tower, "activation_checkpointing_enable"):  # transformers >= 5.x's name
            tower.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        elif hasattr(tower, "gradient_checkpointing_enable"):
            tower.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def _load(self, state: dict) -> None:
        if state.get("optimizer_format") == OPT_BY_NAME:
            fs.load_optimizer_state(self.model, self.opt, state["optimizer"])
        else:  # checkpoints from before the by-name format: one process, parameter order as built
            self.opt.load_state_dict(state["optimizer"])
        if self.ema is not None and state.get("ema") is not None:
            saved = state["ema"]
            self.ema = fs.shard_like({k: saved[k] for k in self.ema}, self.ema)

    # ---- a step ----
    def loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        if self.wrapped is self.model and not self.fsdp:
            return self.model.compute_loss(batch, generator).mean()
        return self.wrapped(batch, generator).mean()  # FSDP / DDP hooks run on forward()

    def step(self, loss: torch.Tensor, lr: float) -> float:
        for g in self.opt.param_groups:
            g["lr"] = lr
        loss.backward()
        params = list(self.trainable.values())
        fs.drop_unused_grads(params, sharded=self.fsdp)
        gnorm = fs.grad_norm(torch.nn.utils.clip_grad_norm_(params, self.tcfg.clip))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)  # freed before the next forward, not after it
        if self.ema is not None:
            d = self.tcfg.ema
            with torch.no_grad():
                for n, e in self.ema.items():
                    e.mul_(d).add_(self.trainable[n].detach(), alpha=1 - d)
        return gnorm

    # ---- checkpoints ----
    def checkpoint(self, step: int, scratch: Path) -> tuple[dict, dict, dict] | None:
        """-> (weights to serve, train_state, extra files) on rank 0; None on the other ranks.
        Every rank must call it (under FSDP the tensors are gathered). `scratch`: a folder for the
        adapter files until save_checkpoint copies them."""
        keep = self.rank == 0
        distributed = self.world > 1
        raw = fs.full_tensors(self.model.state_dict(), keep) if self.fsdp else self.model.state_dict()
        ema = None if self.ema is None else (fs.full_tensors(self.ema, keep) if self.fsdp else self.ema)
        opt = fs.optimizer_state(self.model, self.opt, distributed)
        if not keep:
            return None
        served = {k: v.float() if v.dtype == torch.bfloat16 else v for k, v in {**raw, **(ema or {})}.items()}
        extra = {}
        if self.lora:
            extra = adapter_files(self.model, served, scratch)
            served = merged_weights(served, self._scalings)
        train_state = {"model": raw, "optimizer": opt, "optimizer_format": OPT_BY_NAME, "ema": ema, "step": step}
        return served, train_state, extra


def store_frozen(model: nn.Module, dtype: torch.dtype) -> None:
    """Frozen floating-point parameters in `dtype` (autocast computes in bfloat16 anyway)."""
    for p in model.parameters():
        if not p.requires_grad and p.is_floating_point():
            p.data = p.data.to(dtype)
