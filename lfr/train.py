"""Stage `train`: pretrain one model (GPT-2 or Llama; size x method x seed) from scratch.

nanoGPT's loop (`Loop.run`), with fixed data blocks chosen by a sampler plug-in. Each step: set
the LR, run grad_accum micro-batches (forward once, per-block losses, backward), clip, step, hand
the per-block losses to the sampler (`LossHandOff`: one step late for a sampler that observes
late, so the device never waits for the host), log (validating when due), checkpoint
(`TrainState`), stop if asked, and choose and load the next batch. A sampler that proposes
candidates first gets their no-grad losses from the updated model, then picks the next batch;
those tokens are charged as forward-only. The loop never names a method. Runs under torchrun
(DDP): every rank draws the same global ids and trains its slice.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from lfr.checkpoint import TrainState
from lfr.config import (
    ExperimentConfig,
    ProfileConfig,
    TrainConfig,
    budget_name,
    config_hash,
    default_stop_margin_s,
)
from lfr.data import BlockStore, BlockSubset, subset_ids, target_bytes
from lfr.distributed import FLAGS, Dist, InFlight, all_sum, finish, send_to_host, setup_dist
from lfr.files import atomic_dir, write_json, write_parquet
from lfr.grid import block_budget
from lfr.loader import BatchLoader, StepBatch
from lfr.metrics import MetricsLog, TensorBoard, WandB, peak_flops
from lfr.model import (
    autocast,
    block_losses,
    build_model,
    configure_optimizer,
    embedding_params,
    flops_per_token,
    model_config,
    num_params,
    scored_batches,
)
from lfr.runtime import Interrupted, git_commit, slurm_time
from lfr.sampling import BlockScores, RunFacts, Sampler, build_sampler, validated_options
from lfr.sampling.base import epoch_permutation
from lfr.snapshots import SnapshotWriter, snapshot_steps
from lfr.tokenizer import load_hf_tokenizer, tokenizer_meta

log = logging.getLogger(__name__)
VAL_SUBSET_SEED = 0  # the validation subset is the same for every run, whatever its seed


class TrainingInterrupted(Interrupted):
    """The run stopped before its last step after saving a resume checkpoint; rerun to resume."""


@dataclass(frozen=True)
class Method:
    """A run's data selection: its name (the run's `method`), its options as given (recorded in
    run.json) and the factory that builds its sampler from the run's facts."""

    name: str
    options: dict[str, Any]
    build: Callable[[RunFacts, np.ndarray | None], Sampler]
    """The sampler of a run, given its facts and the blocks it draws from (None: all)."""

    @classmethod
    def registered(cls, cfg: ExperimentConfig, name: str, block_scores: Path | None = None) -> Method:
        """A method of the registry with its options from the config; `block_scores`: the
        reference scores (score-reference stage) of a method that needs them."""
        options = cfg.method_options.get(name, {})
        validated_options(name, options)  # a bad name or option fails here, before any model is built
        scores = BlockScores.read(block_scores) if block_scores is not None else None

        def build(facts: RunFacts, ids: np.ndarray | None = None) -> Sampler:
            own = scores.take(ids) if scores is not None and ids is not None else scores
            return build_sampler(name, dataclasses.replace(facts, block_scores=own), options)

        return cls(name, options, build)


@dataclass(frozen=True)
class Job:
    """Which run to train and where. The run checkpoints to `resume_dir` (and raises
    TrainingInterrupted, so that a retry resumes) at `stop_at_step`, on SIGTERM/SIGUSR1, or shortly
    before `time_limit_min` (the job's limit). `snapshots` (the profile settings): save weight
    snapshots for the profiling pass (lfr/snapshots.py)."""

    size: str
    seed: int
    data_dir: Path
    tok_dir: Path
    out_dir: Path
    resume_dir: Path | None = None
    run_info: dict[str, Any] = field(default_factory=dict)
    snapshots: ProfileConfig | None = None
    time_limit_min: float | None = None
    stop_margin_s: float | None = None
    stop_at_step: int | None = None
    budget: float = 1.0
    """Multiple of the method's default run length (a sweep's run; the sampler scales its plan)."""
    lr_mult: float = 1.0
    """Multiple of train.lr (the learning-rate check's runs)."""

    @property
    def partial(self) -> Path:
        """Where the run's records and snapshots grow (they move to out_dir at the end)."""
        return Path(self.resume_dir or self.out_dir)


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


def estimate_val_loss(model: torch.nn.Module, store: BlockStore, ids: np.ndarray, batch_size: int,
                      d: Dist, dtype: str = "float32") -> float:
    """Mean per-token loss over the fixed validation blocks (sharded across ranks)."""
    total = torch.zeros(2, dtype=torch.float64, device=d.device)
    for _, losses in scored_batches(model, store, ids[d.rank :: d.world], batch_size, d.device, dtype):
        total += torch.stack([losses.double().sum(), torch.tensor(len(losses), device=d.device)])
    total = all_sum(total, d)
    return (total[0] / total[1]).item()


def score_candidates(model: torch.nn.Module, store: BlockStore, ids: np.ndarray, batch_size: int,
                     d: Dist, dtype: str) -> np.ndarray:
    """Per-block losses of `ids` from the model as it is (no-grad, eval mode, the training
    autocast), for a sampler that scores candidates: each rank scores a contiguous share, one
    all_gather puts them back in `ids`' order on every rank."""
    share = -(-len(ids) // d.world)
    local = torch.zeros(share, device=d.device)
    mine = ids[d.rank * share : (d.rank + 1) * share]
    for where, losses in scored_batches(model, store, mine, batch_size, d.device, dtype):
        local[where] = losses.float()
    losses, _ = send_to_host(local, torch.zeros(FLAGS, device=d.device), d).wait()
    return losses[: len(ids)]


def bits_per_byte(nats_per_token: float, tokens: int, n_bytes: int) -> float:
    """Bits per UTF-8 byte of a text of `n_bytes` bytes encoded by `tokens` targets whose mean
    loss is `nats_per_token`: total nats / (ln 2 x bytes). EOT targets add loss but no bytes."""
    return nats_per_token * tokens / (math.log(2) * n_bytes)


class StopRequest:
    """Set by SIGTERM/SIGUSR1 (preemption, scancel, a --signal of the user's) or by a deadline:
    `stop_margin_s` (None: lfr.config.default_stop_margin_s) before the earlier of the job's limit
    as given (`time_limit_min` from the launch) and, in a SLURM job, the limit that SLURM enforces
    (squeue, asked once by each node's first process); or after `stop_at_step` steps. Checked
    every step; under DDP the ranks' requests travel with the losses, so a stop takes effect at
    the next step whose losses are sent: every step if the sampler observes them, else every log
    row. `why`: the reason the run stops before its end, once decided."""

    def __init__(self, t_launch: float, time_limit_min: float | None, stop_margin_s: float | None = None,
                 slurm: tuple[float, float] | None = None, stop_at_step: int | None = None) -> None:
        self.deadline, self.signal, self.budget_s, self.margin_s = None, None, None, 0.0
        self.stop_at_step, self.why = stop_at_step, None
        limits = [(t_launch + 60 * time_limit_min, 60 * time_limit_min)] if time_limit_min else []
        if slurm is None and os.environ.get("LOCAL_RANK", "0") == "0":
            slurm = slurm_time()
        if slurm is not None:
            limits.append((time.time() + slurm[0], slurm[1]))
        if limits:
            end, limit = min(limits)
            self.margin_s = stop_margin_s or default_stop_margin_s(limit)
            self.deadline, self.budget_s = end - self.margin_s, end - self.margin_s - time.time()
            log.info("time limit: the run stops in %.0f s, %.0f s before its job's end, to save a "
                     "checkpoint", self.budget_s, self.margin_s)
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signal.Signals(signum).name

    def reason(self) -> str | None:
        """Why this process should stop now, or None (under DDP the loop combines the ranks')."""
        if self.signal or self.deadline is None or time.time() <= self.deadline:
            return self.signal
        if self.budget_s is not None and self.budget_s < self.margin_s:  # more saving than training
            return (f"the job's time limit is near; it left {max(self.budget_s, 0):.0f} s to train: give "
                    "the job a longer limit (resources.<size>.runtime_min) or a smaller "
                    "resources.<size>.stop_margin_s")
        return "the job's time limit is near"

    def check(self, step: int, world: int) -> None:
        """Decide `why` after `step` steps: stop_at_step, or this process's own request (one
        process; under DDP the request comes with the losses, see `asked_elsewhere`)."""
        if step == self.stop_at_step:
            self.why = "stop_at_step"
        elif world == 1 and self.why is None:
            self.why = self.reason()

    def asked_elsewhere(self) -> None:
        """Some rank was asked to stop (the flag that came with the losses)."""
        if self.why is None:
            self.why = self.reason() or "another rank was asked to stop"


def phase_ends(sampler: Sampler, num_steps: int) -> set[int]:
    """Step counts s < num_steps after which a phase ends (step s - 1 is its last step)."""
    phases = [sampler.phase(s) for s in range(num_steps)]
    return {s for s in range(1, num_steps) if phases[s] != phases[s - 1]}


def state_digest(state: dict[str, Any]) -> str:
    """sha256 of a sampler's state, to compare ranks and runs."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(np.ascontiguousarray(state[key]).tobytes())
    return h.hexdigest()


def run_settings(cfg: ExperimentConfig, size: str, method: Method, block_size: int,
                 vocab_size: int, budget: float = 1.0) -> dict[str, Any]:
    """What determines a run's result but its seed, with the block size and vocabulary read from
    the data and tokenizer folders. Its hash is the run's `config_hash`, so the seeds of one
    configuration share it; device, log_every, ckpt_every, tensorboard and wandb change no result."""
    dump = cfg.model_dump(mode="json")
    return {"corpus": dump["corpus"], "tokenizer": {**dump["tokenizer"], "vocab_size": vocab_size},
            "data": {**dump["data"], "block_size": block_size},
            "model": cfg.model_preset(size).model_dump(mode="json"),
            "train": cfg.train.model_dump(mode="json", exclude={"device", "log_every", "ckpt_every",
                                                                 "tensorboard", "wandb"}),
            "method": method.name, "method_options": method.options, "budget": budget}


def live_logs(cfg: ExperimentConfig, job: Job, method: Method, block_size: int, vocab_size: int,
              step: int) -> list[TensorBoard | WandB]:
    """The live curves a run writes as it trains (train.tensorboard, train.wandb); `step`: where
    it resumed (0: a fresh start)."""
    tc, out, live = cfg.train, Path(job.out_dir), []
    if tc.tensorboard:
        live.append(TensorBoard(out / "tb", step or None))
    if tc.wandb:
        settings = run_settings(cfg, job.size, method, block_size, vocab_size, job.budget)
        live.append(WandB(out, f"{job.size}/{method.name}/budget{budget_name(job.budget)}/seed{job.seed}",
                          {**settings, "seed": job.seed, "config_hash": config_hash(settings)}, cfg.offline))
    return live


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: StepBatch,
                   tc: TrainConfig, d: Dist) -> torch.Tensor:
    """One optimizer step on this rank's rows of the step: grad_accum micro-batches (forward once,
    per-block losses, backward; DDP syncs on the last one), clipping, AdamW. Returns this rank's
    per-block losses (detached, on the device); nothing waits for the device."""
    step_losses = []
    for micro in range(tc.grad_accum):
        rows = slice(micro * tc.batch_size, (micro + 1) * tc.batch_size)
        sync = micro == tc.grad_accum - 1 or d.world == 1
        with (contextlib.nullcontext() if sync else model.no_sync()), autocast(d.device, tc.dtype):
            losses = block_losses(model, batch.x[rows], batch.y[rows])
            loss = (losses if batch.w is None else losses * batch.w[rows]).mean() / tc.grad_accum
        loss.backward()
        step_losses.append(losses.detach())
    if tc.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return torch.cat(step_losses)


def check_finite(losses: np.ndarray, ids: np.ndarray, step: int, resume_dir: Path | None,
                 since: int | None = None) -> None:
    """Stop on a non-finite loss in `losses` (of the global batch `ids`, after `step` steps) or,
    when the device flagged one in an unsynced step after `since` steps, on that."""
    if np.isfinite(losses).all() and since is None:
        return
    where = (f"step {step} (blocks {ids[~np.isfinite(losses)]})" if not np.isfinite(losses).all()
             else f"a step after step {since}, up to step {step}")
    raise FloatingPointError(f"non-finite training loss at {where}; the last good checkpoint is "
                             f"kept in {resume_dir}. Lower train.lr or check the data")


def train_blocks(cfg: ExperimentConfig, size: str, store: BlockStore, params: int,
                 batch_blocks: int) -> tuple[BlockStore | BlockSubset, float]:
    """The blocks a run draws from and its passes over them at budget 1: all blocks and
    train.epochs, or with train.tokens_per_param the size's seeded subset (grid.block_budget)."""
    plan = block_budget(cfg, size, store.num_blocks, params, batch_blocks)
    if plan is None:
        return store, cfg.train.epochs
    return BlockSubset(store, subset_ids(store.num_blocks, plan.blocks)), plan.epochs


def train_run(cfg: ExperimentConfig, job: Job, method: Method) -> dict[str, Any]:
    """Train one run; write out_dir/{model/, metrics.parquet, records/, snapshots/, run.json}.

    metrics.parquet has a row every log_every and eval_every steps and after each phase's last
    step (so it holds every phase's exact span), validation losses (val_loss, val_bpb) at
    eval_every and at the end."""
    if job.lr_mult != 1:  # the learning-rate check: its lr is in run.json's settings and hash
        scaled = cfg.train.model_copy(update={"lr": cfg.train.lr * job.lr_mult})
        cfg = cfg.model_copy(update={"train": scaled})
    t_launch, d = time.time(), setup_dist(cfg.train.device)
    tc = cfg.train.model_copy(update={"grad_accum": cfg.train.accumulation(d.world)})  # train.batch_blocks
    run_cfg, cfg = cfg, cfg.model_copy(update={"train": tc})  # the loop's; run_cfg: as given, for the hash
    for seed_rng in (torch.manual_seed, np.random.seed, random.seed):
        seed_rng(job.seed)
    train_store, val_store = BlockStore.open(job.data_dir, "train"), BlockStore.open(job.data_dir, "val")
    T, meta = train_store.block_size, tokenizer_meta(job.tok_dir)
    model = build_model(model_config(cfg.model_preset(job.size), meta["vocab_size"], T, meta["eot_id"],
                                    tc.dropout)).to(d.device)
    optimizer = configure_optimizer(model, tc.lr, tc.weight_decay, (tc.beta1, tc.beta2), d.device)
    batch_blocks = tc.batch_size * tc.grad_accum * d.world
    store, epochs = train_blocks(cfg, job.size, train_store, num_params(model), batch_blocks)
    ids = store.ids if isinstance(store, BlockSubset) else None
    sampler = method.build(RunFacts(store.num_blocks, batch_blocks, T, job.seed, epochs,
                                    budget=job.budget), ids)
    if (num_steps := sampler.num_steps()) < 1:
        raise ValueError(f"{method.name}: the plan has 0 steps of {batch_blocks} blocks; the corpus has "
                         f"{store.num_blocks} blocks. Lower train.batch_size or add data")
    state = TrainState(model, optimizer, sampler, job.resume_dir)
    if state.load():
        log.info("resumed from %s at step %d", job.resume_dir, state.step)
    stepped = torch.compile(model) if tc.compile else model
    if d.world > 1:
        stepped = DDP(stepped, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    tokens_per_step, ends = batch_blocks * T, phase_ends(sampler, num_steps)
    snaps = SnapshotWriter(job.partial / "snapshots.partial", job.snapshots, snapshot_steps(
        ends, num_steps, tokens_per_step, job.snapshots) if job.snapshots and d.main else [])
    peak = peak_flops(tc.peak_tflops, d.device)
    live = live_logs(run_cfg, job, method, T, meta["vocab_size"], state.step) if d.main else []
    # the log appends its rows to the state's list: a checkpoint holds them
    metrics = MetricsLog(state.metrics, state.elapsed_s, tokens_per_step, flops_per_token(model),
                         peak and peak * d.world, live)
    val_ids = val_subset(val_store.num_blocks, tc.eval_blocks)
    val_bytes = int(target_bytes(job.data_dir, "val")[val_ids].sum())

    def validate() -> dict[str, float]:
        loss = estimate_val_loss(stepped, val_store, val_ids, tc.batch_size, d, tc.dtype)
        return {"val_loss": loss, "val_bpb": bits_per_byte(loss, len(val_ids) * T, val_bytes)}

    # from here on, a signal or the job's time limit saves and stops
    stopper = StopRequest(t_launch, job.time_limit_min, job.stop_margin_s, stop_at_step=job.stop_at_step)
    if state.step == 0:
        metrics.first(sampler.phase(0), validate())
    loader = BatchLoader(store, tc.batch_size * tc.grad_accum, d.rank, d.device)
    loop = Loop(tc, d, state, stepped, loader, metrics, snaps, job.partial / "records.partial", validate,
                stopper, num_steps, logged_steps(tc, num_steps, ends))
    try:
        loop.run(f"train {job.size}/{method.name}/s{job.seed}")
    finally:
        loader.close()
        for curves in live:
            curves.close()
    return finish_run(run_cfg, job, method, d, state, metrics, snaps, num_steps, T, meta, ids)


def logged_steps(tc: TrainConfig, num_steps: int, ends: set[int]) -> frozenset[int]:
    """The step counts after which the metrics log gets a row: every log_every and eval_every,
    each phase's end (so the log holds every phase's exact span) and the last."""
    every = (range(n, num_steps + 1, n) for n in (tc.log_every, tc.eval_every))
    return frozenset().union(*every, ends, {num_steps})


@dataclass
class Pending:
    """A trained step whose losses have not been handed over yet."""

    step: int  # steps done, this one included
    ids: np.ndarray
    lr: float
    flight: InFlight | None  # None: not sent (no reader)


class LossHandOff:
    """How each step's per-block losses get from the device to the host without stalling it.

    The device runs ahead of the host: an optimizer step returns as soon as its work is queued,
    and reading a loss on the host waits for the device. So the loop `put`s a step's losses
    here, sending them to the host only when something reads them (a sampler that observes, a
    log row, a checkpoint, a stop, the end), and collects them as late as it may: a step's
    losses are landed once the next step is queued (`put` returns the one pending before), or at
    once when they are needed before the next step (`take`). The host thus waits at most once a
    step, and for a sampler that observes "late" the device never waits for the host. Two flags
    travel with the losses: a rank was asked to stop (under DDP the ranks agree on a stop this
    way) and a non-finite loss since the last send, which the steps whose losses stay on the
    device accumulate in `bad`, so that a NaN is caught at the next send."""

    def __init__(self, d: Dist, resume_dir: Path | None, checked: int) -> None:
        self.d, self.resume_dir = d, resume_dir
        self.checked = checked  # the last step whose losses were checked on the host
        self.bad = torch.zeros(1, device=d.device)
        self.pending: Pending | None = None

    def put(self, step: int, ids: np.ndarray, lr: float, local: torch.Tensor, send: bool,
            asked: bool) -> Pending | None:
        """Queue step `step`'s losses `local` (this rank's, on the device), sending them and the
        flags (`asked`: this rank was asked to stop) if `send`; return the step pending before."""
        self.bad = torch.maximum(self.bad, (~torch.isfinite(local)).any().float())
        flight = None
        if send:
            flags = torch.cat([torch.full((1,), float(asked), device=self.d.device), self.bad])
            self.bad = torch.zeros(1, device=self.d.device)
            flight = send_to_host(local, flags, self.d)
        previous, self.pending = self.pending, Pending(step, ids, lr, flight)
        return previous

    def take(self) -> Pending | None:
        previous, self.pending = self.pending, None
        return previous

    def wait(self, p: Pending) -> tuple[np.ndarray, bool] | None:
        """The global batch's losses of a sent step, checked finite, and whether a rank was asked
        to stop; None for a step whose losses were not sent."""
        if p.flight is None:
            return None
        losses, (asked, bad) = p.flight.wait()
        check_finite(losses, p.ids, p.step, self.resume_dir, self.checked if bad else None)
        self.checked = p.step
        return losses, bool(asked)


@dataclass
class Loop:
    """nanoGPT's loop with a sampler: `run` trains from `state.step` to `num_steps`."""

    tc: TrainConfig
    d: Dist
    state: TrainState  # what a checkpoint holds; `step` is the loop's counter
    stepped: torch.nn.Module  # the model as trained (compiled, DDP-wrapped)
    loader: BatchLoader
    metrics: MetricsLog
    snaps: SnapshotWriter
    records_dir: Path  # the sampler's tables, as it hands them over
    validate: Callable[[], dict[str, float]]  # val_loss and val_bpb
    stopper: StopRequest
    num_steps: int
    logged: frozenset[int]  # the steps after which the metrics log gets a row

    losses: LossHandOff = field(init=False)

    def __post_init__(self) -> None:
        self.losses = LossHandOff(self.d, self.state.folder, self.state.step)

    def run(self, desc: str) -> None:
        tc, d, st, sampler, losses = self.tc, self.d, self.state, self.state.sampler, self.losses
        bar = tqdm(total=self.num_steps, initial=st.step, desc=desc, disable=not d.main, unit="step",
                   mininterval=2.0)
        self.prefetch(st.step)
        while st.step < self.num_steps:
            if d.main:
                self.snaps.maybe_save(st.step, st.model)
            lr = lr_at(st.step, self.num_steps, tc)
            for group in st.optimizer.param_groups:
                group["lr"] = lr
            batch = self.loader.get()
            local = optimizer_step(self.stepped, st.optimizer, batch, tc, d)
            step = st.step = st.step + 1
            bar.update()
            self.stopper.check(step, d.world)
            now = self.needs_losses(step)
            send = sampler.observes != "none" or now
            asked = send and d.world > 1 and self.stopper.reason() is not None
            self.land(losses.put(step, batch.ids, lr, local, send, asked))  # the previous step's
            if now or sampler.observes == "now" or self.stopper.why:
                self.land(losses.take())
            if step in self.logged:  # landed: the log's last row is this step's
                bar.set_postfix(loss=f"{self.metrics.rows[-1]['train_loss']:.3f}")
            if (st.folder and d.main and (step % tc.ckpt_every == 0 or self.stopper.why)
                    and step < self.num_steps):
                st.elapsed_s = self.metrics.elapsed()
                st.save()
            if self.stopper.why and step < self.num_steps:
                bar.close()  # so the message below is the log's last line
                raise TrainingInterrupted(
                    f"stopped at step {step}/{self.num_steps} ({self.stopper.why}) to resume later; the "
                    f"checkpoint is in {st.folder}. To continue, rerun the same command (snakemake: the "
                    "same target; with retries, as in the SLURM profile, the retry resumes by itself)")
            if step < self.num_steps:
                self.prefetch(step)
        bar.close()

    def prefetch(self, step: int) -> None:
        """Choose step `step`'s batch (scoring the sampler's candidates first, with the model as
        updated by step - 1) and start loading it."""
        sampler, tc = self.state.sampler, self.tc
        while (candidates := sampler.candidate_ids(step)) is not None:
            # DDP's own forward may sync buffers: a collective that ranks with fewer candidates skip
            scorer = self.stepped.module if isinstance(self.stepped, DDP) else self.stepped
            losses = score_candidates(scorer, self.loader.store, candidates, tc.batch_size, self.d,
                                      tc.dtype)
            sampler.observe_candidates(step, candidates, losses)
            self.state.scored_blocks += len(candidates)
        self.loader.prefetch(*sampler.batch_ids(step))

    def needs_losses(self, step: int) -> bool:
        """Whether the losses of the step just done must reach the host before the next step."""
        return (step in self.logged or step == self.num_steps or self.stopper.why is not None
                or (self.state.folder is not None and step % self.tc.ckpt_every == 0))

    def land(self, p: Pending | None) -> None:
        """Hand a trained step's losses to the finite check, the sampler and the log."""
        if p is None:
            return
        sampler = self.state.sampler
        if (got := self.losses.wait(p)) is not None:
            losses, asked = got
            if asked:
                self.stopper.asked_elsewhere()
            if sampler.observes != "none":
                sampler.observe(p.step - 1, p.ids, losses)
        for name, table in sampler.records().items():
            if self.d.main:
                if "block_id" in table.columns:  # the split's own ids, not the subset's
                    table = table.assign(block_id=self.loader.store.global_ids(table.block_id.to_numpy()))
                write_parquet(self.records_dir / f"{name}.parquet", table)
        if p.step in self.logged:
            due = p.step % self.tc.eval_every == 0 or p.step == self.num_steps
            self.metrics.add(p.step, sampler.phase(p.step - 1), float(losses.mean()), p.lr,
                             sampler.kept_fraction(), self.validate if due else None)


def reference_charges(scores: BlockScores | None) -> dict[str, Any]:
    """run.json's charges for the reference model of a method that needs block scores (ppl-prune,
    rho-loss): its training tokens, its no-grad scoring pass over the pool (forward-only tokens
    of that model) and its own FLOPs per token; zeros without one."""
    if scores is None:
        return {"reference_train_tokens": 0, "reference_scoring_tokens": 0,
                "reference_flops_per_token": 0.0}
    return {"reference_train_tokens": scores.reference_train_tokens,
            "reference_scoring_tokens": scores.scoring_tokens,
            "reference_flops_per_token": scores.reference_flops_per_token}


def finish_run(cfg: ExperimentConfig, job: Job, method: Method, d: Dist, state: TrainState,
               metrics: MetricsLog, snaps: SnapshotWriter, steps: int, T: int, meta: dict[str, Any],
               ids: np.ndarray | None = None) -> dict[str, Any]:
    """The run's last snapshot, HF model folder, metrics, records, snapshots and run.json (the
    returned summary); the resume folder goes. `ids`: the blocks it drew from, if not all
    (train.tokens_per_param)."""
    model, sampler = state.model, state.sampler
    tokens_per_step, params = sampler.batch_blocks * T, num_params(model)
    reference = reference_charges(sampler.run.block_scores if sampler.needs_block_scores else None)
    summary = {
        "size": job.size, "method": method.name, "budget": job.budget, "lr_mult": job.lr_mult,
        "seed": job.seed, "params": params, "params_nonemb": params - embedding_params(model),
        "tokens_per_param": steps * tokens_per_step / params,
        "subset_blocks": None if ids is None else len(ids),
        "passes": steps * sampler.batch_blocks / sampler.num_blocks,
        "steps": steps, "tokens": steps * tokens_per_step, "block_size": T,
        "batch_blocks": sampler.batch_blocks, "world_size": d.world,
        "val_loss": metrics.rows[-1]["val_loss"], "val_bpb": metrics.rows[-1]["val_bpb"],
        "wall_s": metrics.elapsed(), "device": str(d.device),
        "train_tokens_per_s": metrics.train_tokens_per_s(steps), "flops_per_token": flops_per_token(model),
        # candidates the loop scored, and the reference's scoring pass: no-grad forward passes
        "forward_only_tokens": reference["reference_scoring_tokens"] + state.scored_blocks * T,
        "candidate_tokens": state.scored_blocks * T,
        "reference_train_tokens": reference["reference_train_tokens"],
        "reference_scoring_tokens": reference["reference_scoring_tokens"],
        "reference_flops_per_token": reference["reference_flops_per_token"],
        "sampler_state_sha256": state_digest(sampler.state_dict()), **job.run_info,
    }
    summary["settings"] = run_settings(cfg, job.size, method, T, meta["vocab_size"], job.budget)
    summary["config_hash"] = config_hash(summary["settings"])
    if d.main:
        out = Path(job.out_dir)
        snaps.maybe_save(steps, model)
        with atomic_dir(out / "model") as tmp:
            padding = list(range(cfg.tokenizer.base_vocab_size, meta["vocab_size"]))
            if padding:  # tokenizer.vocab_multiple: generation (lm-eval's too) never emits them
                model.generation_config.suppress_tokens = padding
            model.save_pretrained(tmp)
            tok = load_hf_tokenizer(job.tok_dir)
            tok.model_max_length = T
            tok.save_pretrained(tmp)
        write_parquet(out / "metrics.parquet", pd.DataFrame(metrics.rows))
        records = job.partial / "records.partial"
        records.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out / "records", ignore_errors=True)
        os.replace(records, out / "records")
        snaps.finish(out, tokens_per_step, sampler.phase)
        write_json(out / "run.json", summary)
        if job.resume_dir:
            shutil.rmtree(job.resume_dir, ignore_errors=True)
    finish(d)
    return summary


def positive_multiple(text: str) -> float:
    """`--budget` and `--lr-mult`: a finite multiple above 0."""
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r}: a positive multiple, e.g. 0.5 or 2")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m lfr train`."""
    parser.add_argument("--size", required=True, help="model size (MODEL_PRESETS or custom_models)")
    parser.add_argument("--method", required=True, help="data-selection method (lfr/sampling registry)")
    parser.add_argument("--seed", type=int, required=True, help="the run's seed (model init, data order)")
    parser.add_argument("--budget", type=positive_multiple, default=1.0,
                        help="multiple of the method's default run length (sweep.budgets; default 1)")
    parser.add_argument("--lr-mult", type=positive_multiple, default=1.0,
                        help="multiple of train.lr (lr_check.multipliers; default 1)")
    parser.add_argument("--data", type=Path, required=True, help="folder written by `tokenize`")
    parser.add_argument("--tokenizer", type=Path, required=True, help="folder written by `tokenizer`")
    parser.add_argument("--out", type=Path, required=True,
                        help="run folder: model/, metrics.parquet, run.json")
    parser.add_argument("--resume-dir", type=Path, help="resume checkpoints (not a Snakemake output)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--time-limit-min", type=float,
                        help="the job's wall-time limit: save and stop before it")
    parser.add_argument("--stop-margin-s", type=float,
                        help="stop this long before the job's limit (default: max(120 s, 5%% of the limit))")
    parser.add_argument("--snapshots", help="profile settings as JSON: save weight snapshots for `profile`")
    parser.add_argument("--block-scores", type=Path, help="reference scores (score-reference) for methods "
                        "that need them (ppl-prune, rho-loss)")


def main(cfg: ExperimentConfig, size: str, method: str, seed: int, data: Path, tokenizer: Path,
         out: Path, resume_dir: Path | None = None, time_limit_min: float | None = None,
         stop_margin_s: float | None = None,
         snapshots: str | None = None, block_scores: Path | None = None, budget: float = 1.0,
         lr_mult: float = 1.0) -> None:
    """The `train` stage; `snapshots`: the profile settings as JSON (the runs `profile:` selects)."""
    job = Job(size, seed, data, tokenizer, out, resume_dir, run_info={"git_commit": git_commit()},
              snapshots=ProfileConfig.model_validate_json(snapshots) if snapshots else None,
              time_limit_min=time_limit_min, stop_margin_s=stop_margin_s, budget=budget,
              lr_mult=lr_mult)
    train_run(cfg, job, Method.registered(cfg, method, block_scores))
