"""Profiling-pass tokens/s against training tokens/s, on the same model, machine and data.

The training side is the loop's step (forward with per-block losses, backward, grad clip,
AdamW); the profiling side is `lfr.profile.profile_losses` (eval mode, no grad, batches of
`--profile-batch`). Repeats alternate the two so that machine load hits both alike. Goal: the
pass runs at >= 2.5x the training tokens/s (a forward is about a third of a training step).

    .venv/bin/python benchmarks/profile_speed.py --size micro --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lfr.config import MODEL_PRESETS, ProfileConfig
from lfr.data import BlockStore
from lfr.model import block_losses, build_model, configure_optimizer, gpt2_config
from lfr.profile import profile_losses

GOAL = 2.5


def synthetic_store(folder: Path, blocks: int, block: int, vocab: int) -> BlockStore:
    tokens = np.random.default_rng(0).integers(0, vocab, blocks * block + 1, dtype=np.uint16)
    path = folder / "train.bin"
    tokens.tofile(path)
    return BlockStore(np.memmap(path, dtype=np.uint16, mode="r"), block, blocks)


def train_tokens_per_s(model, opt, store: BlockStore, batch: int, steps: int) -> float:
    model.train()
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = (torch.from_numpy(a) for a in store.batch(rng.integers(0, store.num_blocks, batch)))
        losses = block_losses(model, x, y)
        losses.mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.detach().numpy()
    return steps * batch * store.block_size / (time.perf_counter() - t0)


def profile_tokens_per_s(model, store: BlockStore, blocks: int, batch: int) -> float:
    ids = np.arange(blocks)
    t0 = time.perf_counter()
    profile_losses(model, store, ids, batch, torch.device("cpu"))
    return blocks * store.block_size / (time.perf_counter() - t0)


def measure(size: str = "micro", vocab: int = 8192, block: int = 128, train_batch: int = 16,
            profile_batch: int = ProfileConfig().batch_size, steps: int = 20,
            repeats: int = 5) -> dict[str, float]:
    """Median and spread of profile/train tokens/s over interleaved repeats."""
    torch.manual_seed(0)
    model = build_model(gpt2_config(MODEL_PRESETS[size], vocab, block, 0))
    opt = configure_optimizer(model, 1e-3, 0.1, (0.9, 0.95), torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_store(Path(tmp), 4096, block, vocab)
        train_tokens_per_s(model, opt, store, train_batch, 3)  # warm-up
        profile_tokens_per_s(model, store, profile_batch, profile_batch)
        ratios, train, prof = [], [], []
        for _ in range(repeats):
            train.append(train_tokens_per_s(model, opt, store, train_batch, steps))
            prof.append(profile_tokens_per_s(model, store, steps * train_batch, profile_batch))
            ratios.append(prof[-1] / train[-1])
    return {"train_tokens_per_s": statistics.median(train), "profile_tokens_per_s": statistics.median(prof),
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios), "repeats": repeats, "goal": GOAL}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="micro", choices=sorted(MODEL_PRESETS))
    p.add_argument("--profile-batch", type=int, default=ProfileConfig().batch_size)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    r = measure(args.size, profile_batch=args.profile_batch, repeats=args.repeats)
    print(f"train {r['train_tokens_per_s']:,.0f} tok/s, profile {r['profile_tokens_per_s']:,.0f} tok/s: "
          f"ratio {r['ratio_median']:.2f}x (min {r['ratio_min']:.2f}, max {r['ratio_max']:.2f}, "
          f"{r['repeats']} repeats; goal >= {GOAL}x)")


if __name__ == "__main__":
    main()
