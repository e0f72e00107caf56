"""One training process or many (torchrun: DDP, FSDP): this process's rank and device, and the
values every rank must agree on (a stop signal, the clock) so that all stop at the same step."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vla.model.device import resolve_device


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @classmethod
    def join(cls, device: str | None = None, *, fsdp: bool = False) -> "Processes":
        """Joins torchrun's process group (nccl on CUDA, gloo on the CPU) when there is one (or
        FSDP asks for it); each process of a multi-GPU run takes the GPU of its LOCAL_RANK."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if (world > 1 or fsdp) and not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        return cls(rank, world, cls.local_device(device, world))

    @staticmethod
    def local_device(device: str | None, world: int) -> torch.device:
        dev = resolve_device(device)
        if dev.type == "cuda" and world > 1:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return dev

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs, shows progress and writes files."""
        return self.rank == 0

    def largest(self, value: int) -> int:
        """The largest of every rank's `value`."""
        if self.world == 1:
            return value
        x = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
        return int(x.item())

    def rank0(self, value: float) -> float:
        """Rank 0's `value`, on every rank."""
        if self.world == 1:
            return value
        x = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(x, 0)
        return float(x.item())

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()
