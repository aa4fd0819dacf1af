"""`lfr`: Learn, Focus, Review (Prakriya et al., arXiv 2409.06131), with its two controls.

The schedule is data: a list of phases.
- `learn`: train on all blocks and record each block's loss from the training forward pass;
- `focus`: drop the fraction `drop` of the scored blocks with the lowest score (the easiest,
  i.e. lowest perplexity; ranking by loss = ranking by perplexity) and train on the rest;
- `review`: all blocks back, recording on.
A block's score is the mean (or last, `score: last`) of its losses recorded in the most recent
recording window that visited it; each learn/review phase opens a new window, and with
`rescore: true` so does each focus phase. Phase lengths are in epochs of the active set
(`epoch_unit: active`) or of all blocks (`full`), or in tokens: they are the schedule's *shares*
of the run, whose length is random's, so that an equal budget is equal tokens. The run lasts
exactly as many steps as `random` at the same budget (`epochs`, default train.epochs, passes'
worth of draws over all blocks, times the budget); every phase is scaled by one factor so that
the schedule fills it, then rounded up to whole optimizer steps but the last, which takes the
steps that remain. The factor is the budget itself where the schedule at that scale already
plans random's draws to within a step (paper-v1 with reps 5 is 4 epochs: the default
train.epochs); otherwise it is solved for: below a one-epoch learn phase a schedule scores only
part of the blocks, and its focus phases shrink with what was scored, so the planned draws grow
faster than the factor. Because every phase's size is known up front, so is the total step count
(the LR schedule spans it). A run at budget b (`sweep.budgets`) is b times random's run: the
phases keep their order, drops and shares of it. Controls: `lfr-random-drop` drops the same number
of blocks at random, `lfr-reverse` drops the highest-scoring (hardest) blocks instead.

State is compact numpy arrays: 33 bytes per block (`BYTES_PER_BLOCK`), i.e. 290 MB for
OpenWebText's ~8.8M blocks of 1024 tokens, plus the current pass's order (8 bytes per block of the
active set, not checkpointed): 41 bytes per block in learn and review phases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from lfr.sampling.base import (
    Batch,
    EpochOrder,
    Epochs,
    RunFacts,
    Sampler,
    SamplerOptions,
    epoch_draws,
    equal_token_steps,
)

# float32 score, last_loss, window sum; int32 visits, last_step, window count; bool kept;
# int64 active ids (at most one per block).
BYTES_PER_BLOCK = 4 * 3 + 4 * 3 + 1 + 8


MAX_DOUBLINGS = 200
"""Doublings of the scale `_fit_scale` tries (to ~1e60): far beyond any run's length."""

MAX_REPEATS = 1000
"""Each repeat is a phase of the plan, built before step 0: a huge count would hang the planning."""


class PhaseSpec(SamplerOptions):
    kind: Literal["learn", "focus", "review"]
    """`learn`: all blocks, each one's loss recorded; `focus`: the scored blocks less the fraction
    `drop` with the lowest score; `review`: all blocks again, recording on."""
    drop: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """focus: fraction of scored blocks dropped (the lowest scores)."""
    epochs: Epochs | None = None
    """Length in epochs (of the active set or of all blocks, see epoch_unit)."""
    tokens: Annotated[int, Field(gt=0)] | None = None
    """Length in training tokens (instead of epochs)."""
    repeats: Annotated[int, Field(ge=1, le=MAX_REPEATS)] = 1
    """Run this phase this many times in a row (focus re-selects each time)."""

    @model_validator(mode="after")
    def _one_length(self) -> PhaseSpec:
        if (self.epochs is None) == (self.tokens is None):
            raise ValueError("give exactly one of `epochs` or `tokens` for each phase")
        if self.kind != "focus" and self.drop:
            raise ValueError(f"`drop` applies to focus phases only, not {self.kind}")
        return self


def paper_v1(reps: int) -> list[PhaseSpec]:
    """The v1 schedule: p1=1, s1=50, p2=1, p3=1, s2=70, p4=1, `reps` repetitions."""
    return [
        PhaseSpec(kind="learn", epochs=1),
        PhaseSpec(kind="focus", drop=0.5, epochs=1),
        PhaseSpec(kind="review", epochs=1),
        PhaseSpec(kind="focus", drop=0.7, epochs=1, repeats=reps),
    ]


class LFROptions(SamplerOptions):
    epochs: Epochs | None = None
    """Run length in passes' worth of draws over all blocks, which the schedule is scaled to fill;
    default train.epochs, random's (equal tokens). Another value trains other tokens than
    random's: the config check says so and the equal-budget columns stay empty."""
    preset: Literal["paper-v1"] | None = "paper-v1"
    """Named schedule; ignored when `schedule` is given."""
    reps: Annotated[int, Field(ge=1, le=MAX_REPEATS)] = 5
    """paper-v1: repetitions of the last focus (the paper's text reads as 2 or as 5)."""
    schedule: list[PhaseSpec] | None = None
    """A custom list of phases; overrides `preset`."""
    score: Literal["mean", "last"] = "mean"
    """Aggregate a block's losses in a recording window by their mean, or keep the last."""
    epoch_unit: Literal["active", "full"] = "active"
    """An epoch is a pass over the phase's active set, or the number of draws of a full pass."""
    rescore: bool = False
    """Focus phases record too, so each focus repeat re-selects with fresh scores."""

    @model_validator(mode="after")
    def _has_schedule(self) -> LFROptions:
        phases = self.phases()
        if not phases:
            raise ValueError("the LFR schedule is empty; give `preset: paper-v1` or a `schedule`")
        first_focus = next((i for i, p in enumerate(phases) if p.kind == "focus"), len(phases))
        if all(p.kind != "learn" for p in phases[:first_focus]) and first_focus < len(phases):
            raise ValueError("a focus phase comes before any learn phase: nothing is scored yet")
        return self

    def phases(self) -> list[PhaseSpec]:
        if self.schedule is not None:
            return self.schedule
        return paper_v1(self.reps) if self.preset == "paper-v1" else []


@dataclass(frozen=True)
class PhaseRun:
    """One phase as planned: which kind, which blocks how many, which steps."""

    index: int
    kind: str
    drop: float
    active_size: int
    start_step: int
    num_steps: int

    @property
    def name(self) -> str:
        return f"{self.index}:{self.kind}"

    @property
    def records(self) -> bool:
        return self.kind != "focus"


def num_kept(num_scored: int, drop: float) -> int:
    return num_scored - math.floor(drop * num_scored + 0.5)


class LFRSampler(Sampler):
    Options = LFROptions
    options: LFROptions
    drop_rule: ClassVar[Literal["lowest", "random", "highest"]] = "lowest"
    observes = "late"  # the kept set changes only when a phase starts

    def __init__(self, run: RunFacts, options: LFROptions) -> None:
        super().__init__(run, options)
        N = run.num_blocks
        self.score = np.full(N, np.nan, dtype=np.float32)
        self.last_loss = np.full(N, np.nan, dtype=np.float32)
        self.visits = np.zeros(N, dtype=np.int32)
        self.last_step = np.full(N, -1, dtype=np.int32)
        self.win_sum = np.zeros(N, dtype=np.float32)
        self.win_count = np.zeros(N, dtype=np.int32)
        self.kept = np.ones(N, dtype=bool)
        self.plan = self._plan()
        self.current = -1  # index into plan of the phase whose active set is loaded
        self.active = np.arange(N, dtype=np.int64)
        self._pending_records: dict[str, pd.DataFrame] = {}

    # -- planning -------------------------------------------------------------------------
    def _plan(self) -> list[PhaseRun]:
        """The phases, scaled to fill random's steps at this budget (see the module doc)."""
        B, target = self.batch_blocks, equal_token_steps(self.run, self.options.epochs)
        try:
            plan, draws = self._phases(self.run.budget)
            fits = abs(sum(draws) - target * B) < B and plan[-1].start_step < target
        except ValueError:  # a focus that keeps nothing at this scale may keep blocks at a larger
            fits = False
        if not fits:
            plan, _ = self._phases(self._fit_scale(target))
        last = plan[-1]
        if last.start_step >= target:
            raise ValueError(f"LFR's {len(plan)} phases need more than the {target} steps of {B} "
                             f"blocks that random trains on {self.num_blocks} blocks; raise "
                             "train.epochs or lower train.batch_size")
        plan[-1] = replace(last, num_steps=target - last.start_step)
        return plan

    def _phases(self, scale: float) -> tuple[list[PhaseRun], list[float]]:
        """Every phase at `scale` x its schedule length, rounded up to whole steps, and the draws
        each plans. Scored counts only grow in learn/review phases, whose draws do not depend on
        losses, so the plan is exact before step 0."""
        N, B = self.num_blocks, self.batch_blocks
        scored = np.zeros(N, dtype=bool)
        plan, step, planned = [], 0, []
        for spec in self.options.phases():
            for _ in range(spec.repeats):
                index = len(plan)
                active = num_kept(int(scored.sum()), spec.drop) if spec.kind == "focus" else N
                unit = active if self.options.epoch_unit == "active" else N
                draws = scale * (spec.tokens / self.run.block_size if spec.tokens else spec.epochs * unit)
                steps = max(1, math.ceil(draws / B))
                if active < 1:
                    raise ValueError(f"LFR phase {index} ({spec.kind}) keeps no block; lower `drop`")
                plan.append(PhaseRun(index, spec.kind, spec.drop, active, step, steps))
                if spec.kind != "focus":
                    # the first N draws are a pass over all blocks: later ones score nothing new
                    scored[self._draws(index, np.arange(N), 0, min(steps * B, N))] = True
                step += steps
                planned.append(draws)
        return plan, planned

    def _fit_scale(self, target: int) -> float:
        """The largest scale whose phases, the last one unrounded, fit in `target` steps (to a
        relative 1e-4), by bisection: a larger scale never plans fewer steps."""
        def planned(scale: float) -> float:
            try:
                plan, draws = self._phases(scale)
            except ValueError:  # so small a learn phase that a focus keeps nothing: go larger
                return -math.inf
            return plan[-1].start_step + draws[-1] / self.batch_blocks

        lo, hi = 0.0, max(self.run.budget, 1.0)
        for _ in range(MAX_DOUBLINGS):
            if planned(hi) > target:
                break
            lo, hi = hi, 2 * hi
        else:  # even every block scored leaves a focus with nothing, or nothing grows with scale
            self._phases(hi)  # raises the phase's own reason where there is one
            raise ValueError(f"LFR's schedule cannot be scaled to fill {target} steps; give its "
                             "phases lengths in epochs")
        while hi - lo > 1e-4 * hi:
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if planned(mid) <= target else (lo, mid)
        return lo

    def _draws(self, index: int, active: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Draws [start, stop) of a phase: its active set in a fresh seeded order each epoch."""
        if getattr(self, "_order_of", None) != (index, len(active)):
            self._order_of, self._order = (index, len(active)), EpochOrder(len(active), self.seed, index)
        return epoch_draws(active, start, stop, self._order)

    def num_steps(self) -> int:
        last = self.plan[-1]
        return last.start_step + last.num_steps

    def _phase_at(self, step: int) -> PhaseRun:
        for phase in reversed(self.plan):
            if step >= phase.start_step:
                return phase
        raise AssertionError(step)

    # -- selection ------------------------------------------------------------------------
    def _select(self, phase: PhaseRun) -> np.ndarray:
        """Ids kept for a focus phase: all scored blocks but the dropped ones, sorted."""
        scored = np.flatnonzero(~np.isnan(self.score))
        n_drop = len(scored) - phase.active_size
        if self.drop_rule == "random":
            rng = np.random.default_rng([self.seed, phase.index, 1])
            dropped = rng.choice(scored, size=n_drop, replace=False)
        else:  # rank by score, ties broken by block id: deterministic
            sign = 1.0 if self.drop_rule == "lowest" else -1.0
            order = np.lexsort((scored, sign * self.score[scored]))
            dropped = scored[order[:n_drop]]
        keep = np.setdiff1d(scored, dropped, assume_unique=True)
        assert len(keep) == phase.active_size
        return keep

    def _enter(self, phase: PhaseRun) -> None:
        self._close_window()  # scores of the window that just ended; then open a new one
        self.win_sum[:] = 0
        self.win_count[:] = 0
        if phase.kind == "focus":
            self.active = self._select(phase)
            self.kept[:] = False
            self.kept[self.active] = True
        else:
            self.active = np.arange(self.num_blocks, dtype=np.int64)
            self.kept[:] = True
        self.current = phase.index
        self._pending_records[f"phase{phase.index:02d}_{phase.kind}"] = self.block_table(phase.name)

    def _close_window(self) -> None:
        seen = self.win_count > 0
        if self.options.score == "mean":
            self.score[seen] = self.win_sum[seen] / self.win_count[seen]
        else:
            self.score[seen] = self.last_loss[seen]

    # -- the Sampler contract --------------------------------------------------------------
    def batch_ids(self, step: int) -> Batch:
        phase = self._phase_at(step)
        if phase.index != self.current:
            self._enter(phase)
        start = (step - phase.start_step) * self.batch_blocks
        return Batch(self._draws(phase.index, self.active, start, start + self.batch_blocks))

    def observe(self, step: int, ids: np.ndarray, losses: np.ndarray) -> None:
        np.add.at(self.visits, ids, 1)  # an id can repeat within a step at an epoch boundary
        self.last_loss[ids] = losses
        self.last_step[ids] = step
        phase = self.plan[self.current]
        if phase.records or self.options.rescore:
            np.add.at(self.win_sum, ids, losses)
            np.add.at(self.win_count, ids, 1)
        if step == self.num_steps() - 1:
            self._close_window()
            self._pending_records["final"] = self.block_table("final")

    def phase(self, step: int) -> str:
        return self._phase_at(step).name

    def kept_fraction(self) -> float:
        return len(self.active) / self.num_blocks

    def records(self) -> dict[str, Any]:
        out, self._pending_records = self._pending_records, {}
        return out

    def block_table(self, phase: str) -> pd.DataFrame:
        return pd.DataFrame({
            "block_id": np.arange(self.num_blocks), "phase": phase, "visits": self.visits,
            "score": self.score, "last_loss": self.last_loss, "last_step": self.last_step,
            "kept": self.kept,
        })

    def state_dict(self) -> dict[str, Any]:
        arrays = ("score", "last_loss", "visits", "last_step", "win_sum", "win_count", "kept", "active")
        return {"current": self.current, **{k: getattr(self, k).copy() for k in arrays}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value.copy() if isinstance(value, np.ndarray) else value)


class LFRRandomDropSampler(LFRSampler):
    """Control: the same schedule and drop fractions, dropped blocks chosen at random."""

    drop_rule = "random"


class LFRReverseSampler(LFRSampler):
    """Control: drop the highest-scoring (hardest) blocks instead of the easiest."""

    drop_rule = "highest"
