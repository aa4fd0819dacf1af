"""`summary.md`: main.csv in brief, for people, written next to it by the `summarize` stage.

main.csv is ~80 columns wide; the question most readers bring is narrower: does a method beat
`random`, by how much, with what uncertainty? The summary answers it from the table's own rows:
each method against `random` at budget 1 and the config's learning rate, per size, and first a
headline, the comparison most seeds stand behind (`make demo` prints it). Generated, never edited
by hand, so it cannot drift from the table.
"""

from __future__ import annotations

import math

import pandas as pd

from lfr.report.speedup import BASELINE

HEADLINE_METHOD = "lfr"
"""The method the headline is about where the table has it (the project's question)."""
VERDICTS = {"better": "better than random", "worse": "worse than random",
            "not resolved": "not resolved (the interval contains 0, or there is one seed)"}


def number(x: float, signed: bool = False) -> str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def speedup(row: pd.Series) -> str:
    """`0.900x [0.881, 0.919]`, `< 0.950x (a bound)`, `1` for random, `-` where there is none."""
    if row.method == BASELINE and row.get("iso_speedup") == 1:
        return "1"
    bound = row.get("iso_speedup_bound", "")
    if isinstance(bound, str) and bound:
        return f"{bound} {number(row.iso_speedup_bound_value)}x (a bound)"
    if pd.isna(row.iso_speedup):
        return "-"
    if pd.isna(row.iso_speedup_lo):
        return f"{number(row.iso_speedup)}x"
    return f"{number(row.iso_speedup)}x [{number(row.iso_speedup_lo)}, {number(row.iso_speedup_hi)}]"


def loss_difference(row: pd.Series) -> str:
    """`+0.079 [+0.068, +0.090]`, without an interval where there is none, `-` for random."""
    if row.method == BASELINE or pd.isna(row.delta_val_loss):
        return "-"
    if pd.isna(row.delta_val_loss_lo):
        return number(row.delta_val_loss, signed=True)
    return (f"{number(row.delta_val_loss, signed=True)} [{number(row.delta_val_loss_lo, signed=True)}, "
            f"{number(row.delta_val_loss_hi, signed=True)}]")


def compared(main: pd.DataFrame) -> pd.DataFrame:
    """The rows the summary shows: budget 1 at the config's learning rate, trained methods only
    (released reference models have no budget), in the table's order."""
    main = main.assign(verdict=main.verdict.fillna(""))  # a table read back from CSV: NaN
    return main[(main.budget == 1.0) & (main.lr_mult == 1.0) & (main.method != "reference")]


def headline(main: pd.DataFrame) -> list[str]:
    """A few lines on the comparison most seeds stand behind: `lfr` where the table has it (else
    the first method that is not random) at its size with the most seeds (ties: the first)."""
    rows = compared(main)
    rows = rows[(rows.method != BASELINE) & (rows.verdict != "")]
    if rows.empty:
        return ["**Headline:** none; no method was compared with random at budget 1 (no random run "
                "of the same size and length)."]
    method = HEADLINE_METHOD if (rows.method == HEADLINE_METHOD).any() else rows.method.iloc[0]
    mine = rows[rows.method == method]
    row = mine.loc[mine.n_seeds.idxmax()]
    seeds = f"{int(row.n_seeds)} seed{'s' if row.n_seeds != 1 else ''}"
    return [f"**Headline:** {method} against random at {row['size']}, {seeds}, budget 1:",
            f"- iso-loss speed-up {speedup(row)}",
            f"- Δ val_loss at equal tokens {loss_difference(row)} nats",
            f"- verdict: {VERDICTS[row.verdict]}"]


def summary_markdown(main: pd.DataFrame) -> str:
    """The summary page: the headline, a row per size x method at budget 1, how to read them."""
    rows = compared(main)
    lines = ["# main.csv in brief", "", *headline(main), "",
             "| size | method | seeds | val_loss | iso-loss speed-up [95%] | Δ val_loss [95%] | verdict |",
             "|---|---|---|---|---|---|---|"]
    for _, row in rows.iterrows():
        lines.append(f"| {row['size']} | {row.method} | {int(row.n_seeds)} | {number(row.val_loss)} | "
                     f"{speedup(row)} | {loss_difference(row)} | {row.verdict or '-'} |")
    lines += ["", "Budget 1, the config's learning rate. Speed-up: the training compute random needs to "
              "reach the method's final validation loss, over the method's (below 1: the method needs "
              "more); a bound where that loss lies outside random's budgets. Δ val_loss: the method's "
              "final loss minus random's at equal tokens, nats. Intervals 95% over seeds. Every "
              "column of main.csv: results/tables/README.md.", ""]
    return "\n".join(lines)
