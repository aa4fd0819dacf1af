"""Candidate scoring: the loop's no-grad pass over the blocks a sampler proposes before it picks
a step's batch, charged as forward-only tokens."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_train

import lfr.distributed
from lfr.sampling.base import Batch, RunFacts, Sampler, SamplerOptions, epoch_draws, epoch_permutation
from lfr.train import Job, Method, train_run

pytestmark = pytest.mark.slow  # each test trains through the loop with candidate scoring


class ScoresItsBatch(Sampler):
    """Proposes step s's batch in rounds of `rounds` sizes (the last round what is left), trains on
    it, and records the candidates' and the training pass's losses."""

    rounds: ClassVar[tuple[int, ...]] = ()

    def __init__(self, run: RunFacts, options: SamplerOptions) -> None:
        super().__init__(run, options)
        self.scored: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.trained: dict[int, np.ndarray] = {}

    def num_steps(self) -> int:
        return self.num_blocks // self.batch_blocks

    def ids(self, step: int) -> np.ndarray:
        start = step * self.batch_blocks
        return epoch_draws(np.arange(self.num_blocks), start, start + self.batch_blocks,
                           lambda e: epoch_permutation(self.num_blocks, self.seed, e))

    def candidate_ids(self, step: int) -> np.ndarray | None:
        done = sum(len(ids) for ids, _ in self.scored.get(step, []))
        if done == self.batch_blocks:
            return None
        size = self.rounds[len(self.scored.get(step, []))] if self.rounds else self.batch_blocks
        return self.ids(step)[done : done + size]

    def observe_candidates(self, step: int, ids: np.ndarray, losses: np.ndarray) -> None:
        self.scored.setdefault(step, []).append((ids, losses))

    def batch_ids(self, step: int) -> Batch:
        return Batch(np.concatenate([ids for ids, _ in self.scored[step]]))

    def observe(self, step: int, ids: np.ndarray, losses: np.ndarray) -> None:
        self.trained[step] = losses


class InRounds(ScoresItsBatch):
    rounds = (3, 5)  # sizes the ranks and the scoring batches (8) do not divide


@pytest.mark.parametrize("kind", [ScoresItsBatch, InRounds])
def test_candidates_are_scored_by_the_model_the_step_trains_and_their_tokens_are_charged(
        prepared, tmp_path, kind):
    """Scoring step s's batch just before training on it gives the training forward's losses (the
    same weights, no dropout); every scored block is charged once, at the block size."""
    cfg, root = prepared
    half = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 0.5})})
    samplers: list[ScoresItsBatch] = []

    def build(facts: RunFacts, ids: np.ndarray | None) -> Sampler:
        samplers.append(kind(facts, SamplerOptions()))
        return samplers[-1]

    before = lfr.distributed.host_syncs
    summary = train_run(half, Job("nano", 0, root / "data", root / "tokenizer", tmp_path),
                    Method("scores-its-batch", {}, build))
    syncs, sampler, steps = lfr.distributed.host_syncs - before, samplers[0], summary["steps"]
    assert steps > 5 and sorted(sampler.trained) == list(range(steps))
    for step in range(steps):
        ids, losses = (np.concatenate(parts) for parts in zip(*sampler.scored[step], strict=True))
        assert np.array_equal(ids, sampler.ids(step))
        np.testing.assert_allclose(losses, sampler.trained[step], rtol=1e-5)
        assert len(sampler.scored[step]) == max(1, len(kind.rounds))
    scored = steps * sampler.batch_blocks * summary["block_size"]
    assert summary["candidate_tokens"] == summary["forward_only_tokens"] == scored == summary["tokens"]
    assert syncs == steps * (1 + max(1, len(kind.rounds)))  # each round, then the step's losses


def test_a_run_without_candidates_charges_no_scoring(trained):
    summary = trained[3]
    assert summary["candidate_tokens"] == summary["forward_only_tokens"] == 0


SCORED = ["rho-loss", "selective-backprop"]


def scores_of(method, reference):
    """rho-loss's irreducible losses: the conftest reference model's block scores."""
    return reference[1] / "block_scores.parquet" if method == "rho-loss" else None


@pytest.mark.parametrize("method", SCORED)
def test_candidate_scoring_methods_resume_to_the_same_run(prepared, reference, tmp_path, method):
    """Stopped mid-run, the sampler's state and the charged candidates resume with the checkpoint,
    and the candidates are scored again by the restored model: the same run, bit for bit."""
    from safetensors.torch import load_file

    from lfr.train import TrainingInterrupted

    cfg, root = prepared
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 0.5}),
                                 "method_options": {"selective-backprop": {"history": 64},
                                                    "rho-loss": {"pool_factor": 4}}})
    scores = scores_of(method, reference)
    whole = run_train(cfg, method, root, tmp_path / "a", block_scores=scores)
    with pytest.raises(TrainingInterrupted):
        run_train(cfg, method, root, tmp_path / "b", block_scores=scores, resume_dir=tmp_path / "resume",
                  stop_at_step=whole["steps"] // 2 + 1)
    resumed = run_train(cfg, method, root, tmp_path / "b", block_scores=scores,
                        resume_dir=tmp_path / "resume")
    for key in ("sampler_state_sha256", "candidate_tokens", "forward_only_tokens", "val_loss", "tokens"):
        assert resumed[key] == whole[key], key
    cols = ["step", "tokens", "train_loss", "val_loss", "lr", "kept_fraction"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a/metrics.parquet")[cols],
                                  pd.read_parquet(tmp_path / "b/metrics.parquet")[cols])
    a, b = (load_file(tmp_path / f"{run}/model/model.safetensors") for run in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    batch, T = whole["batch_blocks"], whole["block_size"]
    assert whole["candidate_tokens"] % (batch * T) == 0 and whole["tokens"] == whole["steps"] * batch * T
    if method == "rho-loss":  # 4 x the batch a step, plus the reference's pass over the pool
        from lfr.report.summarize import compute_flops, compute_tokens

        assert whole["candidate_tokens"] == 4 * whole["tokens"]
        assert whole["forward_only_tokens"] == whole["candidate_tokens"] + reference[2]["scoring_tokens"]
        ref, f = whole["reference_train_tokens"], whole["flops_per_token"]
        f_ref = whole["reference_flops_per_token"]
        assert ref > 0 and f_ref > 0
        assert compute_tokens(whole) == pytest.approx(whole["tokens"] + ref
                                                      + whole["forward_only_tokens"] / 3)
        assert compute_flops(whole) == pytest.approx(  # the candidates at this model's forward cost
            f * (whole["tokens"] + whole["candidate_tokens"] / 3)
            + f_ref * (ref + reference[2]["scoring_tokens"] / 3))
    else:  # p^1 keeps half of stationary losses: 2 batches scored per batch; a falling loss ranks
        # low in a window of the last 8 steps' losses, so a few more
        assert 2.0 < whole["candidate_tokens"] / whole["tokens"] < 3.0, whole["candidate_tokens"]
        assert whole["forward_only_tokens"] == whole["candidate_tokens"]
