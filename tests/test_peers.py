"""Peer data-selection methods (InfoBatch, perplexity pruning, loss-proportional sampling, Leitner
spaced repetition): their selection rules on synthetic losses, exact resume, equal tokens through
the real training loop, the reference-scoring stage, compute accounting and config errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, run_train, tiny_config
from test_lfr import drive
from test_sampling import make

from lfr.config import ConfigError, config_hash, load_config, validate_config
from lfr.sampling import BlockScores
from lfr.sampling.ppl_prune import band_ids

PEERS = ["infobatch", "ppl-prune", "loss-prop", "leitner"]


def fixed_losses(num_blocks, seed=0):
    return np.random.default_rng([seed, 5]).uniform(1, 5, num_blocks).astype(np.float32)


# -- InfoBatch -------------------------------------------------------------------------------------
def test_infobatch_expected_gradient_weight_is_one():
    """Over 20 seeds x 200 epochs, E[included x weight] of each below-mean block is 1 (within
    0.08: 4000 draws of 0 or 2 have a std of 0.016 per block), and exactly n_low per epoch;
    above-mean blocks are in every epoch with weight 1."""
    N, loss = 101, fixed_losses(101)
    low = loss < loss.mean()
    total = np.zeros(N)
    for seed in range(20):
        s = make("infobatch", N, 10, seed=seed)
        s.score[:] = loss
        for epoch in range(200):
            order, weight, pruned = s.epoch_set(epoch, anneal=False)
            assert len(np.unique(order)) == len(order) == N - len(pruned)
            contrib = np.zeros(N)
            contrib[order] = weight
            assert np.all(contrib[~low] == 1.0)  # above-mean: always kept, weight 1
            assert set(pruned) <= set(np.flatnonzero(low))
            assert len(pruned) == low.sum() - round(0.5 * low.sum())
            assert contrib[low].sum() == pytest.approx(low.sum(), rel=1e-6)  # unbiased each epoch
            total += contrib
    mean = total / 4000
    assert np.abs(mean[low] - 1).max() < 0.08, np.abs(mean[low] - 1).max()
    assert np.all(mean[~low] == 1)


def test_infobatch_prunes_then_anneals_at_equal_tokens():
    N, B = 100, 10
    loss = fixed_losses(N)
    s = make("infobatch", N, B, epochs=8, delta=0.5)
    assert s.num_steps() == make("random", N, B, epochs=8).num_steps() == 80
    starts, weights, served = [], [], []
    for step in range(s.num_steps()):
        ids = s.batch_ids(step)
        w = s.loss_weights(ids)
        weights.append(w)
        served.append(ids)
        starts.append(s.epoch_start)
        s.observe(step, ids, loss[ids] + 0.01 * step)
        if s.phase(step) == "anneal":
            assert np.all(w == 1.0), step  # no pruning and no reweighting in the tail
    assert s.phase(39) == "prune" and s.phase(40) == "anneal"
    prune_w = np.concatenate(weights[:40])
    assert prune_w.max() == pytest.approx(len(np.flatnonzero(loss < loss.mean())) /
                                          round(0.5 * np.sum(loss < loss.mean())))
    # epoch 0 is full (nothing scored yet); later pruned epochs are shorter, so more than the 4
    # epochs of random fit into the first 400 draws
    assert sorted(np.concatenate(served[:10]).tolist()) == list(range(N))
    assert len(set(starts[:40])) > 4
    # the anneal starts a fresh epoch at step 40; each is a full permutation of all blocks
    assert starts[40] == 400
    tail = np.concatenate(served[40:])
    for k in range(4):
        assert sorted(tail[k * N : (k + 1) * N].tolist()) == list(range(N))


def test_infobatch_never_prunes_unseen_blocks():
    s = make("infobatch", 50, 10)
    s.score[:25] = np.linspace(1, 3, 25)  # half scored
    for epoch in range(50):
        order, _w, pruned = s.epoch_set(epoch, anneal=False)
        assert pruned.size and pruned.max() < 25 and set(range(25, 50)) <= set(order)


# -- ppl-prune -------------------------------------------------------------------------------------
def hand_scores():
    """20 blocks, 0 and 1 in the reference shard; block i scores 20 - i (higher id = lower ppl)."""
    score = (20 - np.arange(20)).astype(np.float32)
    reference = np.isin(np.arange(20), [0, 1])
    score[reference] = np.nan
    return BlockScores(score, reference, reference_train_tokens=640, scoring_tokens=18 * 16)


@pytest.mark.parametrize(("band", "expected"), [
    ("low", range(11, 20)),   # the 9 lowest scores of the 18-block pool: ids 19..11
    ("middle", range(7, 16)),  # ranks 4..12 of 18 (ascending score: ids 19, 18, ..., 2)
    ("high", range(2, 11)),   # the 9 highest: ids 10..2 (the shard's 0 and 1 never count)
])
def test_ppl_prune_keeps_the_exact_band_and_samples_it_uniformly(band, expected):
    s = make("ppl-prune", 20, 3, epochs=9, block_scores=hand_scores(), keep=0.5, band=band)
    assert s.kept.tolist() == list(expected)
    assert s.num_steps() == make("random", 20, 3, epochs=9).num_steps() == 60  # equal tokens
    draws = np.concatenate([s.batch_ids(step) for step in range(s.num_steps())])
    assert set(draws) == set(expected)
    counts = np.bincount(draws, minlength=20)[list(expected)]
    assert counts.tolist() == [20] * 9  # 180 draws = 20 full passes over the 9 kept blocks
    assert s.forward_only_tokens == 18 * 16 and s.reference_train_tokens == 640


def test_ppl_prune_band_ties_break_by_id():
    score = np.array([1, 1, 1, 1, 2, 2], dtype=np.float32)
    assert band_ids(score, np.arange(6), 0.5, "low").tolist() == [0, 1, 2]
    assert band_ids(score, np.arange(6), 0.5, "high").tolist() == [3, 4, 5]
    assert band_ids(score, np.arange(6), 1 / 3, "middle").tolist() == [2, 3]


def test_ppl_prune_without_scores_says_how_to_get_them():
    from lfr.sampling import RunFacts, build_sampler

    with pytest.raises(ValueError, match="score_reference"):
        build_sampler("ppl-prune", RunFacts(20, 2, 16, 0, 1.0), {})


# -- loss-prop -------------------------------------------------------------------------------------
def test_loss_prop_frequencies_and_weights_follow_the_formula():
    from scipy import stats

    N, B = 20, 100
    loss = np.linspace(1, 5, N).astype(np.float32)
    s = make("loss-prop", N, B, epochs=10_000, alpha=1.0, beta0=0.4, eps=0.01)
    s.loss[:] = loss
    p = (loss.astype(np.float64) + 0.01) / (loss.astype(np.float64) + 0.01).sum()
    np.testing.assert_allclose(s.probabilities(), p, rtol=1e-6)
    counts = np.zeros(N)
    for step in range(2000):  # 200k draws; losses held fixed (no observe)
        ids = s.batch_ids(step)
        counts += np.bincount(ids, minlength=N)
        w = s.loss_weights(ids)
        beta = 0.4 + 0.6 * step / (s.num_steps() - 1)
        np.testing.assert_allclose(w, (N * p[ids]) ** -beta / (N * p.min()) ** -beta, rtol=1e-5)
    rel = np.abs(counts / counts.sum() - p) / p
    assert rel.max() < 0.05, rel.max()
    assert stats.chisquare(counts, counts.sum() * p).pvalue > 1e-3
    assert s.beta(0) == pytest.approx(0.4) and s.beta(s.num_steps() - 1) == pytest.approx(1.0)
    assert s.num_steps() == make("random", N, B, epochs=10_000).num_steps()


def test_loss_prop_unseen_blocks_get_the_largest_priority():
    s = make("loss-prop", 10, 2, alpha=2.0)
    np.testing.assert_allclose(s.probabilities(), 0.1)  # nothing seen: uniform
    s.loss[:4] = [1, 2, 3, 4]
    prio = (np.array([1, 2, 3, 4]) + 0.01) ** 2
    p = s.probabilities()
    np.testing.assert_allclose(p[:4] / p[4:].max(), prio / prio.max())
    assert np.all(p[4:] == p[3])


# -- leitner ---------------------------------------------------------------------------------------
def test_leitner_box_transitions_on_a_hand_made_sequence():
    """N=4, B=2, boxes reviewed every 1, 2, 4 steps; the threshold is the step's mean loss
    (ema_decay=0). New blocks come in the seeded order new_order = [a, b, c, d]."""
    s = make("leitner", 4, 2, epochs=100, unit="steps", intervals=[1, 2, 4], ema_decay=0.0)
    a, b, c, d = s.new_order.tolist()
    box = lambda *ids: [int(s.box[i]) for i in ids]  # noqa: E731

    def step(n, expected_ids, losses):
        ids = s.batch_ids(n)
        assert ids.tolist() == expected_ids, n
        s.observe(n, ids, np.array(losses, dtype=np.float32))

    step(0, [a, b], [1.0, 3.0])  # new; mean 2: a is below -> box 1 (due 2), b box 0 (due 1)
    assert box(a, b) == [1, 0] and s.due[[a, b]].tolist() == [2, 1]
    step(1, [b, c], [2.0, 4.0])  # b due; c new. mean 3: b (2 < its 3, below 3) -> box 1 (due 3)
    assert box(b, c) == [1, 0] and s.due[[b, c]].tolist() == [3, 2]
    step(2, [a, c], [0.5, 5.0])  # a and c due (a first by rank or due). a below mean 2.75 -> box 2;
    # c: 5.0 > its previous 4.0: forgotten -> box 0 (it was already there), due 3
    assert box(a, c) == [2, 0] and s.due[[a, c]].tolist() == [6, 3]
    step(3, [b, c], [2.5, 1.0])  # b: 2.5 > its 2.0: forgotten -> box 0; c: 1.0 < mean 1.75 -> box 1
    assert box(b, c) == [0, 1] and s.due[[b, c]].tolist() == [4, 5]
    step(4, [b, d], [2.0, 2.0])  # b due, d new; mean 2: b not below -> stays box 0; d box 0
    assert box(b, d) == [0, 0]
    step(5, [b, c], [1.0, 1.0])  # b, c, d all due at 5: the 2 lowest ranks; none below mean 1
    assert box(b, c) == [0, 1]


def test_leitner_reviews_due_blocks_on_schedule():
    """Constant losses, promotion off: every block stays in box 0 (interval 3 steps) and is drawn
    exactly every 3 steps; and at every step of a busier run, all due blocks are drawn when they
    fit, else the most overdue ones."""
    s = make("leitner", 6, 2, epochs=10, unit="steps", intervals=[3], promote_below=1e-9)
    seen_at = {i: [] for i in range(6)}
    for n in range(s.num_steps()):
        ids = s.batch_ids(n)
        for i in ids:
            seen_at[int(i)].append(n)
        s.observe(n, ids, np.ones(2, dtype=np.float32))
    for steps in seen_at.values():
        assert np.all(np.diff(steps) == 3) and steps[0] < 3

    s = make("leitner", 50, 4, epochs=6, unit="steps", intervals=[2, 4, 8])
    rng = np.random.default_rng(0)
    for n in range(s.num_steps()):
        due = np.flatnonzero(s.due <= n)
        ids = s.batch_ids(n)
        if len(due) <= 4:
            assert set(due) <= set(ids), n
        else:
            most_overdue = sorted(due, key=lambda i: (s.due[i], s.rank[i]))[:4]
            assert ids.tolist() == most_overdue, n
        s.observe(n, ids, rng.uniform(1, 3, 4).astype(np.float32))
    assert {0, 1, 2} <= set(np.unique(s.box).tolist())  # blocks moved through every box


def test_leitner_fills_with_new_then_least_recently_seen():
    s = make("leitner", 10, 5, epochs=4)  # intervals in epochs: box 0 every 2 steps, box 1 every 4
    first = np.concatenate([s.batch_ids(0)])
    assert first.tolist() == s.new_order[:5].tolist()
    s.observe(0, first, np.full(5, 2.0, np.float32))
    second = s.batch_ids(1)
    assert second.tolist() == s.new_order[5:].tolist()  # new blocks before anything seen
    s.observe(1, second, np.full(5, 2.0, np.float32))
    s.due[:] = 100  # nothing due: the batch is the 5 least recently seen, i.e. step 0's blocks
    assert sorted(s.batch_ids(2).tolist()) == sorted(first.tolist())


# -- every peer ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PEERS)
def test_state_round_trip_gives_the_same_ids(name):
    """Run k steps, restore the state into a fresh sampler: its next ids (and loss weights) equal
    those of the uninterrupted sampler, for cuts in every phase."""
    loss = lambda ids, step: 2 + np.sin(ids * 1.3 + 0.1 * step)  # noqa: E731
    kw = {"delta": 0.6} if name == "infobatch" else {}
    full = make(name, 97, 8, epochs=5, **kw)
    ref_ids, ref_w = [], []
    for step in range(full.num_steps()):
        ids = full.batch_ids(step)
        ref_ids.append(ids)
        ref_w.append(full.loss_weights(ids))
        full.observe(step, ids, loss(ids, step).astype(np.float32))
    for cut in (1, 13, 29, 45, full.num_steps() - 2):
        a = make(name, 97, 8, epochs=5, **kw)
        drive(a, loss, until=cut)
        b = make(name, 97, 8, epochs=5, **kw)
        b.load_state_dict(a.state_dict())
        for step in range(cut, b.num_steps()):
            ids = b.batch_ids(step)
            np.testing.assert_array_equal(ids, ref_ids[step], err_msg=f"{name} cut {cut} step {step}")
            w = b.loss_weights(ids)
            assert (w is None and ref_w[step] is None) or np.array_equal(w, ref_w[step])
            b.observe(step, ids, loss(ids, step).astype(np.float32))


def test_bad_peer_option_names_the_key():
    raw = {"models": ["nano"], "methods": ["infobatch"], "method_options": {"infobatch": {"prune_rate": 0.3}}}
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    assert "infobatch" in str(err.value) and "prune_rate" in str(err.value)
    assert len([ln for ln in str(err.value).splitlines() if ln.startswith("  - ")]) == 1
    raw["method_options"] = {"infobatch": {"prune_ratio": 1.5}}
    with pytest.raises(ConfigError, match="prune_ratio"):
        validate_config(raw)
    raw = {"models": ["nano"], "methods": ["ppl-prune"],
           "method_options": {"ppl-prune": {"reference_size": "gpt7"}}}
    with pytest.raises(ConfigError, match="reference_size: 'gpt7' is unknown"):
        validate_config(raw)


def test_peers_config_is_valid_and_plans_references(tmp_path):
    from test_workflow import snakemake

    cfg = load_config(REPO / "config/peers.yaml")
    assert set(PEERS) <= set(cfg.methods)
    r = snakemake("results/peers/tables/main.csv", "-n", "--configfile", str(REPO / "config/peers.yaml"),
                  cwd=tmp_path, check=True)
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", r.stdout, flags=re.M))
    n_runs = len(cfg.runs())
    assert counts["train"] == counts["evaluate"] == str(n_runs)
    assert counts["score_reference"] == str(len(cfg.size_seeds.get("nano", cfg.seeds)))
    assert "results/scores/ppl-prune/nano/seed0/block_scores.parquet" in r.stdout


# -- through the real loop -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(prepared, tmp_path_factory):
    from lfr.score_reference import score_reference

    cfg, root = prepared
    cfg = tiny_config(method_options={"ppl-prune": {"reference_fraction": 0.2, "reference_epochs": 1}})
    out = tmp_path_factory.mktemp("scores")
    info = score_reference(cfg, "ppl-prune", 0, root / "data", root / "tokenizer", out)
    return cfg, out, info


def test_score_reference_writes_scores_and_its_compute(reference, prepared):
    from lfr.data import BlockStore
    from lfr.sampling import BlockScores
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


def random_tokens(cfg, root):
    """Optimizer-step tokens of a `random` run of this config (what every peer must match)."""
    from lfr.data import BlockStore

    store = BlockStore.open(root / "data", "train")
    steps = make("random", store.num_blocks, cfg.train.batch_size, epochs=cfg.train.epochs).num_steps()
    return steps * cfg.train.batch_size * store.block_size


@pytest.mark.parametrize("name", ["ppl-prune", "loss-prop", "leitner"])
def test_peer_trains_through_the_loop_at_equal_tokens(name, trained, reference, tmp_path):
    _cfg, root, random_dir, _ = trained
    _, scores_dir, info = reference
    cfg = tiny_config(train={"epochs": 0.5, "eval_every": 1000},
                      method_options={"ppl-prune": {"reference_fraction": 0.2, "reference_epochs": 1}})
    scores = scores_dir / "block_scores.parquet" if name == "ppl-prune" else None
    summary = run_train(cfg, name, root, tmp_path, block_scores=scores)
    assert summary["tokens"] == random_tokens(cfg, root) > 0
    assert np.isfinite(summary["val_loss"])
    metrics = pd.read_parquet(tmp_path / "metrics.parquet")
    assert np.isfinite(metrics.train_loss.dropna()).all()
    run = json.loads((tmp_path / "run.json").read_text())
    if name == "ppl-prune":
        assert run["reference_train_tokens"] == info["reference_train_tokens"] > 0
        assert run["forward_only_tokens"] == info["scoring_tokens"] > 0
        from lfr.report.summarize import summarize

        main = summarize([random_dir, tmp_path], tmp_path / "main.csv").set_index("method")
        assert main.loc["ppl-prune"].compute_tokens == pytest.approx(
            run["tokens"] + run["reference_train_tokens"] + run["forward_only_tokens"] / 3)
        assert main.loc["random"].compute_tokens == main.loc["random"].tokens
    else:
        assert run["reference_train_tokens"] == run["forward_only_tokens"] == 0


def test_infobatch_prunes_and_anneals_through_the_loop_at_equal_tokens(prepared, tmp_path):
    """1.2 epochs with delta 0.95: a full first epoch, pruned (weighted) draws, then the anneal;
    the run matches random's token count. (Exact resume is the sampler round-trip above plus the
    loop's own resume test in test_train.py.)"""
    _, root = prepared
    cfg = tiny_config(train={"epochs": 1.2, "eval_every": 1000},
                      method_options={"infobatch": {"delta": 0.95}})
    summary = run_train(cfg, "infobatch", root, tmp_path)
    assert summary["tokens"] == random_tokens(cfg, root) and np.isfinite(summary["val_loss"])
    metrics = pd.read_parquet(tmp_path / "metrics.parquet")
    assert set(metrics.phase) == {"prune", "anneal"}
    assert np.isfinite(metrics.train_loss.dropna()).all()
