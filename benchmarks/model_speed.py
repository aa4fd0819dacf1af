"""Training-step speed of our model (transformers' GPT2LMHeadModel) against a nanoGPT-style module.

Justifies using the HF module: if the ratio is ~1.0, nothing is lost by training the HF class
directly, and checkpoints need no export. The reference is nanoGPT's model.py in brief: the same
shape, init scheme, tied `nn.Linear` head, SDPA attention and tanh GELU (HF's `gelu_new`); both
train with nanoGPT's `configure_optimizers` (lfr.model.configure_optimizer: AdamW, decay on
matrices only). The step is forward + per-block loss + backward + update.

    .venv/bin/python benchmarks/model_speed.py --size micro --block 128 --batch 16 --vocab 8192
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from lfr.config import MODEL_PRESETS
from lfr.model import block_losses, build_model, configure_optimizer, model_config


class NanoBlock(nn.Module):
    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.h = h
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.c_proj(y)
        return x + self.proj(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))


class Output(NamedTuple):
    """What block_losses reads (`.logits`), as HF's output has it. A plain tuple: freed as soon
    as the step drops it (a class made per call, as this once was, sits in a reference cycle
    and kept every step's logits alive until the garbage collector ran)."""

    logits: torch.Tensor


class NanoGPT(nn.Module):
    """nanoGPT's model.py in brief (pre-LN, tied nn.Linear head, SDPA)."""

    def __init__(self, vocab: int, block: int, n_layer: int, n_head: int, d: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(block, d)
        self.h = nn.ModuleList(NanoBlock(d, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.wte.weight = self.lm_head.weight  # tied, as nanoGPT ties them
        self.apply(lambda m: nn.init.normal_(m.weight, std=0.02) if isinstance(m, nn.Linear | nn.Embedding)
                   else None)

    def forward(self, input_ids: torch.Tensor) -> Output:
        x = self.wte(input_ids) + self.wpe(torch.arange(input_ids.shape[1], device=input_ids.device))
        for block in self.h:
            x = block(x)
        return Output(self.lm_head(self.ln_f(x)))


def time_steps(model: nn.Module, batch: int, block: int, vocab: int, steps: int) -> list[float]:
    opt = configure_optimizer(model, 1e-3, 0.1, (0.9, 0.95), torch.device("cpu"))
    x = torch.randint(0, vocab, (batch, block))
    y = torch.randint(0, vocab, (batch, block))
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        block_losses(model, x, y).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 3:  # warm-up steps are not timed
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="micro", choices=sorted(MODEL_PRESETS))
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per model")
    args = p.parse_args()
    torch.manual_seed(0)
    preset = MODEL_PRESETS[args.size]
    models = {
        "hf": build_model(model_config(preset, args.vocab, args.block, 0)),
        "nanogpt": NanoGPT(args.vocab, args.block, preset.n_layer, preset.n_head, preset.n_embd),
    }
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):  # interleave so drift in machine load hits both equally
        for name, model in models.items():
            times[name] += time_steps(model, args.batch, args.block, args.vocab, args.steps)
    tokens = args.batch * args.block
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:8s} median {med * 1e3:7.1f} ms/step  {tokens / med:9.0f} tok/s")
    ratio = statistics.median(times["hf"]) / statistics.median(times["nanogpt"])
    print(f"ratio hf/nanogpt step time: {ratio:.3f} (threads={torch.get_num_threads()}, "
          f"params hf={sum(p.numel() for p in models['hf'].parameters()) / 1e6:.2f}M)")
    assert math.isfinite(ratio)


if __name__ == "__main__":
    main()
