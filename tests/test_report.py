"""Tables and figures from hand-built runs: the speed-up definition, seed aggregation, figures."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from lfr.report.figures import phase_spans, plot
from lfr.report.summarize import loss_at, summarize, tokens_to_reach


def test_tokens_to_reach_interpolates_the_first_crossing():
    tokens = np.array([0, 100, 200, 300, 400.0])
    loss = np.array([6.0, 5.0, 4.0, 4.5, 3.0])
    assert tokens_to_reach(tokens, loss, 4.5) == pytest.approx(150)  # 5.0 -> 4.0 between 100 and 200
    assert tokens_to_reach(tokens, loss, 6.5) == 0  # already there at the first evaluation
    assert math.isnan(tokens_to_reach(tokens, loss, 2.0))  # never reached
    assert loss_at(tokens, loss, 250) == pytest.approx(4.25)
    assert math.isnan(loss_at(tokens, loss, 500))  # never extrapolated


def fake_run(root, size, method, seed, tokens, losses, phases=None):
    d = root / f"{size}-{method}-{seed}"
    d.mkdir()
    metrics = pd.DataFrame({"step": range(len(tokens)), "tokens": tokens, "val_loss": losses,
                            "phase": phases or ["train"] * len(tokens), "train_loss": losses})
    metrics.to_parquet(d / "metrics.parquet")
    info = {"size": size, "method": method, "seed": seed, "params": 1000, "tokens": tokens[-1],
            "forward_only_tokens": 0, "steps": len(tokens) - 1, "val_loss": losses[-1], "wall_s": 10.0,
            "train_tokens_per_s": 1.0, "device": "cpu", "world_size": 1, "config_hash": "h",
            "git_commit": "c"}
    (d / "run.json").write_text(json.dumps(info))
    return d


@pytest.fixture
def runs(tmp_path):
    t = [0, 100, 200, 300, 400]
    return [
        fake_run(tmp_path, "s", "random", 0, t, [6.0, 5.0, 4.6, 4.3, 4.0]),
        fake_run(tmp_path, "s", "random", 1, t, [6.0, 5.0, 4.4, 4.1, 4.0]),  # final mean: 4.0
        fake_run(tmp_path, "s", "lfr", 0, t, [6.0, 4.6, 4.2, 3.8, 3.5],
                 ["0:learn", "0:learn", "1:focus", "2:review", "3:focus"]),  # reaches 4.0 at 250
        fake_run(tmp_path, "s", "lfr", 1, t, [6.0, 4.4, 4.0, 3.8, 3.5],
                 ["0:learn", "0:learn", "1:focus", "2:review", "3:focus"]),
        fake_run(tmp_path, "s", "lfr-reverse", 0, t, [6.0, 5.5, 5.0, 4.8, 4.7]),  # never reaches 4.0
    ]


def test_main_table_aggregates_seeds_and_defines_the_speedup(runs, tmp_path):
    evals = tmp_path / "e.parquet"
    pd.DataFrame({"size": ["s"] * 2, "method": ["lfr"] * 2, "seed": [0, 1], "task": "t", "domain": "all",
                  "metric": "acc", "value": [0.4, 0.6], "stderr": [0.05, 0.05]}).to_parquet(evals)
    main = summarize(runs, tmp_path / "main.csv", [evals]).set_index("method")
    assert list(main.index) == ["random", "lfr", "lfr-reverse"]
    assert main.loc["lfr", "n_seeds"] == 2 and main.loc["lfr-reverse", "n_seeds"] == 1
    assert main.loc["lfr", "val_loss"] == 3.5 and main.loc["lfr", "val_loss_std"] == 0
    # lfr's mean curve: 6.0, 4.5, 4.1, 3.8 -> crosses 4.0 between 200 (4.1) and 300 (3.8)
    assert main.loc["lfr", "tokens_to_baseline"] == pytest.approx(200 + 100 * 0.1 / 0.3)
    assert main.loc["lfr", "speedup"] == pytest.approx(400 / (200 + 100 / 3))
    assert bool(main.loc["lfr", "reached"]) and not bool(main.loc["lfr-reverse", "reached"])
    assert math.isnan(main.loc["lfr-reverse", "speedup"])
    assert main.loc["random", "speedup"] == pytest.approx(1.0)
    assert main.loc["lfr", "acc:t"] == pytest.approx(0.5)
    assert main.loc["lfr", "acc:t_std"] == pytest.approx(np.std([0.4, 0.6], ddof=1))
    assert main.loc["lfr", "val_loss_at_baseline_tokens"] == 3.5
    by_seed = pd.read_csv(tmp_path / "main_by_seed.csv")
    assert len(by_seed) == 5 and by_seed[by_seed.method == "lfr"]["acc:t"].tolist() == [0.4, 0.6]


@pytest.mark.parametrize("figure", ["val_loss", "lfr_phases", "speedup", "downstream"])
def test_figures_are_written(runs, tmp_path, figure):
    evals = tmp_path / "e.parquet"
    pd.DataFrame({"size": "s", "method": ["random", "lfr", "lfr-reverse"], "seed": 0, "task": "t",
                  "domain": "all", "metric": "acc", "value": [0.3, 0.4, 0.2], "stderr": 0.05}
                 ).to_parquet(evals)
    summarize(runs, tmp_path / "main.csv", [evals])
    plot(figure, runs, tmp_path / "main.csv", tmp_path / f"{figure}.png")
    assert (tmp_path / f"{figure}.png").stat().st_size > 5_000
    assert (tmp_path / f"{figure}.pdf").is_file()


def test_phase_spans_run_from_one_phase_end_to_the_next():
    """Same-kind phases are distinct spans; a phase's span ends at its last logged row."""
    metrics = pd.DataFrame({"tokens": [0, 40, 30, 60, 90, 100, 70],
                            "phase": ["0:learn", "1:focus", "0:learn", "1:focus", "3:focus",
                                      "3:focus", "2:review"]})
    assert phase_spans(metrics).values.tolist() == [
        ["0:learn", 0, 30], ["1:focus", 30, 60], ["2:review", 60, 70], ["3:focus", 70, 100]]


def test_downstream_figure_says_when_no_task_ran(runs, tmp_path):
    summarize(runs, tmp_path / "main.csv")
    plot("downstream", runs, tmp_path / "main.csv", tmp_path / "downstream.png")
    assert (tmp_path / "downstream.pdf").is_file()


def test_a_size_without_random_keeps_its_baseline_columns_and_says_so(runs, tmp_path, caplog):
    lfr_only = [r for r in runs if "-random-" not in r.name]
    main = summarize(lfr_only, tmp_path / "main.csv")
    assert {"baseline_val_loss", "tokens_to_baseline", "speedup", "reached"} <= set(main.columns)
    assert main.speedup.isna().all()
    assert "no 'random' run at size s" in caplog.text
