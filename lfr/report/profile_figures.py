"""The paper's "why" figures, from the profiling pass and the `forgetting` stage's tables; the
`plot` stage (lfr/report/plot.py) says which figure reads what.

Curve figures show one run per method: the first profiled size and its lowest seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt

from lfr.report.figures import STYLE, color, panels, save
from lfr.report.forgetting import PAPER

CLASS_COLORS = {"learned": "#2ca02c", "forgotten": "#d62728", "multiple descent": "#9467bd",
                "unlearned": "#7f7f7f"}


def first_runs(profiles: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """method -> profile of its run at the first profiled size and lowest seed."""
    frames = list(profiles.values())
    size = frames[0]["size"].iloc[0]
    out: dict[str, pd.DataFrame] = {}
    for frame in sorted(frames, key=lambda f: int(f["seed"].iloc[0])):
        method = frame["method"].iloc[0]
        if frame["size"].iloc[0] == size and method not in out:
            out[method] = frame
    return out


def skipped(out_png: Path, text: str) -> plt.Figure:
    with plt.rc_context(STYLE):
        fig, axes = panels(1)
        axes[0, 0].text(0.5, 0.5, text, ha="center", va="center")
        axes[0, 0].set_axis_off()
        save(fig, out_png)
    return fig


def plot_distribution(profiles: dict[str, pd.DataFrame], out_png: Path) -> plt.Figure:
    """Per-block loss distribution at each snapshot (box: quartiles, whiskers: 5-95%)."""
    runs = first_runs(profiles)
    with plt.rc_context(STYLE):
        fig, axes = panels(len(runs), width=4.2)
        for ax, (method, prof) in zip(axes[0], runs.items(), strict=True):
            groups = [g["loss"].to_numpy() for _, g in prof.groupby("checkpoint_tokens", observed=True)]
            ticks = sorted(prof["checkpoint_tokens"].unique())
            ax.boxplot(groups, whis=(5, 95), showfliers=False, widths=0.6,
                       boxprops={"color": color(method)}, medianprops={"color": "k"})
            step = max(1, len(ticks) // 6)
            ax.set_xticks(range(1, len(ticks) + 1)[::step], [f"{t / 1e6:.2g}" for t in ticks][::step])
            ax.set(title=f"{method} ({prof['size'].iloc[0]})", xlabel="snapshot (M training tokens)",
                   ylabel="block loss (nats/token)")
        save(fig, out_png)
    return fig


def plot_examples(profiles: dict[str, pd.DataFrame], tables: Path, out_png: Path,
                  per_class: int = 6) -> plt.Figure:
    """Example trajectories of each class, from the baseline run (or the first profiled one): the
    classes that the `forgetting` stage found, drawn with the run's profile."""
    runs = first_runs(profiles)
    method = "random" if "random" in runs else next(iter(runs))
    prof = runs[method]
    run = prof["run"].iloc[0]
    threshold = pd.read_csv(tables / "forgetting.csv").set_index("run").loc[run, "threshold_nats"]
    blocks = pd.read_parquet(tables / "forgetting_blocks.parquet")
    blocks = blocks[blocks.run == run].reset_index(drop=True)
    blocks["kind"] = np.select([blocks.events >= 2, blocks.events == 1],
                               ["multiple descent", "forgotten once"], blocks["class"])
    wide = prof.pivot_table(index="block_id", columns="checkpoint_tokens", values="loss", observed=True)
    rng = np.random.default_rng(0)
    kinds = {"learned": CLASS_COLORS["learned"], "forgotten once": CLASS_COLORS["forgotten"],
             "multiple descent": CLASS_COLORS["multiple descent"], "unlearned": CLASS_COLORS["unlearned"]}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(kinds), figsize=(3.0 * len(kinds), 2.8), squeeze=False,
                                 sharey=True)
        for ax, (kind, col) in zip(axes[0], kinds.items(), strict=True):
            ids = blocks.block_id[blocks.kind == kind].to_numpy()
            for block in rng.choice(ids, size=min(per_class, len(ids)), replace=False):
                ax.plot(wide.columns / 1e6, wide.loc[block], color=col, alpha=0.7, lw=1, marker=".")
            if not len(ids):
                ax.text(0.5, 0.5, "no block", ha="center", va="center", transform=ax.transAxes)
            share = len(ids) / len(blocks)
            ax.set(title=f"{kind}: {share:.0%} of blocks", xlabel="M training tokens")
        axes[0, 0].set_ylabel(f"block loss ({method}, d={threshold:.2f} nats)")
        save(fig, out_png)
    return fig


def plot_forgetting(tables: Path, out_png: Path) -> plt.Figure:
    """Class fractions per run (mean over seeds), next to the paper's forgetting figures."""
    table = pd.read_csv(tables / "forgetting.csv")
    cols = ["learned", "forgotten", "multiple_descent", "unlearned", "multiple_descent_of_forgotten"]
    mean = table.groupby(["size", "method"], sort=False)[cols].mean().reset_index()
    labels = [f"{r.method}\n{r.size}" for r in mean.itertuples()]
    with plt.rc_context(STYLE):
        fig, axes = panels(2, width=max(3.6, 0.9 * len(mean)))
        x = np.arange(len(mean))
        bottom = np.zeros(len(mean))
        for name in ("learned", "forgotten", "unlearned"):
            axes[0, 0].bar(x, mean[name], bottom=bottom, color=CLASS_COLORS[name], label=name)
            bottom += mean[name]
        axes[0, 0].axhline(PAPER["forgotten"], color="k", ls="--", lw=0.8,
                           label=f"paper: {PAPER['forgotten']:.0%} forgotten")
        axes[0, 0].set(title="blocks by class", ylabel="fraction of profiled blocks")
        axes[0, 1].bar(x, mean["multiple_descent_of_forgotten"], color=CLASS_COLORS["multiple descent"])
        axes[0, 1].axhline(PAPER["multiple_descent_of_forgotten"], color="k", ls="--", lw=0.8,
                           label=f"paper: {PAPER['multiple_descent_of_forgotten']:.0%}")
        axes[0, 1].set(title="multiple descent among forgotten", ylim=(0, 1))
        for ax in axes[0]:
            ax.set_xticks(x, labels, fontsize=7)
            ax.legend(fontsize=7)
        save(fig, out_png)
    return fig


def plot_kept_domains(tables: Path, out_png: Path) -> plt.Figure:
    """Domain make-up of the kept set in each focus phase, against the whole data."""
    kept = pd.read_csv(tables / "kept_domains.csv")
    if "note" in kept.columns:
        return skipped(out_png, kept["note"].iloc[0])
    kept = kept[(kept["size"] == kept["size"].iloc[0]) & (kept.seed == kept.seed.min())]
    methods = list(dict.fromkeys(kept.method))
    domains = sorted(kept.domain.unique())
    with plt.rc_context(STYLE):
        fig, axes = panels(len(methods), width=4.0)
        for ax, method in zip(axes[0], methods, strict=True):
            part = kept[kept.method == method]
            wide = part.pivot_table(index="phase", columns="domain", values="kept_share").reindex(
                columns=domains, fill_value=0)
            data = part.drop_duplicates("domain").set_index("domain")["data_share"].reindex(domains)
            wide = pd.concat([data.to_frame("all data").T, wide])
            bottom = np.zeros(len(wide))
            for j, domain in enumerate(domains):
                ax.bar(range(len(wide)), wide[domain], bottom=bottom, color=f"C{j}", label=domain)
                bottom += wide[domain].to_numpy()
            ax.set_xticks(range(len(wide)), ["all"] + [f"focus\n{p}" for p in wide.index[1:]], fontsize=7)
            ax.set(title=method, ylabel="share of the kept blocks")
        axes[0, -1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
        save(fig, out_png)
    return fig


def plot_domain_loss(profiles: dict[str, pd.DataFrame], out_png: Path) -> plt.Figure:
    """Mean block loss per domain against training tokens."""
    runs = first_runs(profiles)
    if all(prof["domain"].isna().all() for prof in runs.values()):
        return skipped(out_png, "skipped: the corpus has no domain field")
    with plt.rc_context(STYLE):
        fig, axes = panels(len(runs), width=3.8)
        for ax, (method, prof) in zip(axes[0], runs.items(), strict=True):
            curves = prof.groupby(["domain", "checkpoint_tokens"], observed=True)["loss"].mean()
            for j, (domain, curve) in enumerate(curves.groupby(level=0, observed=True)):
                ax.plot(curve.index.get_level_values(1) / 1e6, curve.to_numpy(), color=f"C{j}",
                        marker=".", label=domain)
            ax.set(title=f"{method} ({prof['size'].iloc[0]})", xlabel="M training tokens",
                   ylabel="mean block loss")
        axes[0, -1].legend(fontsize=7)
        save(fig, out_png)
    return fig
