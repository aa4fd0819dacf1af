"""Stage `plot`: draw one figure by name, as .png and .pdf.

`FIGURES` is the registry of every figure: the function that draws it and what it reads. Like
the CLI's `STAGES`, it names the drawing functions as strings, imported only when their figure
is drawn, so that reading the registry needs neither matplotlib nor pandas: the workflow reads
it too (rule `plot`'s inputs per figure, rule `all`'s figures). A figure's function is called as
`draw(*what it reads, out_png)`, in the order of its `reads`.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def run_curves(run_dirs: list[Path]) -> Any:
    """Every logged row of the runs' metrics (the phase figure needs the rows at phase ends,
    which carry no validation loss), at train.lr: the learning-rate check has its own table."""
    from lfr.report.summarize import load_runs

    curves = load_runs(run_dirs, every_row=True)[1]
    return curves[curves.lr_mult == 1]


def main_table(path: Path) -> Any:
    """main.csv's rows at train.lr (and the references'): the learning-rate check's rows are
    tables/learning_rates.csv's."""
    import pandas as pd

    main = pd.read_csv(path)
    return main[main.lr_mult.fillna(1) == 1] if "lr_mult" in main.columns else main


def profile_losses(profile_dirs: list[Path]) -> dict[str, Any]:
    """profile folder -> its losses.parquet."""
    import pandas as pd

    return {str(d): pd.read_parquet(Path(d) / "losses.parquet") for d in profile_dirs}


def scaling_tables(path: Path) -> tuple[Any, Any]:
    """scaling.csv and the fitted lines' band written next to it (the `scaling` stage)."""
    import pandas as pd

    from lfr.report.scaling import BAND_FILE

    return pd.read_csv(path), pd.read_csv(Path(path).with_name(BAND_FILE))


@dataclass(frozen=True)
class Input:
    option: str  # the `plot` option that names it
    load: Callable[[Any], Any]


READS = {  # what a figure can read
    "runs": Input("--runs", run_curves),  # finished run folders
    "main": Input("--main", main_table),  # the main table, main.csv
    "profiles": Input("--profiles", profile_losses),  # `profile` output folders
    "tables": Input("--tables", Path),  # the `forgetting` stage's tables folder: each figure reads its own
    "scaling": Input("--scaling", scaling_tables),  # scaling.csv (and its band file)
}


@dataclass(frozen=True)
class Figure:
    draw: str  # "module:function" in lfr/report/
    reads: tuple[str, ...]  # keys of READS, in the order `draw` takes them

    @property
    def profiling(self) -> bool:
        """Whether it needs profiled runs (the workflow draws it only when the config has some)."""
        return bool({"profiles", "tables"} & set(self.reads))

    @property
    def category(self) -> str:
        """Its section of the Snakemake report."""
        return "Profiling" if self.profiling else "Figures"


FIGURES = {
    "val_loss": Figure("figures:plot_val_loss", ("runs",)),
    "lfr_phases": Figure("figures:plot_phases", ("runs",)),
    "frontier": Figure("figures:plot_frontier", ("main",)),
    "speedup": Figure("figures:plot_speedup", ("main",)),
    "crossing_speedup": Figure("figures:plot_crossing_speedup", ("main",)),
    "downstream": Figure("figures:plot_downstream", ("main",)),
    "scaling": Figure("figures:plot_scaling", ("scaling",)),
    "profile_distribution": Figure("profile_figures:plot_distribution", ("profiles",)),
    "forgetting_examples": Figure("profile_figures:plot_examples", ("profiles", "tables")),
    "forgetting": Figure("profile_figures:plot_forgetting", ("tables",)),
    "kept_domains": Figure("profile_figures:plot_kept_domains", ("tables",)),
    "domain_loss": Figure("profile_figures:plot_domain_loss", ("profiles",)),
}


def figure_spec(figure: str) -> Figure:
    if figure not in FIGURES:
        raise ValueError(f"unknown figure {figure!r}; the figures: {', '.join(FIGURES)}")
    return FIGURES[figure]


def draw_function(spec: Figure) -> Callable[..., Any]:
    module, _, name = spec.draw.partition(":")
    return getattr(importlib.import_module(f"lfr.report.{module}"), name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m lfr plot`."""
    parser.add_argument("--figure", required=True,
                        help="which figure: a name in FIGURES of lfr/report/plot.py")
    parser.add_argument("--out", type=Path, required=True,
                        help="the .png to write; the .pdf goes next to it")
    parser.add_argument("--runs", type=Path, nargs="+",
                        help="finished run folders (with run.json and metrics.parquet) (curve figures)")
    parser.add_argument("--main", type=Path, help="results/tables/main.csv (table figures)")
    parser.add_argument("--profiles", type=Path, nargs="+",
                        help="`profile` output folders (profiling figures)")
    parser.add_argument("--tables", type=Path, help="folder of forgetting.csv etc. (forgetting figures)")
    parser.add_argument("--scaling", type=Path, help="results/tables/scaling.csv (the scaling figure)")


def main(figure: str, out: Path, runs: list[Path] | None = None, main: Path | None = None,
         profiles: list[Path] | None = None, tables: Path | None = None, scaling: Path | None = None) -> None:
    """Draw `figure` to `out` (.png; the .pdf goes next to it) from what it reads."""
    spec = figure_spec(figure)
    given = {"runs": runs, "main": main, "profiles": profiles, "tables": tables, "scaling": scaling}
    missing = [READS[kind].option for kind in spec.reads if not given[kind]]
    if missing:
        raise ValueError(f"figure {figure!r} reads {', '.join(spec.reads)}: give {' '.join(missing)}")
    draw_function(spec)(*(READS[kind].load(given[kind]) for kind in spec.reads), Path(out))
