"""Peak memory of the profiling pass (lfr/profile.py): measured on the CPU at a small size, with
the logits a chunk at a time (lfr.model.chunked_block_losses, as the pass runs) and all at once
(before); estimated, by the same accounting, for every GPT-2 size on a GPU.

    python benchmarks/profile_memory.py                   # the GPU estimates (docs/scale.md)
    python benchmarks/profile_memory.py --measure micro 8192 128 256 8192   # one CPU measurement

A measurement runs in a process of its own (peak RSS cannot be reset): the model, one warm-up
pass of one block, then the pass over `batch` blocks of random tokens in one batch; the figure
is the peak resident memory during it beyond the memory before it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass

from lfr.config import MODEL_PRESETS, ModelPreset
from lfr.profile import LOGIT_CHUNK_TOKENS

GIB = 2**30
GPT2_SIZES = ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]


@dataclass(frozen=True)
class Shape:
    preset: ModelPreset
    params: int
    vocab: int
    block: int


def estimate_bytes(shape: Shape, batch: int, chunk_tokens: int | None, gpu: bool = True) -> float:
    """The pass's peak: weights (float32, and on a GPU autocast's bfloat16 copies), the key/value
    cache that HF keeps without use_cache=False (the unchunked pass), the largest layer's
    activations (the float32 residual in and out, the MLP's 4d input and output), the final hidden
    states, and the logits of one chunk (or the batch): bfloat16, their float32 copy and the
    softmax's output on a GPU (10 bytes each), float32 and the softmax's on a CPU (8)."""
    p, d, tokens = shape.preset, shape.preset.n_embd, batch * shape.block
    act = 2 if gpu else 4  # bytes of a matmul's output: bfloat16 under autocast, else float32
    weights = shape.params * (4 + (2 if gpu else 0))
    cache = 0 if chunk_tokens else 2 * p.n_layer * tokens * d * act
    layer = tokens * d * (2 * 4 + 2 * 4 * act)
    rows = batch if chunk_tokens is None else min(batch, max(1, chunk_tokens // shape.block))
    logits = rows * shape.block * shape.vocab * (10 if gpu else 8)
    return weights + cache + layer + tokens * d * 4 + logits


MEASURE = """
import ctypes, json, resource, sys
import numpy as np, torch
from lfr.config import MODEL_PRESETS
from lfr.model import build_model, model_config, num_params
from lfr.profile import profile_losses

size, vocab, block, batch, chunk = sys.argv[1], *map(int, sys.argv[2:6])
torch.set_num_threads(1)  # not setup_torch: it makes glibc keep freed memory (in RSS)
model = build_model(model_config(MODEL_PRESETS[size], vocab, block, 0))

class Blocks:  # random tokens: memory does not depend on them
    block_size = block
    def batch(self, ids):
        tokens = np.random.default_rng(0).integers(0, vocab, (len(ids), block + 1))
        return tokens[:, :-1], tokens[:, 1:]

def rss():
    status = open("/proc/self/status").read()
    return int(status.split("VmRSS:")[1].split()[0]) * 1024

cpu = torch.device("cpu")
profile_losses(model, Blocks(), np.arange(1), 1, cpu, chunk_tokens=chunk or None)  # warm-up
# Pin what is mapped now (where allowed): a kernel that pages out cold file pages (DAMON) would
# drop torch's code from RSS before the pass and count it again as the pass touches it.
ctypes.CDLL(None).mlockall(1)  # MCL_CURRENT
before = rss()
profile_losses(model, Blocks(), np.arange(batch), batch, cpu, chunk_tokens=chunk or None)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"peak_bytes": peak - before, "params": num_params(model)}))
"""


def measure(size: str, vocab: int, block: int, batch: int, chunk_tokens: int | None) -> dict:
    """The CPU pass's peak beyond its start, in a fresh process (and the model's parameters)."""
    # fixed glibc thresholds: its default raises them as large blocks are freed, which keeps some of
    # them in RSS from one run to the next (the peak then varied by a quarter)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", MEASURE, size, str(vocab), str(block), str(batch),
                          str(chunk_tokens or 0)], capture_output=True, text=True, check=True, timeout=600,
                         env=env)
    return json.loads(out.stdout.splitlines()[-1])


def gpu_table(batch: int = 128) -> list[dict]:
    """Each GPT-2 size at config/paper.yaml's profile.batch_size and block 1024: the estimated peak
    before and after, and the largest batch that fits a 40 GB and an 80 GB card (in 90% of it)."""
    import torch

    from lfr.model import build_model, model_config, num_params

    rows = []
    for name in GPT2_SIZES:
        with torch.device("meta"):  # shapes only: its parameter count
            params = num_params(build_model(model_config(MODEL_PRESETS[name], 50_304, 1024, 50_256)))
        shape = Shape(MODEL_PRESETS[name], params, 50_304, 1024)
        row = {"size": name}
        for how, chunk in (("whole", None), ("chunked", LOGIT_CHUNK_TOKENS)):
            row[f"{how}_gib"] = estimate_bytes(shape, batch, chunk) / GIB
            for card in (40, 80):
                fits = [b for b in range(1, 4097) if estimate_bytes(shape, b, chunk) <= 0.9 * card * 1e9]
                row[f"{how}_max_batch_{card}gb"] = max(fits, default=0)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--measure", nargs=5, metavar=("SIZE", "VOCAB", "BLOCK", "BATCH", "CHUNK"),
                   help="one CPU measurement (CHUNK 0: the whole batch's logits at once)")
    p.add_argument("--batch", type=int, default=128, help="profile.batch_size of the GPU estimates")
    args = p.parse_args(argv)
    if args.measure:
        size, *numbers = args.measure
        print(json.dumps(measure(size, *map(int, numbers[:3]), int(numbers[3]) or None)))
        return
    for row in gpu_table(args.batch):
        print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}))


if __name__ == "__main__":
    main()
