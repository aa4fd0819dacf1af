"""Resume checkpoints: atomic, verified, with the previous one kept as a fallback.

Each save writes `ckpt-<step>.pt` (temporary file, fsync, rename) and then its manifest
`ckpt-<step>.json` with the byte size and sha256. Loading takes the newest checkpoint whose
manifest matches, so a file truncated by a kill or a full disk is detected and skipped (with a
warning) instead of crashing deep inside torch.load. `TrainState` is what a run saves and
resumes from, written and read back in one place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lfr.files import atomic_path, write_json
from lfr.sampling import Sampler

log = logging.getLogger(__name__)
KEEP = 2


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(ckpt_dir: Path, step: int, state: dict[str, Any]) -> Path:
    """Save `state` (plus every RNG state) for `step`; keep the newest KEEP checkpoints."""
    ckpt_dir = Path(ckpt_dir)
    path = ckpt_dir / f"ckpt-{step:09d}.pt"
    with atomic_path(path) as tmp:
        torch.save({**state, "step": step, "rng": rng_state()}, tmp)
    write_json(path.with_suffix(".json"), {"step": step, "bytes": path.stat().st_size,
                                           "sha256": file_sha256(path)})
    for old in sorted(ckpt_dir.glob("ckpt-*.json"))[:-KEEP]:
        old.unlink()
        old.with_suffix(".pt").unlink(missing_ok=True)
    return path


def _valid(manifest: Path) -> bool:
    path = manifest.with_suffix(".pt")
    try:
        meta = json.loads(manifest.read_text())
        return path.stat().st_size == meta["bytes"] and file_sha256(path) == meta["sha256"]
    except (OSError, ValueError, KeyError):
        return False


def load_latest(ckpt_dir: Path | None) -> dict[str, Any] | None:
    """The newest intact checkpoint in ckpt_dir (RNG states restored), or None if there is none."""
    if ckpt_dir is None or not Path(ckpt_dir).is_dir():
        return None
    manifests = sorted(Path(ckpt_dir).glob("ckpt-*.json"), reverse=True)
    for manifest in manifests:
        if _valid(manifest):
            state = torch.load(manifest.with_suffix(".pt"), map_location="cpu", weights_only=False)
            set_rng_state(state["rng"])
            return state
        log.warning("%s is truncated or corrupt (size or sha256 mismatch); trying an older one",
                    manifest.with_suffix(".pt"))
    if manifests or any(Path(ckpt_dir).glob("ckpt-*.pt")):
        raise RuntimeError(f"{ckpt_dir}: no intact checkpoint; delete the folder to restart the run")
    return None


@dataclass
class TrainState:
    """What a run continues from after a stop: the weights, the optimizer, the sampler, where the
    run is and what it logged so far. `save` writes it to `folder` (the run's resume folder) and
    `load` reads it back (with every RNG state), the same keys in the same place."""

    model: torch.nn.Module  # the plain module (not compiled, not DDP-wrapped)
    optimizer: torch.optim.Optimizer
    sampler: Sampler
    folder: Path | None  # where checkpoints go; None: the run never saves one
    step: int = 0  # optimizer steps done
    metrics: list[dict[str, Any]] = field(default_factory=list)  # metrics.parquet's rows so far
    elapsed_s: float = 0.0  # the run's wall time so far (carried over a resume)
    scored_blocks: int = 0  # candidates scored so far (Sampler.candidate_ids), charged as forward-only

    def save(self) -> Path:
        assert self.folder is not None
        return save(self.folder, self.step, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(), "metrics": self.metrics, "elapsed_s": self.elapsed_s,
            "scored_blocks": self.scored_blocks})

    def load(self) -> bool:
        """Continue from the newest intact checkpoint in `folder`; False if there is none."""
        if (state := load_latest(self.folder)) is None:
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.step, self.metrics, self.elapsed_s = state["step"], state["metrics"], state["elapsed_s"]
        self.scored_blocks = state.get("scored_blocks", 0)
        return True
