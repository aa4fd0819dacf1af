"""The main tables (lfr/report/summarize.py) from hand-built runs: the speed-up definition and
seed aggregation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lfr.report.summarize import loss_at, summarize, tokens_to_reach


def test_tokens_to_reach_interpolates_the_first_crossing():
    tokens = np.array([0, 100, 200, 300, 400.0])
    loss = np.array([6.0, 5.0, 4.0, 4.5, 3.0])
    assert tokens_to_reach(tokens, loss, 4.5) == pytest.approx(150)  # 5.0 -> 4.0 between 100 and 200
    assert tokens_to_reach(tokens, loss, 6.5) == 0  # already there at the first evaluation
    assert math.isnan(tokens_to_reach(tokens, loss, 2.0))  # never reached
    assert loss_at(tokens, loss, 250) == pytest.approx(4.25)
    assert math.isnan(loss_at(tokens, loss, 500))  # never extrapolated


def test_main_table_aggregates_seeds_and_defines_the_speedup(runs, tmp_path):
    evals = tmp_path / "e.parquet"
    pd.DataFrame({"size": ["s"] * 2, "method": ["lfr"] * 2, "seed": [0, 1], "task": "t", "domain": "all",
                  "metric": "acc", "value": [0.4, 0.6], "stderr": [0.05, 0.05]}).to_parquet(evals)
    forgetting = tmp_path / "forgetting.csv"  # written before budgets, like the evaluations: budget 1
    pd.DataFrame({"size": "s", "method": "lfr", "seed": [0, 1], "profile_tokens": 100,
                  "forgotten": [0.1, 0.3], "multiple_descent_of_forgotten": 0.5}
                 ).to_csv(forgetting, index=False)
    main = summarize(runs, tmp_path / "main.csv", [evals], forgetting_csv=forgetting).set_index("method")
    assert main.loc["lfr", "forgotten"] == pytest.approx(0.2) and np.isnan(main.loc["random", "forgotten"])
    assert list(main.index) == ["random", "lfr", "lfr-reverse"]
    assert main.loc["lfr", "n_seeds"] == 2 and main.loc["lfr-reverse", "n_seeds"] == 1
    assert main.loc["lfr", "val_loss"] == 3.5 and main.loc["lfr", "val_loss_std"] == 0
    # lfr's mean curve: 6.0, 4.5, 4.1, 3.8 -> crosses 4.0 between 200 (4.1) and 300 (3.8)
    assert main.loc["lfr", "tokens_to_baseline"] == pytest.approx(200 + 100 * 0.1 / 0.3)
    assert main.loc["lfr", "crossing_speedup"] == pytest.approx(400 / (200 + 100 / 3))
    assert bool(main.loc["lfr", "reached"]) and not bool(main.loc["lfr-reverse", "reached"])
    assert math.isnan(main.loc["lfr-reverse", "crossing_speedup"])
    assert main.loc["random", "crossing_speedup"] == pytest.approx(1.0)
    # run.json files from before budgets and FLOPs: budget 1, and no FLOPs (no flops_per_token);
    # random's frontier is one point (4.0), so lfr (3.5) and lfr-reverse (4.7) get bounds
    assert (main.budget == 1.0).all() and main.iso_speedup_flops.isna().all()
    assert main.loc["random", "iso_speedup"] == 1 and main.loc["random", "iso_speedup_bound"] == ""
    for method, bound in (("lfr", ">"), ("lfr-reverse", "<")):
        assert math.isnan(main.loc[method, "iso_speedup"]) and main.loc[method, "iso_speedup_bound"] == bound
        assert main.loc[method, "iso_speedup_bound_value"] == 1.0
    assert main.loc["lfr", "verdict"] == "better" and main.loc["lfr-reverse", "verdict"] == "not resolved"
    assert main.loc["lfr", "acc:t"] == pytest.approx(0.5)
    assert main.loc["lfr", "acc:t_std"] == pytest.approx(np.std([0.4, 0.6], ddof=1))
    assert main.loc["lfr", "val_loss_at_baseline_tokens"] == 3.5
    by_seed = pd.read_csv(tmp_path / "main_by_seed.csv")
    assert len(by_seed) == 5 and by_seed[by_seed.method == "lfr"]["acc:t"].tolist() == [0.4, 0.6]


def test_val_bpb_is_carried_per_seed_and_averaged_with_its_std(runs, tmp_path):
    """val_bpb comes from each run.json (lfr/train.py measures it); a run written before it
    existed has none (NaN), and the column sits next to the validation loss."""
    import json

    for run_dir, bpb in zip(runs[:4], [1.40, 1.50, 1.20, 1.30], strict=True):
        info = json.loads((run_dir / "run.json").read_text())
        (run_dir / "run.json").write_text(json.dumps({**info, "val_bpb": bpb}))
    main = summarize(runs, tmp_path / "main.csv")
    at = list(main.columns).index("val_loss")
    assert list(main.columns[at:at + 5]) == ["val_loss", "val_loss_std", "val_ppl", "val_bpb", "val_bpb_std"]
    main = main.set_index("method")
    assert main.loc["random", "val_bpb"] == pytest.approx(1.45)
    assert main.loc["lfr", "val_bpb_std"] == pytest.approx(np.std([1.2, 1.3], ddof=1))
    assert math.isnan(main.loc["lfr-reverse", "val_bpb"])
    by_seed = pd.read_csv(tmp_path / "main_by_seed.csv")
    assert by_seed.val_bpb.tolist()[:4] == [1.40, 1.50, 1.20, 1.30]
    at = list(by_seed.columns).index("val_loss")
    assert list(by_seed.columns[at:at + 3]) == ["val_loss", "val_ppl", "val_bpb"]


def test_reference_models_get_their_val_bpb_in_their_rows(runs, tmp_path):
    """gpt2 has evaluations (its row comes from them), org/pythia has only its val_bpb.json."""
    import json

    evals = tmp_path / "e.parquet"
    pd.DataFrame({"size": ["gpt2"], "method": ["reference"], "seed": [-1], "task": "t", "domain": "all",
                  "metric": "acc", "value": [0.7], "stderr": [0.01]}).to_parquet(evals)
    bpb = [tmp_path / "gpt2.json", tmp_path / "pythia.json"]
    bpb[0].write_text(json.dumps({"model": "gpt2", "val_bpb": 1.1}))
    bpb[1].write_text(json.dumps({"model": "org/pythia", "val_bpb": 0.9}))
    main = summarize(runs, tmp_path / "main.csv", [evals], reference_bpb=bpb)
    refs = main[main.method == "reference"].set_index("size")
    assert refs.val_bpb.to_dict() == {"gpt2": 1.1, "org/pythia": 0.9}
    assert refs.loc["gpt2", "acc:t"] == 0.7 and math.isnan(refs.loc["org/pythia", "acc:t"])
    by_seed = pd.read_csv(tmp_path / "main_by_seed.csv")
    assert by_seed[by_seed.method == "reference"].seed.tolist() == [-1, -1] and len(by_seed) == 7


def test_a_size_without_random_keeps_its_baseline_columns_and_says_so(runs, tmp_path, caplog):
    lfr_only = [r for r in runs if "-random-" not in r.name]
    main = summarize(lfr_only, tmp_path / "main.csv")
    assert {"baseline_val_loss", "tokens_to_baseline", "crossing_speedup", "reached", "iso_speedup",
            "verdict"} <= set(main.columns)
    assert main.crossing_speedup.isna().all() and main.iso_speedup.isna().all()
    assert (main.verdict == "").all() and (main.iso_speedup_bound == "").all()
    assert "no 'random' run at size s" in caplog.text


def test_unequal_budgets_divide_by_the_baselines_tokens_and_never_extrapolate(tmp_path):
    """An LFR run that ends at 600 tokens and a baseline that ends at 400: the speed-up is the
    baseline's tokens over LFR's tokens to its final loss; the baseline's loss at LFR's 600 tokens
    is outside its curve (NaN, not extrapolated); at the common 400 both are interpolated."""
    from conftest import fake_run

    t_base, t_lfr = [0, 100, 200, 300, 400], [0, 150, 300, 450, 600]
    runs = [fake_run(tmp_path, "s", "random", 0, t_base, [6.0, 5.0, 4.6, 4.3, 4.0]),
            fake_run(tmp_path, "s", "lfr", 0, t_lfr, [6.0, 5.0, 4.4, 3.9, 3.6]),
            fake_run(tmp_path, "s", "lfr-reverse", 0, t_lfr, [6.0, 5.5, 5.2, 5.0, 4.9])]
    main = summarize(runs, tmp_path / "main.csv").set_index("method")
    lfr = main.loc["lfr"]
    reach = 300 + 150 * (4.4 - 4.0) / (4.4 - 3.9)  # 420 tokens: its curve crosses 4.0 there
    assert lfr.tokens_to_baseline == pytest.approx(reach)
    assert lfr.crossing_speedup == pytest.approx(400 / reach)  # < 1: it needed more tokens than random
    assert lfr.val_loss_at_baseline_tokens == pytest.approx(4.4 + (3.9 - 4.4) * 100 / 150)
    assert math.isnan(lfr.baseline_val_loss_at_tokens)  # random has no curve at 600 tokens
    assert lfr.common_tokens == 400
    assert lfr.baseline_val_loss_at_common_tokens == pytest.approx(4.0)
    assert not main.loc["lfr-reverse"].reached and math.isnan(main.loc["lfr-reverse"].crossing_speedup)


def test_the_summary_gives_the_headline_and_each_method_against_random(runs, tmp_path):
    """summary.md, written next to main.csv: the headline (lfr at its size with most seeds), then a
    row per method at budget 1; a bound reads as one, a single seed's difference has no interval."""
    summarize(runs, tmp_path / "main.csv")
    lines = (tmp_path / "summary.md").read_text().splitlines()
    assert lines[2:6] == ["**Headline:** lfr against random at s, 2 seeds, budget 1:",
                          "- iso-loss speed-up > 1.000x (a bound)",  # random's frontier is one point
                          "- Δ val_loss at equal tokens -0.500 [-0.500, -0.500] nats",  # 3.5 - 4.0
                          "- verdict: better than random"]
    assert lines[9:12] == ["| s | random | 2 | 4.000 | 1 | - | baseline |",
                           "| s | lfr | 2 | 3.500 | > 1.000x (a bound) | -0.500 [-0.500, -0.500] | better |",
                           "| s | lfr-reverse | 1 | 4.700 | < 1.000x (a bound) | +0.700 | not resolved |"]


def test_the_summary_reads_a_demo_like_table_back_from_csv(tmp_path):
    """The demo's shape: lfr at two sizes (the one with 3 seeds is the headline), random's other
    budgets, a learning-rate check's row and a released reference model left out of the rows."""
    from lfr.report.headline import summary_markdown

    nan = math.nan
    cols = ["size", "method", "budget", "lr_mult", "n_seeds", "val_loss", "iso_speedup", "iso_speedup_lo",
            "iso_speedup_hi", "iso_speedup_bound", "iso_speedup_bound_value", "delta_val_loss",
            "delta_val_loss_lo", "delta_val_loss_hi", "verdict"]
    rows = [("micro", "random", 1.0, 1.0, 1, 5.159, 1.0, nan, nan, "", nan, 0.0, nan, nan, "baseline"),
            ("micro", "lfr", 1.0, 1.0, 1, 5.263, nan, nan, nan, "<", 0.61, 0.104, nan, nan, "not resolved"),
            ("nano", "random", 1.0, 1.0, 3, 5.488, 1.0, 1.0, 1.0, "", nan, 0.0, 0.0, 0.0, "baseline"),
            ("nano", "random", 2.0, 1.0, 3, 5.048, 1.0, 1.0, 1.0, "", nan, 0.0, 0.0, 0.0, "baseline"),
            ("nano", "lfr", 1.0, 1.0, 3, 5.567, 0.900, 0.881, 0.919, "", nan, 0.079, 0.068, 0.090, "worse"),
            ("nano", "lfr", 1.0, 2.0, 3, 5.6, 0.8, 0.7, 0.9, "", nan, 0.1, 0.05, 0.15, "worse"),
            ("gpt2", "reference", nan, nan, 1, nan, nan, nan, nan, "", nan, nan, nan, nan, "")]
    pd.DataFrame(rows, columns=cols).to_csv(tmp_path / "main.csv", index=False)
    text = summary_markdown(pd.read_csv(tmp_path / "main.csv"))  # empty strings read back as NaN
    assert "lfr against random at nano, 3 seeds, budget 1:\n- iso-loss speed-up 0.900x [0.881, 0.919]\n" \
           "- Δ val_loss at equal tokens +0.079 [+0.068, +0.090] nats\n- verdict: worse than random\n" in text
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert table == ["| micro | random | 1 | 5.159 | 1 | - | baseline |",
                     "| micro | lfr | 1 | 5.263 | < 0.610x (a bound) | +0.104 | not resolved |",
                     "| nano | random | 3 | 5.488 | 1 | - | baseline |",
                     "| nano | lfr | 3 | 5.567 | 0.900x [0.881, 0.919] | +0.079 [+0.068, +0.090] | worse |"]
    assert summary_markdown(pd.DataFrame(rows[:1] + rows[2:4], columns=cols)).splitlines()[2].startswith(
        "**Headline:** none")
