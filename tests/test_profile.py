"""The profiling pass (lfr/profile.py): snapshots, sampled blocks, per-block losses."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import GPT2LMHeadModel

from lfr.config import ProfileConfig
from lfr.data import BlockStore
from lfr.model import block_losses
from lfr.profile import profile_run, sampled_block_ids


def test_sample_is_fixed_by_seed_and_capped():
    a, b = sampled_block_ids(1000, 100, 0), sampled_block_ids(1000, 100, 0)
    assert np.array_equal(a, b) and len(np.unique(a)) == 100 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, sampled_block_ids(1000, 100, 1))
    assert np.array_equal(sampled_block_ids(50, 100, 0), np.arange(50))  # all blocks when fewer


def test_snapshots_cover_init_intervals_phase_boundaries_and_the_end(profiled):
    _, out, _, summary, _ = profiled
    index = json.loads((out / "run/snapshots/index.json").read_text())
    steps = [s["step"] for s in index]
    tokens_per_step = summary["tokens"] // summary["steps"]
    metrics = pd.read_parquet(out / "run/metrics.parquet")
    assert steps[0] == 0 and steps[-1] == summary["steps"] and steps == sorted(set(steps))
    assert index[0]["phase"] == "init" and index[-1]["phase"] == metrics.phase.iloc[-1]
    every = [math.ceil(k * 20_000 / tokens_per_step) for k in range(1, summary["tokens"] // 20_000 + 1)]
    assert set(every) <= set(steps)
    phases = [s["phase"] for s in index[1:]]
    assert {"0:learn", "1:focus", "2:review", "3:focus"} <= set(phases)
    assert all((out / "run/snapshots" / s["file"]).is_file() for s in index)


def test_profile_losses_match_the_final_model_and_count_their_tokens(profiled):
    root, out, _, summary, profile = profiled
    table = pd.read_parquet(out / "prof/losses.parquet")
    last = table[table.checkpoint_step == summary["steps"]].sort_values("block_id")
    model = GPT2LMHeadModel.from_pretrained(out / "run/model").eval()
    store = BlockStore.open(root / "data", "train")
    ids = last.block_id.to_numpy()
    with torch.no_grad():
        want = block_losses(model, *(torch.from_numpy(a) for a in store.batch(ids))).numpy()
    np.testing.assert_allclose(last.loss.to_numpy(), want, atol=1e-5)
    first = table[table.checkpoint_step == 0].loss
    assert abs(first.mean() - math.log(512)) < 0.3  # an untrained model is near uniform
    assert profile["profile_tokens"] == profile["snapshots"] * 48 * store.block_size
    assert profile["train_tokens"] == summary["tokens"]  # counted apart, never added
    assert len(table) == profile["snapshots"] * 48 and table.domain.notna().all()


@pytest.mark.parametrize("size", ["nano", "llama-nano"])
def test_the_chunked_pass_gives_todays_per_block_losses(prepared, size):
    """The profiling pass takes the logits a few blocks at a time (lfr.model.chunked_block_losses,
    without HF's key/value cache); each block's loss is the whole batch's (rtol 1e-5), also when
    the chunks do not divide the batch. A freshly initialised model of each architecture."""
    from lfr.config import MODEL_PRESETS
    from lfr.model import build_model, model_config
    from lfr.profile import LOGIT_CHUNK_TOKENS, profile_losses
    from lfr.tokenizer import tokenizer_meta

    _, root = prepared
    store, meta = BlockStore.open(root / "data", "train"), tokenizer_meta(root / "tokenizer")
    torch.manual_seed(0)
    shape = model_config(MODEL_PRESETS[size], meta["vocab_size"], store.block_size, meta["eot_id"])
    model = build_model(shape)
    ids, cpu = np.arange(40), torch.device("cpu")
    today = profile_losses(model, store, ids, 16, cpu, chunk_tokens=None)  # the whole batch's logits
    for chunk in (3 * store.block_size, LOGIT_CHUNK_TOKENS, 1):  # 3 blocks; all 16; one block
        np.testing.assert_allclose(profile_losses(model, store, ids, 16, cpu, chunk_tokens=chunk), today,
                                   rtol=1e-5)
    assert model.training  # the pass restores the mode


def test_profiling_a_run_without_snapshots_says_how_to_fix_it(trained, tmp_path):
    _, root, run_dir, _ = trained
    with pytest.raises(ValueError, match="profile:"):
        profile_run(run_dir, root / "data", ProfileConfig(), tmp_path / "l.parquet", tmp_path / "s.json")
    assert not (tmp_path / "l.parquet").exists()
