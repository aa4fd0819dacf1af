"""Stage `score-reference`: the reference model of reference-scored methods (`ppl-prune`).

1. Train a model of the reference size on a seeded shard of the training blocks (the same loop,
   optimizer and LR schedule as every run, `reference_epochs` passes over the shard), into
   `<out>/reference/` (model, metrics, run.json).
2. Score every block outside the shard with it: no-grad forward, the block's mean token loss.
3. Write `<out>/block_scores.parquet` (block_id, score (NaN for the shard), reference) and
   `<out>/reference.json` (the shard, `reference_train_tokens`, `scoring_tokens`, ..., and the
   reference run's `settings` and `config_hash`).

The training run of a method reads them back with `read_block_scores` (`--block-scores`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lfr.config import ExperimentConfig
from lfr.files import write_json, write_parquet
from lfr.runtime import git_commit
from lfr.sampling import SAMPLERS, BlockScores, RunFacts, Sampler, SamplerOptions
from lfr.sampling.base import epoch_draws

log = logging.getLogger(__name__)
SHARD_STREAM = 0x5EF  # keeps the shard's generator apart from the epoch permutations


def reference_shard(num_blocks: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted ids of the reference model's training shard: round(fraction * N) blocks (>= 1)."""
    size = max(1, int(np.floor(fraction * num_blocks + 0.5)))
    return np.sort(np.random.default_rng([seed, SHARD_STREAM]).permutation(num_blocks)[:size])


class ShardSampler(Sampler):
    """Uniform passes over a fixed shard: a fresh seeded permutation of it each pass."""

    def __init__(self, run: RunFacts, shard: np.ndarray, epochs: float) -> None:
        super().__init__(run, SamplerOptions())
        self.shard, self.epochs = shard, epochs

    def num_steps(self) -> int:
        return max(1, int(self.epochs * len(self.shard)) // self.batch_blocks)

    def batch_ids(self, step: int) -> np.ndarray:
        start = step * self.batch_blocks
        return epoch_draws(self.shard, start, start + self.batch_blocks, lambda epoch: np.random.default_rng(
            [self.seed, SHARD_STREAM, epoch]).permutation(len(self.shard)))


def reference_settings(cfg: ExperimentConfig, method: str) -> tuple[str, Any]:
    """(reference size, validated options) of a method that needs reference scores."""
    if not SAMPLERS[method].needs_block_scores:
        raise ValueError(f"method {method!r} uses no reference model")
    opts = SAMPLERS[method].Options.model_validate(cfg.method_options.get(method, {}))
    return opts.reference_size or cfg.smallest_model(), opts


def score_reference(cfg: ExperimentConfig, method: str, seed: int, data_dir: Path, tok_dir: Path,
                    out_dir: Path, resume_dir: Path | None = None,
                    run_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the reference model and score the pool; return reference.json's content."""
    import torch
    from transformers import GPT2LMHeadModel

    from lfr.data import BlockStore
    from lfr.model import block_losses
    from lfr.train import train

    size, opts = reference_settings(cfg, method)
    out_dir = Path(out_dir)
    store = BlockStore.open(data_dir, "train")
    shard = reference_shard(store.num_blocks, opts.reference_fraction, seed)
    epochs = opts.reference_epochs or cfg.train.epochs
    summary = train(cfg, size, f"{method}-reference", seed, data_dir, tok_dir, out_dir / "reference",
                    resume_dir=resume_dir, run_info=run_info, options=cfg.method_options.get(method, {}),
                    make_sampler=lambda facts: ShardSampler(facts, shard, epochs))

    cuda = torch.cuda.is_available() and cfg.train.device != "cpu"
    device = torch.device("cuda" if cuda else "cpu")
    model = GPT2LMHeadModel.from_pretrained(out_dir / "reference/model").to(device).eval()
    in_shard = np.zeros(store.num_blocks, dtype=bool)
    in_shard[shard] = True
    pool = np.flatnonzero(~in_shard)
    score = np.full(store.num_blocks, np.nan, dtype=np.float32)
    batch = 4 * cfg.train.batch_size
    with torch.no_grad():
        for i in range(0, len(pool), batch):
            ids = pool[i : i + batch]
            x, y = (torch.from_numpy(a).to(device) for a in store.batch(ids))
            score[ids] = block_losses(model, x, y).float().cpu().numpy()
    write_parquet(out_dir / "block_scores.parquet", pd.DataFrame(
        {"block_id": np.arange(store.num_blocks), "score": score, "reference": in_shard}))
    info = {"method": method, "reference_size": size, "seed": seed,
            "reference_fraction": opts.reference_fraction, "reference_epochs": epochs,
            "reference_blocks": len(shard), "scored_blocks": len(pool),
            "reference_train_tokens": summary["tokens"],
            "scoring_tokens": len(pool) * store.block_size,
            "reference_val_loss": summary["val_loss"], "flops_per_token": summary["flops_per_token"],
            "wall_s": summary["wall_s"], "settings": summary["settings"],
            "config_hash": summary["config_hash"]}
    write_json(out_dir / "reference.json", info)
    log.info("scored %d blocks with the %s reference (val loss %.3f)", len(pool), size,
             summary["val_loss"])
    return info


def read_block_scores(path: str | Path) -> BlockScores:
    """The scores written by `score_reference` (the parquet; its reference.json beside it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"block scores {path} not found; run the score_reference rule first")
    table = pd.read_parquet(path).sort_values("block_id")
    if not np.array_equal(table.block_id.to_numpy(), np.arange(len(table))):
        raise ValueError(f"{path}: block_id must be 0..N-1")
    info_path = path.with_name("reference.json")
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return BlockScores(table.score.to_numpy(np.float32), table.reference.to_numpy(bool),
                       int(info.get("reference_train_tokens", 0)), int(info.get("scoring_tokens", 0)))


def main(cfg: ExperimentConfig, method: str, seed: int, data: Path, tokenizer: Path, out: Path,
         resume_dir: Path | None = None) -> dict[str, Any]:
    return score_reference(cfg, method, seed, data, tokenizer, out, resume_dir,
                           {"git_commit": git_commit()})
