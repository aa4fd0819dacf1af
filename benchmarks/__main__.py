"""The benchmark suite: `python -m benchmarks` (or `make bench`) -> results/benchmarks.csv.

Every figure is a ratio of two measurements taken side by side in this one process, repeated
with the order alternating (ours first, then reference first, ...) so that drifting machine load
hits both alike; the table gives the median and the min/max over the repeats. Benchmarks:

- `train_loop`: tokens/s of lfr.train.train_run (the real loop: sampler, memmap batches,
  optimizer_step with per-block losses, clipping, AdamW, logging) against a minimal plain-PyTorch
  loop of the same HF GPT-2, batch and dtype (memmap batch, forward, mean CE, backward, AdamW).
- `model_vs_nanogpt`: tokens/s of a training step of our model (transformers' GPT2LMHeadModel)
  against a nanoGPT-style module of the same shape (benchmarks/model_speed.py).
- `lfr_sampler_overhead`: LFR's bookkeeping per step beyond random's, as a fraction of a random
  training step (benchmarks/sampler_overhead.py).
- `sampler_scale`: every registered sampler's time per optimizer step at OpenWebText scale (8.8M
  blocks, 480 blocks a step, synthetic losses, numpy only) as a fraction of a projected GPT-2 124M
  H100 step, with its memory per block (benchmarks/sampler_scale.py); rows `sampler_scale:<method>`.
- `profile_vs_train`: tokens/s of the profiling pass (lfr.profile.profile_losses) against
  the training step (lfr.train.optimizer_step).
- `profile_memory`: peak memory of the profiling pass with the logits a chunk at a time (as it
  runs) against all at once, each in a process of its own, with the estimate of the same
  accounting that gives the GPU sizes' figures (benchmarks/profile_memory.py).
- `input_pipeline`: training steps fed by lfr.loader.BatchLoader (the next step's batch
  prepared in a thread) against the same steps reading each batch inline: on a CPU nothing
  overlaps, so it measures the thread's cost (on a GPU it hides the read behind the step).
- `tokenize`: lfr.tokenize.tokenize_split (read parquet, encode, write tokens and block table)
  against the raw `tokenizers` Tokenizer.encode_batch on the same texts held in memory.
- `smoke_dag`: wall time of the smoke config's whole DAG (config/smoke.yaml, snakemake `all`) in
  a fresh folder, plus each job's time from its Snakemake benchmark file; and, when a demo run
  left `<demo-results>/benchmarks/**/*.tsv`, the demo's per-job times (not run here).

    python -m benchmarks                       # everything, ~8 min on 2 idle cores
    python -m benchmarks --only train_loop tokenize --repeats 3
    python -m benchmarks --gpu                 # the GPU check instead (benchmarks/gpu_check.py)

`--out` (results/benchmarks.csv) is updated, not replaced: the rows of the benchmarks run now
replace their earlier rows, and the other benchmarks' rows stay.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from benchmarks import profile_memory as memory
from benchmarks import sampler_scale as scale
from benchmarks.table import Row, merge_into, show, table_of
from lfr.config import MODEL_PRESETS, ExperimentConfig, ProfileConfig
from lfr.data import BlockStore
from lfr.files import write_csv
from lfr.grid import validate_config
from lfr.model import build_model, configure_optimizer, model_config
from lfr.profile import LOGIT_CHUNK_TOKENS, profile_losses
from lfr.runtime import setup_torch
from lfr.tokenizer import tokenizer_meta

REPO = Path(__file__).resolve().parent.parent

# A fixed training shape (the demo's until its vocabulary went to 2048; kept so that benchmark
# rows compare across commits): micro (4 layers, d=128), block 128, vocab 8192, batch 16, float32.
SETUP = {
    "corpus": {"source": "bundled", "fraction": 0.1, "val_fraction": 0.02},
    "tokenizer": {"kind": "bpe", "vocab_size": 8192, "train_chars": 2_000_000},
    "data": {"block_size": 128},
    "models": ["micro"],
    "train": {"batch_size": 16, "eval_every": 1_000_000, "eval_blocks": 16, "log_every": 10,
              "device": "cpu"},
}


def alternate(ours: Callable[[], float], reference: Callable[[], float], repeats: int,
              row: Row, ratio: Callable[[float, float], float]) -> Row:
    """Run both `repeats` times, alternating which goes first; record each pair's ratio."""
    for i in range(repeats):
        if i % 2 == 0:
            a, b = ours(), reference()
        else:
            b, a = reference(), ours()
        row.ours.append(a)
        row.reference.append(b)
        row.ratios.append(ratio(a, b))
        print(f"  {row.benchmark} #{i + 1}: ours {a:,.4g} reference {b:,.4g} {row.unit} "
              f"-> ratio {row.ratios[-1]:.3f}", flush=True)
    return row


# -- shared setup ---------------------------------------------------------------------------
def prepare(root: Path, cfg: ExperimentConfig) -> None:
    """Corpus, tokenizer and token files of the demo's shape (10% of the bundled corpus)."""
    from lfr.corpus import prepare_corpus
    from lfr.tokenize import tokenize
    from lfr.tokenizer import prepare_tokenizer

    prepare_corpus(cfg.corpus, root / "corpus/train.parquet", root / "corpus/val.parquet")
    prepare_tokenizer(cfg.tokenizer, root / "corpus/train.parquet", root / "tokenizer")
    tokenize(root / "corpus/train.parquet", root / "corpus/val.parquet", root / "tokenizer", cfg.data,
             root / "data")


def demo_model(root: Path, cfg: ExperimentConfig) -> torch.nn.Module:
    meta = tokenizer_meta(root / "tokenizer")
    return build_model(model_config(cfg.model_preset("micro"), meta["vocab_size"], cfg.data.block_size,
                                   meta["eot_id"]))


# -- benchmarks -----------------------------------------------------------------------------
def bench_train_loop(root: Path, cfg: ExperimentConfig, repeats: int, steps: int) -> Row:
    from lfr.train import Job, Method, train_run

    store = BlockStore.open(root / "data", "train")
    tc = cfg.train
    epochs = (steps * tc.batch_size + 0.5) / store.num_blocks  # random: int(epochs * blocks) // batch
    run_cfg = cfg.model_copy(update={"train": tc.model_copy(update={"epochs": epochs})})
    T = store.block_size

    def ours() -> float:
        with tempfile.TemporaryDirectory() as out:
            job = Job("micro", 0, root / "data", root / "tokenizer", Path(out))
            summary = train_run(run_cfg, job, Method.registered(run_cfg, "random"))
        assert summary["steps"] == steps, summary["steps"]
        return summary["train_tokens_per_s"]

    def minimal() -> float:
        torch.manual_seed(0)
        model = demo_model(root, cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=tc.lr)
        order = np.random.default_rng(0).permutation(store.num_blocks)
        t0 = time.perf_counter()
        for step in range(steps):
            x, y = (torch.from_numpy(a) for a in store.batch(order[step * tc.batch_size:][: tc.batch_size]))
            logits = model(input_ids=x).logits
            F.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return steps * tc.batch_size * T / (time.perf_counter() - t0)

    row = Row("train_loop", f"lfr.train's loop (random, micro, batch {tc.batch_size}x{T}, float32, {steps} "
              "steps, validation excluded) vs a minimal PyTorch loop of the same model", "tokens/s",
              "ours / reference", ">= 1.0")
    return alternate(ours, minimal, repeats, row, lambda a, b: a / b)


def bench_model_vs_nanogpt(cfg: ExperimentConfig, repeats: int, steps: int) -> Row:
    from benchmarks.model_speed import NanoGPT, time_steps

    preset, B, T, V = cfg.model_preset("micro"), cfg.train.batch_size, cfg.data.block_size, 8192
    torch.manual_seed(0)
    ours_model = build_model(model_config(preset, V, T, 0))
    nano_model = NanoGPT(V, T, preset.n_layer, preset.n_head, preset.n_embd)

    def speed(model: torch.nn.Module) -> float:
        return B * T / statistics.median(time_steps(model, B, T, V, steps))

    row = Row("model_vs_nanogpt", f"training step (forward, per-block loss, backward, AdamW) of "
              f"lfr.model's GPT2LMHeadModel vs a nanoGPT-style module (micro, batch {B}x{T}, "
              "float32, median step)", "tokens/s", "ours / reference", ">= 1.0")
    return alternate(lambda: speed(ours_model), lambda: speed(nano_model), repeats, row,
                     lambda a, b: a / b)


def bench_sampler_overhead(repeats: int, steps: int) -> Row:
    from benchmarks.sampler_overhead import run

    args = SimpleNamespace(blocks=20_000, steps=steps, batch=16, block=128, vocab=8192)
    tokens = torch.randint(0, args.vocab, (1024, args.block + 1))
    row = Row("lfr_sampler_overhead", "LFR's bookkeeping per step (batch_ids, observe, records; last "
              "focus phase, 20,000 blocks) beyond random's, over a random training step of micro",
              "ms/step", "(LFR - random bookkeeping) / random step (ours: LFR bookkeeping, "
              "reference: random step)", "<= 0.02")
    for i in range(repeats):
        names = ("random", "lfr") if i % 2 == 0 else ("lfr", "random")
        res = {name: run(name, args, tokens) for name in names}
        step = statistics.median(res["random"][0])
        extra = statistics.median(res["lfr"][1]) - statistics.median(res["random"][1])
        row.ours.append(1e3 * statistics.median(res["lfr"][1]))
        row.reference.append(1e3 * step)
        row.ratios.append(extra / step)
        print(f"  lfr_sampler_overhead #{i + 1}: LFR bookkeeping {row.ours[-1]:.3f} ms, random step "
              f"{row.reference[-1]:.1f} ms -> overhead {row.ratios[-1]:.2%}", flush=True)
    return row


def bench_sampler_scale(blocks: int, steps: int) -> list[Row]:
    step_s, per_token = scale.projected_step_s()
    rows = []
    for name in scale.SAMPLERS:
        r = scale.measure(name, blocks, steps)
        ours, reference = 1e3 * r.per_step_s, 1e3 * step_s
        rows.append(Row(f"sampler_scale:{name}", scale.describe(r, blocks, step_s, per_token), "ms/step",
                        "sampler ms per step (steady mean + largest boundary amortized over its phase or "
                        "pass) / projected GPT-2 124M H100 step", f"<= {scale.GOAL}", [ours], [reference],
                        [ours / reference]))
        print(f"  sampler_scale:{name}: {ours:.3f} ms/step (steady {1e3 * r.steady_mean_s:.3f}, worst "
              f"{1e3 * r.worst_s:.1f}) = {ours / reference:.3%} of {reference:.0f} ms; "
              f"{r.state_bytes / blocks:.1f} bytes/block", flush=True)
    return rows


def bench_profile(root: Path, cfg: ExperimentConfig, repeats: int, steps: int, batch: int) -> Row:
    from lfr.distributed import Dist
    from lfr.loader import StepBatch
    from lfr.train import optimizer_step

    store = BlockStore.open(root / "data", "train")
    T, tc, cpu = store.block_size, cfg.train, torch.device("cpu")
    torch.manual_seed(0)
    model = demo_model(root, cfg)
    opt = configure_optimizer(model, tc.lr, tc.weight_decay, (tc.beta1, tc.beta2), cpu)
    ids = np.arange(min(store.num_blocks, steps * tc.batch_size))

    def ours() -> float:
        t0 = time.perf_counter()
        profile_losses(model, store, ids, batch, cpu)
        return len(ids) * T / (time.perf_counter() - t0)

    def training() -> float:
        model.train()
        t0 = time.perf_counter()
        for step in range(steps):
            batch = StepBatch.load(store, ids[step * tc.batch_size:][: tc.batch_size])
            optimizer_step(model, opt, batch, tc, Dist())
        return steps * tc.batch_size * T / (time.perf_counter() - t0)

    ours(), training()  # warm-up of both
    what = (f"profiling pass (lfr.profile.profile_losses, batch {batch}) vs the training step "
            f"(lfr.train.optimizer_step, batch {tc.batch_size}), micro, {len(ids)} blocks")
    row = Row("profile_vs_train", what, "tokens/s", "ours / reference", ">= 2.5")
    return alternate(ours, training, repeats, row, lambda a, b: a / b)


def bench_profile_memory(repeats: int, batch: int) -> Row:
    size, vocab, block = "micro", SETUP["tokenizer"]["vocab_size"], SETUP["data"]["block_size"]

    def peak_mb(chunk: int | None) -> float:
        return memory.measure(size, vocab, block, batch, chunk)["peak_bytes"] / 2**20

    params = memory.measure(size, vocab, block, 1, None)["params"]
    shape = memory.Shape(MODEL_PRESETS[size], params, vocab, block)
    chunked, whole = (memory.estimate_bytes(shape, batch, chunk, gpu=False) / 2**20
                      for chunk in (LOGIT_CHUNK_TOKENS, None))
    what = (f"peak memory of the profiling pass beyond its start, logits {LOGIT_CHUNK_TOKENS} tokens at "
            f"a time vs all at once (before), {size}, vocab {vocab}, block {block}, one batch of {batch} "
            f"blocks, CPU float32, each in a fresh process; estimated {chunked:.0f} and {whole:.0f} MB")
    row = Row("profile_memory", what, "MB", "ours / reference", "<= 0.5")
    return alternate(lambda: peak_mb(LOGIT_CHUNK_TOKENS), lambda: peak_mb(None), repeats, row,
                     lambda a, b: a / b)


def bench_input_pipeline(root: Path, cfg: ExperimentConfig, repeats: int, steps: int) -> Row:
    from lfr.distributed import Dist
    from lfr.loader import BatchLoader, StepBatch
    from lfr.train import optimizer_step

    store = BlockStore.open(root / "data", "train")
    T, tc, cpu = store.block_size, cfg.train, torch.device("cpu")
    torch.manual_seed(0)
    model = demo_model(root, cfg)
    opt = configure_optimizer(model, tc.lr, tc.weight_decay, (tc.beta1, tc.beta2), cpu)
    order = np.random.default_rng(0).permutation(store.num_blocks)
    ids = [order[(s * tc.batch_size) % len(order):][: tc.batch_size] for s in range(steps)]

    def prefetched() -> float:  # as lfr.train's loop: the next step's batch in the loader's thread
        loader = BatchLoader(store, tc.batch_size, 0, cpu)
        t0 = time.perf_counter()
        loader.prefetch(ids[0], None)
        for step in range(steps):
            batch = loader.get()
            optimizer_step(model, opt, batch, tc, Dist())
            if step + 1 < steps:
                loader.prefetch(ids[step + 1], None)
        dt = time.perf_counter() - t0
        loader.close()
        return steps * tc.batch_size * T / dt

    def inline() -> float:  # each batch read in the loop, just before its step
        t0 = time.perf_counter()
        for step in range(steps):
            optimizer_step(model, opt, StepBatch.load(store, ids[step]), tc, Dist())
        return steps * tc.batch_size * T / (time.perf_counter() - t0)

    prefetched(), inline()  # warm-up of both
    row = Row("input_pipeline", f"optimizer steps fed by lfr.loader.BatchLoader (one gather per step, "
              f"the next step's prepared in a thread) vs the same steps with each batch read inline "
              f"(micro, batch {tc.batch_size}x{T}, float32, CPU: nothing to overlap, so this is the "
              "thread's cost)", "tokens/s", "ours / reference", ">= 0.98")
    return alternate(prefetched, inline, repeats, row, lambda a, b: a / b)


def bench_tokenize(root: Path, cfg: ExperimentConfig, repeats: int) -> Row:
    from tokenizers import Tokenizer

    from lfr.tokenize import tokenize_split

    docs = root / "corpus/train.parquet"
    texts = pd.read_parquet(docs).text.tolist()
    tok = Tokenizer.from_file(str(root / "tokenizer/tokenizer.json"))
    n_tokens = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))

    def ours() -> float:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            stats = tokenize_split(docs, root / "tokenizer", cfg.data, Path(out) / "t.bin",
                                   Path(out) / "b.parquet")
            dt = time.perf_counter() - t0
        assert stats["tokens"] == n_tokens + len(texts)  # the same tokens, + one EOT per document
        return n_tokens / dt

    def raw() -> float:
        t0 = time.perf_counter()
        ids = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]  # ids as Python lists
        dt = time.perf_counter() - t0
        assert len(ids) == len(texts)
        return n_tokens / dt

    row = Row("tokenize", f"lfr.tokenize.tokenize_split (parquet in, token file + block table out) vs raw "
              f"tokenizers encode_batch to id lists, in memory; {len(texts)} documents, "
              f"{sum(map(len, texts)) / 1e6:.1f}M characters, BPE 8192", "tokens/s", "ours / reference",
              ">= 0.8")
    return alternate(ours, raw, repeats, row, lambda a, b: a / b)


def job_rows(bench_dir: Path, prefix: str, what: str) -> list[Row]:
    rows = []
    for tsv in sorted(bench_dir.glob("**/*.tsv")):
        job = tsv.relative_to(bench_dir).with_suffix("").as_posix()
        seconds = float(pd.read_csv(tsv, sep="\t")["s"].iloc[-1])
        rows.append(Row(f"{prefix}:{job}", what, "s", "", "", ours=[seconds]))
    return rows


def bench_smoke_dag(threads: int) -> list[Row]:
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    with tempfile.TemporaryDirectory() as cwd:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", cwd, "all",
               "--configfile", str(REPO / "config/smoke.yaml"), "--workflow-profile", "none", "--cores", "2",
               "--set-threads", f"train={threads}", f"evaluate={threads}"]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"smoke DAG failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
        jobs = job_rows(Path(cwd) / "results/benchmarks", "smoke_job",
                        "one job of the smoke DAG above (Snakemake benchmark file)")
    print(f"  smoke_dag: {wall:.1f} s", flush=True)
    return [Row("smoke_dag", f"wall time of `snakemake --cores 2 --set-threads train={threads} "
                f"evaluate={threads} all` on config/smoke.yaml in a fresh folder (corpus to figures, "
                "2 training runs and their lm-eval evaluations)", "s", "", "", ours=[wall]), *jobs]


# -- driver ---------------------------------------------------------------------------------
BENCHMARKS = [
    "train_loop", "model_vs_nanogpt", "lfr_sampler_overhead", "sampler_scale", "profile_vs_train",
    "profile_memory", "input_pipeline", "tokenize", "smoke_dag",
]


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="default: results/benchmarks.csv (--gpu: results/gpu_check.csv)")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, default=BENCHMARKS)
    p.add_argument("--repeats", type=int, default=5, help="side-by-side pairs per benchmark")
    p.add_argument("--steps", type=int, default=20, help="training steps per timed loop")
    p.add_argument("--train-steps", type=int, default=60,
                   help="steps per train_loop run (it times whole runs, so fixed costs count: 20 "
                        "steps measured 0.965x, 60 steps 0.99-1.02x)")
    p.add_argument("--sampler-steps", type=int, default=10, help="steps per sampler run (3 are warm-up)")
    p.add_argument("--sampler-repeats", type=int, default=3, help="its ratio is far from the goal")
    p.add_argument("--scale-blocks", type=int, default=scale.BLOCKS, help="blocks of sampler_scale")
    p.add_argument("--scale-steps", type=int, default=200, help="timed steps per sampler_scale segment")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (on a shared 2-core machine 2 threads run ~5x slower than 1)")
    p.add_argument("--dag-threads", type=int, default=1, help="threads of the smoke DAG's train/eval jobs")
    p.add_argument("--profile-batch", type=int, default=ProfileConfig().batch_size)
    p.add_argument("--memory-batch", type=int, default=256, help="blocks in profile_memory's one batch")
    p.add_argument("--memory-repeats", type=int, default=2, help="profile_memory's pairs (a process each)")
    p.add_argument("--demo-results", type=Path, default=Path("results"),
                   help="a demo run's results folder: its benchmarks/**/*.tsv are reported as demo_job rows")
    p.add_argument("--gpu", action="store_true",
                   help="the GPU check instead (benchmarks/gpu_check.py): GPT-2 124M on one CUDA GPU, "
                        "-> results/gpu_check.csv")
    p.add_argument("--dry", action="store_true",
                   help="with --gpu: the same code on the CPU, a tiny model, a few steps "
                        "-> results/gpu_check_dry.csv")
    p.add_argument("--peak-tflops", type=float, help="with --gpu: the GPU's dense bf16 peak, if not detected")
    args = p.parse_args(argv)
    if args.gpu:
        from benchmarks.gpu_check import default_out, run_check

        return run_check(args.out or default_out(args.dry), args.dry, args.peak_tflops)
    if args.dry or args.peak_tflops:
        p.error("--dry and --peak-tflops go with --gpu")
    args.out = args.out or Path("results/benchmarks.csv")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    torch.manual_seed(0)
    setup_torch(args.threads)  # as every `python -m lfr` stage
    t_start, load = time.perf_counter(), os.getloadavg()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="lfr-bench-") as tmp:
        root = Path(tmp)
        cfg = validate_config(SETUP, "benchmarks")
        if set(args.only) & {"train_loop", "profile_vs_train", "input_pipeline", "tokenize"}:
            t0 = time.perf_counter()
            prepare(root, cfg)
            print(f"setup (corpus, tokenizer, tokens): {time.perf_counter() - t0:.1f} s", flush=True)
        for name in args.only:
            print(f"{name} ...", flush=True)
            if name == "train_loop":
                rows.append(bench_train_loop(root, cfg, args.repeats, args.train_steps))
            elif name == "model_vs_nanogpt":
                rows.append(bench_model_vs_nanogpt(cfg, args.repeats, args.steps))
            elif name == "lfr_sampler_overhead":
                rows.append(bench_sampler_overhead(args.sampler_repeats, args.sampler_steps))
            elif name == "sampler_scale":
                rows.extend(bench_sampler_scale(args.scale_blocks, args.scale_steps))
            elif name == "profile_vs_train":
                rows.append(bench_profile(root, cfg, args.repeats, args.steps, args.profile_batch))
            elif name == "profile_memory":
                rows.append(bench_profile_memory(args.memory_repeats, args.memory_batch))
            elif name == "input_pipeline":
                rows.append(bench_input_pipeline(root, cfg, args.repeats, args.steps))
            elif name == "tokenize":
                rows.append(bench_tokenize(root, cfg, args.repeats))
            elif name == "smoke_dag":
                rows.extend(bench_smoke_dag(args.dag_threads))
    rows.extend(job_rows(args.demo_results / "benchmarks", "demo_job",
                         f"one job of a demo run, read from {args.demo_results}/benchmarks (not run by this "
                         "command)"))
    wall = time.perf_counter() - t_start
    settings = {k: str(v) for k, v in vars(args).items() if k not in ("gpu", "dry", "peak_tflops")}
    table = table_of(rows, {"setup": SETUP, "args": settings}, wall, load[0])
    write_csv(args.out, merge_into(args.out, table))
    show(table)
    print(f"updated {args.out}: these rows, and earlier ones of other benchmarks kept ({wall:.0f} s); "
          f"{json.dumps(table['host'].iloc[0])}")
    return table


if __name__ == "__main__":
    main()
