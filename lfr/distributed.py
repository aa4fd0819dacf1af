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


host_syncs = 0
"""How often the training loop has waited for the device (`InFlight.wait`); tests count them."""


@dataclass
class InFlight:
    """One step's per-block losses and flags on their way to the host, gathered from every rank;
    `wait` is the step's one host sync."""

    host: torch.Tensor  # (world, local blocks + flags), pinned on CUDA
    copied: torch.cuda.Event | None  # recorded after the copy; None: already on the host

    def wait(self) -> tuple[np.ndarray, np.ndarray]:
        """(losses of the global batch in global-id order, each flag's max over the ranks)."""
        global host_syncs
        host_syncs += 1
        if self.copied is not None:
            self.copied.synchronize()
        parts, flags = self.host.numpy(), FLAGS
        return parts[:, :-flags].reshape(-1), parts[:, -flags:].max(axis=0)


FLAGS = 2  # sent with the losses: a stop request, a non-finite loss since the last sync


def send_to_host(losses: torch.Tensor, flags: torch.Tensor, d: Dist) -> InFlight:
    """Start gathering this rank's per-block losses and its flags (float, FLAGS values) from every
    rank and copying them to the host without blocking: one all_gather, no host sync."""
    packed = torch.cat([losses.detach().float(), flags.float()])
    if d.world > 1:
        parts = [torch.empty_like(packed) for _ in range(d.world)]
        dist.all_gather(parts, packed)
        packed = torch.stack(parts)
    else:
        packed = packed[None]
    if d.device.type != "cuda":
        return InFlight(packed, None)
    host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
    host.copy_(packed, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()
    return InFlight(host, copied)


def all_sum(values: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world > 1:
        dist.all_reduce(values)
    return values


def finish(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()
        dist.destroy_process_group()
