"""Stage `summarize` and `plot`: read finished runs from disk, write tables and figures.

Reads only files (run.json, metrics.parquet), never imports torch, so it runs anywhere.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from lfr.files import atomic_path, write_csv

MAIN_COLUMNS = [
    "size", "method", "seed", "params", "tokens", "forward_only_tokens", "steps", "val_loss", "val_ppl",
    "val_loss_initial", "wall_s", "train_tokens_per_s", "device", "config_hash", "git_commit",
]


def load_run(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    run_dir = Path(run_dir)
    path = run_dir / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run the `train` stage for this run first")
    return json.loads(path.read_text()), pd.read_parquet(run_dir / "metrics.parquet")


def eval_columns(eval_files: list[Path]) -> pd.DataFrame:
    """Downstream metrics as columns `<metric>:<task>` (+ `<metric>_stderr:<task>`), one row per run."""
    if not eval_files:
        return pd.DataFrame(columns=["size", "method", "seed"])
    tidy = pd.concat([pd.read_parquet(f) for f in eval_files], ignore_index=True)
    tidy = tidy[tidy.domain == "all"]
    tidy = tidy.assign(col=tidy.metric + ":" + tidy.task, err=tidy.metric + "_stderr:" + tidy.task)
    keys = ["size", "method", "seed"]
    values = tidy.pivot_table(index=keys, columns="col", values="value", sort=False, dropna=False)
    errors = tidy.pivot_table(index=keys, columns="err", values="stderr", sort=False, dropna=False)
    wide = values.join(errors)
    order = [c for pair in zip(values.columns, errors.columns, strict=True) for c in pair]
    return wide[order].reset_index()


def summarize(run_dirs: list[Path], out_csv: Path, eval_files: list[Path] = ()) -> pd.DataFrame:
    """One row per size x method x seed (plus reference models), in the order given."""
    rows = []
    for run_dir in run_dirs:
        info, metrics = load_run(run_dir)
        val = metrics["val_loss"].dropna()
        rows.append({**info, "val_ppl": math.exp(info["val_loss"]),
                     "val_loss_initial": float(val.iloc[0])})
    table = pd.DataFrame(rows)[MAIN_COLUMNS]
    evals = eval_columns(list(eval_files))
    table = table.merge(evals, on=["size", "method", "seed"], how="outer", sort=False)
    write_csv(out_csv, table)
    return table


def plot_val_loss(run_dirs: list[Path], out_png: Path) -> None:
    """Validation loss against tokens, one panel per model size, one line per method/seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [load_run(d) for d in run_dirs]
    sizes = list(dict.fromkeys(info["size"] for info, _ in runs))
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.5 * len(sizes), 3.4), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        for info, metrics in runs:
            if info["size"] != size:
                continue
            val = metrics.dropna(subset=["val_loss"])
            ax.plot(val["tokens"] / 1e6, val["val_loss"], marker=".",
                    label=f"{info['method']} (seed {info['seed']})")
        ax.set(title=size, xlabel="training tokens (M)", ylabel="validation loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    for suffix in (".png", ".pdf"):
        target = Path(out_png).with_suffix(suffix)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, dpi=150, format=suffix[1:])
    plt.close(fig)
