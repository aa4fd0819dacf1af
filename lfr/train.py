"""Stage `train`: pretrain one GPT-2 (size x method x seed) from scratch.

nanoGPT's loop, with fixed data blocks chosen by a sampler plug-in. Each step: set the LR,
evaluate when due, run grad_accum micro-batches (forward once, per-block losses, backward),
clip, step, hand the per-block losses to the sampler, log, checkpoint. The loop never names a
method. Runs under torchrun (DDP): every rank draws the same global ids and trains its slice.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from lfr import checkpoint
from lfr.config import ExperimentConfig, ProfileConfig, TrainConfig, config_hash
from lfr.data import BlockStore
from lfr.files import atomic_dir, atomic_path, write_json, write_parquet
from lfr.model import block_losses, build_model, configure_optimizer, gpt2_config, num_params
from lfr.runtime import Interrupted, git_commit
from lfr.sampling import RunFacts, Sampler, build_sampler
from lfr.sampling.base import epoch_permutation
from lfr.tokenizer import load_hf_tokenizer, tokenizer_meta

log = logging.getLogger(__name__)
VAL_SUBSET_SEED = 0  # the validation subset is the same for every run, whatever its seed


@dataclass
class Dist:
    """Rank and world size; single-process unless launched by torchrun."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_dist(requested: str) -> Dist:
    cuda = torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        raise RuntimeError("train.device=cuda but no CUDA device is visible; use cpu or auto")
    use_cuda = requested == "cuda" or (requested == "auto" and cuda)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return Dist(rank, world, torch.device("cuda", local))
    return Dist(rank, world)


def lr_at(step: int, num_steps: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to lr * min_lr_ratio exactly at the last step."""
    warmup = max(1, int(cfg.warmup_frac * num_steps)) if cfg.warmup_frac > 0 else 0
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, num_steps - 1 - warmup)
    coeff = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * coeff)


def val_subset(num_val_blocks: int, size: int) -> np.ndarray:
    return np.sort(epoch_permutation(num_val_blocks, VAL_SUBSET_SEED, 0)[:size])


@torch.no_grad()
def estimate_val_loss(model: torch.nn.Module, store: BlockStore, ids: np.ndarray,
                      batch_size: int, d: Dist, autocast: Any) -> float:
    """Mean per-token loss over the fixed validation blocks (sharded across ranks)."""
    model.eval()
    mine = ids[d.rank :: d.world]
    total = torch.zeros(2, dtype=torch.float64, device=d.device)
    for i in range(0, len(mine), batch_size):
        x, y = (torch.from_numpy(a).to(d.device) for a in store.batch(mine[i : i + batch_size]))
        with autocast:
            losses = block_losses(model, x, y)
        total += torch.stack([losses.double().sum(), torch.tensor(len(losses), device=d.device)])
    if d.world > 1:
        dist.all_reduce(total)
    model.train()
    return (total[0] / total[1]).item()


class TrainingInterrupted(Interrupted):
    """The run stopped before its last step after saving a resume checkpoint; rerun to resume."""


# Dense bf16 peak TFLOP/s per GPU, by a substring of torch.cuda.get_device_name().
PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0,
               "MI300X": 1307.0, "MI250": 362.0}


def peak_flops(configured_tflops: float | None, device: torch.device) -> float | None:
    """Peak FLOP/s of one device for MFU: the configured value, else the detected GPU's, else None."""
    if configured_tflops:
        return configured_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    tflops = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    if tflops is None:
        log.warning("no peak FLOP/s known for %r; set train.peak_tflops to log MFU", name)
    return None if tflops is None else tflops * 1e12


def flops_per_token(model: torch.nn.Module) -> float:
    """Training FLOPs per token, nanoGPT's estimate: 6N + 12 L T C (N without position embeddings)."""
    cfg = model.config
    n = num_params(model) - model.transformer.wpe.weight.numel()
    return 6 * n + 12 * cfg.n_layer * cfg.n_positions * cfg.n_embd


class StopRequest:
    """Set by SIGTERM/SIGUSR1 (preemption, SLURM's --signal) or by a deadline; checked once a step."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline, self.signal = deadline, None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signal.Signals(signum).name

    def reason(self, d: Dist) -> str | None:
        """Why to stop now, or None; under DDP every rank gets the same answer."""
        late = self.deadline is not None and time.time() > self.deadline
        mine = self.signal or ("the job's time limit is near" if late else None)
        if d.world > 1:
            flag = torch.tensor([float(mine is not None)], device=d.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() and mine is None:
                mine = "another rank was asked to stop"
        return mine


def phase_ends(sampler: Any, num_steps: int) -> set[int]:
    """Step counts s < num_steps after which a phase ends (step s - 1 is its last step)."""
    phases = [sampler.phase(s) for s in range(num_steps)]
    return {s for s in range(1, num_steps) if phases[s] != phases[s - 1]}


def snapshot_steps(ends: set[int], num_steps: int, tokens_per_step: int,
                   spec: ProfileConfig) -> list[int]:
    """Steps after which the profiling pass gets the weights: 0 (init), every `every_tokens`,
    each phase boundary (`ends`, optional) and the last step."""
    every = spec.every_tokens or max(1, num_steps * tokens_per_step // 8)
    steps = {0, num_steps}
    if every <= tokens_per_step:
        steps |= set(range(num_steps))
    else:
        steps |= {math.ceil(k * every / tokens_per_step)
                  for k in range(1, num_steps * tokens_per_step // every + 1)}
    if spec.phase_boundaries:
        steps |= ends
    return sorted(s for s in steps if s <= num_steps)


def save_snapshot(folder: Path, step: int, model: torch.nn.Module, dtype: str) -> None:
    """The model's weights after `step` steps, for the profiling pass (atomic)."""
    weights = {k: v.detach().to(getattr(torch, dtype)).cpu() for k, v in model.state_dict().items()}
    with atomic_path(folder / f"step-{step:09d}.pt") as tmp:
        torch.save(weights, tmp)


def state_digest(state: dict[str, Any]) -> str:
    """sha256 of a sampler's state, to compare ranks and runs."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(np.ascontiguousarray(state[key]).tobytes())
    return h.hexdigest()


def gather_losses(losses: torch.Tensor, d: Dist) -> np.ndarray:
    """Per-block losses of the whole global batch, in global-id order, on every rank."""
    if d.world > 1:
        parts = [torch.empty_like(losses) for _ in range(d.world)]
        dist.all_gather(parts, losses)
        losses = torch.cat(parts)
    return losses.float().cpu().numpy()


def run_settings(cfg: ExperimentConfig, size: str, method: str, options: dict[str, Any],
                 block_size: int, vocab_size: int) -> dict[str, Any]:
    """What determines a run's result but its seed, with the block size and vocabulary read from
    the data and tokenizer folders. Its hash is the run's `config_hash`, so the seeds of one
    configuration share it; device, log_every and ckpt_every change no result."""
    dump = cfg.model_dump(mode="json")
    return {"corpus": dump["corpus"], "tokenizer": {**dump["tokenizer"], "vocab_size": vocab_size},
            "data": {**dump["data"], "block_size": block_size},
            "model": cfg.model_preset(size).model_dump(mode="json"),
            "train": cfg.train.model_dump(mode="json", exclude={"device", "log_every", "ckpt_every"}),
            "method": method, "method_options": options}


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, store: BlockStore,
                   ids: np.ndarray, weights: np.ndarray | None, tc: TrainConfig, d: Dist,
                   autocast: Any) -> torch.Tensor:
    """One optimizer step on this rank's slice of the global batch `ids`: grad_accum micro-batches
    (forward once, per-block losses, backward; DDP syncs on the last one), clipping, AdamW.
    Returns this rank's per-block losses (detached, on the device)."""
    start = d.rank * tc.batch_size * tc.grad_accum
    step_losses = []
    for micro in range(tc.grad_accum):
        part = slice(start + micro * tc.batch_size, start + (micro + 1) * tc.batch_size)
        x, y = (torch.from_numpy(a).to(d.device, non_blocking=True) for a in store.batch(ids[part]))
        w = None if weights is None else torch.as_tensor(weights[part], device=d.device)
        sync = micro == tc.grad_accum - 1 or d.world == 1
        with (contextlib.nullcontext() if sync else model.no_sync()), autocast:
            losses = block_losses(model, x, y)
            loss = (losses if w is None else losses * w).mean() / tc.grad_accum
        loss.backward()
        step_losses.append(losses.detach())
    if tc.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return torch.cat(step_losses)


def train(cfg: ExperimentConfig, size: str, method: str, seed: int, data_dir: Path,
          tok_dir: Path, out_dir: Path, resume_dir: Path | None = None,
          run_info: dict[str, Any] | None = None, stop_at_step: int | None = None,
          time_limit_min: float | None = None, snapshots: ProfileConfig | None = None,
          block_scores: Path | None = None, options: dict[str, Any] | None = None,
          make_sampler: Callable[[RunFacts], Sampler] | None = None) -> dict[str, Any]:
    """Train one run; write out_dir/{model/, metrics.parquet, records/, snapshots/, run.json}.

    metrics.parquet has a row every log_every and eval_every steps and after each phase's last
    step (so it holds every phase's exact span), validation losses at eval_every and at the end.

    `snapshots` (the profile config): save weight snapshots for the profiling pass to
    out_dir/snapshots with an index.json; without, that folder holds an empty index.

    `block_scores`: the reference scores (score-reference stage) for methods that need them.
    `make_sampler`: build the sampler from the run's facts instead of `method`'s registry entry
    (the reference model of ppl-prune trains on its shard this way); `method` is then a label.
    `options`: the method's options (default: cfg.method_options[method]); with `make_sampler`,
    those it was built from. run.json records them in `settings` (see `run_settings`).

    The run saves a resume checkpoint and raises TrainingInterrupted (so a retry resumes) at
    `stop_at_step`, on SIGTERM/SIGUSR1, or shortly before `time_limit_min` (the job's limit).
    """
    tc = cfg.train
    t_launch = time.time()
    d = setup_dist(tc.device)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    train_store, val_store = BlockStore.open(data_dir, "train"), BlockStore.open(data_dir, "val")
    T = train_store.block_size
    meta = tokenizer_meta(tok_dir)
    hf_config = gpt2_config(cfg.model_preset(size), meta["vocab_size"], T, meta["eot_id"], tc.dropout)
    model = build_model(hf_config).to(d.device)
    optimizer = configure_optimizer(model, tc.lr, tc.weight_decay, (tc.beta1, tc.beta2), d.device)
    per_rank = tc.batch_size * tc.grad_accum
    batch_blocks = per_rank * d.world
    scores = None
    if block_scores is not None:
        from lfr.score_reference import read_block_scores

        scores = read_block_scores(block_scores)
    facts = RunFacts(train_store.num_blocks, batch_blocks, T, seed, tc.epochs, scores)
    options = cfg.method_options.get(method, {}) if options is None else options
    sampler = make_sampler(facts) if make_sampler else build_sampler(method, facts, options)
    num_steps = sampler.num_steps()
    if num_steps < 1:
        raise ValueError(f"{method}: the plan has 0 steps of {batch_blocks} blocks; the corpus has "
                         f"{train_store.num_blocks} blocks. Lower train.batch_size or add data")
    val_ids = val_subset(val_store.num_blocks, tc.eval_blocks)
    use_bf16 = d.device.type == "cuda" and tc.dtype == "bfloat16"
    autocast = torch.autocast("cuda", torch.bfloat16) if use_bf16 else contextlib.nullcontext()
    if d.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    step, rows, elapsed_before = 0, [], 0.0
    records_dir = Path(resume_dir or out_dir) / "records.partial"  # moved to out_dir/records at the end
    snap_dir = Path(resume_dir or out_dir) / "snapshots.partial"  # likewise
    state = checkpoint.load_latest(resume_dir)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"])
        step, rows, elapsed_before = state["step"], state["metrics"], state["elapsed_s"]
        log.info("resumed from %s at step %d", resume_dir, step)
    raw_model = model
    if tc.compile:
        model = torch.compile(model)
    if d.world > 1:
        model = DDP(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)

    tokens_per_step = batch_blocks * T
    ends = phase_ends(sampler, num_steps)  # logged too, so the log holds each phase's exact span
    snap_steps = snapshot_steps(ends, num_steps, tokens_per_step, snapshots) if snapshots else []
    snap_set = set(snap_steps)  # checked every step
    flops_token, peak = flops_per_token(raw_model), peak_flops(tc.peak_tflops, d.device)
    margin = max(120.0, 0.05 * 60 * time_limit_min) if time_limit_min else 0.0  # time to save
    stopper = StopRequest(t_launch + 60 * time_limit_min - margin if time_limit_min else None)
    t_start = time.perf_counter() - elapsed_before
    t_window, train_time = time.perf_counter(), 0.0
    bar = tqdm(total=num_steps, initial=step, desc=f"train {size}/{method}/s{seed}",
               disable=not d.main, unit="step", mininterval=2.0)
    if step == 0:
        rows.append({"step": 0, "tokens": 0, "phase": sampler.phase(0), "elapsed_s": 0.0, "val_loss":
                     estimate_val_loss(model, val_store, val_ids, tc.batch_size, d, autocast)})
        t_window = time.perf_counter()  # training throughput excludes validation passes
    while step < num_steps:
        if step in snap_set and d.main:
            save_snapshot(snap_dir, step, raw_model, snapshots.snapshot_dtype)
        lr = lr_at(step, num_steps, tc)
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids = sampler.batch_ids(step)
        losses = optimizer_step(model, optimizer, train_store, ids, sampler.loss_weights(ids), tc, d,
                                autocast)
        all_losses = gather_losses(losses, d)  # the only host sync per step
        if not np.isfinite(all_losses).all():
            raise FloatingPointError(
                f"non-finite training loss at step {step} (blocks {ids[~np.isfinite(all_losses)]}); "
                f"the last good checkpoint is kept in {resume_dir}. Lower train.lr or check the data"
            )
        sampler.observe(step, ids, all_losses)
        for name, table in sampler.records().items():
            if d.main:
                write_parquet(records_dir / f"{name}.parquet", table)
        step += 1
        bar.update()
        last = step == num_steps
        if step % tc.log_every == 0 or step % tc.eval_every == 0 or last or step in ends:
            now = time.perf_counter()
            train_time += now - t_window
            tok_s = (step - rows[-1]["step"]) * tokens_per_step / max(now - t_window, 1e-9)
            row = {"step": step, "tokens": step * tokens_per_step, "phase": sampler.phase(step - 1),
                   "train_loss": float(all_losses.mean()), "lr": lr, "tokens_per_s": tok_s,
                   "mfu": flops_token * tok_s / (peak * d.world) if peak else math.nan}
            if step % tc.eval_every == 0 or last:
                row["val_loss"] = estimate_val_loss(model, val_store, val_ids, tc.batch_size, d,
                                                    autocast)
            row["elapsed_s"] = time.perf_counter() - t_start
            rows.append(row)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}")
            t_window = time.perf_counter()
        why = "stop_at_step" if step == stop_at_step else stopper.reason(d)
        stop = why is not None and not last
        if resume_dir and d.main and (step % tc.ckpt_every == 0 or stop) and not last:
            checkpoint.save(resume_dir, step, {
                "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                "sampler": sampler.state_dict(), "metrics": rows,
                "elapsed_s": time.perf_counter() - t_start})
        if stop:
            bar.close()  # so the message below is the log's last line
            raise TrainingInterrupted(
                f"stopped at step {step}/{num_steps} ({why}) to resume later; the checkpoint is in "
                f"{resume_dir}. To continue, rerun the same command (snakemake: the same target; "
                "with retries, as in the SLURM profile, the retry resumes by itself)")
    bar.close()
    wall = time.perf_counter() - t_start
    if snap_steps and d.main:
        save_snapshot(snap_dir, step, raw_model, snapshots.snapshot_dtype)
    summary = {
        "size": size, "method": method, "seed": seed, "params": num_params(raw_model),
        "steps": step, "tokens": step * tokens_per_step, "block_size": T,
        "batch_blocks": batch_blocks, "world_size": d.world,
        "val_loss": rows[-1]["val_loss"], "wall_s": wall,
        "device": str(d.device), "train_tokens_per_s": step * tokens_per_step / max(train_time, 1e-9),
        "flops_per_token": flops_token,
        "forward_only_tokens": sampler.forward_only_tokens,
        "reference_train_tokens": sampler.reference_train_tokens,
        "sampler_state_sha256": state_digest(sampler.state_dict()), **(run_info or {}),
    }
    summary["settings"] = run_settings(cfg, size, method, options, T, meta["vocab_size"])
    summary["config_hash"] = config_hash(summary["settings"])
    if d.main:
        out_dir = Path(out_dir)
        with atomic_dir(out_dir / "model") as tmp:
            raw_model.save_pretrained(tmp)
            tok = load_hf_tokenizer(tok_dir)
            tok.model_max_length = T
            tok.save_pretrained(tmp)
        write_parquet(out_dir / "metrics.parquet", pd.DataFrame(rows))
        records_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out_dir / "records", ignore_errors=True)
        os.replace(records_dir, out_dir / "records")
        snap_dir.mkdir(parents=True, exist_ok=True)
        write_json(snap_dir / "index.json", [
            {"step": s, "tokens": s * tokens_per_step, "file": f"step-{s:09d}.pt",
             "phase": sampler.phase(s - 1) if s else "init"} for s in snap_steps])
        shutil.rmtree(out_dir / "snapshots", ignore_errors=True)
        os.replace(snap_dir, out_dir / "snapshots")
        write_json(out_dir / "run.json", summary)
        if resume_dir:
            shutil.rmtree(resume_dir, ignore_errors=True)
    if d.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def main(cfg: ExperimentConfig, size: str, method: str, seed: int, data: Path, tokenizer: Path,
         out: Path, resume_dir: Path | None = None, time_limit_min: float | None = None,
         snapshots: str | None = None, block_scores: Path | None = None) -> None:
    """The `train` stage; `snapshots`: the profile settings as JSON (the runs `profile:` selects)."""
    train(cfg, size, method, seed, data, tokenizer, out, resume_dir, {"git_commit": git_commit()},
          time_limit_min=time_limit_min, block_scores=block_scores,
          snapshots=ProfileConfig.model_validate_json(snapshots) if snapshots else None)
