"""The `plot` stage (lfr/report/plot.py): every registered figure drawn from hand-built runs, their
main table and a profiled tiny run's forgetting tables."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from lfr.cli import main as cli_main
from lfr.report import plot
from lfr.report.figures import phase_spans
from lfr.report.summarize import summarize


def main_table(runs, tmp_path):
    """main.csv of the hand-built runs, with one downstream metric."""
    evals = tmp_path / "e.parquet"
    pd.DataFrame({"size": "s", "method": ["random", "lfr", "lfr-reverse"], "seed": 0, "task": "t",
                  "domain": "all", "metric": "acc", "value": [0.3, 0.4, 0.2], "stderr": 0.05}
                 ).to_parquet(evals)
    summarize(runs, tmp_path / "main.csv", [evals])
    return tmp_path / "main.csv"


@pytest.mark.parametrize("figure", ["val_loss", "lfr_phases", "frontier", "speedup", "crossing_speedup",
                                    "downstream"])
def test_figures_are_written(runs, tmp_path, figure):
    main_table(runs, tmp_path)
    plot.main(figure, tmp_path / f"{figure}.png", runs=runs, main=tmp_path / "main.csv")
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
    plot.main("downstream", tmp_path / "downstream.png", main=tmp_path / "main.csv")
    assert (tmp_path / "downstream.pdf").is_file()


@pytest.mark.slow
def test_every_registered_figure_is_drawn(runs, profiled, forgetting_tables, tmp_path):
    """Each figure of the registry, given everything a figure can read, takes what it says it
    reads (in its order) and writes its png and pdf."""
    from lfr.report import scaling

    _, out, _, _, _ = profiled
    given = {"runs": runs, "main": main_table(runs, tmp_path), "profiles": [out / "prof"],
             "tables": forgetting_tables[0], "scaling": tmp_path / "scaling.csv"}
    scaling.main(tmp_path / "main_by_seed.csv", given["scaling"])
    assert set(plot.READS) == set(given)
    assert {"val_loss", "forgetting_examples", "kept_domains"} <= set(plot.FIGURES)
    for figure, spec in plot.FIGURES.items():
        assert set(spec.reads) <= set(plot.READS), figure
        plot.main(figure, tmp_path / f"{figure}.png", **given)
        assert (tmp_path / f"{figure}.png").stat().st_size > 5_000, figure
        assert (tmp_path / f"{figure}.pdf").is_file(), figure


def test_profiling_figures_are_those_reading_profiles_or_tables():
    profiling = {name for name, spec in plot.FIGURES.items() if spec.profiling}
    assert profiling == {"profile_distribution", "forgetting_examples", "forgetting", "kept_domains",
                         "domain_loss"}
    assert {spec.category for name, spec in plot.FIGURES.items() if name in profiling} == {"Profiling"}
    assert plot.FIGURES["val_loss"].category == "Figures"


def test_an_unknown_figure_is_one_error_naming_the_figures(tmp_path, capsys):
    known = ", ".join(plot.FIGURES)
    with pytest.raises(ValueError, match=f"unknown figure 'val_los'; the figures: {known}$"):
        plot.main("val_los", tmp_path / "x.png")
    with pytest.raises(SystemExit) as stop:
        cli_main(["plot", "--figure", "val_los", "--out", str(tmp_path / "x.png")])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error == f"lfr plot: error: unknown figure 'val_los'; the figures: {known}"
    assert not (tmp_path / "x.png").exists()


def test_a_figure_without_what_it_reads_says_which_option_to_give(runs, tmp_path):
    with pytest.raises(ValueError, match="figure 'forgetting_examples' reads profiles, tables: give "
                                         "--profiles --tables"):
        plot.main("forgetting_examples", tmp_path / "x.png", runs=runs)


def test_the_registry_loads_without_matplotlib_or_pandas():
    """The workflow and the CLI read the registry; the drawing modules load only to draw."""
    code = ("import sys, lfr.report.plot; from lfr.cli import build_parser; build_parser(); "
            "assert not {'matplotlib', 'pandas', 'torch'} & set(sys.modules), "
            "sorted({'matplotlib', 'pandas', 'torch'} & set(sys.modules))")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_figures_of_one_bar_per_size_and_method_take_the_default_budget(tmp_path):
    """With budgets, `crossing_speedup`, `downstream` and `val_loss` draw the budget nearest 1.0;
    `frontier` and `speedup` draw every budget."""
    import json

    from conftest import fake_run

    from lfr.report.figures import one_budget

    runs = []
    for budget, scale in ((0.5, 1), (1.0, 2), (2.0, 4)):
        (tmp_path / str(budget)).mkdir()
        for method, losses in (("random", [6.0, 5.0, 4.0]), ("lfr", [6.0, 4.5, 3.8])):
            d = fake_run(tmp_path / str(budget), "s", method, 0, [0, 100 * scale, 200 * scale], losses)
            info = json.loads((d / "run.json").read_text()) | {"budget": budget, "flops_per_token": 6.0}
            (d / "run.json").write_text(json.dumps(info))
            runs.append(d)
    main = summarize(runs, tmp_path / "main.csv")
    assert one_budget(main).budget.tolist() == [1.0, 1.0]
    assert one_budget(main[main.budget != 1.0]).budget.tolist() == [0.5, 0.5]  # of two as near: the smaller
    for figure in ("crossing_speedup", "downstream", "val_loss", "frontier", "speedup"):
        plot.main(figure, tmp_path / f"{figure}.png", runs=runs, main=tmp_path / "main.csv")
        assert (tmp_path / f"{figure}.pdf").is_file()


def test_bounds_are_drawn_as_open_arrows_never_as_values(tmp_path):
    """A speed-up outside random's range is an open triangle with an arrow and the word bound;
    a value is a filled dot with its interval. `fig.texts`/artists are what a reader sees."""
    from lfr.report.figures import plot_speedup

    main = pd.DataFrame({"size": "s", "method": ["random", "lfr", "good"], "budget": 1.0,
                         "iso_speedup": [1.0, float("nan"), 1.4], "iso_speedup_lo": [1.0, 0.0, 1.2],
                         "iso_speedup_hi": [1.0, 1.0, 1.6], "iso_speedup_bound": ["", "<", ""],
                         "iso_speedup_bound_value": [float("nan"), 1.0, float("nan")]})
    ax = plot_speedup(main, tmp_path / "speedup.png").axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert any(t.startswith("bound <1.00x") for t in texts) and "1.40x" in texts
    assert not any(t.startswith("1.00x") for t in texts)  # the bound is no value label
    open_triangles = [line for line in ax.lines if line.get_marker() == "v"
                      and line.get_markerfacecolor() == "none"]
    assert len(open_triangles) == 1 and open_triangles[0].get_ydata()[0] == 1.0
    arrows = [t for t in ax.texts if getattr(t, "arrow_patch", None) is not None]
    assert len(arrows) == 1


def test_a_crossing_figure_with_no_crossing_says_so_in_words(tmp_path):
    from lfr.report.figures import plot_crossing_speedup

    main = pd.DataFrame({"size": "s", "method": ["random", "lfr"], "budget": 1.0,
                         "reached": [True, False], "crossing_speedup": [1.0, float("nan")]})
    ax = plot_crossing_speedup(main, tmp_path / "c.png").axes[0]
    assert any("no method reached random's final validation loss" in t.get_text() for t in ax.texts)
    assert ax.get_legend() is None and not ax.patches  # no bars, no legend for absent bars


def test_val_loss_states_its_band_and_shows_each_methods_gap_to_random(runs, tmp_path):
    """Curves on top of random's stay visible in the lower panel: each method minus random."""
    from lfr.report.figures import plot_val_loss
    from lfr.report.summarize import load_runs

    fig = plot_val_loss(load_runs(runs)[1], tmp_path / "v.png")
    top, diff = fig.axes
    assert "band: min-max over seeds" in top.get_title()
    gaps = {line.get_color(): line.get_ydata() for line in diff.lines if line.get_color() != "k"}
    assert len(diff.lines) == 1 + 3  # the zero line and one per method
    assert gaps["#444444"] == pytest.approx([0, 0, 0, 0, 0])  # random minus itself
    assert gaps["#d62728"] == pytest.approx([0, -0.5, -0.4, -0.4, -0.5])  # lfr minus random
