"""Stage `score-reference`: the reference model of reference-scored methods (`ppl-prune`,
`rho-loss`: every method with `needs_block_scores`, whose options are `ReferenceOptions`).

1. Train a model of the reference size on a seeded shard of the training blocks (the same loop,
   optimizer and LR schedule as every run, `reference_epochs` passes over the shard), into
   `<out>/reference/` (model, metrics, run.json).
2. Score every block outside the shard with it: no-grad forward, the block's mean token loss.
3. Write `<out>/block_scores.parquet` (block_id, score (NaN for the shard), reference) and
   `<out>/reference.json` (the shard, `reference_train_tokens`, `scoring_tokens`, the reference
   model's `flops_per_token`, ..., and the reference run's `settings` and `config_hash`), through
   `BlockScores.write`.

The training run of a method reads them back with `BlockScores.read` (`--block-scores`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoModelForCausalLM

from lfr.config import ExperimentConfig
from lfr.data import BlockStore
from lfr.grid import reference_model_size
from lfr.model import scored_batches
from lfr.runtime import git_commit, resolve_device
from lfr.sampling import BlockScores, validated_options
from lfr.sampling.ppl_prune import ReferenceOptions, ShardSampler, reference_shard
from lfr.train import Job, Method, train_run

log = logging.getLogger(__name__)


def score_reference(cfg: ExperimentConfig, method: str, seed: int, data_dir: Path, tok_dir: Path,
                    out_dir: Path, resume_dir: Path | None = None,
                    run_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the reference model and score the pool; return reference.json's content."""
    opts = validated_options(method, cfg.method_options.get(method, {}))
    size = reference_model_size(cfg, method)
    assert isinstance(opts, ReferenceOptions), f"{method}'s options must subclass ReferenceOptions"
    out_dir = Path(out_dir)
    store = BlockStore.open(data_dir, "train")
    shard = reference_shard(store.num_blocks, opts.reference_fraction, seed)
    epochs = opts.reference_epochs or cfg.train.epochs
    reference = Method(f"{method}-reference", cfg.method_options.get(method, {}),
                       lambda facts, ids: ShardSampler(facts, shard, epochs))
    # its shard of the whole pool, whatever subset a size's runs draw from (they take its scores)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"tokens_per_param": None})})
    summary = train_run(cfg, Job(size, seed, data_dir, tok_dir, out_dir / "reference", resume_dir,
                             run_info or {}), reference)

    device = resolve_device(cfg.train.device, "train.device")
    model = AutoModelForCausalLM.from_pretrained(out_dir / "reference/model").to(device)
    in_shard = np.zeros(store.num_blocks, dtype=bool)
    in_shard[shard] = True
    pool = np.flatnonzero(~in_shard)
    score = np.full(store.num_blocks, np.nan, dtype=np.float32)
    for part, losses in scored_batches(model, store, pool, 4 * cfg.train.batch_size, device,
                                       cfg.train.dtype):
        score[pool[part]] = losses.float().cpu().numpy()
    info = {"method": method, "reference_size": size, "seed": seed,
            "reference_fraction": opts.reference_fraction, "reference_epochs": epochs,
            "reference_blocks": len(shard), "scored_blocks": len(pool),
            "reference_train_tokens": summary["tokens"],
            "scoring_tokens": len(pool) * store.block_size,
            "reference_val_loss": summary["val_loss"], "flops_per_token": summary["flops_per_token"],
            "wall_s": summary["wall_s"], "settings": summary["settings"],
            "config_hash": summary["config_hash"]}
    BlockScores(score, in_shard).write(out_dir / "block_scores.parquet", info)
    log.info("scored %d blocks with the %s reference (val loss %.3f)", len(pool), size,
             summary["val_loss"])
    return info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m lfr score-reference`."""
    parser.add_argument("--method", required=True, help="the method whose options hold the reference's")
    parser.add_argument("--seed", type=int, required=True, help="the run's seed (model init, data order)")
    parser.add_argument("--data", type=Path, required=True, help="folder written by `tokenize`")
    parser.add_argument("--tokenizer", type=Path, required=True, help="folder written by `tokenizer`")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder: block_scores.parquet, reference.json")
    parser.add_argument("--resume-dir", type=Path, help="resume checkpoints of the reference's training")
    parser.add_argument("--threads", type=int, help="torch CPU threads")


def main(cfg: ExperimentConfig, method: str, seed: int, data: Path, tokenizer: Path, out: Path,
         resume_dir: Path | None = None) -> dict[str, Any]:
    return score_reference(cfg, method, seed, data, tokenizer, out, resume_dir,
                           {"git_commit": git_commit()})
