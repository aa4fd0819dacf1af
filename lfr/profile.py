"""Stage `profile`: each training block's loss at each weight snapshot of a run.

The training loop saves snapshots at token intervals and phase boundaries (lfr/snapshots.py).
This pass reloads each one and computes the mean token loss of every profiled block in eval mode,
without grad, in large batches: forward-only, so about a third of a training step per token. The
profiled blocks are all training blocks or a fixed seeded sample (`profile.sample_blocks`), the
same for every run, so runs compare block by block. Profiling tokens are counted apart from
training tokens (summary.json): they are extra compute, not free.

Output: a long table (run, checkpoint_step, checkpoint_tokens, phase, block_id, loss, domain).
In memory and on disk a profiled block costs BYTES_PER_ROW per snapshot.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM

from lfr.config import ExperimentConfig, ProfileConfig
from lfr.data import BlockStore, subset_ids
from lfr.files import write_json, write_parquet
from lfr.model import scored_batches
from lfr.runtime import resolve_device
from lfr.snapshots import load_weights, read_index

log = logging.getLogger(__name__)
# int64 block_id, float32 loss, int64 step and tokens; run, phase and domain dictionary-encoded.
BYTES_PER_ROW = 8 + 4 + 8 + 8 + 3 * 2
# The output layer and its cross-entropy run over this many tokens at a time, whatever
# profile.batch_size: at GPT-2's 50,304 outputs ~4 GB of logits with their float32 copy and softmax.
LOGIT_CHUNK_TOKENS = 8192


def sampled_block_ids(num_blocks: int, size: int | None, seed: int) -> np.ndarray:
    """The profiled block ids, sorted: all blocks, or a seeded sample of `size` of them."""
    if size is None or size >= num_blocks:
        return np.arange(num_blocks, dtype=np.int64)
    rng = np.random.default_rng([seed, num_blocks])
    return np.sort(rng.choice(num_blocks, size=size, replace=False)).astype(np.int64)


def profile_losses(model: torch.nn.Module, store: BlockStore, ids: np.ndarray, batch_size: int,
                   device: torch.device, dtype: str = "float32",
                   chunk_tokens: int | None = LOGIT_CHUNK_TOKENS) -> np.ndarray:
    """Mean token loss (float32) of each block in `ids`, eval mode, training's autocast; the
    logits `chunk_tokens` at a time (None: the whole batch's at once, as validation does)."""
    out = np.empty(len(ids), dtype=np.float32)
    for part, losses in scored_batches(model, store, ids, batch_size, device, dtype, chunk_tokens):
        out[part] = losses.float().cpu().numpy()
    return out


def profile_run(run_dir: Path, data_dir: Path, cfg: ProfileConfig, out: Path,
                summary_out: Path, device: str = "auto", dtype: str = "float32") -> dict[str, Any]:
    """Profile every snapshot of one run; write the long table and a summary; return the summary."""
    run_dir = Path(run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    snaps = read_index(run_dir)
    dev = resolve_device(device, "train.device")
    model = AutoModelForCausalLM.from_pretrained(run_dir / "model").to(dev)
    store = BlockStore.open(data_dir, "train")
    pool = subset_ids(store.num_blocks, info.get("subset_blocks") or store.num_blocks)  # what it trained on
    ids = pool[sampled_block_ids(len(pool), cfg.sample_blocks, cfg.sample_seed)]
    domains = pd.read_parquet(Path(data_dir) / "train_blocks.parquet", columns=["domain"])["domain"]
    domain = domains.to_numpy(dtype=object)[ids]
    run = f"{info['size']}/{info['method']}/seed{info['seed']}"
    frames, seconds = [], 0.0
    for snap in tqdm(snaps, desc=f"profile {run}", unit="snapshot"):
        model.load_state_dict(load_weights(run_dir, snap, dev))
        t0 = time.perf_counter()
        losses = profile_losses(model, store, ids, cfg.batch_size, dev, dtype)
        seconds += time.perf_counter() - t0
        frames.append(pd.DataFrame({
            "checkpoint_step": snap["step"], "checkpoint_tokens": snap["tokens"],
            "phase": snap["phase"], "block_id": ids, "loss": losses, "domain": domain}))
    table = pd.concat(frames, ignore_index=True)
    for key in ("size", "method", "seed"):
        table.insert(0, key, info[key])
    table.insert(0, "run", run)
    for col in ("run", "size", "method", "phase", "domain"):
        table[col] = table[col].astype("category")
    tokens = len(snaps) * len(ids) * store.block_size
    summary = {
        "run": run, "size": info["size"], "method": info["method"], "seed": info["seed"],
        "snapshots": len(snaps), "profiled_blocks": len(ids), "train_blocks": store.num_blocks,
        "profile_tokens": tokens, "train_tokens": info["tokens"], "profile_seconds": seconds,
        "profile_tokens_per_s": tokens / max(seconds, 1e-9),
        "train_tokens_per_s": info["train_tokens_per_s"], "device": str(dev),
        "bytes_per_profiled_block": BYTES_PER_ROW * len(snaps),
        "config_hash": info.get("config_hash"), "git_commit": info.get("git_commit"),
    }
    write_parquet(out, table)
    write_json(summary_out, summary)
    log.info("profile %s: %d snapshots x %d blocks, %.0f tokens/s", run, len(snaps), len(ids),
             summary["profile_tokens_per_s"])
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m lfr profile`."""
    parser.add_argument("--run", type=Path, required=True, help="a finished run folder (with snapshots/)")
    parser.add_argument("--data", type=Path, required=True, help="folder written by `tokenize`")
    parser.add_argument("--out", type=Path, required=True, help="folder for losses.parquet, summary.json")
    parser.add_argument("--threads", type=int, help="torch CPU threads")


def main(cfg: ExperimentConfig, run: Path, data: Path, out: Path) -> dict[str, Any]:
    out = Path(out)
    return profile_run(run, data, cfg.profile, out / "losses.parquet", out / "summary.json",
                       cfg.train.device, cfg.train.dtype)
