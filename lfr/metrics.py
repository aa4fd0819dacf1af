"""The training run's metrics log (metrics.parquet): its rows, throughput and MFU."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

# The metrics log's columns as TensorBoard tags.
TENSORBOARD_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "val_bpb": "loss/val_bpb",
                    "lr": "optim/lr", "tokens_per_s": "speed/tokens_per_s", "mfu": "speed/mfu",
                    "kept_fraction": "sampler/kept_fraction"}
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
                 flops_per_token: float, peak_flops_total: float | None,
                 live: Sequence[TensorBoard | WandB] = ()) -> None:
        self.rows, self.tokens_per_step, self.live = rows, tokens_per_step, live
        self.flops_per_token, self.peak = flops_per_token, peak_flops_total
        self.t_start = time.perf_counter() - elapsed_before
        self.window, self.train_time = time.perf_counter(), 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def first(self, phase: str, val: dict[str, float]) -> None:
        """The row before the first step; `val`: its validation metrics (val_loss, val_bpb)."""
        self.append({"step": 0, "tokens": 0, "phase": phase, "elapsed_s": 0.0, **val})
        self.window = time.perf_counter()

    def add(self, step: int, phase: str, train_loss: float, lr: float, kept_fraction: float = 1.0,
            validate: Any = None) -> dict:
        """A row after `step` steps; `kept_fraction`: the share of the training blocks that the
        sampler draws from now; `validate()` (optional) gives the validation metrics, untimed."""
        now = time.perf_counter()
        self.train_time += now - self.window
        tok_s = (step - self.rows[-1]["step"]) * self.tokens_per_step / max(now - self.window, 1e-9)
        row = {"step": step, "tokens": step * self.tokens_per_step, "phase": phase,
               "train_loss": train_loss, "lr": lr, "kept_fraction": kept_fraction, "tokens_per_s": tok_s,
               "mfu": self.flops_per_token * tok_s / self.peak if self.peak else math.nan}
        if validate is not None:
            row |= validate()
        row["elapsed_s"] = self.elapsed()
        self.append(row)
        self.window = time.perf_counter()
        return row

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        for curves in self.live:
            curves.write(row)

    def train_tokens_per_s(self, steps: int) -> float:
        return steps * self.tokens_per_step / max(self.train_time, 1e-9)


class TensorBoard:
    """Live curves (`train.tensorboard`): every metrics row as TensorBoard scalars, the sampler's
    phase as text when it changes. On a resume, the events from the resumed step on are purged."""

    def __init__(self, log_dir: Path, resumed_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError("train.tensorboard: true needs the tensorboard package: pip install "
                              "tensorboard (or set train.tensorboard: false)") from err
        self.writer = SummaryWriter(str(log_dir), purge_step=resumed_step)
        self.phase: str | None = None

    def write(self, row: dict[str, Any]) -> None:
        for key, tag in TENSORBOARD_TAGS.items():
            if key in row and math.isfinite(row[key]):
                self.writer.add_scalar(tag, row[key], row["step"])
        if row["phase"] != self.phase:
            self.phase = row["phase"]
            self.writer.add_text("sampler/phase", row["phase"], row["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB:
    """Live curves on Weights & Biases (`train.wandb`): every metrics row under the TensorBoard
    tags plus `tokens` and the sampler's `phase`, at its step, and the run's settings as the W&B
    config. With the config's `offline` (the default), W&B runs offline into the run folder's
    wandb/ (`wandb sync` uploads it later); else as its own settings say (WANDB_PROJECT, default
    lfr-repro; WANDB_ENTITY; WANDB_MODE). The W&B run's id is the run folder's, so that the jobs
    of a resumed run log into one W&B run (steps it logged before are dropped by W&B)."""

    def __init__(self, run_dir: Path, name: str, settings: dict[str, Any], offline: bool) -> None:
        try:
            import wandb
        except ImportError as err:
            raise ImportError("train.wandb: true needs the wandb package: pip install wandb (or set "
                              "train.wandb: false)") from err
        run_id = hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "lfr-repro"), name=name, id=run_id,
                              resume="allow", dir=run_dir, config=settings,
                              mode="offline" if offline else None, settings=wandb.Settings(console="off"))

    def write(self, row: dict[str, Any]) -> None:
        values = {tag: row[key] for key, tag in TENSORBOARD_TAGS.items()
                  if key in row and math.isfinite(row[key])}
        self.run.log({**values, "tokens": row["tokens"], "phase": row["phase"]}, step=row["step"])

    def close(self) -> None:
        self.run.finish()
