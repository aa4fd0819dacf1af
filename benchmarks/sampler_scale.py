"""Each sampler's time per optimizer step at OpenWebText scale, against a projected H100 step.

numpy only, no model: 8.8M blocks of 1024 tokens (OpenWebText's ~9B tokens), 480 blocks per
optimizer step and 4 epochs (config/paper.yaml), synthetic losses. Each registered method is put
in a state a real run reaches (synthesised: random losses, scores, boxes) and the loop's calls of
each step are timed (candidate_ids and observe_candidates where a method scores candidates,
batch_ids, observe, records):
- the steady mean per step;
- the work of a step that starts a phase or a pass (LFR's selection, InfoBatch's pruned epoch, a
  pass's permutation), amortized over that phase or pass; the figure per step is the steady mean
  plus the largest such share; the worst single step is information;
- setup: building the sampler and loading the synthetic state (what a resume costs).
The projected step is FLOPs per step / (peak x MFU): 480 x 1024 tokens x lfr.model's
flops_per_token of GPT-2 124M (nanoGPT's 6N + 12 L T C), an H100 SXM's dense bf16 peak and 40%
MFU. Memory per block: the sampler's numpy arrays after each segment, the largest (each buffer
once; the run's inputs, such as ppl-prune's and rho-loss's block scores, not), and the peak of what setup and
boundary steps allocate (tracemalloc).

    python -m benchmarks --only sampler_scale          # rows sampler_scale:<method>
    python -m benchmarks.sampler_scale --blocks 100000 # a table only
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from lfr.config import MODEL_PRESETS
from lfr.model import build_model, flops_per_token, model_config
from lfr.sampling import SAMPLERS, BlockScores, RunFacts, Sampler, build_sampler
from lfr.sampling.base import PoolSampler
from lfr.sampling.infobatch import InfoBatchSampler
from lfr.sampling.leitner import LeitnerSampler
from lfr.sampling.lfr import LFRSampler
from lfr.sampling.loss_prop import LossPropSampler
from lfr.sampling.ppl_prune import reference_shard
from lfr.sampling.rho_loss import RhoLossSampler
from lfr.sampling.selective_backprop import SelectiveBackpropSampler

BLOCKS = 8_800_000  # OpenWebText's ~9B GPT-2 tokens in blocks of 1024
BLOCK_SIZE = 1024
BATCH_BLOCKS = 480  # config/paper.yaml: 12 blocks x 5 micro-batches x 8 GPUs
EPOCHS = 4.0  # config/paper.yaml
H100_BF16_FLOPS = 989e12  # H100 SXM, dense bf16 tensor cores (NVIDIA's datasheet, no sparsity)
MFU = 0.40
GOAL = 0.01  # of the projected step


def projected_step_s() -> tuple[float, float]:
    """(seconds, FLOPs per token) of a GPT-2 124M optimizer step of BATCH_BLOCKS x BLOCK_SIZE
    tokens at MFU of the H100's peak."""
    with torch.device("meta"):  # shapes only: no memory, no init
        model = build_model(model_config(MODEL_PRESETS["gpt2"], 50257, BLOCK_SIZE, 50256))
    per_token = flops_per_token(model)
    return BATCH_BLOCKS * BLOCK_SIZE * per_token / (H100_BF16_FLOPS * MFU), per_token


@dataclass
class Segment:
    """Steps to time from `start`. With `period`, the first step does a boundary's work (`what`),
    spread over period(sampler) steps (evaluated after that step)."""

    start: int
    period: Callable[[Sampler], float] | None = None
    what: str = ""


def synthetic_scores(num_blocks: int, seed: int) -> BlockScores:
    """ppl-prune's and rho-loss's input: uniform scores, the reference shard unscored."""
    shard = reference_shard(num_blocks, 0.1, seed)
    score = np.random.default_rng([seed, 1]).uniform(2, 6, num_blocks).astype(np.float32)
    reference = np.zeros(num_blocks, dtype=bool)
    reference[shard] = True
    score[shard] = np.nan
    return BlockScores(score, reference)


def scenario(sampler: Sampler, rng: np.random.Generator) -> Iterator[Segment]:
    """The segments to time, the sampler's state set up before each (the time between yields is
    setup)."""
    N, B = sampler.num_blocks, sampler.batch_blocks
    loss = lambda: rng.uniform(2, 6, N).astype(np.float32)  # noqa: E731
    if isinstance(sampler, LFRSampler):  # step 0 enters the learn phase, then the shortest focus
        yield Segment(0, lambda s: s.plan[0].num_steps, "phase 0:learn's block table")
        focus = min((p for p in sampler.plan if p.kind == "focus"), key=lambda p: p.num_steps)
        prev = sampler.plan[focus.index - 1]
        score = loss()
        active = (np.arange(N) if prev.kind != "focus"
                  else np.sort(rng.permutation(N)[: prev.active_size]))
        kept = np.zeros(N, dtype=bool)
        kept[active] = True
        recorded = np.full(N, int(prev.records), dtype=np.int32)
        sampler.load_state_dict({
            "current": prev.index, "score": score, "last_loss": score,
            "visits": np.full(N, prev.index, dtype=np.int32),
            "last_step": rng.integers(0, focus.start_step, N).astype(np.int32),
            "win_sum": score * float(prev.records), "win_count": recorded, "kept": kept,
            "active": active})
        yield Segment(focus.start_step, lambda s: focus.num_steps,
                      f"phase {focus.name}'s selection (drop: {sampler.drop_rule}) and block table")
    elif isinstance(sampler, InfoBatchSampler):  # after a first epoch: every block has a score
        sampler.load_state_dict({"score": loss(), "epoch": 0, "epoch_start": 0,
                                 "order": np.zeros(0, np.int64), "weight": np.zeros(0, np.float32),
                                 "pruned": np.zeros(0, np.int64)})
        yield Segment(N // B, lambda s: len(s.order) / B, "epoch 1's pruned set and order")
    elif isinstance(sampler, LossPropSampler):  # half the blocks seen
        seen_loss = loss()
        seen_loss[rng.random(N) < 0.5] = np.nan
        sampler.load_state_dict({"loss": seen_loss})
        yield Segment(0)
    elif isinstance(sampler, LeitnerSampler):  # every block seen, its box's review spread evenly
        K, start = len(sampler.interval), 4 * (N // B)
        box = rng.integers(0, K, N).astype(np.int8)
        last_seen = start - 1 - (rng.random(N) * sampler.interval[box]).astype(np.int64)
        sampler.load_state_dict({"box": box, "due": last_seen + sampler.interval[box],
                                 "last_seen": last_seen, "last_loss": loss(), "next_new": N,
                                 "ema": 4.0})
        yield Segment(start)
    elif isinstance(sampler, RhoLossSampler):  # step 0 permutes the candidates' first pass
        yield Segment(0, lambda s: len(s.pool) / s.num_candidates, "a pass's permutation of the pool")
    elif isinstance(sampler, SelectiveBackpropSampler):  # a step streams B / (keep rate) candidates
        yield Segment(0, lambda s: N * s.kept_fraction() / B, "a pass's permutation of the blocks")
    elif isinstance(sampler, PoolSampler):  # random, ppl-prune: step 0 permutes the first pass
        yield Segment(0, lambda s: len(s.pool) / B, "a pass's permutation of its pool")
    else:
        yield Segment(0)


def timed_step(sampler: Sampler, step: int, losses: np.ndarray) -> float:
    """Seconds of the loop's sampler calls of one step; candidates (rho-loss, selective-backprop)
    get `losses` repeated to their length (the scoring pass itself is the model's time)."""
    t0 = time.perf_counter()
    while (c := sampler.candidate_ids(step)) is not None:
        sampler.observe_candidates(step, c, np.resize(losses, len(c)))
    ids = sampler.batch_ids(step).ids
    if sampler.observes != "none":
        sampler.observe(step, ids, losses)
    sampler.records()
    return time.perf_counter() - t0


def array_bytes(sampler: Sampler) -> int:
    """Bytes of the numpy buffers reachable from the sampler's attributes, each once (views
    share their base); the run's facts and options are inputs, not its state."""
    buffers: dict[int, int] = {}
    visited: set[int] = set()

    def walk(x: object) -> None:
        if id(x) in visited:
            return
        visited.add(id(x))
        if isinstance(x, np.ndarray):
            while isinstance(x.base, np.ndarray):
                x = x.base
            buffers[id(x)] = x.nbytes
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list | tuple):
            for v in x:
                walk(v)
        elif hasattr(x, "__dict__") and not isinstance(x, type):
            for v in vars(x).values():
                walk(v)

    for key, value in vars(sampler).items():
        if key not in ("run", "options"):
            walk(value)
    return sum(buffers.values())


@dataclass
class Result:
    name: str
    steady_s: list[float]
    boundaries: list[tuple[str, float, float]]  # (what, seconds, period in steps)
    setup_s: float
    state_bytes: int
    peak_bytes: int

    @property
    def steady_mean_s(self) -> float:
        return float(np.mean(self.steady_s)) if self.steady_s else 0.0

    @property
    def amortized_s(self) -> float:
        """The largest boundary's work per step of its phase or pass."""
        return max((dt / max(period, 1.0) for _, dt, period in self.boundaries), default=0.0)

    @property
    def per_step_s(self) -> float:
        return self.steady_mean_s + self.amortized_s

    @property
    def worst_s(self) -> float:
        return max([*self.steady_s, *(dt for _, dt, _ in self.boundaries)])


def measure(name: str, blocks: int = BLOCKS, steps: int = 200, seed: int = 0) -> Result:
    """Time `steps` steps of each of method `name`'s segments (defaults: its options' defaults)."""
    scores = synthetic_scores(blocks, seed) if SAMPLERS[name].needs_block_scores else None
    run = RunFacts(blocks, BATCH_BLOCKS, BLOCK_SIZE, seed, EPOCHS, scores)
    rng = np.random.default_rng([seed, 7])
    losses = lambda: rng.uniform(2, 6, BATCH_BLOCKS).astype(np.float32)  # noqa: E731
    steady, boundaries, setup, peak, state = [], [], 0.0, 0, 0
    tracemalloc.start()
    t0 = time.perf_counter()
    sampler = build_sampler(name, run, {})
    segments = scenario(sampler, rng)
    while (segment := next(segments, None)) is not None:
        setup += time.perf_counter() - t0
        step, end = segment.start, segment.start + steps
        if segment.period is not None:  # the boundary step, traced with the setup
            dt = timed_step(sampler, step, losses())
            period = segment.period(sampler)
            boundaries.append((segment.what, dt, period))
            step, end = step + 1, segment.start + min(steps, int(period))  # inside its phase or pass
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()  # the steady steps run untraced
        steady.extend(timed_step(sampler, s, losses()) for s in range(step, end))
        state = max(state, array_bytes(sampler))
        tracemalloc.start()
        t0 = time.perf_counter()
    tracemalloc.stop()
    return Result(name, steady, boundaries, setup, state, peak)


def describe(r: Result, blocks: int, step_s: float, per_token: float) -> str:
    """The row's description: what was timed, the split of the figure, memory, the projection."""
    ms = lambda s: f"{s * 1e3:.3g} ms" if s < 0.1 else f"{s * 1e3:,.0f} ms"  # noqa: E731
    calls = "candidates, " if SAMPLERS[r.name].candidate_ids is not Sampler.candidate_ids else ""
    parts = [f"{r.name}: the sampler's calls per optimizer step ({calls}batch_ids, "
             f"observe, records) at {blocks:,} blocks x {BLOCK_SIZE} tokens, {BATCH_BLOCKS} blocks/step, "
             f"synthetic losses, numpy only; steady mean {ms(r.steady_mean_s)} over "
             f"{len(r.steady_s)} steps"]
    for what, dt, period in r.boundaries:
        parts.append(f"boundary ({what}) {ms(dt)} / {period:,.0f} steps = {ms(dt / max(period, 1))}")
    parts.append(f"worst single step {ms(r.worst_s)}; setup (build + load state) {r.setup_s:.1f} s")
    parts.append(f"memory {r.state_bytes / blocks:.1f} bytes/block of state arrays, peak "
                 f"{r.peak_bytes / blocks:.1f} bytes/block allocated during setup and boundary steps")
    parts.append(f"vs a projected GPT-2 124M H100 step: {BATCH_BLOCKS}x{BLOCK_SIZE} tokens x "
                 f"{per_token / 1e6:.1f} MFLOPs/token (6N + 12LTC) / ({H100_BF16_FLOPS / 1e12:.0f} "
                 f"TFLOP/s dense bf16 x {MFU:.0%} MFU) = {ms(step_s)}")
    return "; ".join(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", type=int, default=BLOCKS)
    p.add_argument("--steps", type=int, default=200, help="timed steps per segment")
    args = p.parse_args()
    step_s, _ = projected_step_s()
    print(f"projected step {step_s * 1e3:.0f} ms; goal <= {GOAL:.0%} = {GOAL * step_s * 1e3:.1f} ms")
    print(f"{'method':16s} {'ms/step':>8s} {'steady':>8s} {'worst':>8s} {'% step':>7s} {'B/block':>8s}")
    for name in SAMPLERS:
        r = measure(name, args.blocks, args.steps)
        print(f"{name:16s} {r.per_step_s * 1e3:8.3f} {r.steady_mean_s * 1e3:8.3f} "
              f"{r.worst_s * 1e3:8.1f} {r.per_step_s / step_s:7.3%} {r.state_bytes / args.blocks:8.1f}")


if __name__ == "__main__":
    main()
