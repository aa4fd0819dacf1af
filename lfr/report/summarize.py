"""Stage `summarize`: finished runs and evaluations -> `main.csv`, `main_by_seed.csv` and
`summary.md` (main.csv in brief: lfr/report/headline.py).

Reads only files (run.json, metrics.parquet, eval parquets, references' val_bpb.json) and never
imports torch.

main.csv has one row per size x method x budget x lr_mult. `budget`: the run's length as a
multiple of the method's default run (run.json's `budget`; 1.0 for runs written before budgets);
`lr_mult`: its learning rate as a multiple of train.lr (1 but for the learning-rate check).

Definitions (also in results/tables/README.md):
- `val_loss`: final mean next-token loss (nats/token) on the fixed validation blocks; `val_bpb`:
  the same losses in bits per UTF-8 byte of the text those blocks' targets encode (EOT: its loss
  counts, 0 bytes), comparable across tokenizers; a reference model's: its own tokenizer's on
  the same text (lfr/reference_bpb.py).
- `tokens`: optimizer-step tokens; `forward_only_tokens`: tokens of extra scoring passes;
  `reference_train_tokens`: optimizer-step tokens of a reference model (ppl-prune, rho-loss);
  `compute_tokens` = tokens + reference_train_tokens + forward_only_tokens / 3: the total in
  training-token units (a forward pass is ~1/3 of a training step's FLOPs), whatever the model
  size of the reference (an upper bound when the reference is smaller than the model).
- `compute_flops`: the same total in FLOPs, each model at its own size (`compute_flops` below).
- The iso-loss speed-up against `random`'s frontier (`frontier_budgets`, `iso_speedup`,
  `iso_speedup_flops`, `iso_speedup_uncharged` (an ablation), each with `_lo`, `_hi`, `_bound`,
  `_bound_value`: a bound is never in the value column) and the equal-budget comparison
  (`baseline_val_loss`, `baseline_n_seeds`, `delta_val_loss` with `_lo`, `_hi`, `verdict`,
  `equal_budget_note`: only runs of equal tokens are compared): see
  lfr/report/speedup.py. These are the headline comparison: final, fully decayed losses of whole
  runs.
- Secondary, *within-run crossing* columns (they compare a point in the middle of one run, not
  annealed, with the annealed end of `random`'s run of the same size and budget; kept for
  continuity with the paper's reading): `tokens_to_baseline`: tokens a method needed to first
  reach `baseline_val_loss`, by linear interpolation between logged evaluations of its mean curve
  over seeds; empty with `reached` = false if it never did; `crossing_speedup` = `random`'s tokens
  / `tokens_to_baseline`; `val_loss_at_baseline_tokens`: the method's loss at `random`'s token
  count, and `baseline_val_loss_at_tokens`: `random`'s loss at the method's token count. Curves
  are never extrapolated: empty where a curve stops before that token count.
  `*_at_common_tokens`: both at the smaller of the two token counts, so always defined.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from lfr.files import write_csv, write_with
from lfr.report.headline import summary_markdown
from lfr.report.speedup import (
    BASELINE,
    EQUAL_COLUMNS,
    GROUP,
    ISO_COLUMNS,
    equal_budget,
    iso_speedups,
    tokens_to_references,
)

log = logging.getLogger(__name__)

RUN_COLUMNS = [
    "size", "method", "budget", "lr_mult", "seed", "params", "params_nonemb", "tokens",
    "tokens_per_param", "passes", "forward_only_tokens",
    "reference_train_tokens", "reference_scoring_tokens", "compute_tokens", "flops_per_token",
    "reference_flops_per_token", "compute_flops", "steps", "val_loss", "val_ppl", "val_bpb",
    "val_loss_initial", "wall_s", "gpu_hours", "train_tokens_per_s", "device", "config_hash", "git_commit",
]
KEYS = [*GROUP, "seed"]  # size, method, budget, lr_mult, seed
DEFAULT_BUDGET = 1.0
"""The budget of a run, evaluation or profile written before budgets: the default run."""
PROFILE_COLUMNS = ["profile_tokens", "forgotten", "multiple_descent_of_forgotten"]


def load_run(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    run_dir = Path(run_dir)
    path = run_dir / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run the `train` stage for this run first")
    return json.loads(path.read_text()), pd.read_parquet(run_dir / "metrics.parquet")


def load_runs(run_dirs: list[Path], every_row: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per run, validation curves in long form: size, method, seed, tokens, val_loss,
    phase); `every_row` keeps the rows without a validation loss too (val_loss NaN)."""
    runs, curves = [], []
    for run_dir in run_dirs:
        info, metrics = load_run(run_dir)
        val = metrics.dropna(subset=["val_loss"])
        gpus = info["world_size"] if info["device"].startswith("cuda") else 0
        info.setdefault("budget", DEFAULT_BUDGET)  # runs written before budgets
        info.setdefault("lr_mult", 1.0)  # ... before the learning-rate check
        info.setdefault("params_nonemb", math.nan)  # ... before tokens per parameter
        info.setdefault("passes", math.nan)
        info["tokens_per_param"] = info["tokens"] / info["params"]
        info.setdefault("reference_train_tokens", 0)  # runs written before the peers
        info.setdefault("reference_scoring_tokens", 0)  # ... and before FLOPs were counted
        info.setdefault("reference_flops_per_token", 0)
        info.setdefault("flops_per_token", math.nan)
        info.setdefault("val_bpb", math.nan)  # runs written before val_bpb: not measured
        info["compute_tokens"] = compute_tokens(info)
        info["compute_flops"] = compute_flops(info)
        runs.append({**info, "val_ppl": math.exp(info["val_loss"]), "gpu_hours": info["wall_s"] * gpus / 3600,
                     "val_loss_initial": float(val.val_loss.iloc[0])})
        curves.append((metrics if every_row else val)[["tokens", "val_loss", "phase"]].assign(
            size=info["size"], method=info["method"], budget=info["budget"], lr_mult=info["lr_mult"],
            seed=info["seed"]))
    return pd.DataFrame(runs)[RUN_COLUMNS], pd.concat(curves, ignore_index=True)


def compute_tokens(info: dict) -> float:
    """Total compute in training-token units: optimizer-step tokens, a reference model's
    training tokens, and forward-only (scoring) tokens at 1/3 each."""
    return (info["tokens"] + info.get("reference_train_tokens", 0)
            + info.get("forward_only_tokens", 0) / 3)


def compute_flops(info: dict) -> float:
    """Total compute in FLOPs, each model at its own `flops_per_token` (F: training FLOPs per
    token, 6N + attention, N without position embeddings, the MFU's estimate; a forward-only token
    costs F / 3):

        F x tokens + F / 3 x (forward_only_tokens - reference_scoring_tokens)
        + F_ref x reference_train_tokens + F_ref / 3 x reference_scoring_tokens

    F = run.json's `flops_per_token` (the model), F_ref = its `reference_flops_per_token` (the
    reference model, ppl-prune's or rho-loss's), `reference_scoring_tokens` = the part of
    `forward_only_tokens` that ran through the reference model (ppl-prune: all of it), so the rest
    are forward passes of the model itself (rho-loss's and selective-backprop's candidates). A
    run.json without F_ref (or 0) charges the reference at F, which is then exactly
    F x compute_tokens (compute_tokens' convention); without F, NaN."""
    f = info.get("flops_per_token", math.nan)
    f_ref = info.get("reference_flops_per_token") or f
    scoring = info.get("reference_scoring_tokens", 0)
    return (f * info["tokens"] + f / 3 * (info.get("forward_only_tokens", 0) - scoring)
            + f_ref * info.get("reference_train_tokens", 0) + f_ref / 3 * scoring)


def tokens_to_reach(tokens: np.ndarray, loss: np.ndarray, target: float) -> float:
    """First token count at which the curve reaches `target` (linear interpolation), or NaN."""
    below = np.flatnonzero(loss <= target)
    if len(below) == 0:
        return math.nan
    i = below[0]
    if i == 0:
        return float(tokens[0])
    t0, t1, l0, l1 = tokens[i - 1], tokens[i], loss[i - 1], loss[i]
    return float(t0 + (t1 - t0) * (l0 - target) / (l0 - l1))


def loss_at(tokens: np.ndarray, loss: np.ndarray, at: float) -> float:
    """The curve's loss at `at` tokens (linear interpolation); NaN outside the curve."""
    if not tokens[0] <= at <= tokens[-1]:
        return math.nan
    return float(np.interp(at, tokens, loss))


def mean_curve(curves: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Mean validation curve over seeds, on the token counts every seed logged."""
    wide = curves.pivot_table(index="tokens", columns="seed", values="val_loss").dropna()
    return wide.index.to_numpy(dtype=float), wide.mean(axis=1).to_numpy()


def eval_table(eval_files: list[Path]) -> pd.DataFrame:
    """Downstream metrics (domain 'all') as columns `<metric>:<task>` and `<metric>_stderr:<task>`."""
    if not eval_files:
        return pd.DataFrame(columns=KEYS)
    tidy = with_budget(pd.concat([pd.read_parquet(f) for f in eval_files], ignore_index=True))
    tidy = tidy[tidy.domain == "all"]
    values = tidy.pivot_table(index=KEYS, columns=tidy.metric + ":" + tidy.task, values="value",
                              sort=False, dropna=False).dropna(how="all")  # no empty key combinations
    errors = tidy.pivot_table(index=KEYS, columns=tidy.metric + "_stderr:" + tidy.task,
                              values="stderr", sort=False, dropna=False).reindex(values.index)
    order = [c for pair in zip(values.columns, errors.columns, strict=True) for c in pair]
    wide = values.join(errors)[order]
    return wide.loc[:, wide.notna().any()].reset_index()  # lm-eval gives no stderr for some metrics


def with_budget(table: pd.DataFrame) -> pd.DataFrame:
    """`table` (evaluations, forgetting rows) with `budget` and `lr_mult` columns: the default
    run's, which is all that is evaluated and profiled (a reference model's rows have none: NaN)."""
    for key, default in (("budget", DEFAULT_BUDGET), ("lr_mult", 1.0)):
        if key not in table.columns:
            table = table.assign(**{key: np.where(table.method == "reference", math.nan, default)})
    return table


CROSSING_COLUMNS = ["tokens_to_baseline", "reached", "crossing_speedup",
                    "val_loss_at_baseline_tokens", "baseline_val_loss_at_tokens", "common_tokens",
                    "val_loss_at_common_tokens", "baseline_val_loss_at_common_tokens"]


def speed_columns(curves: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The within-run crossing columns per size x method x budget, against `random`'s runs of the
    same size and budget: tokens_to_baseline, reached, crossing_speedup and the equal-token
    losses; empty (with a warning) at a size without a `random` run, empty at a budget without."""
    rows = []
    for size in dict.fromkeys(curves["size"]):
        if not (curves[curves["size"] == size].method == BASELINE).any():
            log.warning("summarize: no %r run at size %s: its baseline columns (iso_speedup, ...) "
                        "stay empty; add %r to `methods` for that size", BASELINE, size, BASELINE)
    for (size, method, budget, lr), group in curves.groupby(GROUP, sort=False):
        at = ((curves["size"] == size) & (curves.method == BASELINE) & (curves.budget == budget)
              & (curves.lr_mult == lr))
        base = curves[at]
        tokens, loss = mean_curve(group)
        row = {"size": size, "method": method, "budget": budget, "lr_mult": lr}
        if not base.empty:
            b_tokens, b_loss = mean_curve(base)
            target = runs[(runs["size"] == size) & (runs.method == BASELINE) & (runs.budget == budget)
                          & (runs.lr_mult == lr)].val_loss.mean()
            reach = tokens_to_reach(tokens, loss, target)
            common = min(tokens[-1], b_tokens[-1])
            row |= {"tokens_to_baseline": reach,
                    "reached": not math.isnan(reach), "crossing_speedup": b_tokens[-1] / reach,
                    "val_loss_at_baseline_tokens": loss_at(tokens, loss, b_tokens[-1]),
                    "baseline_val_loss_at_tokens": loss_at(b_tokens, b_loss, tokens[-1]),
                    "common_tokens": common, "val_loss_at_common_tokens": loss_at(tokens, loss, common),
                    "baseline_val_loss_at_common_tokens": loss_at(b_tokens, b_loss, common)}
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=[*GROUP, *CROSSING_COLUMNS])


def aggregate(by_seed: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds (with `_std` columns for the losses and metrics), one row per size x method
    x budget."""
    metric_cols = [c for c in by_seed.columns if ":" in c]
    numeric = ["params", "params_nonemb", "tokens", "tokens_per_param", "passes", "forward_only_tokens",
               "reference_train_tokens", "compute_tokens",
               "compute_flops", "steps", "val_loss", "val_ppl", "val_bpb", "wall_s", "gpu_hours",
               "train_tokens_per_s", *[c for c in PROFILE_COLUMNS if c in by_seed.columns], *metric_cols]
    groups = by_seed.groupby(GROUP, sort=False, dropna=False)
    out = groups[numeric].mean()
    out.insert(0, "n_seeds", groups.size())
    for col in ["val_loss", "val_bpb", *[c for c in metric_cols if "_stderr:" not in c]]:
        out.insert(out.columns.get_loc(col) + 1, f"{col}_std", groups[col].std())
    for col in ("device", "config_hash", "git_commit"):
        out[col] = groups[col].agg(lambda s: ";".join(sorted(set(map(str, s.dropna())))))
    return out.reset_index()


def with_reference_bpb(by_seed: pd.DataFrame, files: list[Path]) -> pd.DataFrame:
    """The reference models' val_bpb (stage reference-bpb) in their rows (`method` reference,
    `size` the model's name); a reference without evaluations gets a row of its own."""
    for path in files:
        info = json.loads(Path(path).read_text())
        rows = (by_seed.method == "reference") & (by_seed["size"] == info["model"])
        if not rows.any():
            by_seed = pd.concat([by_seed, pd.DataFrame([{"size": info["model"], "method": "reference",
                                                         "seed": -1}])], ignore_index=True)
            rows = by_seed.index == by_seed.index[-1]
        by_seed.loc[rows, "val_bpb"] = info["val_bpb"]
    return by_seed


def with_reference_anchors(main: pd.DataFrame, runs: pd.DataFrame, by_seed: pd.DataFrame,
                           reference_tokens: dict[str, float]) -> pd.DataFrame:
    """`tokens_to_reference:<name>` (+ `_bound:`, `_bound_value:`) for every reference with a
    val_bpb, and `reference_token_share:<name>` = that / the reference's public training tokens
    (+ `reference_token_share_bound_value:<name>`, its bound's, in the direction of the tokens')."""
    refs = by_seed[(by_seed.method == "reference") & by_seed.val_bpb.notna()]
    references = dict(zip(refs["size"], refs.val_bpb, strict=True))
    if not references:
        return main
    main = main.merge(tokens_to_references(runs, references), on=["size", "method"], how="left", sort=False)
    for name, tokens in reference_tokens.items():
        if name in references:
            main[f"reference_token_share:{name}"] = main[f"tokens_to_reference:{name}"] / tokens
            main[f"reference_token_share_bound_value:{name}"] = (
                main[f"tokens_to_reference_bound_value:{name}"] / tokens)
    return main


def summarize(run_dirs: list[Path], out_csv: Path, eval_files: list[Path] = (),
              by_seed_csv: Path | None = None, forgetting_csv: Path | None = None,
              reference_bpb: list[Path] = (), reference_tokens: dict[str, float] | None = None
              ) -> pd.DataFrame:
    """Write main.csv (size x method x budget, mean over seeds), main_by_seed.csv and summary.md
    next to it; return main.

    With `forgetting_csv`, the profiled runs also carry their profiling tokens (forward-only,
    not part of `tokens`) and forgetting fractions (means over the profiled seeds only).
    `reference_bpb`: the val_bpb.json of reference models, for their rows' `val_bpb` and every
    run row's `tokens_to_reference:<name>`; `reference_tokens`: the public training tokens of some
    of them (`eval.reference_tokens`), for `reference_token_share:<name>`."""
    runs, curves = load_runs(run_dirs)
    evals = eval_table(list(eval_files))
    by_seed = runs.merge(evals, on=KEYS, how="left")  # keeps the config's run order
    if forgetting_csv is not None:
        profiled = with_budget(pd.read_csv(forgetting_csv))[KEYS + PROFILE_COLUMNS]
        by_seed = by_seed.merge(profiled, on=KEYS, how="left")
    unmatched = evals.merge(runs[KEYS], on=KEYS, how="left", indicator=True).query("_merge == 'left_only'")
    by_seed = pd.concat([by_seed, unmatched.drop(columns="_merge")], ignore_index=True)  # references
    by_seed = with_reference_bpb(by_seed, list(reference_bpb))
    main = aggregate(by_seed)
    for table in (iso_speedups(runs), equal_budget(runs), speed_columns(curves, runs)):
        main = main.merge(table, on=GROUP, how="left", sort=False)
    main = with_reference_anchors(main, runs, by_seed, reference_tokens or {})
    text = ["verdict", "equal_budget_note", "iso_interval", "delta_interval",
            *[c for c in main.columns if c.endswith("_bound") or "_bound:" in c]]
    main[text] = main[text].astype(object).where(main[text].notna(), "")  # empty: no bound, no verdict
    lead = ["size", "params", "params_nonemb", "method", "budget", "lr_mult", "n_seeds", "tokens",
            "tokens_per_param", "passes", "forward_only_tokens",
            "reference_train_tokens", "compute_tokens", "compute_flops", "val_loss", "val_loss_std",
            "val_ppl", "val_bpb", "val_bpb_std", *ISO_COLUMNS, *EQUAL_COLUMNS]
    rest = [c for c in main.columns if c not in lead and c not in CROSSING_COLUMNS]
    main = main[lead + rest + CROSSING_COLUMNS]
    write_csv(by_seed_csv or Path(out_csv).with_name("main_by_seed.csv"), by_seed)
    write_csv(out_csv, main)
    write_with(Path(out_csv).with_name("summary.md"), lambda p: p.write_text(summary_markdown(main)))
    return main


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m lfr summarize`."""
    parser.add_argument("--runs", type=Path, nargs="+", required=True,
                        help="finished run folders (with run.json and metrics.parquet)")
    parser.add_argument("--evals", type=Path, nargs="*", help="tidy eval parquets (evaluate)")
    parser.add_argument("--forgetting", type=Path, help="results/tables/forgetting.csv (profiled runs)")
    parser.add_argument("--reference-bpb", type=Path, nargs="*",
                        help="val_bpb.json of the reference models (reference-bpb)")
    parser.add_argument("--reference-tokens",
                        help="JSON {reference: its public training tokens} (eval.reference_tokens)")
    parser.add_argument("--out", type=Path, required=True,
                        help="main.csv to write; main_by_seed.csv goes next to it")


def main(runs: list[Path], out: Path, evals: list[Path] | None = None,
         forgetting: Path | None = None, reference_bpb: list[Path] | None = None,
         reference_tokens: str | None = None) -> str:
    return summarize(runs, out, evals or [], forgetting_csv=forgetting, reference_bpb=reference_bpb or [],
                     reference_tokens=json.loads(reference_tokens or "{}")).to_string(index=False)
