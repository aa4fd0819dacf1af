"""Weight snapshots of a training run, for the profiling pass: one format, its writer and reader.

A run folder's `snapshots/` holds `step-<step>.pt` (the model's state dict after that many
optimizer steps, in `snapshot_dtype`) and `index.json`: one entry per snapshot with its step,
tokens, file and the sampler phase it ends ("init" for step 0). A run not selected by `profile:`
has an empty index. The training loop writes into a `.partial` folder (inside the resume folder,
so a retry keeps them) and `finish` moves it into place.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lfr.config import ProfileConfig
from lfr.files import atomic_path, write_json


def snapshot_steps(ends: set[int], num_steps: int, tokens_per_step: int,
                   spec: ProfileConfig) -> list[int]:
    """Steps after which the profiling pass gets the weights: 0 (init), every `every_tokens`,
    each phase boundary (`ends`, optional) and the last step."""
    every = spec.every_tokens or max(1, num_steps * tokens_per_step // 8)
    steps = {0, num_steps}
    if every <= tokens_per_step:
        steps |= set(range(num_steps))
    else:
        steps |= {math.ceil(k * every / tokens_per_step)
                  for k in range(1, num_steps * tokens_per_step // every + 1)}
    if spec.phase_boundaries:
        steps |= ends
    return sorted(s for s in steps if s <= num_steps)


def file_name(step: int) -> str:
    return f"step-{step:09d}.pt"


class SnapshotWriter:
    """Saves the weights at `steps` into `partial` (atomic per file); `finish` writes the index
    and moves the folder to the run's `snapshots/`. Without a spec it saves nothing."""

    def __init__(self, partial: Path, spec: ProfileConfig | None, steps: list[int]) -> None:
        self.partial, self.spec, self.steps = Path(partial), spec, steps
        self._due = set(steps)

    def maybe_save(self, step: int, model: torch.nn.Module) -> None:
        if step in self._due:
            weights = {k: v.detach().to(getattr(torch, self.spec.snapshot_dtype)).cpu()
                       for k, v in model.state_dict().items()}
            with atomic_path(self.partial / file_name(step)) as tmp:
                torch.save(weights, tmp)

    def finish(self, run_dir: Path, tokens_per_step: int, phase: Callable[[int], str]) -> None:
        """Index the snapshots (`phase(s)`: the phase of step s) and move them into run_dir."""
        self.partial.mkdir(parents=True, exist_ok=True)
        write_json(self.partial / "index.json", [
            {"step": s, "tokens": s * tokens_per_step, "file": file_name(s),
             "phase": phase(s - 1) if s else "init"} for s in self.steps])
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        shutil.rmtree(Path(run_dir) / "snapshots", ignore_errors=True)
        os.replace(self.partial, Path(run_dir) / "snapshots")


def read_index(run_dir: Path) -> list[dict[str, Any]]:
    """The index of a run's snapshots; an error when the run has none."""
    index = Path(run_dir) / "snapshots" / "index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{index} not found; the run was trained without snapshots")
    snaps = json.loads(index.read_text())
    if not snaps:
        raise ValueError(f"{index} lists no snapshot: the run is not selected by `profile:` "
                         "(methods/sizes/seeds); add it there and rerun its training")
    return snaps


def load_weights(run_dir: Path, snap: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """One snapshot's state dict, in float32 on `device`."""
    weights = torch.load(Path(run_dir) / "snapshots" / snap["file"], map_location=device,
                         weights_only=True)
    return {k: v.float() for k, v in weights.items()}
