"""Per-step cost of each sampler's bookkeeping, as a ratio to a `random` training step.

Runs real training steps of the demo model (micro: 4 layers, d=128, block 128, vocab 8192,
batch 16) on synthetic tokens, with the sampler calls (batch_ids, observe, records) timed apart.
Goal for LFR: total step time within 2% of random's.

    .venv/bin/python -m benchmarks.sampler_overhead --blocks 20000 --steps 60
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from benchmarks.sampler_scale import synthetic_scores
from lfr.config import MODEL_PRESETS
from lfr.model import block_losses, build_model, configure_optimizer, model_config
from lfr.sampling import SAMPLERS, RunFacts, build_sampler


def run(name: str, args: argparse.Namespace, tokens: torch.Tensor) -> tuple[list[float], list[float]]:
    torch.manual_seed(0)
    model = build_model(model_config(MODEL_PRESETS["micro"], args.vocab, args.block, 0))
    opt = configure_optimizer(model, 1e-3, 0.1, (0.9, 0.95), torch.device("cpu"))
    scores = synthetic_scores(args.blocks, 0) if SAMPLERS[name].needs_block_scores else None
    facts = RunFacts(args.blocks, args.batch, args.block, 0, 4.0, scores)
    sampler = build_sampler(name, facts, {})
    # Start inside the last focus phase for LFR-like samplers (the selection just happened).
    steps = range(sampler.num_steps() - args.steps, sampler.num_steps())
    rng = np.random.default_rng(0)
    for step in range(steps.start):  # fast-forward with synthetic losses, no model
        ids = sampler.batch_ids(step).ids
        sampler.observe(step, ids, rng.random(len(ids), dtype=np.float32))
        sampler.records()
    step_times, sampler_times = [], []
    for step in steps:
        t0 = time.perf_counter()
        ids = sampler.batch_ids(step).ids
        t1 = time.perf_counter()
        x, y = tokens[ids % len(tokens), :-1], tokens[ids % len(tokens), 1:]
        losses = block_losses(model, x, y)
        losses.mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        host = losses.detach().numpy()
        t2 = time.perf_counter()
        sampler.observe(step, ids, host)
        sampler.records()
        t3 = time.perf_counter()
        step_times.append(t3 - t0)
        sampler_times.append((t1 - t0) + (t3 - t2))
    return step_times[3:], sampler_times[3:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", type=int, default=20_000, help="training blocks in the plan")
    p.add_argument("--steps", type=int, default=40, help="timed steps per sampler")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--vocab", type=int, default=8192)
    args = p.parse_args()
    tokens = torch.randint(0, args.vocab, (1024, args.block + 1))
    results = {name: run(name, args, tokens) for name in SAMPLERS}
    base_step = statistics.median(results["random"][0])
    base_sampler = statistics.median(results["random"][1])
    print(f"{'method':16s} {'step ms':>8s} {'sampler ms':>11s} {'step ratio':>11s} {'overhead':>9s}")
    for name, (steps, sampler) in results.items():
        step, samp = statistics.median(steps), statistics.median(sampler)
        print(f"{name:16s} {step * 1e3:8.1f} {samp * 1e3:11.3f} {step / base_step:11.3f} "
              f"{(samp - base_sampler) / base_step:9.2%}")
    print(f"(overhead = extra sampler time per step / random's step time; {args.blocks} blocks)")


if __name__ == "__main__":
    main()
