"""The GPU check, `python -m benchmarks --gpu` (`make gpu-check`): GPT-2 124M on one CUDA GPU ->
results/gpu_check.csv, in the row format of results/benchmarks.csv.

Shape: the `gpt2` preset (124M), block 1024, micro-batch 16 x grad_accum 4 (65,536 tokens per
optimizer step), bf16 autocast, torch.compile, fused AdamW, validation only at step 0 and at the
end, on one batch (it is untimed anyway). Data: the bundled corpus, tokenized by an 8192-token BPE
trained on 2M of its characters (seconds, offline), the vocabulary padded to 50304 by unused
tokens (GPT-2's 50257 rounded up to a multiple of 64, as nanoGPT does), so the output layer costs
what GPT-2's does. Every loop runs once: a dedicated GPU has no neighbours to alternate against.
Rows (`ours` against `reference`):

- `gpu_mfu`: model FLOP/s of our loop (nanoGPT's 6N + 12LTC per token x tokens/s) against the
  GPU's dense bf16 peak (lfr.metrics.PEAK_TFLOPS, or --peak-tflops); goal >= 0.45.
- `gpu_train_loop`: tokens/s of lfr.train.train_run (method random) against a minimal nanoGPT-style
  loop of the same HF model, batch, dtype, compile, clipping and fused AdamW; goal >= 0.95.
- `gpu_fused_loss`: ours against the minimal loop with the loss compiled into the model's graph
  (informational: what compiling the loss too would be worth; ours compiles the model alone).
- `gpu_fixed_cost`: seconds of a run beyond its steps at the steady rate (compilation, model
  build, validation, saving), ours against the minimal loop's.
- `gpu_lfr_loop`: tokens/s of lfr.train.train_run with LFR (learn half the run, then focus on half
  the blocks) against random; goal >= 0.98.
- `gpu_lfr_sampler_overhead`: LFR's bookkeeping per step beyond random's (batch_ids, observe,
  records; synthetic losses, whole paper-v1 plan, 20,000 blocks) over our step; goal <= 0.01.
- `gpu_profile_vs_train`: tokens/s of the profiling pass (lfr.profile.profile_losses, eager, as
  the profile stage runs it, on the run's saved model) against our training; goal >= 2.5.
- `gpu_profile_memory`: the profiling pass's peak GPU memory at its batch (GiB; scales with it).
- `gpu_ladder:<size>`: tokens/s of a training step of each shape of the GPU ladder
  (config/scale-gpu.yaml: its batch and block, bf16, fused AdamW, eager) against the estimate at
  the assumed MFU of benchmarks/ladder.py; the description projects that size's H100-hours from
  the measurement (compiled training runs faster: an upper bound).
- `gpu_check_wall`: the check's wall time after the imports; goal <= 480 s.

Throughput of lfr.train.train_run is read from its metrics log: the rows after the first `skip`
steps, so compilation and warm-up are left out.

`--dry`: the same code on the CPU with a tiny model (nano, block 64, a 300-token BPE padded to 384)
and a few steps, float32, no compile (CUDA-only settings off), a nominal peak of 1 TFLOP/s; the
test suite runs it. Its figures mean nothing.
"""

from __future__ import annotations

import gc
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from benchmarks import ladder
from benchmarks.sampler_scale import timed_step
from benchmarks.table import Row, show, table_of
from lfr.config import ExperimentConfig
from lfr.data import BlockStore, data_meta
from lfr.files import write_csv
from lfr.grid import validate_config
from lfr.metrics import peak_flops
from lfr.model import build_model, model_config
from lfr.profile import profile_losses, sampled_block_ids
from lfr.runtime import setup_torch
from lfr.sampling import RunFacts, build_sampler

# What lfr imports beyond torch, numpy, pandas and pyarrow: pip installs them with transformers 5
# (pydantic through typer). The check runs with nothing else (tests/test_benchmarks.py).
COMES_WITH_TRANSFORMERS = ["pydantic", "pyyaml", "tqdm", "tokenizers"]


@dataclass(frozen=True)
class Shape:
    size: str  # model preset
    block: int
    batch: int  # blocks per micro-batch
    grad_accum: int
    steps: int  # optimizer steps per loop
    skip: int  # of which the first are warm-up (compilation): not timed
    log_every: int
    bpe_vocab: int
    vocab: int  # the model's: the BPE padded with unused tokens
    train_chars: int  # the BPE's training text
    fraction: float  # of the bundled corpus's training documents
    profile_blocks: int
    profile_batch: int
    sampler_blocks: int
    device: str
    compile: bool
    peak_tflops: float | None  # None: the detected GPU's

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.grad_accum * self.block


GPU = Shape("gpt2", 1024, 16, 4, 120, 20, 10, 8192, 50304, 2_000_000, 1.0, 2048, 64, 20_000, "cuda", True,
            None)
DRY = Shape("nano", 64, 4, 2, 12, 4, 2, 300, 384, 100_000, 0.05, 64, 16, 2_000, "cpu", False, 1.0)


def experiment(shape: Shape) -> ExperimentConfig:
    half = shape.steps // 2 * shape.tokens_per_step  # LFR: learn for half the steps, then focus
    return validate_config({
        "corpus": {"source": "bundled", "fraction": shape.fraction, "val_fraction": 0.02},
        "tokenizer": {"kind": "bpe", "vocab_size": shape.bpe_vocab, "train_chars": shape.train_chars},
        "data": {"block_size": shape.block},
        "models": [shape.size],
        "methods": ["random", "lfr"],
        "method_options": {"lfr": {"schedule": [{"kind": "learn", "tokens": half},
                                                {"kind": "focus", "drop": 0.5, "tokens": half}]}},
        "train": {"batch_size": shape.batch, "grad_accum": shape.grad_accum, "lr": 6.0e-4,
                  "eval_every": 10**9, "eval_blocks": shape.batch, "log_every": shape.log_every,
                  "ckpt_every": 10**9, "device": shape.device, "dtype": "bfloat16",
                  "compile": shape.compile, "peak_tflops": shape.peak_tflops},
    }, "the GPU check")


def prepare(root: Path, cfg: ExperimentConfig, shape: Shape) -> ExperimentConfig:
    """Corpus, padded tokenizer and token files; the config with random's run length set to
    `shape.steps`."""
    from lfr.corpus import prepare_corpus
    from lfr.tokenize import tokenize
    from lfr.tokenizer import prepare_tokenizer

    docs = root / "corpus"
    prepare_corpus(cfg.corpus, docs / "train.parquet", docs / "val.parquet")
    prepare_tokenizer(cfg.tokenizer, docs / "train.parquet", root / "tokenizer", pad_to=shape.vocab)
    tokenize(docs / "train.parquet", docs / "val.parquet", root / "tokenizer", cfg.data, root / "data")
    blocks = data_meta(root / "data")["train_blocks"]
    # random: int(epochs x blocks) // batch blocks steps
    epochs = (shape.steps * shape.batch * shape.grad_accum + 0.5) / blocks
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": epochs})})


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release() -> None:
    """Free the last loop's model, optimizer and compiled graphs before the next one."""
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def steady(metrics: pd.DataFrame, skip: int) -> tuple[float, float]:
    """Tokens/s and MFU over the metrics rows that start at or after step `skip`."""
    m = metrics.assign(prev=metrics.step.shift(1)).iloc[1:]
    m = m[m.prev >= skip]
    steps = m.step - m.prev
    tok_s = steps.sum() / (steps / m.tokens_per_s).sum()  # total tokens / total time
    return tok_s, tok_s * float((m.mfu / m.tokens_per_s).iloc[0])


def our_loop(cfg: ExperimentConfig, root: Path, method: str, shape: Shape) -> tuple[float, float, float]:
    """lfr.train.train_run: steady tokens/s, MFU, and seconds beyond the steps at that rate."""
    from lfr.train import Job, Method, train_run

    out = root / "runs" / method
    t0 = time.perf_counter()
    summary = train_run(cfg, Job(shape.size, 0, root / "data", root / "tokenizer", out),
                    Method.registered(cfg, method))
    wall = time.perf_counter() - t0
    assert summary["steps"] == shape.steps, (method, summary["steps"])
    tok_s, mfu = steady(pd.read_parquet(out / "metrics.parquet"), shape.skip)
    return tok_s, mfu, wall - shape.steps * shape.tokens_per_step / tok_s


def minimal_loop(cfg: ExperimentConfig, data_dir: Path, shape: Shape,
                 fused_loss: bool) -> tuple[float, float]:
    """nanoGPT's training loop on the same HF model: random blocks from the memmap (pinned,
    non-blocking, the next batch read while the GPU works), autocast, mean loss, clipping, fused
    AdamW with decay on matrices, no host sync. Steady tokens/s and seconds beyond the steps."""
    tc, device, T, B = cfg.train, torch.device(shape.device), shape.block, shape.batch
    meta = data_meta(data_dir)
    tokens = np.memmap(data_dir / "train.bin", dtype=meta["dtype"], mode="r")
    t_start = time.perf_counter()
    torch.manual_seed(0)
    model = build_model(model_config(cfg.model_preset(shape.size), shape.vocab, T, meta["eot_id"]))
    model = model.to(device)
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": tc.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=tc.lr, betas=(tc.beta1, tc.beta2), fused=device.type == "cuda")
    net = torch.compile(model) if tc.compile and not fused_loss else model

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(net(input_ids=x).logits.flatten(0, 1).float(), y.flatten())

    step_loss = torch.compile(loss_of) if tc.compile and fused_loss else loss_of
    rng, window = np.random.default_rng(0), np.arange(T + 1)

    def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
        rows = tokens[rng.integers(meta["train_blocks"], size=B)[:, None] * T + window].astype(np.int64)
        x, y = torch.from_numpy(rows[:, :-1].copy()), torch.from_numpy(rows[:, 1:].copy())
        if device.type == "cuda":
            x, y = (t.pin_memory().to(device, non_blocking=True) for t in (x, y))
        return x, y

    x, y = get_batch()
    for step in range(shape.steps):
        if step == shape.skip:
            sync(device)
            t0 = time.perf_counter()
        for _ in range(tc.grad_accum):
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                loss = step_loss(x, y) / tc.grad_accum
            x, y = get_batch()
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(device)
    t_end = time.perf_counter()
    step_s = (t_end - t0) / (shape.steps - shape.skip)
    return shape.tokens_per_step / step_s, t_end - t_start - shape.steps * step_s


def profile_pass(run_dir: Path, data_dir: Path, shape: Shape) -> tuple[float, float, int]:
    """Tokens/s of the profiling pass on the run's saved model, loaded as the profile stage
    loads it, its peak GPU memory in GiB (NaN on a CPU) and the blocks it scored."""
    device = torch.device(shape.device)
    model = AutoModelForCausalLM.from_pretrained(run_dir / "model").to(device)
    store = BlockStore.open(data_dir, "train")
    ids = sampled_block_ids(store.num_blocks, shape.profile_blocks, 0)
    profile_losses(model, store, ids[: shape.profile_batch], shape.profile_batch, device, "bfloat16")  # warm
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    profile_losses(model, store, ids, shape.profile_batch, device, "bfloat16")  # returns on the host
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return len(ids) * store.block_size / seconds, peak, len(ids)


def bookkeeping_s(name: str, facts: RunFacts) -> float:
    """Mean seconds per step of a sampler's calls in the loop (sampler_scale.timed_step) over its
    whole default plan, phase boundaries included; synthetic losses."""
    sampler, rng = build_sampler(name, facts, {}), np.random.default_rng(0)
    times = [timed_step(sampler, step, rng.random(facts.batch_blocks, dtype=np.float32))
             for step in range(sampler.num_steps())]
    return sum(times) / len(times)


def rows_of(shape: Shape, cfg: ExperimentConfig, root: Path) -> list[Row]:
    device, data = torch.device(shape.device), root / "data"
    print("our loop (random) ...", flush=True)
    ours, mfu, ours_fixed = our_loop(cfg, root, "random", shape)
    release()
    print("minimal loop ...", flush=True)
    minimal, minimal_fixed = minimal_loop(cfg, data, shape, fused_loss=False)
    release()
    print("minimal loop, loss compiled too ...", flush=True)
    fused, _ = minimal_loop(cfg, data, shape, fused_loss=True)
    release()
    print("our loop (lfr) ...", flush=True)
    lfr, _, _ = our_loop(cfg, root, "lfr", shape)
    release()
    print("profiling pass ...", flush=True)
    profile, memory, profiled = profile_pass(root / "runs/random", data, shape)
    release()
    print("sampler bookkeeping ...", flush=True)
    # both over paper-v1's default plan: 4 epochs of random's (LFR scales its schedule to it)
    facts = RunFacts(shape.sampler_blocks, shape.batch * shape.grad_accum, shape.block, 0, 4.0)
    lfr_s, random_s = bookkeeping_s("lfr", facts), bookkeeping_s("random", facts)
    step_s = shape.tokens_per_step / ours
    peak = (peak_flops(shape.peak_tflops, device) or math.nan) / 1e12
    what = (f"{shape.size}, block {shape.block}, batch {shape.batch}x{shape.grad_accum}, vocab {shape.vocab} "
            f"(a {shape.bpe_vocab}-token BPE padded), {'bf16' if device.type == 'cuda' else 'float32'}"
            f"{', compiled' if shape.compile else ''}, {shape.steps} steps, the first {shape.skip} untimed: ")
    ratio = "ours / reference"
    return [
        Row("gpu_mfu", what + "model FLOP/s of lfr.train's loop (random; nanoGPT's 6N + 12LTC per token) vs "
            "the device's dense bf16 peak", "TFLOP/s", "ours / reference (MFU)", ">= 0.45",
            [mfu * peak], [peak], [mfu]),
        Row("gpu_train_loop", what + "lfr.train's loop (random) vs a minimal nanoGPT-style loop of the same "
            "HF model (batch, dtype, compile, clipping, fused AdamW; no host sync)", "tokens/s", ratio,
            ">= 0.95", [ours], [minimal], [ours / minimal]),
        Row("gpu_fused_loss", what + "lfr.train's loop (random; the model compiled, the loss eager) vs the "
            "minimal loop with the loss compiled into the model's graph", "tokens/s", ratio, "",
            [ours], [fused], [ours / fused]),
        Row("gpu_fixed_cost", what + "a run's seconds beyond its steps at the steady rate (compilation, "
            "model build, validation, saving): lfr.train.train_run vs the minimal loop", "s", "", "",
            [ours_fixed], [minimal_fixed]),
        Row("gpu_lfr_loop", what + f"lfr.train's loop with LFR (learn {shape.steps // 2} steps, then focus "
            "on half the blocks) vs with random", "tokens/s", ratio, ">= 0.98", [lfr], [ours], [lfr / ours]),
        Row("gpu_lfr_sampler_overhead", what + "LFR's bookkeeping per step (batch_ids, observe, records; "
            f"synthetic losses, the whole paper-v1 plan at {shape.sampler_blocks:,} blocks of which "
            f"{facts.batch_blocks} a step) beyond random's, over our training step", "ms/step",
            "(LFR - random bookkeeping) / our step (ours: LFR bookkeeping, reference: our step)", "<= 0.01",
            [1e3 * lfr_s], [1e3 * step_s], [(lfr_s - random_s) / step_s]),
        Row("gpu_profile_vs_train", what + "the profiling pass (lfr.profile.profile_losses, eager, batch "
            f"{shape.profile_batch}, {profiled} blocks, the run's saved model) vs our training",
            "tokens/s", ratio, ">= 2.5", [profile], [ours], [profile / ours]),
        Row("gpu_profile_memory", what + "peak GPU memory of the profiling pass at batch "
            f"{shape.profile_batch} (it grows with the batch: the logits in bf16 and in float32)", "GiB",
            "", "", [memory]),
    ]


def ladder_rows(shape: Shape) -> list[Row]:
    """A measured training step of every shape of the GPU ladder against its estimate; the dry
    run times the same code on a sliver of the batch and block."""
    cfg = ladder.load_config(ladder.LADDER)
    tc, dry = cfg.train, shape.device != "cuda"
    batch, block = (1, 64) if dry else (tc.batch_size, cfg.data.block_size)
    peak = (peak_flops(shape.peak_tflops, torch.device(shape.device)) or math.nan) / 1e12
    measured = {}
    for size in cfg.models:
        print(f"ladder shape {size} ...", flush=True)
        measured[size] = ladder.time_step(cfg, size, shape.device, batch, block, steps=1 if dry else 5,
                                          warmup=1 if dry else 2)
        release()
    estimated = {c.size: c for c in ladder.costs(cfg, peak)}
    projected = {c.size: c for c in ladder.costs(cfg, peak, measured)}
    return [Row(f"gpu_ladder:{size}", f"{size} of config/scale-gpu.yaml ({c.params / 1e6:.1f}M params): a "
                f"training step at {batch} x {block} tokens (bf16, fused AdamW, eager) vs the estimate at "
                f"{c.mfu:.0%} MFU; its {c.units:g} budget-1 runs: {projected[size].hours:.2f} GPU-hours "
                f"measured, {c.hours:.2f} estimated", "tokens/s", "ours / reference (measured / "
                "estimated)", "", [measured[size]], [c.tokens_per_s], [measured[size] / c.tokens_per_s])
            for size, c in estimated.items()]


def run_check(out: Path, dry: bool, peak_tflops: float | None = None) -> pd.DataFrame:
    shape = DRY if dry else GPU
    if peak_tflops:
        shape = Shape(**{**asdict(shape), "peak_tflops": peak_tflops})
    if not dry and not torch.cuda.is_available():
        raise SystemExit("python -m benchmarks --gpu needs a CUDA device and none is visible; on a CPU, "
                         "`python -m benchmarks --gpu --dry` runs the same code on a tiny model")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    setup_torch(1 if dry else None)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as lfr.distributed
    t_start, load = time.perf_counter(), os.getloadavg()[0]
    cfg = experiment(shape)
    with tempfile.TemporaryDirectory(prefix="lfr-gpu-check-") as tmp:
        root = Path(tmp)
        cfg = prepare(root, cfg, shape)
        print(f"setup (corpus, tokenizer, tokens): {time.perf_counter() - t_start:.1f} s", flush=True)
        rows = rows_of(shape, cfg, root)
    rows += ladder_rows(shape)
    wall = time.perf_counter() - t_start
    rows.append(Row("gpu_check_wall", "wall time of `python -m benchmarks --gpu` after its imports (setup, "
                    "every loop and its compilation)", "s", "seconds", "<= 480", [wall], [], [wall]))
    device = torch.cuda.get_device_name() if shape.device == "cuda" else "dry run on the CPU"
    table = table_of(rows, {"shape": asdict(shape)}, wall, load, device)
    write_csv(out, table)
    show(table)
    print(f"wrote {out} ({wall:.0f} s; {device})")
    return table


def default_out(dry: bool) -> Path:
    return Path("results/gpu_check_dry.csv" if dry else "results/gpu_check.csv")
