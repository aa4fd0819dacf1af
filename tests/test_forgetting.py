"""The forgetting stage (lfr/report/forgetting.py): the classifier on hand-made trajectories, and
its tables on a profiled tiny run."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from lfr.report.forgetting import (
    CLASSES,
    analyze,
    class_fractions,
    classify,
    classify_run,
    domain_rows,
    forgetting_events,
    half_drop_tokens,
    noise_threshold,
)

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


# A hand-made profile (threshold 0.5): bible learns at once, python late, jargon never.
TRAJECTORIES = {  # block id -> (domain, losses at tokens 0, 100, 200, 300, 400)
    0: ("bible", [6, 3, 4, 3, 4]),  # two events: multiple descent
    1: ("bible", [6, 3, 3, 3, 3]),  # learned
    2: ("bible", [6, 3.2, 3, 3, 3]),  # learned
    3: ("python", [6, 6, 5.5, 3, 4]),  # falls at 300 (5.5 is no fall), one event
    4: ("python", [6, 5.8, 5, 4, 5]),  # one event
    5: ("python", [6, 6, 6, 6, 5.9]),  # unlearned
    6: ("jargon", [5, 5.2, 5.4, 5.6, 5.8]),  # unlearned, rising
}


def hand_profile() -> pd.DataFrame:
    """The profile's long format, its rows shuffled (the analysis must not rely on their order)."""
    rows = [{"block_id": b, "checkpoint_tokens": 100 * k, "loss": float(loss), "domain": domain}
            for b, (domain, losses) in TRAJECTORIES.items() for k, loss in enumerate(losses)]
    return pd.DataFrame(rows).sample(frac=1, random_state=0).reset_index(drop=True)


def test_forgetting_fractions_of_a_hand_made_profile():
    blocks, threshold = classify_run(hand_profile(), threshold_nats=0.5, threshold_sd=2.0)
    assert threshold == 0.5 and blocks.block_id.tolist() == list(TRAJECTORIES)
    assert blocks.domain.tolist() == [d for d, _ in TRAJECTORIES.values()]
    assert blocks.events.tolist() == [2, 0, 0, 1, 1, 0, 0]
    fractions = class_fractions(blocks["class"].to_numpy(), blocks.events.to_numpy())
    assert fractions == pytest.approx({"learned": 2 / 7, "forgotten": 3 / 7, "unlearned": 2 / 7,
                                       "multiple_descent": 1 / 7, "multiple_descent_of_forgotten": 1 / 3,
                                       "mean_events": 4 / 7})


def test_domain_rows_give_each_domains_fractions_and_which_halved_its_drop_first():
    profile = hand_profile()
    blocks, _ = classify_run(profile, threshold_nats=0.5, threshold_sd=2.0)
    rows = {r.pop("domain"): r for r in domain_rows(profile, blocks)}
    nan = float("nan")
    # Half the drop: bible's mean curve 6, 3.067, 3.333, 3, 3.333 crosses 4.667 at 100 x 1.333 / 2.933
    # tokens; python's 6, 5.933, 5.5, 4.333, 4.967 crosses 5.483 at 200 + 100 x 0.0167 / 1.167.
    want = {
        "bible": {"blocks": 3, "share": 3 / 7, "learned": 2 / 3, "forgotten": 1 / 3, "unlearned": 0,
                  "multiple_descent": 1 / 3, "multiple_descent_of_forgotten": 1.0, "mean_events": 2 / 3,
                  "loss_first": 6, "loss_last": 10 / 3, "half_drop_tokens": 45.4545, "learned_order": 1},
        "python": {"blocks": 3, "share": 3 / 7, "learned": 0, "forgotten": 2 / 3, "unlearned": 1 / 3,
                   "multiple_descent": 0, "multiple_descent_of_forgotten": 0.0, "mean_events": 2 / 3,
                   "loss_first": 6, "loss_last": 14.9 / 3, "half_drop_tokens": 201.4286, "learned_order": 2},
        "jargon": {"blocks": 1, "share": 1 / 7, "learned": 0, "forgotten": 0, "unlearned": 1,
                   "multiple_descent": 0, "multiple_descent_of_forgotten": nan, "mean_events": 0,
                   "loss_first": 5, "loss_last": 5.8, "half_drop_tokens": nan, "learned_order": nan},
    }
    assert set(rows) == set(want)
    for domain, values in want.items():
        assert rows[domain] == pytest.approx(values, rel=1e-5, nan_ok=True), domain


@pytest.mark.slow
def test_analysis_tables(profiled, forgetting_tables):
    _, out, _, _, _ = profiled
    tables, table = forgetting_tables
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


def test_block_table_holds_the_classes_behind_the_forgetting_table(profiled, forgetting_tables):
    """forgetting_blocks.parquet: a row per profiled block, whose classes give forgetting.csv's
    fractions (the examples figure draws from it instead of classifying again)."""
    _, out, _, _, _ = profiled
    tables, table = forgetting_tables
    blocks = pd.read_parquet(tables / "forgetting_blocks.parquet")
    profile = pd.read_parquet(out / "prof/losses.parquet")
    assert list(blocks.columns) == ["run", "size", "method", "seed", "block_id", "domain", "class", "events"]
    assert blocks.block_id.tolist() == sorted(profile.block_id.unique()) and len(blocks) == 48
    assert (blocks.run == table.run.iloc[0]).all() and (blocks.method == "lfr").all()
    assert set(blocks["class"]) <= set(CLASSES)
    assert blocks.domain.notna().all()
    fractions = class_fractions(blocks["class"].to_numpy(), blocks.events.to_numpy())
    for name, value in fractions.items():
        assert table[name].iloc[0] == pytest.approx(value, nan_ok=True), name


def test_without_domains_the_domain_analysis_says_it_was_skipped(profiled, tmp_path):
    root, out, spec, _, _ = profiled
    data = tmp_path / "data"
    data.mkdir()
    blocks = pd.read_parquet(root / "data/train_blocks.parquet")
    blocks.assign(domain=pd.array([None] * len(blocks), dtype="string")).to_parquet(
        data / "train_blocks.parquet")
    analyze([out / "prof"], [out / "run"], data, tmp_path / "f.csv", tmp_path / "d.csv",
            tmp_path / "k.csv", tmp_path / "b.parquet", threshold_nats=spec.threshold_nats,
            threshold_sd=spec.threshold_sd)
    for name in ("d.csv", "k.csv"):
        assert pd.read_csv(tmp_path / name).note.iloc[0] == "skipped: the corpus has no domain field"
    assert len(pd.read_csv(tmp_path / "f.csv")) == 1  # forgetting itself needs no domains


def test_a_fixed_threshold_is_used_as_given(profiled, tmp_path):
    """`threshold_nats` (profile.threshold_nats) replaces the noise-based threshold."""
    root, out, _, _, _ = profiled
    table = analyze([out / "prof"], [out / "run"], root / "data", tmp_path / "f.csv", tmp_path / "d.csv",
                    tmp_path / "k.csv", tmp_path / "b.parquet", threshold_nats=0.25, threshold_sd=2.0)
    assert table.threshold_nats.iloc[0] == 0.25 and table.threshold_source.iloc[0] == "config"
