"""The training run's metrics log (metrics.parquet): its rows, throughput and MFU."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch

log = logging.getLogger(__name__)

# Dense bf16 peak TFLOP/s per GPU, by a substring of torch.cuda.get_device_name().
PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0,
               "MI300X": 1307.0, "MI250": 362.0}


def peak_flops(configured_tflops: float | None, device: torch.device) -> float | None:
    """Peak FLOP/s of one device for MFU: the configured value, else the detected GPU's, else None."""
    if configured_tflops:
        return configured_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    tflops = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    if tflops is None:
        log.warning("no peak FLOP/s known for %r; set train.peak_tflops to log MFU", name)
    return None if tflops is None else tflops * 1e12


class MetricsLog:
    """Rows of metrics.parquet: one at step 0 and at every logged step. Throughput counts the time
    between rows without the validation passes; `elapsed_s` is the run's wall time so far
    (carried over a resume)."""

    def __init__(self, rows: list[dict[str, Any]], elapsed_before: float, tokens_per_step: int,
                 flops_per_token: float, peak_flops_total: float | None) -> None:
        self.rows, self.tokens_per_step = rows, tokens_per_step
        self.flops_per_token, self.peak = flops_per_token, peak_flops_total
        self.t_start = time.perf_counter() - elapsed_before
        self.window, self.train_time = time.perf_counter(), 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def first(self, phase: str, val: dict[str, float]) -> None:
        """The row before the first step; `val`: its validation metrics (val_loss, val_bpb)."""
        self.rows.append({"step": 0, "tokens": 0, "phase": phase, "elapsed_s": 0.0, **val})
        self.window = time.perf_counter()

    def add(self, step: int, phase: str, train_loss: float, lr: float, validate: Any = None) -> dict:
        """A row after `step` steps; `validate()` (optional) gives its validation metrics, untimed."""
        now = time.perf_counter()
        self.train_time += now - self.window
        tok_s = (step - self.rows[-1]["step"]) * self.tokens_per_step / max(now - self.window, 1e-9)
        row = {"step": step, "tokens": step * self.tokens_per_step, "phase": phase,
               "train_loss": train_loss, "lr": lr, "tokens_per_s": tok_s,
               "mfu": self.flops_per_token * tok_s / self.peak if self.peak else math.nan}
        if validate is not None:
            row |= validate()
        row["elapsed_s"] = self.elapsed()
        self.rows.append(row)
        self.window = time.perf_counter()
        return row

    def train_tokens_per_s(self, steps: int) -> float:
        return steps * self.tokens_per_step / max(self.train_time, 1e-9)
