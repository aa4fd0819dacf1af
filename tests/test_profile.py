"""The profiling pass, the forgetting classifier (hand-made trajectories) and the domain tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_train
from transformers import GPT2LMHeadModel

from lfr.config import ProfileConfig
from lfr.data import BlockStore
from lfr.model import block_losses
from lfr.profile import profile_run, sample_blocks
from lfr.report.forgetting import (
    analyze,
    classify,
    forgetting_events,
    half_drop_tokens,
    noise_threshold,
)
from lfr.report.profile_figures import FIGURES, plot_profile

CASES = {  # trajectory (threshold 0.5) -> (events, class)
    "learned": ([5.0, 4.0, 3.0, 3.2], 0, "learned"),
    "forgotten once": ([5.0, 3.0, 4.0, 3.8], 1, "forgotten"),
    "multiple descent": ([5.0, 3.0, 4.0, 3.0, 4.0], 2, "forgotten"),
    "unlearned, flat": ([5.0, 4.8, 4.9, 4.7], 0, "unlearned"),
    "unlearned, rising": ([5.0, 5.5, 6.0, 6.5], 0, "unlearned"),
    "rise before any fall is no event": ([5.0, 6.0, 5.8, 3.0], 0, "learned"),
    "rise of exactly d is no event": ([5.0, 3.0, 3.5, 3.5], 0, "learned"),
    "rise just above d is an event": ([5.0, 3.0, 3.5 + 1e-9, 3.5], 1, "forgotten"),
    "fall of exactly d is no fall": ([5.0, 4.5, 4.6, 4.5], 0, "unlearned"),
    "a second event needs a new fall": ([5.0, 3.0, 4.0, 3.7, 4.4], 1, "forgotten"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_classifier_on_hand_made_trajectories(name):
    traj, want_events, want_class = CASES[name]
    losses = np.array([traj + [traj[-1]] * (5 - len(traj))])  # pad to 5 snapshots
    events, fell = forgetting_events(losses, 0.5)
    assert events[0] == want_events
    assert classify(events, fell)[0] == want_class


def test_classifier_is_vectorized_over_blocks():
    trajs = [c[0] + [c[0][-1]] * (5 - len(c[0])) for c in CASES.values()]
    events, fell = forgetting_events(np.array(trajs), 0.5)
    assert events.tolist() == [c[1] for c in CASES.values()]
    assert classify(events, fell).tolist() == [c[2] for c in CASES.values()]


def test_noise_threshold_measures_block_noise_around_the_shared_trend():
    rng = np.random.default_rng(0)
    trend = np.linspace(8.0, 3.0, 12)  # every block learns; only the noise is block-level
    losses = trend + rng.normal(0, 0.1, size=(20_000, 12))
    # adjacent differences of iid noise have sd 0.1 * sqrt(2); 2 SDs of that
    assert noise_threshold(losses, 2.0) == pytest.approx(2 * 0.1 * math.sqrt(2), rel=0.03)
    events, fell = forgetting_events(losses, noise_threshold(losses, 3.0))
    assert (classify(events, fell) == "learned").mean() > 0.99  # noise alone is rarely forgetting


def test_half_drop_tokens_interpolates():
    tokens = np.array([0, 100, 200, 300.0])
    assert half_drop_tokens(tokens, np.array([6.0, 5.0, 3.0, 2.0])) == pytest.approx(150)  # target 4
    assert math.isnan(half_drop_tokens(tokens, np.array([6.0, 6.5, 7.0, 6.2])))  # never fell


def test_sample_is_fixed_by_seed_and_capped():
    a, b = sample_blocks(1000, 100, 0), sample_blocks(1000, 100, 0)
    assert np.array_equal(a, b) and len(np.unique(a)) == 100 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, sample_blocks(1000, 100, 1))
    assert np.array_equal(sample_blocks(50, 100, 0), np.arange(50))  # all blocks when fewer


@pytest.fixture(scope="module")
def profiled(prepared, tmp_path_factory):
    """A tiny LFR run with snapshots, profiled over 48 sampled blocks."""

    cfg, root = prepared
    cfg = cfg.model_copy(update={"method_options": {"lfr": {"preset": "paper-v1", "reps": 1}}})
    out = tmp_path_factory.mktemp("profiled")
    spec = ProfileConfig(every_tokens=20_000, sample_blocks=48, batch_size=16)
    summary = run_train(cfg, "lfr", root, out / "run",
                    run_info={"config_hash": "h", "git_commit": "c"}, snapshots=spec)
    profile = profile_run(out / "run", root / "data", spec, out / "prof/losses.parquet",
                          out / "prof/summary.json", "cpu")
    return root, out, spec, summary, profile


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


def test_analysis_tables_and_figures(profiled, tmp_path):
    root, out, spec, _, _ = profiled
    tables = tmp_path / "tables"
    table = analyze([out / "prof"], [out / "run"], root / "data", spec, tables / "forgetting.csv",
                    tables / "domains.csv", tables / "kept_domains.csv")
    row = table.iloc[0]
    assert row.learned + row.forgotten + row.unlearned == pytest.approx(1.0)
    assert row.blocks == 48 and row.threshold_nats > 0 and row.paper_forgotten == 0.25
    domains = pd.read_csv(tables / "domains.csv")
    assert domains.blocks.sum() == 48 and domains.share.sum() == pytest.approx(1.0)
    kept = pd.read_csv(tables / "kept_domains.csv")
    lfr_phases = json.loads((out / "run/run.json").read_text())
    assert lfr_phases["method"] == "lfr"
    for _, phase in kept.groupby("phase"):  # each focus phase's kept set, split by domain
        assert phase.kept_share.sum() == pytest.approx(1.0)
        focus = pd.read_parquet(next((out / "run/records").glob(f"phase{phase.phase.iloc[0]:02d}_*")))
        assert phase.kept_blocks.sum() == focus.kept.sum()
    for figure in FIGURES:
        plot_profile(figure, [out / "prof"], tables, tmp_path / f"{figure}.png")
        assert (tmp_path / f"{figure}.png").stat().st_size > 5_000
        assert (tmp_path / f"{figure}.pdf").is_file()


def test_without_domains_the_domain_analysis_says_it_was_skipped(profiled, tmp_path):
    root, out, spec, _, _ = profiled
    data = tmp_path / "data"
    data.mkdir()
    blocks = pd.read_parquet(root / "data/train_blocks.parquet")
    blocks.assign(domain=pd.array([None] * len(blocks), dtype="string")).to_parquet(
        data / "train_blocks.parquet")
    analyze([out / "prof"], [out / "run"], data, spec, tmp_path / "f.csv", tmp_path / "d.csv",
            tmp_path / "k.csv")
    for name in ("d.csv", "k.csv"):
        assert pd.read_csv(tmp_path / name).note.iloc[0] == "skipped: the corpus has no domain field"
    assert len(pd.read_csv(tmp_path / "f.csv")) == 1  # forgetting itself needs no domains


def test_profiling_a_run_without_snapshots_says_how_to_fix_it(trained, tmp_path):
    _, root, run_dir, _ = trained
    with pytest.raises(ValueError, match="profile:"):
        profile_run(run_dir, root / "data", ProfileConfig(), tmp_path / "l.parquet", tmp_path / "s.json")
    assert not (tmp_path / "l.parquet").exists()
