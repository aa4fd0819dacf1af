"""The peer methods together (InfoBatch, perplexity pruning, loss-proportional sampling, Leitner
spaced repetition, RHO-LOSS, selective backprop): exact resume, equal tokens through the real
training loop, compute accounting, config errors and config/peers.yaml. Each one's selection rule:
tests/test_<method>.py."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, random_tokens, run_train, tiny_config
from test_sampling import make, step_ids

from lfr.config import ConfigError
from lfr.grid import load_config, runs, trained_runs, validate_config
from lfr.sampling import SAMPLERS

PEERS = ["infobatch", "ppl-prune", "loss-prop", "leitner", "rho-loss", "selective-backprop"]


@pytest.mark.parametrize("name", PEERS)
def test_state_round_trip_gives_the_same_ids(name):
    """Run k steps, restore the state into a fresh sampler: its next ids (and loss weights) equal
    those of the uninterrupted sampler, for cuts in every phase."""
    loss = lambda ids, step: 2 + np.sin(ids * 1.3 + 0.1 * step)  # noqa: E731
    kw = {"delta": 0.6} if name == "infobatch" else {}
    full = make(name, 97, 8, epochs=5, **kw)
    ref_ids, ref_w = [], []
    for step in range(full.num_steps()):
        (ids, w), _ = step_ids(full, step, loss)
        ref_ids.append(ids)
        ref_w.append(w)
        full.observe(step, ids, loss(ids, step).astype(np.float32))
    for cut in (1, 13, 29, 45, full.num_steps() - 2):
        a = make(name, 97, 8, epochs=5, **kw)
        for step in range(cut):
            (ids, _), _ = step_ids(a, step, loss)
            a.observe(step, ids, loss(ids, step).astype(np.float32))
        b = make(name, 97, 8, epochs=5, **kw)
        b.load_state_dict(a.state_dict())
        for step in range(cut, b.num_steps()):
            (ids, w), _ = step_ids(b, step, loss)
            np.testing.assert_array_equal(ids, ref_ids[step], err_msg=f"{name} cut {cut} step {step}")
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


@pytest.mark.slow
def test_peers_config_is_valid_and_plans_references(tmp_path):
    from test_workflow import snakemake

    cfg = load_config(REPO / "config/peers.yaml")
    assert set(PEERS) <= set(cfg.methods)
    r = snakemake("results/peers/tables/main.csv", "-n", "--configfile", str(REPO / "config/peers.yaml"),
                  cwd=tmp_path, check=True)
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", r.stdout, flags=re.M))
    assert counts["train"] == str(len(trained_runs(cfg)))  # the demo's budget sweep included
    assert counts["evaluate"] == str(len(runs(cfg)))  # the budget-1 runs
    n_reference = sum(SAMPLERS[m].needs_block_scores for m in cfg.methods)  # ppl-prune, rho-loss
    assert n_reference == 2
    assert counts["score_reference"] == str(n_reference * len(cfg.size_seeds.get("nano", cfg.seeds)))
    for method in ("ppl-prune", "rho-loss"):
        assert f"results/scores/{method}/nano/seed0/block_scores.parquet" in r.stdout


@pytest.mark.slow
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
        assert run["forward_only_tokens"] == run["reference_scoring_tokens"] == info["scoring_tokens"] > 0
        assert run["reference_flops_per_token"] == info["flops_per_token"] > 0  # the reference's
        from lfr.report.summarize import summarize

        main = summarize([random_dir, tmp_path], tmp_path / "main.csv").set_index("method")
        assert main.loc["ppl-prune"].compute_tokens == pytest.approx(
            run["tokens"] + run["reference_train_tokens"] + run["forward_only_tokens"] / 3)
        assert main.loc["random"].compute_tokens == main.loc["random"].tokens
        f, f_ref = run["flops_per_token"], run["reference_flops_per_token"]
        assert main.loc["ppl-prune"].compute_flops == pytest.approx(
            f * run["tokens"] + f_ref * (run["reference_train_tokens"] + run["forward_only_tokens"] / 3))
    else:
        assert run["reference_train_tokens"] == run["forward_only_tokens"] == 0
