"""Stage `scaling`: does a method's speed-up over `random` change with model size? The per-size
measurements, their trend across sizes, and the learning-rate check.

Input: summarize's per-run table `main_by_seed.csv` (released models' rows are ignored) and, where
runs were profiled, the forgetting table. No torch; numpy, pandas, scipy.

**Per size** (`kind` = `measured`, one row per size x method): the method's runs at budget 1 and
the config's learning rate (`lr_mult` 1; a table without the column: every run), against random's
frontier of its `lr_mult` 1 runs at every budget, as in lfr/report/speedup.py: the iso-loss
speed-up in training tokens (`compute_tokens`) with its 95% interval, paired t where the seeds
allow, else the pooled bootstrap, with the same seeded draws as main.csv's row; a bound (outside
random's swept range) is never a value: `iso_speedup` stays empty, the bound goes to
`iso_speedup_bound` and `iso_speedup_bound_value`. The equal-budget Δ val_loss and its verdict
(`speedup.equal_budget`), the learning-rate check's summary and the forgetting fractions.

**The trend** (`kind` = `fit`): weighted least squares of ln S_k on ln N_k (S: the iso-loss
speed-up, N: total parameters) over the sizes k where S is a value with an interval; a bound or a
size without a noise estimate is left out (`in_fit` false, `fit_note` says why). The weights are
1 / s_k^2, s_k the half-width of the central 68% of size k's replicates of ln S (below): a robust
scale, since with 3 seeds a replicate's distribution is a t with 2 degrees of freedom, whose
variance is infinite; equal weights where some s_k is 0 (noise-free input). A slope needs 2 sizes,
its interval 3 (with 2 the line has no residual that could show it is not a line).

**The slope's interval: a hierarchical parametric bootstrap.** Each replicate redraws every size
independently, the way that size's row draws its interval, rebuilds its frontier, recomputes its
ln S, and refits the line with the same weights; the interval is the 2.5% and 97.5% order
statistics of the replicates' slopes. A size's replicates of ln S are:
- *paired* (the row's interval is the paired t): ln S + t(n-1) x SD / sqrt(n), with SD the spread
  of the n shared seeds' own log speed-ups (`speedup.paired_logs`), i.e. draws from the posterior
  whose central 95% is the row's paired t interval;
- *pooled* (otherwise): `speedup.pooled_draws`, the row's own pooled bootstrap: the noise
  variance drawn from its scaled inverse-chi-square posterior, every mean of random's budgets and
  of the method redrawn, random's frontier rebuilt, S recomputed. A replicate outside the frontier
  enters the fit at the frontier's end (its bound); the share of such replicates is in `fit_note`.
Why this, measured on simulated ladders of 3-4 sizes x 3 seeds with a known slope (random at 5
budgets, true loss linear in log tokens; tests/test_scaling.py checks the draws' coverage):
- resampling the seeds within each size (a percentile bootstrap) covered the true slope about 80%
  of the time: it takes the 3 seeds for the whole population, so it misses the t tail and
  shrinks the SD by sqrt(2/3);
- these draws covered (1000 ladders of 2000 replicates each) 96% pooled and 97-98% paired with
  the same noise at every size (the sum of per-size t posteriors is a little wider than a t, as
  in Behrens-Fisher), and 94% pooled and 94-97% paired with the noise doubling from size to size;
- a Welch-Satterthwaite t interval of the same weighted slope covered only 82-92%: weights from
  2-degree-of-freedom variances favour the sizes whose spread happens to be small, which the
  draws' t tails absorb and a normal-theory standard error does not.
The interval holds seed noise only: `lack_of_fit` (the weighted residual sum of squares against
chi-square with K - 2 degrees of freedom) says whether the sizes depart from a straight line by
more than that noise. Spearman's rho of S against N over the same sizes is the model-free check,
with its exact permutation p-value (with 3 sizes never below 1/3).

**Readings of the line** (`fitted_speedup`: exp of the line at a size, with the pointwise 95%
band of the replicates' lines): at each size of the ladder (`kind` `fit` inside the fitted sizes'
range, `extrapolation` outside), at GPT-2 124M (an extrapolation unless the ladder reaches it;
its verdict says where the paper's 20x lies against the band), and the parameters at which the line reaches 1x
and 20x (`params_at`), whose interval is the set of parameter counts where the band contains
that multiplier, on a log grid of GRID_PARAMS: an end at the grid's edge reads 0 or inf (not
bounded by the data). Every generator is seeded (the tables are the same every time).

**Learning rates** (learning_rates.csv, sizes with runs at `lr_mult` other than 1, budget 1):
each method's mean final loss at each learning-rate multiplier; `same lr`: the method against
random at the same multiplier (`speedup.equal_budget`: paired t on shared seeds, else Welch);
`own best`: the method at its lowest-mean-loss multiplier against random at random's. Each best is
chosen on the runs it is then compared with, on both sides alike.
"""

from __future__ import annotations

import argparse
import itertools
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lfr.files import write_csv
from lfr.report.speedup import (
    BASELINE,
    BOOT_SEED,
    BOUNDS,
    LEVEL,
    N_BOOT,
    PAIRED,
    POOLED,
    equal_budget,
    frontier,
    generator,
    invert,
    paired_interval,
    paired_logs,
    per_seed,
    pooled_draws,
    speedup_columns,
)
from lfr.report.summarize import DEFAULT_BUDGET, with_budget

LR_FILE, BAND_FILE = "learning_rates.csv", "scaling_band.csv"
"""Written next to scaling.csv."""
COST = "compute_tokens"
"""The compute of the trend's speed-up: training tokens, scoring passes at 1/3 (main.csv's
`iso_speedup`)."""
GPT2_124M = 124_439_808
"""GPT-2 124M's total parameters (tied embeddings counted once), the paper's smallest model."""
PAPER_SPEEDUP = 20.0
"""The paper's claimed multiplier."""
TARGETS = (1.0, PAPER_SPEEDUP)
"""Multipliers whose parameter count on the fitted line is reported (`params_at`)."""
GRID_PARAMS = (1e2, 1e15, 600)
"""Log grid (first, last, points) of parameter counts for `params_at` and the band file."""
BAND_POINTS = 60
MIN_SLOPE, MIN_INTERVAL = 2, 3
"""Sizes with a value needed for a slope, and for its interval (and Spearman, lack of fit)."""

MEASURED = ["size", "params", "params_nonemb", "tokens_per_param", "method", "n_seeds", "val_loss",
            "frontier_budgets", "iso_speedup", "iso_speedup_lo", "iso_speedup_hi", "iso_interval",
            "iso_speedup_bound", "iso_speedup_bound_value", "baseline_val_loss", "baseline_n_seeds",
            "delta_val_loss", "delta_val_loss_lo", "delta_val_loss_hi", "delta_interval", "verdict",
            "equal_budget_note", "lr_mults", "verdicts_by_lr", "same_verdict_at_every_lr", "best_lr_mult",
            "baseline_best_lr_mult", "best_lr_delta_val_loss", "best_lr_delta_val_loss_lo",
            "best_lr_delta_val_loss_hi", "best_lr_verdict", "profiled_seeds", "forgotten",
            "multiple_descent_of_forgotten", "in_fit", "fit_note"]
FITTED = ["quantity", "estimate", "estimate_lo", "estimate_hi", "p_value", "fit_sizes", "note"]
COLUMNS = ["kind", *MEASURED[:5], *FITTED[:1], *MEASURED[5:], *FITTED[1:]]
LR_COLUMNS = ["size", "params", "method", "comparison", "lr_mult", "baseline_lr_mult", "n_seeds",
              "val_loss", "val_loss_std", "best", "baseline_val_loss", "baseline_n_seeds",
              "delta_val_loss", "delta_val_loss_lo", "delta_val_loss_hi", "delta_interval", "verdict",
              "equal_budget_note"]
BAND_COLUMNS = ["method", "params", "kind", "fitted_speedup", "fitted_speedup_lo", "fitted_speedup_hi"]
COUNTS = ["n_seeds", "frontier_budgets", "baseline_n_seeds", "profiled_seeds", "fit_sizes"]
TEXT = ["size", "quantity", "iso_interval", "iso_speedup_bound", "delta_interval", "verdict",
        "equal_budget_note", "lr_mults",
        "verdicts_by_lr", "best_lr_verdict", "fit_note", "note", "same_verdict_at_every_lr"]
"""Text columns: empty, not NaN, where they say nothing."""


@dataclass(frozen=True)
class Rung:
    """One method's speed-up at one size, as the fit takes it."""
    size: str
    params: float
    log_speedup: np.ndarray
    """(1 + n,): ln S (index 0), then n replicates (none: no interval)."""
    bound: int  # of ln S: 0 a value, 1 '>', -1 '<' (speedup.BOUNDS)
    censored: float  # share of the replicates outside random's frontier


# --- the per-size measurement ------------------------------------------------------------------

def row_generator(size: str, method: str) -> np.random.Generator:
    """The generator of a size's paired draws (the pooled ones are speedup.py's own)."""
    return np.random.default_rng([BOOT_SEED, zlib.crc32(f"scaling\0{size}\0{method}".encode())])


def measure(base: pd.DataFrame, own: pd.DataFrame, size: str, method: str, params: float,
            n_boot: int = N_BOOT) -> tuple[dict[str, object], Rung]:
    """The iso-loss speed-up columns of `own` (one method's runs at one size and budget) against
    random's frontier `base` (its runs at that size, every budget), and the rung for the fit."""
    by_budget = base.groupby("budget", sort=True)
    budgets = list(by_budget.groups)
    groups = [part.to_numpy(float) for _, part in by_budget.val_loss]
    costs = by_budget[COST].mean().to_numpy(float)
    budget = float(own.budget.iloc[0])
    at = budgets.index(budget) if method == BASELINE and budget in budgets else None
    z_front = generator(size, BASELINE).standard_normal((n_boot, len(budgets)))
    front, loss, df = pooled_draws(groups, own.val_loss.to_numpy(float), z_front,
                                   generator(size, method, budget), at)
    cost = float(own[COST].mean())
    order = np.argsort(costs, kind="stable")
    log_c, front_line = frontier(costs[order], front[:, order])
    log_need, bound = invert(log_c, front_line, loss)
    log_s, code = log_need - math.log(cost), int(bound[0])
    point = float(math.exp(log_s[0]))
    pooled = speedup_columns("s", np.broadcast_to(costs, front.shape), front, np.full(len(loss), cost),
                             loss, interval=df > 0)
    row = {"frontier_budgets": len(budgets), "iso_speedup": point if code == 0 else math.nan,
           "iso_speedup_bound": BOUNDS[code], "iso_speedup_bound_value": point if code else math.nan,
           "iso_speedup_lo": pooled["s_lo"], "iso_speedup_hi": pooled["s_hi"],
           "iso_interval": POOLED if df > 0 else ""}
    reps, censored = log_s, float(np.mean(bound[1:] != 0)) if len(bound) > 1 else 0.0
    tables = per_seed(base, COST), per_seed(own, COST)
    logs = paired_logs(*tables) if code == 0 and math.isfinite(point) else None
    if logs is not None:  # the paired t interval, as main.csv's row
        reps, censored = paired_draws(log_s[0], logs, row_generator(size, method), n_boot), 0.0
        lo, hi = paired_interval(*tables, point)
        row |= {"iso_speedup_lo": lo, "iso_speedup_hi": hi, "iso_interval": PAIRED}
    return row, Rung(size, params, reps, code, censored)


def paired_draws(log_s: float, logs: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """(1 + n_boot,): ln S, then draws of ln S + t(n-1) x SD(logs) / sqrt(n)."""
    se = float(np.std(logs, ddof=1)) / math.sqrt(len(logs))
    return np.concatenate([[log_s], log_s + se * rng.standard_t(len(logs) - 1, n_boot)])


# --- the fit -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fit:
    """The weighted line ln S = intercept + slope x (ln N - centre), per replicate (index 0: the
    data's)."""
    sizes: list[str]
    log_n: np.ndarray  # (K,)
    log_s: np.ndarray  # (K,) the data's
    weights: np.ndarray  # (K,)
    scale: np.ndarray  # (K,) each size's robust scale of ln S (NaN: no replicates)
    centre: float
    intercept: np.ndarray  # (1 + n,)
    slope: np.ndarray  # (1 + n,)
    note: str

    @property
    def has_interval(self) -> bool:
        return len(self.sizes) >= MIN_INTERVAL and len(self.slope) > 1

    def line(self, log_n: np.ndarray) -> np.ndarray:
        """ln S of every replicate's line at log_n: shape (1 + n, len(log_n))."""
        return self.intercept[:, None] + self.slope[:, None] * (np.asarray(log_n)[None] - self.centre)


def ends(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The central 95% of replicates (axis 0) as order statistics, rounded outward (speedup.py)."""
    q = (1 - LEVEL) / 2
    return np.quantile(values, q, axis=0, method="lower"), np.quantile(values, 1 - q, axis=0, method="higher")


def fit_rungs(rungs: list[Rung]) -> Fit:
    """The weighted line through rungs (each a value with replicates, the same number each)."""
    log_n = np.log([r.params for r in rungs])
    log_s = np.stack([r.log_speedup for r in rungs], axis=-1)  # (1 + n, K)
    note = ""
    if log_s.shape[0] > 1:
        q = np.quantile(log_s[1:], [0.5 - 0.6827 / 2, 0.5 + 0.6827 / 2], axis=0)
        scale = (q[1] - q[0]) / 2
    else:
        scale = np.full(len(rungs), np.nan)
    if np.isfinite(scale).all() and (scale > 0).all():
        weights = 1 / scale**2
    else:
        weights, note = np.ones(len(rungs)), "equal weights (a size without seed spread)"
    centre = float((weights * log_n).sum() / weights.sum())
    x = log_n - centre
    mean = (log_s * weights).sum(axis=-1) / weights.sum()
    slope = (weights * x * (log_s - mean[:, None])).sum(axis=-1) / (weights * x**2).sum()
    return Fit([r.size for r in rungs], log_n, log_s[0], weights, scale, centre, mean, slope, note)


def spearman(log_n: np.ndarray, log_s: np.ndarray) -> tuple[float, float]:
    """(rho, its exact two-sided permutation p-value; a normal approximation past 8 sizes)."""
    from scipy.stats import spearmanr

    rho = float(spearmanr(log_n, log_s).statistic)
    if not math.isfinite(rho):  # every speed-up the same: no order to test
        return math.nan, math.nan
    if len(log_n) > 8:
        return rho, float(spearmanr(log_n, log_s).pvalue)
    perms = [spearmanr(log_n, np.asarray(p)).statistic for p in itertools.permutations(log_s)]
    return rho, float(np.mean(np.abs(perms) >= abs(rho) - 1e-12))


def lack_of_fit(fit: Fit) -> tuple[float, float]:
    """(sum of squared residuals in units of each size's scale, its chi-square p-value with K - 2
    degrees of freedom); NaN where a size has no spread to measure them by."""
    from scipy.stats import chi2

    if not (np.isfinite(fit.scale).all() and (fit.scale > 0).all()):
        return math.nan, math.nan
    resid = fit.log_s - fit.line(fit.log_n)[0]
    stat = float(((resid / fit.scale) ** 2).sum())
    return stat, float(chi2.sf(stat, len(fit.sizes) - 2))


def params_at(fit: Fit, target: float) -> tuple[float, float, float]:
    """(N where the fitted line reaches `target`, and the ends of the set of N whose band contains
    it, on the log grid GRID_PARAMS: 0 / inf where the set reaches the grid's edge); all NaN when
    the line reaches it off the grid (or never: a flat line)."""
    first, last, n = GRID_PARAMS
    slope, intercept = fit.slope[0], fit.intercept[0]
    log_point = (math.log(target) - intercept) / slope + fit.centre if slope else math.nan
    if not math.log(first) <= log_point <= math.log(last):  # NaN too
        return math.nan, math.nan, math.nan
    if not fit.has_interval:
        return math.exp(log_point), math.nan, math.nan
    grid = np.linspace(math.log(first), math.log(last), n)
    lo, hi = ends(fit.line(grid)[1:])
    inside = np.flatnonzero((lo <= math.log(target)) & (math.log(target) <= hi))
    if not len(inside):
        return math.exp(log_point), math.nan, math.nan
    low = 0.0 if inside[0] == 0 else math.exp(grid[inside[0]])
    high = math.inf if inside[-1] == n - 1 else math.exp(grid[inside[-1]])
    return math.exp(log_point), low, high


def fitted_at(fit: Fit, params: float) -> tuple[float, float, float]:
    """exp of the line at `params`, and its pointwise 95% band (NaN without an interval)."""
    values = fit.line(np.array([math.log(params)]))[:, 0]
    lo, hi = ends(values[1:]) if fit.has_interval else (math.nan, math.nan)
    with np.errstate(over="ignore"):  # a steep line far out: inf
        return float(np.exp(values[0])), float(np.exp(lo)), float(np.exp(hi))


def slope_verdict(lo: float, hi: float) -> str:
    if lo > 0:
        return "grows with size"
    if hi < 0:
        return "shrinks with size"
    return "not resolved"


def paper_verdict(lo: float, hi: float) -> str:
    """Where the paper's 20x lies against the band of the line at GPT-2 124M."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return ""
    if hi < PAPER_SPEEDUP:
        return "20x above the band"
    if lo > PAPER_SPEEDUP:
        return "20x below the band"
    return "20x inside the band"


def trend_rows(method: str, rungs: list[Rung], left_out: list[str], ladder: dict[str, float]) -> list[dict]:
    """The `fit` and `extrapolation` rows of one method: slope, Spearman, lack of fit, the line at
    every size of the ladder (size -> params) and at GPT-2 124M, and where it reaches TARGETS."""
    base = {"method": method, "fit_sizes": len(rungs)}
    excluded = f"; left out: {', '.join(left_out)}" if left_out else ""
    if len(rungs) < MIN_SLOPE:
        return [base | {"kind": "fit", "quantity": "slope", "note": f"no slope: {len(rungs)} size(s) "
                        f"with a value, {MIN_SLOPE} needed{excluded}"}]
    fit = fit_rungs(rungs)
    over = ", ".join(fit.sizes)
    if fit.has_interval:
        lo, hi = (float(v) for v in ends(fit.slope[1:]))
        how = "95% interval: hierarchical parametric bootstrap of seed noise"
    else:
        lo = hi = math.nan
        how = (f"no interval: {len(rungs)} sizes, {MIN_INTERVAL} needed" if len(rungs) < MIN_INTERVAL
               else "no interval: a size without a noise estimate")
    notes = "; ".join(n for n in (f"weighted least squares of ln iso_speedup on ln params over {over}",
                                  how, fit.note) if n)
    rows = [base | {"kind": "fit", "quantity": "slope", "estimate": float(fit.slope[0]),
                    "estimate_lo": lo, "estimate_hi": hi,
                    "verdict": slope_verdict(lo, hi) if fit.has_interval else "", "note": notes + excluded}]
    if len(rungs) >= MIN_INTERVAL:
        rho, p = spearman(fit.log_n, fit.log_s)
        stat, p_fit = lack_of_fit(fit)
        rows += [base | {"kind": "fit", "quantity": "spearman", "estimate": rho, "p_value": p,
                         "note": f"Spearman's rho of iso_speedup and params over {over}; exact "
                                 "permutation p-value"},
                 base | {"kind": "fit", "quantity": "lack_of_fit", "estimate": stat, "p_value": p_fit,
                         "note": f"weighted residual sum of squares, chi-square with {len(rungs) - 2} "
                                 "degrees of freedom: small p = the sizes are not on a line"}]
    inside = (min(fit.log_n) - 1e-9, max(fit.log_n) + 1e-9)
    for size, params in [*ladder.items(), ("gpt2-124M", GPT2_124M)]:
        value, lo, hi = fitted_at(fit, params)
        within = inside[0] <= math.log(params) <= inside[1]
        paper = paper_verdict(lo, hi) if size == "gpt2-124M" else ""
        rows.append(base | {"kind": "fit" if within else "extrapolation", "size": size, "params": params,
                            "quantity": "fitted_speedup", "estimate": value, "estimate_lo": lo,
                            "estimate_hi": hi, "verdict": paper,
                            "note": "" if within else "the line outside the fitted sizes: an extrapolation"})
    for target in TARGETS:
        rows.append(base | params_at_row(fit, target, inside))
    return rows


def params_at_row(fit: Fit, target: float, inside: tuple[float, float]) -> dict[str, object]:
    """The row of the parameters where the line reaches `target`x; none reported off the grid."""
    value, lo, hi = params_at(fit, target)
    first, last, _ = GRID_PARAMS
    note = f"parameters where the line reaches {target:g}x"
    if math.isnan(value):
        note += f": not between {first:g} and {last:g} parameters (not reported)"
    elif fit.has_interval:
        note += "; interval: where its 95% band contains it (0, inf: the grid's edge, not bounded)"
    within = math.isfinite(value) and inside[0] <= math.log(value) <= inside[1]
    return {"kind": "fit" if within else "extrapolation", "quantity": f"params_at_{target:g}x",
            "estimate": value, "estimate_lo": lo, "estimate_hi": hi, "note": note}


def trend_band(method: str, rungs: list[Rung]) -> pd.DataFrame:
    """The line and its pointwise band on BAND_POINTS parameter counts from half the smallest
    fitted size to twice GPT-2 124M or the largest, and at each fitted size (the figure's):
    `kind` fit inside the fitted sizes, else extrapolation."""
    if len(rungs) < MIN_SLOPE:
        return pd.DataFrame(columns=BAND_COLUMNS)
    fit = fit_rungs(rungs)
    top = max(math.log(GPT2_124M), max(fit.log_n)) + math.log(2)
    grid = np.unique(np.concatenate([np.linspace(min(fit.log_n) - math.log(2), top, BAND_POINTS), fit.log_n]))
    values = fit.line(grid)
    lo, hi = ends(values[1:]) if fit.has_interval else (np.full(len(grid), np.nan),) * 2
    within = (grid >= min(fit.log_n) - 1e-9) & (grid <= max(fit.log_n) + 1e-9)
    with np.errstate(over="ignore"):  # a steep line far out: inf
        return pd.DataFrame({"method": method, "params": np.exp(grid),
                             "kind": np.where(within, "fit", "extrapolation"),
                             "fitted_speedup": np.exp(values[0]), "fitted_speedup_lo": np.exp(lo),
                             "fitted_speedup_hi": np.exp(hi)})


# --- the learning-rate check -------------------------------------------------------------------

def comparison(runs: pd.DataFrame) -> pd.DataFrame:
    """equal_budget's columns for runs at one size, budget and learning rate per method."""
    return equal_budget(runs.assign(lr_mult=float(runs.lr_mult.iloc[0]))).drop(
        columns=["size", "budget", "lr_mult"], errors="ignore")


def best_lrs(runs: pd.DataFrame) -> pd.Series:
    """Each method's learning-rate multiplier of lowest mean final loss (ties: the one nearest 1)."""
    means = runs.groupby(["method", "lr_mult"]).val_loss.mean().reset_index()
    means["_gap"] = np.abs(np.log(means.lr_mult))
    return means.sort_values(["val_loss", "_gap"], kind="stable").groupby("method").lr_mult.first()


def learning_rates(runs: pd.DataFrame) -> pd.DataFrame:
    """LR_COLUMNS at every size with a learning-rate check (runs at lr_mult != 1), budget 1."""
    runs = runs[runs.budget == DEFAULT_BUDGET]
    rows = []
    for size in dict.fromkeys(runs.loc[runs.lr_mult != 1, "size"]):
        at = runs[runs["size"] == size]
        best = best_lrs(at)
        for lr, part in at.groupby("lr_mult", sort=True):
            stats = part.groupby("method", sort=False).val_loss.agg(["size", "mean", "std"])
            eq = comparison(part).set_index("method")
            for method, (n, mean, std) in stats.iterrows():
                rows.append({"size": size, "params": at.params.iloc[0], "method": method,
                             "comparison": "same lr", "lr_mult": lr,
                             "baseline_lr_mult": lr if (part.method == BASELINE).any() else math.nan,
                             "n_seeds": n, "val_loss": mean, "val_loss_std": std, "best": best[method] == lr,
                             **eq.loc[method].to_dict()})
        if BASELINE not in best:
            continue
        theirs = at[(at.method == BASELINE) & (at.lr_mult == best[BASELINE])]
        for method, lr in best.drop(BASELINE).items():
            ours = at[(at.method == method) & (at.lr_mult == lr)]
            eq = comparison(pd.concat([theirs, ours]).assign(lr_mult=lr)).set_index("method").loc[method]
            rows.append({"size": size, "params": at.params.iloc[0], "method": method,
                         "comparison": "own best", "lr_mult": lr, "baseline_lr_mult": best[BASELINE],
                         "n_seeds": len(ours), "val_loss": ours.val_loss.mean(),
                         "val_loss_std": ours.val_loss.std(), "best": True, **eq.to_dict()})
    table = pd.DataFrame(rows).reindex(columns=LR_COLUMNS)
    table[["n_seeds", "baseline_n_seeds"]] = table[["n_seeds", "baseline_n_seeds"]].astype("Int64")
    text = ["delta_interval", "verdict", "equal_budget_note"]
    table[text] = table[text].astype(object).where(table[text].notna(), "")
    return table


def lr_summary(lrs: pd.DataFrame, size: str, method: str) -> dict[str, object]:
    """The learning-rate columns of a measured row: the multipliers tried, the verdict at each,
    whether it is the same at all, and the own-best comparison."""
    mine = lrs[(lrs["size"] == size) & (lrs.method == method)]
    same, own = mine[mine.comparison == "same lr"], mine[mine.comparison == "own best"]
    if same.empty:
        return {}
    row = {"lr_mults": ";".join(f"{v:g}" for v in same.lr_mult),
           "best_lr_mult": same.loc[same.best.astype(bool), "lr_mult"].min()}
    if method == BASELINE:
        return row
    verdicts = [v for v in same.verdict if v]
    by_lr = zip(same.lr_mult, same.verdict, strict=True)
    row |= {"verdicts_by_lr": "; ".join(f"{lr:g}: {v}" for lr, v in by_lr),
            "same_verdict_at_every_lr": str(len(set(verdicts)) == 1).lower() if len(verdicts) >= 2 else ""}
    if not own.empty:
        o = own.iloc[0]
        row |= {"baseline_best_lr_mult": o.baseline_lr_mult, "best_lr_delta_val_loss": o.delta_val_loss,
                "best_lr_delta_val_loss_lo": o.delta_val_loss_lo,
                "best_lr_delta_val_loss_hi": o.delta_val_loss_hi, "best_lr_verdict": o.verdict}
    return row


# --- the tables --------------------------------------------------------------------------------

def read_runs(by_seed: pd.DataFrame) -> pd.DataFrame:
    """The trained runs of main_by_seed.csv, with the columns a table written before them lacks:
    `lr_mult` 1, `params_nonemb` and `tokens_per_param` NaN."""
    runs = by_seed[by_seed.method != "reference"].copy()
    for col, default in (("lr_mult", 1.0), ("params_nonemb", math.nan), ("tokens_per_param", math.nan)):
        runs[col] = runs[col].astype(float).fillna(default) if col in runs.columns else default
    return runs


def forgetting_means(path: Path | None) -> pd.DataFrame:
    """Per size x method: profiled seeds and the mean forgetting fractions (budget 1)."""
    if path is None:
        return pd.DataFrame(columns=["size", "method", "profiled_seeds", "forgotten",
                                     "multiple_descent_of_forgotten"])
    table = with_budget(pd.read_csv(path))
    table = table[table.budget == DEFAULT_BUDGET]
    groups = table.groupby(["size", "method"], sort=False)
    out = groups[["forgotten", "multiple_descent_of_forgotten"]].mean()
    out.insert(0, "profiled_seeds", groups.size())
    return out.reset_index()


def measured_rows(runs: pd.DataFrame, lrs: pd.DataFrame, forgets: pd.DataFrame, n_boot: int
                  ) -> tuple[list[dict], dict[str, list[tuple[str, Rung | None, str]]]]:
    """The measured rows (sizes in order of parameters), and per method its sizes as (size, rung,
    why it stays out of the fit: empty when it enters)."""
    plain = runs[(runs.lr_mult == 1) & (runs.budget == DEFAULT_BUDGET)]
    sizes = plain.groupby("size").params.first().sort_values(kind="stable")
    forgets = forgets.set_index(["size", "method"])
    rows, rungs = [], {}
    for size, params in sizes.items():
        base = runs[(runs["size"] == size) & (runs.lr_mult == 1) & (runs.method == BASELINE)]
        equal = comparison(plain[plain["size"] == size]).set_index("method")
        for method, own in plain[plain["size"] == size].groupby("method", sort=False):
            row = {"kind": "measured", "size": size, "params": params,
                   "params_nonemb": own.params_nonemb.iloc[0],
                   "tokens_per_param": own.tokens_per_param.mean(), "method": method, "n_seeds": len(own),
                   "val_loss": own.val_loss.mean(),
                   **equal.loc[method].to_dict(), **lr_summary(lrs, size, method)}
            if (size, method) in forgets.index:
                row |= forgets.loc[(size, method)].to_dict()
            rung, note = None, f"no {BASELINE} run at this size"
            if not base.empty:
                iso, rung = measure(base, own, size, method, float(params), n_boot)
                row |= iso
                note = why_left_out(method, rung)
            row |= {"in_fit": not note, "fit_note": note}
            if rung is not None and not note and rung.censored > 0:
                row["fit_note"] = (f"{rung.censored:.1%} of its replicates fall outside random's budgets "
                                   "and enter the fit at the frontier's end")
            if method != BASELINE:
                rungs.setdefault(method, []).append((size, rung, note))
            rows.append(row)
    return rows, rungs


def why_left_out(method: str, rung: Rung) -> str:
    """Why a size's speed-up stays out of the fit; empty when it enters."""
    if method == BASELINE:
        return "the baseline"
    if rung.bound:
        return f"a bound ({BOUNDS[rung.bound]}), not a value"
    if not np.isfinite(rung.log_speedup[0]):
        return "no speed-up (compute not finite)"
    if len(rung.log_speedup) < 2:
        return "no interval (no seed-noise estimate: one seed everywhere)"
    return ""


def scaling(by_seed: pd.DataFrame, forgetting: Path | None = None,
            n_boot: int = N_BOOT) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(scaling table, learning-rates table, the fitted lines' band) from main_by_seed's rows."""
    runs = read_runs(by_seed)
    lrs = learning_rates(runs)
    rows, per_method = measured_rows(runs, lrs, forgetting_means(forgetting), n_boot)
    ladder = {r["size"]: r["params"] for r in rows}
    bands = []
    for method, entries in per_method.items():
        rungs = [r for _, r, note in entries if not note]
        left_out = [f"{s} ({note})" for s, _, note in entries if note]
        rows += trend_rows(method, rungs, left_out, ladder)
        bands.append(trend_band(method, rungs))
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    table[TEXT] = table[TEXT].astype(object).where(table[TEXT].notna(), "")
    table[COUNTS] = table[COUNTS].astype("Int64")
    band_table = pd.concat(bands, ignore_index=True) if bands else pd.DataFrame(columns=BAND_COLUMNS)
    return table, lrs, band_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m lfr scaling`."""
    parser.add_argument("--by-seed", type=Path, required=True,
                        help="results/tables/main_by_seed.csv (summarize)")
    parser.add_argument("--forgetting", type=Path, help="results/tables/forgetting.csv (profiled runs)")
    parser.add_argument("--out", type=Path, required=True,
                        help="scaling.csv to write; learning_rates.csv and scaling_band.csv go next to it")


def main(by_seed: Path, out: Path, forgetting: Path | None = None) -> str:
    """Write scaling.csv to `out`, learning_rates.csv and scaling_band.csv next to it; return the
    trend's rows as text (the job's log)."""
    table, lrs, band_table = scaling(pd.read_csv(by_seed), forgetting)
    write_csv(out, table)
    write_csv(Path(out).with_name(LR_FILE), lrs)
    write_csv(Path(out).with_name(BAND_FILE), band_table)
    trend = table[table.kind != "measured"][["kind", "method", "size", "quantity", "estimate",
                                             "estimate_lo", "estimate_hi", "verdict"]]
    return trend.to_string(index=False)
