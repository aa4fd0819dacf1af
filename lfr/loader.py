"""The training input pipeline, nanoGPT's overlap: a step's blocks for this rank are gathered from
the memmap in one read, on CUDA put in pinned memory so that the copy to the GPU does not block
the host, and prepared in a background thread while the previous step runs on the device."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from lfr.data import BlockStore

CPU = torch.device("cpu")


@dataclass(frozen=True)
class StepBatch:
    """One optimizer step's rows on this rank, micro-batches back to back, on the device."""

    ids: np.ndarray  # the step's global block ids (every rank's)
    x: torch.Tensor  # (rows, T) int64 inputs
    y: torch.Tensor  # (rows, T) int64 targets
    w: torch.Tensor | None  # (rows,) float32 loss weights; None: all ones

    @classmethod
    def load(cls, store: BlockStore, ids: np.ndarray, weights: np.ndarray | None = None,
             device: torch.device = CPU) -> StepBatch:
        """All of `ids` as one rank's rows, read now (tests, benchmarks)."""
        return cls.to(ids, host_tensors(store, ids, weights, pin=False), device)

    @classmethod
    def to(cls, ids: np.ndarray, host: list[torch.Tensor], device: torch.device) -> StepBatch:
        x, y, *w = (t.to(device, non_blocking=True) for t in host)
        return cls(ids, x, y, w[0] if w else None)


def host_tensors(store: BlockStore, rows: np.ndarray, weights: np.ndarray | None,
                 pin: bool) -> list[torch.Tensor]:
    """Inputs, targets and (if any) weights of the block ids `rows`, on the host."""
    x, y = store.batch(rows)
    tensors = [torch.from_numpy(x), torch.from_numpy(y)]
    if weights is not None:
        tensors.append(torch.from_numpy(np.asarray(weights, dtype=np.float32)))
    return [t.pin_memory() for t in tensors] if pin else tensors


class BatchLoader:
    """`prefetch(ids, weights)` starts preparing a step's batch; `get()` returns it on the device.
    At most one step is prepared ahead, in order."""

    def __init__(self, store: BlockStore, rows_per_rank: int, rank: int, device: torch.device) -> None:
        self.store, self.device = store, device
        self.part = slice(rank * rows_per_rank, (rank + 1) * rows_per_rank)
        self.pin = device.type == "cuda"
        # Pinning in a thread whose current GPU is not this rank's would open a context on GPU 0.
        init = (torch.cuda.set_device, (device,)) if self.pin else (None, ())
        self.thread = ThreadPoolExecutor(1, "lfr-batches", *init)
        self.next: tuple[np.ndarray, Future[list[torch.Tensor]]] | None = None

    def prefetch(self, ids: np.ndarray, weights: np.ndarray | None) -> None:
        assert self.next is None, "get() the prepared step first"
        w = None if weights is None else weights[self.part]
        self.next = ids, self.thread.submit(host_tensors, self.store, ids[self.part], w, self.pin)

    def get(self) -> StepBatch:
        assert self.next is not None, "prefetch() a step first"
        (ids, future), self.next = self.next, None
        return StepBatch.to(ids, future.result(), self.device)

    def close(self) -> None:
        self.thread.shutdown(wait=True, cancel_futures=True)
