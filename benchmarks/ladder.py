"""What a size ladder costs (config/scale-gpu.yaml): its runs in budget-1 units, FLOPs per token,
tokens per second at an assumed MFU, and H100-hours per size; and the timing of one training
step of each of its shapes on this machine, which the GPU check reports next to the estimate.

    python -m benchmarks.ladder                                # the table for config/scale-gpu.yaml
    python -m benchmarks.ladder --config config/scale.yaml --peak-tflops 1

The assumed MFU (model FLOPs / peak, nanoGPT's 6N + 12LTC per token) rises with size: small
models' GEMMs are memory-bound and their 50k-vocab logits dominate (../shared/research/scale.md:
~40% at GPT-2 124M on an H100, after llm.c's 45 minutes for 10B tokens on 8 of them; 12% at 7M).
It is interpolated in log parameters between those anchors. `make gpu-check` replaces it with a
measured step of every shape (rows `gpu_ladder:<size>`).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lfr.config import ExperimentConfig
from lfr.grid import load_config, lr_runs, param_count, trained_runs

REPO = Path(__file__).resolve().parent.parent
LADDER = REPO / "config/scale-gpu.yaml"
H100_TFLOPS = 989.0
"""The H100 SXM's dense bf16 peak."""
MFU_ANCHORS = [(7e6, 0.12), (12.5e6, 0.18), (26e6, 0.25), (58e6, 0.33), (124e6, 0.40), (1.5e9, 0.45)]
"""(total parameters, assumed MFU) on one H100, bf16, torch.compile (scale.md, section 2)."""


def assumed_mfu(params: float) -> float:
    xs, ys = zip(*MFU_ANCHORS, strict=True)
    return float(np.interp(math.log(params), np.log(xs), ys))


def flops_per_token(cfg: ExperimentConfig, size: str) -> float:
    """lfr.model.flops_per_token without building the model: 6N + 12 L T d, N without GPT-2's
    position embeddings."""
    p, T = cfg.model_preset(size), cfg.data.block_size
    total = param_count(cfg, size)[0]
    positions = T * p.n_embd if p.arch == "gpt2" else 0
    return 6 * (total - positions) + 12 * p.n_layer * T * p.n_embd


@dataclass(frozen=True)
class SizeCost:
    size: str
    params: int
    flops_per_token: float
    units: float  # runs of the ladder at this size, in budget-1 runs (a budget b run counts b)
    tokens: float  # budget 1's tokens
    mfu: float
    tokens_per_s: float

    @property
    def run_hours(self) -> float:
        return self.tokens / self.tokens_per_s / 3600

    @property
    def hours(self) -> float:
        return self.units * self.run_hours


def costs(cfg: ExperimentConfig, peak_tflops: float = H100_TFLOPS,
          measured: dict[str, float] | None = None) -> list[SizeCost]:
    """Per size: its runs (every budget and learning-rate check) and their GPU-hours at the
    assumed MFU, or at `measured` tokens/s where given."""
    units: dict[str, float] = dict.fromkeys(cfg.models, 0.0)
    for size, _, budget, _ in trained_runs(cfg):
        units[size] += budget
    for size, *_ in lr_runs(cfg):
        units[size] += 1
    out = []
    for size in cfg.models:
        params, flops = param_count(cfg, size)[0], flops_per_token(cfg, size)
        mfu = assumed_mfu(params)
        rate = (measured or {}).get(size) or mfu * peak_tflops * 1e12 / flops
        tokens = (cfg.train.tokens_per_param or math.nan) * params
        out.append(SizeCost(size, params, flops, units[size], tokens, mfu, rate))
    return out


def markdown(rows: list[SizeCost]) -> str:
    lines = ["| size | params | FLOPs/token | budget-1 tokens | assumed MFU | est. tokens/s "
             "| runs (budget-1 units) | est. H100-hours |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.size} | {r.params / 1e6:.1f}M | {r.flops_per_token / 1e6:.0f}M | "
                     f"{r.tokens / 1e9:.2f}B | {r.mfu:.0%} | {r.tokens_per_s / 1e6:.2f}M | {r.units:g} | "
                     f"{r.hours:.1f} |")
    total = sum(r.hours for r in rows)
    lines.append(f"| **all** | | | | | | {sum(r.units for r in rows):g} | **{total:.1f}** |")
    return "\n".join(lines)


def time_step(cfg: ExperimentConfig, size: str, device: str, batch: int, block: int, steps: int = 5,
              warmup: int = 2) -> float:
    """Tokens/s of training steps of one ladder shape (forward, mean loss, backward, AdamW; bf16
    autocast and fused AdamW on CUDA; eager) at `batch` blocks of `block` tokens, random tokens."""
    import torch

    from lfr.model import autocast, build_model, configure_optimizer, model_config

    dev = torch.device(device)
    vocab = cfg.vocab_size
    model = build_model(model_config(cfg.model_preset(size), vocab, block, 0, 0.0)).to(dev)
    opt = configure_optimizer(model, cfg.train.lr, cfg.train.weight_decay, (0.9, 0.95), dev)
    x = torch.randint(0, vocab, (batch, block + 1), device=dev)
    dtype = "bfloat16" if dev.type == "cuda" else "float32"

    def step() -> None:
        with autocast(dev, dtype):
            loss = model(x[:, :-1], labels=x[:, 1:]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch * block / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=LADDER, help="a ladder config (default: %(default)s)")
    parser.add_argument("--peak-tflops", type=float, default=H100_TFLOPS,
                        help="the GPU's dense bf16 peak (default: the H100's, %(default)s)")
    args = parser.parse_args(argv)
    print(markdown(costs(load_config(args.config), args.peak_tflops)))


if __name__ == "__main__":
    main()
