"""The paper's comparison figures, from the same files as the tables (no torch); the `plot` stage
(lfr/report/plot.py) says which figure reads what.

Every figure is written as .png and .pdf, in one style, sized for a paper column or page; the
profiling figures (profile_figures.py) share it.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from lfr.files import atomic_path
from lfr.report.summarize import BASELINE, DEFAULT_BUDGET

STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
         "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False}
COLORS = {"random": "#444444", "lfr": "#d62728", "lfr-random-drop": "#1f77b4", "lfr-reverse": "#2ca02c",
          "reference": "#9467bd", "infobatch": "#ff7f0e", "ppl-prune": "#8c564b", "loss-prop": "#e377c2",
          "leitner": "#17becf", "rho-loss": "#bcbd22", "selective-backprop": "#393b79"}
LINESTYLES = ["-", "--", "-.", ":"]
"""One per method of a panel, so that curves drawn on top of each other stay apart."""
PHASE_COLORS = {"learn": "#fdd0a2", "focus": "#c6dbef", "review": "#c7e9c0"}


def color(method: str) -> str:
    return COLORS.get(method, f"C{zlib.crc32(method.encode()) % 10}")  # stable across processes


def save(fig: plt.Figure, out_png: Path) -> None:
    for suffix in (".png", ".pdf"):
        with atomic_path(Path(out_png).with_suffix(suffix)) as tmp:
            fig.savefig(tmp, dpi=150, format=suffix[1:], bbox_inches="tight")
    plt.close(fig)


def one_budget(table: pd.DataFrame) -> pd.DataFrame:
    """The rows (of the main table or the curves) at one budget per size x method: the budget
    nearest the default run (1.0; of two as near, the smaller), for the figures that draw one
    bar or curve per size and method. Rows without a budget (references) and tables without a
    `budget` column stay as they are."""
    if "budget" not in table.columns:
        return table
    budget = table.budget.astype(float)
    ranked = table.assign(_gap=(np.log(budget) - np.log(DEFAULT_BUDGET)).abs())
    chosen = (ranked.sort_values(["_gap", "budget"], kind="stable")
              .groupby(["size", "method"], sort=False, dropna=False).budget.first().rename("_pick"))
    pick = table[["size", "method"]].merge(chosen.reset_index(), how="left")["_pick"].to_numpy(float)
    b = budget.to_numpy()
    return table[(b == pick) | (np.isnan(b) & np.isnan(pick))]


def panels(n: int, width: float = 3.6, height: float = 2.8) -> tuple[plt.Figure, np.ndarray]:
    return plt.subplots(1, n, figsize=(width * n, height), squeeze=False)


def plot_val_loss(curves: pd.DataFrame, out_png: Path) -> plt.Figure:
    """Validation loss against tokens per size (top): the mean over seeds, its band the min..max
    over seeds; below, each method's difference from random's mean at the same tokens, so that
    methods whose curves lie on random's stay visible. `curves`: the runs' logged rows
    (load_runs); those without a validation loss are left out. At the budget nearest the
    default run."""
    curves = one_budget(curves.dropna(subset=["val_loss"]))
    with plt.rc_context(STYLE):
        sizes = list(dict.fromkeys(curves["size"]))
        fig, axes = plt.subplots(2, len(sizes), figsize=(3.8 * len(sizes), 4.6), squeeze=False,
                                 sharex="col", gridspec_kw={"height_ratios": [2, 1]})
        for top, diff, size in zip(axes[0], axes[1], sizes, strict=True):
            at = curves[curves["size"] == size]
            means = {m: g.pivot_table(index="tokens", columns="seed", values="val_loss")
                     for m, g in at.groupby("method", sort=False)}
            base = means.get(BASELINE)
            for i, (method, wide) in enumerate(means.items()):
                x, style = wide.index / 1e6, LINESTYLES[i % len(LINESTYLES)]
                top.plot(x, wide.mean(axis=1), color=color(method), lw=1.4, ls=style,
                         label=f"{method} (n={wide.shape[1]})", zorder=3 if method == BASELINE else 2)
                if wide.shape[1] > 1:
                    top.fill_between(x, wide.min(axis=1), wide.max(axis=1), color=color(method),
                                     alpha=0.15, lw=0)
                if base is not None:
                    gap = wide.mean(axis=1) - np.interp(wide.index, base.index, base.mean(axis=1))
                    diff.plot(x, gap, color=color(method), lw=1.4, ls=style)
            band = "line: mean over seeds; band: min-max over seeds"
            top.set(title=f"{size}\n({band})", ylabel="validation loss (nats/token)")
            top.legend()
            diff.axhline(0, color="k", lw=0.6)
            diff.set(xlabel="training tokens (M)", ylabel="minus random's (nats)")
            if base is None:
                say_nothing(diff, f"no {BASELINE} run at {size}")
        fig.tight_layout()
        save(fig, out_png)
    return fig


def phase_spans(metrics: pd.DataFrame) -> pd.DataFrame:
    """(phase, start_tokens, end_tokens) of one run: each phase from the previous phase's last
    logged tokens to its own. Exact since the training loop logs every phase's last step."""
    ends = metrics.sort_values("tokens", kind="stable").groupby("phase", sort=False).tokens.max()
    return pd.DataFrame({"phase": ends.index, "start_tokens": ends.shift(fill_value=0).to_numpy(),
                         "end_tokens": ends.to_numpy()})


def plot_phases(curves: pd.DataFrame, out_png: Path, method: str = "lfr") -> plt.Figure:
    """LFR's phases (learn / focus / review) shaded under its loss curve, with random's for scale.
    `curves` holds every logged row (load_runs(every_row=True)): the spans need the rows at phase
    ends, which carry no validation loss. At the budget nearest the default run."""
    curves = one_budget(curves)
    with plt.rc_context(STYLE):
        sizes = list(dict.fromkeys(curves[curves.method == method]["size"]))
        fig, axes = panels(max(1, len(sizes)), width=4.2)
        val = curves.dropna(subset=["val_loss"])
        for ax, size in zip(axes[0], sizes, strict=False):
            run = curves[(curves["size"] == size) & (curves.method == method)]
            spans = phase_spans(run[run.seed == run.seed.min()])  # the plan is the same for all seeds
            total = spans.end_tokens.max()
            for phase, start, end in spans.itertuples(index=False):
                kind = str(phase).split(":")[-1]
                ax.axvspan(start / 1e6, end / 1e6, color=PHASE_COLORS.get(kind, "#eeeeee"), lw=0)
                narrow = (end - start) < 0.1 * total
                ax.text((start + end) / 2e6, 1.0, kind, transform=ax.get_xaxis_transform(), ha="center",
                        va="bottom", fontsize=7, rotation=90 if narrow else 0)
            for m in (BASELINE, method):
                part = val[(val["size"] == size) & (val.method == m)]
                mean = part.groupby("tokens").val_loss.mean()
                ax.plot(mean.index / 1e6, mean.to_numpy(), color=color(m), lw=1.4, label=m)
            ax.set_title(f"{size}: {method} phases", pad=30)  # room for rotated labels
            ax.set(xlabel="training tokens (M)",
                   ylabel="validation loss (nats/token)")
            ax.legend(loc="upper right")
        save(fig, out_png)
    return fig


def two_and_five(value: float, _: object) -> str:
    """A minor tick's label on a log axis of tokens, only at 2 and 5 times a power of ten."""
    lead = round(value / 10 ** math.floor(math.log10(value)))
    return f"{value / 1e6:g}M" if lead in (2, 5) else ""


def plot_frontier(main: pd.DataFrame, out_png: Path) -> plt.Figure:
    """Per size: final val_bpb against training compute (`compute_tokens`, log axis). Random's
    budgets joined as its frontier with a band of +-1 SD over seeds; every other method's points
    with +-1 SD bars, labelled with their budget when it is not 1; references as horizontal lines.
    Runs written before val_bpb was measured are drawn in val_loss (nats/token) instead."""
    with plt.rc_context(STYLE):
        runs = main[main.method != "reference"]
        y, ylabel = ("val_bpb", "final validation bits per byte") if runs.val_bpb.notna().any() else (
            "val_loss", "final validation loss (nats/token)")
        refs = main[(main.method == "reference") & main[y].notna()]
        sizes = list(dict.fromkeys(runs["size"]))
        fig, axes = panels(max(1, len(sizes)), width=4.2, height=3.2)
        for ax, size in zip(axes.flat, sizes, strict=False):
            at = runs[runs["size"] == size]
            base = at[at.method == BASELINE].sort_values("compute_tokens")
            if not base.empty:
                sd = base[f"{y}_std"].fillna(0).to_numpy()
                ax.plot(base.compute_tokens, base[y], "-o", color=color(BASELINE), ms=3,
                        label=f"{BASELINE} (frontier)")
                ax.fill_between(base.compute_tokens, base[y] - sd, base[y] + sd,
                                color=color(BASELINE), alpha=0.15, lw=0)
            for method, part in at[at.method != BASELINE].groupby("method", sort=False):
                ax.errorbar(part.compute_tokens, part[y], yerr=part[f"{y}_std"].fillna(0), fmt="o",
                            ms=4, capsize=2, color=color(method), label=method)
                for _, row in part[part.budget != DEFAULT_BUDGET].iterrows():
                    ax.annotate(f"x{row.budget:g}", (row.compute_tokens, row[y]), fontsize=6,
                                xytext=(3, 3), textcoords="offset points")
            for _, ref in refs.iterrows():
                ax.axhline(ref[y], color=color("reference"), lw=0.8, ls=":")
                ax.annotate(ref["size"], (0.01, ref[y]), xycoords=("axes fraction", "data"),
                            fontsize=6, va="bottom", color=color("reference"))
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e6:g}M"))
            ax.xaxis.set_minor_formatter(FuncFormatter(two_and_five))  # all 8 minor labels crowd
            ax.set(title=size, xlabel="training compute (tokens; scoring at 1/3)", ylabel=ylabel)
            ax.legend(fontsize=7)
        fig.tight_layout()
        save(fig, out_png)
    return fig


def plot_speedup(main: pd.DataFrame, out_png: Path) -> plt.Figure:
    """Iso-loss speed-up over random's frontier (`iso_speedup`, in tokens, log axis) per size,
    method and budget: a value is a filled dot with its 95% interval; a bound (outside random's
    swept budgets: `iso_speedup_bound`, `iso_speedup_bound_value`) is an open triangle with an
    arrow pointing the way the value lies, labelled as a bound, never drawn as a value."""
    with plt.rc_context(STYLE):
        bounded = main.get("iso_speedup_bound_value", pd.Series(np.nan, main.index)).notna()
        rows = main[~main.method.isin([BASELINE, "reference"]) & (main.iso_speedup.notna() | bounded)]
        groups = list(dict.fromkeys(zip(rows["size"], rows.method, strict=True)))
        fig, ax = plt.subplots(figsize=(max(3.6, 0.9 * len(groups) + 1.2), 3.2))
        for x, (size, method) in enumerate(groups):
            part = rows[(rows["size"] == size) & (rows.method == method)].sort_values("budget")
            offsets = (np.arange(len(part)) - (len(part) - 1) / 2) * min(0.25, 0.8 / max(1, len(part)))
            for dx, (_, row) in zip(offsets, part.iterrows(), strict=True):
                at = "" if row.budget == DEFAULT_BUDGET else f" @x{row.budget:g}"
                if np.isnan(row.iso_speedup):
                    draw_bound(ax, x + dx, row.iso_speedup_bound_value, row.iso_speedup_bound,
                               color(method), at)
                    continue
                lo, hi, value = row.iso_speedup_lo, row.iso_speedup_hi, row.iso_speedup
                low = 0 if np.isnan(lo) else max(0.0, value - lo)
                high = 0 if np.isnan(hi) or np.isinf(hi) else max(0.0, hi - value)
                ax.errorbar(x + dx, value, yerr=[[low], [high]], fmt="o", ms=5, capsize=2,
                            color=color(method))
                ax.annotate(f"{value:.2f}x{at}", (x + dx, value), xytext=(5, 0),
                            textcoords="offset points", fontsize=6, va="center")
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.set_xlim(-0.6, len(groups) - 0.4)  # every group inside the axis
        ax.set_xticks(range(len(groups)), [f"{s}\n{m}" for s, m in groups], fontsize=7)
        ax.set(ylabel="random's tokens / the method's",
               title="iso-loss speed-up over random\n(dot: value, 95% interval; open triangle: bound)")
        if not groups:
            say_nothing(ax, "no method with a random frontier at its size")
        fig.tight_layout()
        save(fig, out_png)
    return fig


def draw_bound(ax: plt.Axes, x: float, value: float, direction: str, colour: str, at: str) -> None:
    """A bound: an open triangle at its value and an arrow of fixed length away from it, the way
    the true value lies (`>`: up, `<`: down), labelled at the arrow's end."""
    up = direction == ">"
    ax.plot(x, value, "^" if up else "v", ms=6, mfc="none", color=colour)
    tip = (0, 30 if up else -30)
    ax.annotate("", xy=(x, value), xytext=tip, textcoords="offset points",
                arrowprops={"arrowstyle": "<-", "color": colour, "lw": 1.2})
    ax.annotate(f"bound {direction}{value:.2f}x{at}\n(outside random's budgets)", (x, value),
                xytext=(4, tip[1]), textcoords="offset points", fontsize=6,
                va="bottom" if up else "top", color=colour)
    ax.plot(x, value * (2.0 if up else 0.5), alpha=0)  # room for the arrow on a log axis


def say_nothing(ax: plt.Axes, why: str) -> None:
    """A figure with nothing to draw says so, instead of empty axes."""
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_crossing_speedup(main: pd.DataFrame, out_png: Path) -> plt.Figure:
    """The within-run crossing speed-up (`crossing_speedup`) over random per size and method, at
    the budget nearest the default run; methods that never reached random say so, and a figure
    where no method did says that in words."""
    with plt.rc_context(STYLE):
        main = one_budget(main)
        rows = main[~main.method.isin([BASELINE, "reference"]) & main["reached"].notna()]
        sizes, methods = list(dict.fromkeys(rows["size"])), list(dict.fromkeys(rows.method))
        fig, ax = plt.subplots(figsize=(max(3.6, 1.2 * len(sizes) * len(methods)), 2.8))
        width = 0.8 / max(1, len(methods))
        for j, method in enumerate(methods):
            for i, size in enumerate(sizes):
                row = rows[(rows["size"] == size) & (rows.method == method)]
                if row.empty:
                    continue
                x = i + (j - (len(methods) - 1) / 2) * width
                if row.reached.astype(bool).item():
                    value = row.crossing_speedup.item()
                    ax.bar(x, value, width, color=color(method), label=method)
                    ax.text(x, value, f"{value:.2f}x", ha="center", va="bottom", fontsize=7)
                else:
                    ax.text(x, 0.02, f"{method}:\nnot\nreached", ha="center", va="bottom", fontsize=7,
                            color=color(method))
        ax.set(title="tokens to reach random's final val loss (within-run crossing)")
        if not rows.reached.astype(bool).any():
            say_nothing(ax, "no method reached random's final validation loss within its run:\n"
                            "no crossing to draw" if len(rows) else "no method next to random")
        else:
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
            ax.set_xticks(range(len(sizes)), sizes)
            ax.set(ylabel="crossing speed-up over random (tokens)")
            handles, labels = ax.get_legend_handles_labels()
            unique = dict(zip(labels, handles, strict=True))
            ax.legend(unique.values(), unique.keys())
        save(fig, out_png)
    return fig


def plot_downstream(main: pd.DataFrame, out_png: Path) -> plt.Figure:
    """One panel per task metric (each on its own scale), bars by size and method; error bars are
    the std over seeds when there are several, else lm-eval's stderr; at the budget nearest the
    default run."""
    with plt.rc_context(STYLE):
        main = one_budget(main)
        metrics = [c for c in main.columns if ":" in c and "_stderr:" not in c and not c.endswith("_std")]
        sizes, methods = list(dict.fromkeys(main["size"])), list(dict.fromkeys(main.method))
        cols = min(4, max(1, len(metrics)))
        rows = max(1, -(-len(metrics) // cols))
        fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.4 * rows), squeeze=False)
        if not metrics:
            axes[0, 0].text(0.5, 0.5, "no downstream task in main.csv\n(eval.tasks is empty)",
                            ha="center", va="center")
            axes[0, 0].set_axis_off()
        width = 0.8 / max(1, len(methods))
        for ax, metric in zip(axes.flat, metrics, strict=False):
            for j, method in enumerate(methods):
                part = main[main.method == method].set_index("size").reindex(sizes)
                stderr = part.get(metric.replace(":", "_stderr:", 1), pd.Series(np.nan, part.index))
                err = np.where(part.n_seeds > 1, part.get(f"{metric}_std", np.nan), stderr)
                x = np.arange(len(sizes)) + (j - (len(methods) - 1) / 2) * width
                ax.bar(x, part[metric], width, yerr=np.nan_to_num(err.astype(float)), color=color(method),
                       label=method, capsize=2)
            name, _, task = metric.partition(":")
            ax.set_title(f"{task}: {name}", fontsize=9)
            ax.set_xticks(range(len(sizes)), sizes)
        for ax in list(axes.flat)[len(metrics):]:
            ax.set_visible(False)
        if metrics:
            axes.flat[0].legend(fontsize=7)
        fig.tight_layout()
        save(fig, out_png)
    return fig


def interval_bars(rows: pd.DataFrame, value: str) -> np.ndarray:
    """[[below], [above]] error-bar lengths of `value` to its `_lo`/`_hi` (0 where an end is
    missing or infinite)."""
    v, lo, hi = (rows[c].to_numpy(float) for c in (value, f"{value}_lo", f"{value}_hi"))
    below, above = v - lo, hi - v
    return np.nan_to_num(np.clip([below, above], 0, None), nan=0.0, posinf=0.0)


def plot_scaling(tables: tuple[pd.DataFrame, pd.DataFrame], out_png: Path) -> plt.Figure:
    """The iso-loss speed-up over random against total parameters (log-log) per method: each
    size's value with its 95% interval, bounds as open triangles with an arrow (outside the fit),
    the weighted fitted line with its 95% band (solid over the fitted sizes, dashed and lighter
    where extrapolated), lines at 1x and the paper's 20x, GPT-2 124M marked. Without a line to
    draw, the axes say why."""
    from lfr.report.scaling import GPT2_124M, PAPER_SPEEDUP

    table, band = tables
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7.2, 3.8))
        measured = table[(table.kind == "measured") & (table.method != BASELINE)]
        slopes = table[(table.kind == "fit") & (table.quantity == "slope")].set_index("method")
        for method, rows in measured.groupby("method", sort=False):
            values = rows[rows.iso_speedup.notna()]
            ax.errorbar(values.params, values.iso_speedup, yerr=interval_bars(values, "iso_speedup"),
                        fmt="o", ms=5, capsize=2, color=color(method), label=f"{method}: measured (95%)")
            bounds = rows[rows.iso_speedup_bound.isin([">", "<"])]
            for _, row in bounds.iterrows():  # as the speedup figure draws one; never in the fit
                draw_bound(ax, row.params, row.iso_speedup_bound_value, row.iso_speedup_bound,
                           color(method), ", not fitted")
            draw_line(ax, band[band.method == method], slopes, method)
            at = table[(table.method == method) & (table.quantity == "fitted_speedup")
                       & (table["size"] == "gpt2-124M")]
            for _, row in at.iterrows():  # the line's reading there, labelled as what it is
                interval = (f" [{row.estimate_lo:.2g}, {row.estimate_hi:.2g}]"
                            if np.isfinite(row.estimate_lo) else "")
                ax.annotate(f"extrapolated: {row.estimate:.2g}x{interval}", (GPT2_124M, row.estimate),
                            xytext=(-4, 6), textcoords="offset points", ha="right", fontsize=6,
                            style="italic", color=color(method))
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.axhline(PAPER_SPEEDUP, color="k", lw=0.8, ls=":")
        ax.axvline(GPT2_124M, color="0.5", lw=0.8, ls=":")
        for y, text in ((1.0, "1x: random"), (PAPER_SPEEDUP, "20x: the paper's claim")):
            ax.annotate(text, (0.01, y), xycoords=("axes fraction", "data"), fontsize=7, va="bottom")
        ax.annotate("GPT-2 124M", (GPT2_124M, 0.02), xycoords=("data", "axes fraction"), fontsize=7,
                    rotation=90, ha="right", va="bottom")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        points = measured.iso_speedup.dropna().tolist() + measured.iso_speedup_bound_value.dropna().tolist()
        ax.set_ylim(min([*points, 1.0]) / 2, max([*points, PAPER_SPEEDUP]) * 2)
        low = measured.params.min() if len(measured) else GPT2_124M / 1e3
        ax.set_xlim(low / 2, max([GPT2_124M, *measured.params]) * 2)
        ax.set(xlabel="total parameters", ylabel="iso-loss speed-up over random",
               title="does the speed-up change with model size?")
        if not band.empty or len(measured):
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        if band.empty:
            reasons = ("; ".join(f"{m}: {n}" for m, n in slopes.note.items())
                       or "no method with a random frontier")
            ax.text(0.62, 0.22, "no trend fitted\n" + reasons.replace("; ", "\n"), ha="center", va="center",
                    transform=ax.transAxes, fontsize=7, bbox={"fc": "white", "ec": "0.7"})
        fig.tight_layout()
        save(fig, out_png)
    return fig


def draw_line(ax: plt.Axes, band: pd.DataFrame, slopes: pd.DataFrame, method: str) -> None:
    """One method's fitted line and band: solid over the fitted sizes, dashed beyond (extrapolation)."""
    if band.empty:
        return
    slope = slopes.loc[method]
    label = f"{method}: fit, slope {slope.estimate:.2f}"
    if np.isfinite(slope.estimate_lo):
        label += f" [{slope.estimate_lo:.2f}, {slope.estimate_hi:.2f}]"
    fitted = (band.kind == "fit").to_numpy()
    ends = np.isin(np.arange(len(band)), np.flatnonzero(fitted)[[0, -1]]) if fitted.any() else fitted
    for shown, style, alpha in ((fitted, "-", 0.2), (~fitted | ends, "--", 0.08)):  # they meet at the ends
        part = band.copy()
        part.loc[~shown, ["fitted_speedup", "fitted_speedup_lo", "fitted_speedup_hi"]] = np.nan
        ax.plot(part.params, part.fitted_speedup, ls=style, lw=1.2, color=color(method),
                label=label if style == "-" else f"{method}: extrapolated")
        ax.fill_between(part.params, part.fitted_speedup_lo, part.fitted_speedup_hi, color=color(method),
                        alpha=alpha, lw=0)
