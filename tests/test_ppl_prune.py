"""`ppl-prune` (lfr/sampling/ppl_prune.py): the kept band of reference scores, sampled uniformly."""

from __future__ import annotations

import numpy as np
import pytest
from test_sampling import make

from lfr.sampling import BlockScores
from lfr.sampling.ppl_prune import band_ids


def hand_scores():
    """20 blocks, 0 and 1 in the reference shard; block i scores 20 - i (higher id = lower ppl)."""
    score = (20 - np.arange(20)).astype(np.float32)
    reference = np.isin(np.arange(20), [0, 1])
    score[reference] = np.nan
    return BlockScores(score, reference, reference_train_tokens=640, scoring_tokens=18 * 16,
                       reference_flops_per_token=1234.0)


@pytest.mark.parametrize(("band", "expected"), [
    ("low", range(11, 20)),   # the 9 lowest scores of the 18-block pool: ids 19..11
    ("middle", range(7, 16)),  # ranks 4..12 of 18 (ascending score: ids 19, 18, ..., 2)
    ("high", range(2, 11)),   # the 9 highest: ids 10..2 (the shard's 0 and 1 never count)
])
def test_ppl_prune_keeps_the_exact_band_and_samples_it_uniformly(band, expected):
    s = make("ppl-prune", 20, 3, epochs=9, block_scores=hand_scores(), keep=0.5, band=band)
    assert s.kept.tolist() == list(expected)
    assert s.num_steps() == make("random", 20, 3, epochs=9).num_steps() == 60  # equal tokens
    draws = np.concatenate([s.batch_ids(step).ids for step in range(s.num_steps())])
    assert set(draws) == set(expected)
    counts = np.bincount(draws, minlength=20)[list(expected)]
    assert counts.tolist() == [20] * 9  # 180 draws = 20 full passes over the 9 kept blocks
    from lfr.train import reference_charges

    # the run is charged the reference's training and scoring, at the reference's FLOPs a token
    assert reference_charges(s.run.block_scores) == {"reference_train_tokens": 640,
                                                     "reference_scoring_tokens": 18 * 16,
                                                     "reference_flops_per_token": 1234.0}


def test_ppl_prune_band_ties_break_by_id():
    score = np.array([1, 1, 1, 1, 2, 2], dtype=np.float32)
    assert band_ids(score, np.arange(6), 0.5, "low").tolist() == [0, 1, 2]
    assert band_ids(score, np.arange(6), 0.5, "high").tolist() == [3, 4, 5]
    assert band_ids(score, np.arange(6), 1 / 3, "middle").tolist() == [2, 3]


def test_ppl_prune_without_scores_says_how_to_get_them():
    from lfr.sampling import RunFacts, build_sampler

    with pytest.raises(ValueError, match="score_reference"):
        build_sampler("ppl-prune", RunFacts(20, 2, 16, 0, 1.0), {})


def test_block_scores_carry_the_reference_models_flops_per_token(tmp_path):
    """reference.json's `flops_per_token` (the reference model's) reads back; an older file without it: 0."""
    scores = hand_scores()
    scores.write(tmp_path / "block_scores.parquet", {"reference_train_tokens": 640, "scoring_tokens": 288,
                                                     "flops_per_token": 1234.0})
    back = BlockScores.read(tmp_path / "block_scores.parquet")
    assert back.reference_train_tokens == 640 and back.scoring_tokens == 288
    assert back.reference_flops_per_token == 1234
    (tmp_path / "reference.json").write_text('{"reference_train_tokens": 640, "scoring_tokens": 288}')
    assert BlockScores.read(tmp_path / "block_scores.parquet").reference_flops_per_token == 0
