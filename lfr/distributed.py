"""One process or torchrun's DDP: rank, world size and device, and the collectives the loop uses."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from lfr.runtime import resolve_device


@dataclass
class Dist:
    """Rank and world size; single-process unless launched by torchrun."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_dist(requested: str) -> Dist:
    """Join torchrun's process group (NCCL on CUDA, else gloo) and pick this rank's device."""
    device = resolve_device(requested, "train.device")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        return Dist(rank, world, torch.device("cuda", local))
    return Dist(rank, world)


def gather_losses(losses: torch.Tensor, d: Dist) -> np.ndarray:
    """Per-block losses of the whole global batch, in global-id order, on every rank."""
    if d.world > 1:
        parts = [torch.empty_like(losses) for _ in range(d.world)]
        dist.all_gather(parts, losses)
        losses = torch.cat(parts)
    return losses.float().cpu().numpy()


def any_rank(flag: bool, d: Dist) -> bool:
    """Whether `flag` is true on any rank (every rank gets the same answer)."""
    if d.world == 1:
        return flag
    t = torch.tensor([float(flag)], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_sum(values: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world > 1:
        dist.all_reduce(values)
    return values


def finish(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()
        dist.destroy_process_group()
