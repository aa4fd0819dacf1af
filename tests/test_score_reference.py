"""Stage `score-reference` (lfr/score_reference.py): the reference model, its scores and compute."""

from __future__ import annotations

import json

import numpy as np

from lfr.config import config_hash
from lfr.sampling import BlockScores


def test_score_reference_writes_scores_and_its_compute(reference, prepared):
    from lfr.data import BlockStore
    from lfr.sampling.ppl_prune import reference_shard

    _cfg, out, info = reference
    _, root = prepared
    store = BlockStore.open(root / "data", "train")
    scores = BlockScores.read(out / "block_scores.parquet")
    shard = reference_shard(store.num_blocks, 0.2, 0)
    assert np.flatnonzero(scores.reference).tolist() == shard.tolist()
    assert np.isnan(scores.score[shard]).all() and np.isfinite(scores.score[~scores.reference]).all()
    assert info["reference_size"] == "nano" and info["reference_blocks"] == len(shard)
    assert info["scoring_tokens"] == (store.num_blocks - len(shard)) * store.block_size
    assert info["reference_train_tokens"] == (len(shard) // 8) * 8 * store.block_size
    assert (out / "reference/model/config.json").is_file()
    assert info["settings"]["method"] == "ppl-prune-reference"  # the shard sampler's options:
    assert info["settings"]["method_options"] == {"reference_fraction": 0.2, "reference_epochs": 1}
    assert info["config_hash"] == config_hash(info["settings"])
    assert json.loads((out / "reference/run.json").read_text())["settings"] == info["settings"]
