"""The speed-up over `random` at equal final loss (iso-loss), and the equal-budget comparison.

Inputs are the finished runs, one row each (size, method, budget, seed, val_loss and the compute
columns of summarize.py); outputs are the main table's columns, one row per size x method x budget.
No torch; numpy, pandas and scipy's t quantile only.

**Random's frontier** at a size: for each of its budgets, the mean final `val_loss` over seeds
against the log of the mean compute over seeds, the points in order of compute, made monotone
by a *running minimum* (a larger budget that ends worse than a smaller one takes the smaller
one's loss) and joined by straight lines in log compute. A running minimum, not isotonic
regression: it moves no measured point and has an operational meaning (the least compute at
which some swept random run of at most that compute reached the loss), and past the optimal
budget, where a longer multi-epoch run overfits, the frontier stays flat instead of averaging the
overfit point into the good one. `C_random(L)` is its inverse: the least compute at which the
frontier reaches `L` (the left end of a flat stretch).

**Iso-loss speed-up** of a method at a budget: `C_random(L) / C_method`, L and C_method the
method's mean final loss and mean compute over its seeds at that budget; in training tokens
(`compute_tokens`) and in FLOPs (`compute_flops`). Never extrapolated: below the frontier's lowest
loss random needs more than its largest swept compute, so the value is C_max / C_method with
bound `>` (a lower bound); above its highest loss (worse than random's smallest budget), C_min /
C_method with bound `<` (an upper bound). A bound is never a value: the value column (`iso_speedup`)
is then empty, and the bound's number is in `iso_speedup_bound_value`, its direction in
`iso_speedup_bound` (`''`: an interpolated value, in the value column). A frontier of one
point gives a value only at exactly that loss (random's own row) and bounds elsewhere.

**Its 95% interval** (`iso_interval` says which). *Paired t*, where the method's seeds are also
random's seeds at every budget (at least 2): a seed is one initialisation shared by all its runs,
and its effect on the final loss is often larger than the differences between methods (docs/results.md:
the demo). Each shared seed gets its own
speed-up against the frontier of random's runs of that seed; the interval is the point estimate x
exp(+-t(n-1) x SD of the log speed-ups / sqrt(n)). Where a seed's own speed-up is a bound, or the
seeds differ: a *pooled bootstrap*, a parametric bootstrap of seed noise. Final losses are taken as
normal around each (method, budget)'s mean with one variance of seed noise, estimated by pooling
the runs of random (every budget) and of the row's method at its budget (degrees of freedom: runs
minus groups). Each of `N_BOOT` replicates draws that variance from its scaled inverse-chi-square
distribution and every mean from a normal around the measured one with that variance / its seeds,
rebuilds the frontier and recomputes the speed-up; random's own rows reuse the frontier's draw,
since they are the same runs. Compute is not resampled (a run's tokens are fixed by its config).
This is the reference-prior posterior of the normal model's means and variance, whose intervals for
a single mean are Student's t ones; drawing the variance is what a resampling of 3 seeds cannot do
(a percentile bootstrap over seeds covered 81% at 3 seeds, 87% at 5 in the simulation of
tests/test_speedup.py). A replicate that falls outside its frontier is censored: for the lower end
it counts at its bound value (`>`) or 0 (`<`), for the upper end at inf (`>`) or its bound value
(`<`); an end that the sweep cannot bound therefore reads 0 or inf. The ends are order statistics
(the 2.5% one rounded down, the 97.5% one up). Without a degree of freedom (every group one seed)
the noise is unknown: the interval is NaN. The generators are seeded from `BOOT_SEED` and the row's
size, method and budget, so the table is deterministic and a row depends only on random's runs and
its own.

**Tokens to a reference** (`tokens_to_reference:<name>`): the training compute (`compute_tokens`)
at which a method's own frontier of final `val_bpb` (its budgets at a size, the same running
minimum and log-linear interpolation) reaches a released model's `val_bpb` on the same text; the
same on every budget row of the method. With one budget, or outside the swept range, a bound:
`<` (it is reached within the smallest budget) or `>` (not even at the largest). No interval.

**Equal budget**: `delta_val_loss` = the method's mean final loss - random's at the same size and
budget; its 95% interval (`delta_interval`) is the paired t interval of the per-seed differences
where both have the same seeds (at least 2), else Welch's t interval (unequal variances,
Welch-Satterthwaite degrees of freedom), NaN with fewer than 2 seeds on either side, [delta, delta]
when both sides have zero spread. `verdict`: `better` if the interval lies below 0, `worse` if
above, `not resolved` otherwise (NaN interval included); `baseline` on random's own rows (delta 0,
interval [0, 0]: the same runs); empty where random has no run at that size and budget. Only
runs of equal tokens are compared (up to one optimizer step's, the rounding of a plan): where a
config gives a method another run length (its `epochs` option), the columns stay empty and
`equal_budget_note` says why; iso_speedup still compares it, at its own compute."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd

BASELINE = "random"
N_BOOT = 2000
"""Bootstrap replicates per row."""
BOOT_SEED = 20
"""Seed of every bootstrap generator (with the row's size, method and budget)."""
LEVEL = 0.95
COSTS = {"iso_speedup": "compute_tokens", "iso_speedup_flops": "compute_flops",
         "iso_speedup_uncharged": "tokens"}
"""Speed-up column prefix -> the runs' compute column it divides. `iso_speedup_uncharged` counts
optimizer-step tokens only: an ablation that leaves scoring passes and reference models free."""
GROUP = ["size", "method", "budget", "lr_mult"]
"""A row of the tables: `lr_mult` is 1 but for the learning-rate check's runs (lr_check)."""
ISO_COLUMNS = ["frontier_budgets", *[f"{name}{suffix}" for name in COSTS
                                     for suffix in ("", "_lo", "_hi", "_bound", "_bound_value")],
               "iso_interval"]
EQUAL_COLUMNS = ["baseline_val_loss", "baseline_n_seeds", "delta_val_loss", "delta_val_loss_lo",
                 "delta_val_loss_hi", "delta_interval", "verdict", "equal_budget_note"]
PAIRED, POOLED, WELCH = "paired t", "pooled bootstrap", "Welch t"
"""How an interval was computed (columns iso_interval, delta_interval)."""
BOUNDS = {0: "", 1: ">", -1: "<"}


def frontier(compute: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log compute, monotone loss) along the last axis, points already in order of compute:
    the loss made non-increasing by a running minimum."""
    return np.log(compute), np.minimum.accumulate(loss, axis=-1)


def invert(log_c: np.ndarray, front: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log C_random(loss) on the frontier (log_c, front: shape (..., k), front non-increasing;
    loss: shape (...)), linear in log compute between points, and the bound code: 0 inside the
    frontier, 1 below its lowest loss (the value is its largest compute: random needs more), -1
    above its highest (its smallest compute: random needs less). The frontier broadcasts."""
    shape = (*np.shape(loss), np.shape(front)[-1])
    log_c, front = np.broadcast_to(log_c, shape), np.broadcast_to(front, shape)
    below = front <= loss[..., None]
    j = np.argmax(below, axis=-1)  # the first point at or below the loss; 0 when none is

    def at(a: np.ndarray, i: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, i[..., None], axis=-1)[..., 0]

    prev = np.maximum(j - 1, 0)
    f0, f1, c0, c1 = at(front, prev), at(front, j), at(log_c, prev), at(log_c, j)
    with np.errstate(invalid="ignore", divide="ignore"):  # j = 0: f0 = f1, weight unused
        weight = np.where(j > 0, (f0 - loss) / (f0 - f1), 0.0)  # f0 > loss >= f1 when j > 0
    inside = c0 + weight * (c1 - c0)
    bound = np.where(~below.any(axis=-1), 1, np.where(loss > front[..., 0], -1, 0))
    return np.select([bound == 1, bound == -1], [log_c[..., -1], log_c[..., 0]], inside), bound


def generator(size: str, method: str, budget: float | None = None) -> np.random.Generator:
    """The bootstrap generator of a size's frontier (no budget) or of one row: BOOT_SEED and a
    stable hash of the key (the same across processes and numpy versions)."""
    key = f"{size}\0{method}" + ("" if budget is None else f"\0{float(budget)!r}")
    return np.random.default_rng([BOOT_SEED, zlib.crc32(key.encode())])


def pooled_noise(groups: list[np.ndarray]) -> tuple[float, int]:
    """(pooled variance of the seed noise, its degrees of freedom) of groups of final losses."""
    df = sum(len(g) - 1 for g in groups)
    ss = sum(float(((g - g.mean()) ** 2).sum()) for g in groups)
    return (ss / df if df else math.nan), df


def noise_scale(var: float, df: int, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """n_boot draws of the seed-noise SD: var x df / chi2(df), its posterior under the normal model."""
    return np.sqrt(var * df / rng.chisquare(df, n_boot))


def pooled_draws(groups: list[np.ndarray], own: np.ndarray, z_front: np.ndarray,
                 rng: np.random.Generator, at: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """The pooled bootstrap's draws of one row (see the module doc): (random's mean losses per
    budget, shape (1 + n, budgets), the row's mean loss (1 + n,), the noise's degrees of freedom),
    index 0 the measured means, then n = len(z_front) replicates (none without a degree of
    freedom). `groups`: random's final losses, one array per budget; `own`: the row's;
    `z_front`: the size's standard normals of the frontier (n, budgets); `at`: the row is random's
    own budget `at` (the same runs as the frontier's point: the same draws)."""
    means, counts = np.array([g.mean() for g in groups]), np.array([len(g) for g in groups])
    var, df = pooled_noise(groups if at is not None else [*groups, own])
    sigma = noise_scale(var, df, rng, len(z_front)) if df else np.zeros(0)  # no noise estimate
    drawn = means + sigma[:, None] * z_front[: len(sigma)] / np.sqrt(counts)
    front = np.concatenate([means[None], drawn])
    if at is not None:
        return front, front[:, at], df
    noise = sigma * rng.standard_normal(len(sigma)) / np.sqrt(len(own))
    return front, own.mean() + np.concatenate([[0.0], noise]), df


def speedup_columns(name: str, base_cost: np.ndarray, base_loss: np.ndarray, cost: np.ndarray,
                    loss: np.ndarray, interval: bool) -> dict[str, object]:
    """`name`, `name_lo`, `name_hi`, `name_bound`, `name_bound_value` from the point estimate
    (index 0) and the replicates (the rest): base_* of shape (1 + n_boot, budgets), cost and loss
    (1 + n_boot,); without replicates (`interval` false) only index 0. A bound goes to
    `name_bound_value`, never to `name`."""
    nan = {name: math.nan, f"{name}_lo": math.nan, f"{name}_hi": math.nan, f"{name}_bound": "",
           f"{name}_bound_value": math.nan}
    if not (np.isfinite(base_cost).all() and np.isfinite(cost).all() and np.isfinite(loss).all()):
        return nan  # e.g. FLOPs of runs written before run.json had flops_per_token
    order = np.argsort(base_cost[0], kind="stable")
    log_c, front = frontier(base_cost[:, order], base_loss[:, order])
    log_need, bound = invert(log_c, front, loss)
    speedup = np.exp(log_need - np.log(cost))
    value, code = float(speedup[0]), BOUNDS[int(bound[0])]
    out = {name: math.nan if code else value, f"{name}_lo": math.nan, f"{name}_hi": math.nan,
           f"{name}_bound": code, f"{name}_bound_value": value if code else math.nan}
    if interval:
        reps, censored = speedup[1:], bound[1:]
        q = (1 - LEVEL) / 2
        out[f"{name}_lo"] = float(np.quantile(np.where(censored == -1, 0.0, reps), q, method="lower"))
        out[f"{name}_hi"] = float(np.quantile(np.where(censored == 1, np.inf, reps), 1 - q,
                                              method="higher"))
    return out


def per_seed(runs: pd.DataFrame, cost: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(final loss, compute) of runs as tables: a row per budget, a column per seed."""
    wide = runs.groupby(["budget", "seed"])[["val_loss", cost]].mean().unstack("seed")
    return wide["val_loss"], wide[cost]


def paired_interval(base: tuple[pd.DataFrame, pd.DataFrame], own: tuple[pd.DataFrame, pd.DataFrame],
                    point: float) -> tuple[float, float] | None:
    """The paired interval of an iso-loss speed-up: for each seed that the method and every
    budget of random share, the speed-up against the frontier of random's runs of that seed;
    then point x exp(+-t(n-1) x SD(log) / sqrt(n)). `base`, `own`: `per_seed` tables of random
    and of the method at one budget. None with fewer than 2 shared seeds, or when a seed's
    speed-up is a bound (outside its own frontier) or not finite."""
    from scipy.stats import t

    logs = paired_logs(base, own)
    if logs is None:
        return None
    half = float(t.ppf(0.5 + LEVEL / 2, len(logs) - 1)) * float(np.std(logs, ddof=1)) / math.sqrt(len(logs))
    return point * math.exp(-half), point * math.exp(half)


def paired_logs(base: tuple[pd.DataFrame, pd.DataFrame], own: tuple[pd.DataFrame, pd.DataFrame]
                ) -> np.ndarray | None:
    """The log speed-up of each seed that the method and every budget of random share, against
    the frontier of random's runs of that seed (`paired_interval`); None with fewer than 2 such
    seeds, or when one is a bound or not finite."""
    (b_loss, b_cost), (o_loss, o_cost) = base, own
    seeds = [s for s in o_loss.columns if s in b_loss.columns and b_loss[s].notna().all()]
    if len(seeds) < 2:
        return None
    order = np.argsort(b_cost[seeds].mean(axis=1).to_numpy(), kind="stable")
    costs, losses = b_cost[seeds].to_numpy(float)[order].T, b_loss[seeds].to_numpy(float)[order].T
    ours_loss, ours_cost = o_loss[seeds].to_numpy(float)[0], o_cost[seeds].to_numpy(float)[0]
    if not (np.isfinite(costs).all() and np.isfinite(ours_loss).all() and np.isfinite(ours_cost).all()):
        return None
    log_c, front = frontier(costs, losses)  # (seeds, budgets)
    log_need, bound = invert(log_c, front, ours_loss)
    if bound.any():
        return None
    return log_need - np.log(ours_cost)


def with_lr(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` with an `lr_mult` column (1.0 where a table predates the learning-rate check)."""
    return runs if "lr_mult" in runs.columns else runs.assign(lr_mult=1.0)


def iso_speedups(runs: pd.DataFrame, baseline: str = BASELINE, n_boot: int = N_BOOT) -> pd.DataFrame:
    """ISO_COLUMNS per size x method x budget x lr_mult of `runs` (one row per run); rows of a size
    without a `baseline` run are left out (the caller's merge leaves them empty). The frontier is
    random's runs at train.lr (lr_mult 1); a learning-rate check's row is read against it."""
    rows, runs = [], with_lr(runs)
    for size, at_size in runs.groupby("size", sort=False):
        base = at_size[(at_size.method == baseline) & (at_size.lr_mult == 1)]
        if base.empty:
            continue
        budgets = sorted(base.budget.unique())
        groups = [base.loc[base.budget == b, "val_loss"].to_numpy(float) for b in budgets]
        base_costs = {c: np.array([base.loc[base.budget == b, c].mean() for b in budgets])
                      for c in COSTS.values()}
        z_front = generator(size, baseline).standard_normal((n_boot, len(budgets)))
        base_tables = {cost: per_seed(base, cost) for cost in COSTS.values()}
        for (method, budget, lr), runs_of in at_size.groupby(["method", "budget", "lr_mult"], sort=False):
            at = budgets.index(budget) if method == baseline and lr == 1 else None
            rng = generator(size, method if lr == 1 else f"{method}@lr{float(lr)!r}", budget)
            front, loss, df = pooled_draws(groups, runs_of.val_loss.to_numpy(float), z_front, rng, at)
            row = {"size": size, "method": method, "budget": budget, "lr_mult": lr,
                   "frontier_budgets": len(budgets), "iso_interval": POOLED if df else ""}
            for name, cost in COSTS.items():
                theirs = np.broadcast_to(base_costs[cost], front.shape)
                row |= speedup_columns(name, theirs, front, np.full(len(loss), runs_of[cost].mean()),
                                       loss, interval=df > 0)
                paired = None
                if not row[f"{name}_bound"] and np.isfinite(row[name]):
                    paired = paired_interval(base_tables[cost], per_seed(runs_of, cost), row[name])
                if paired is not None:
                    row |= {f"{name}_lo": paired[0], f"{name}_hi": paired[1], "iso_interval": PAIRED}
            rows.append(row)
    return pd.DataFrame(rows).reindex(columns=[*GROUP, *ISO_COLUMNS])


def tokens_to_references(runs: pd.DataFrame, references: dict[str, float]) -> pd.DataFrame:
    """Per size x method of `runs`: `tokens_to_reference:<name>` and `_bound:<name>`,
    `_bound_value:<name>` (a bound is never a value) for each reference name -> its val_bpb (see
    the module doc); NaN where the method has no val_bpb."""
    rows, runs = [], with_lr(runs)
    for (size, method), part in runs[runs.lr_mult == 1].groupby(["size", "method"], sort=False):
        points = part.groupby("budget")[["compute_tokens", "val_bpb"]].mean().sort_values("compute_tokens")
        row: dict[str, object] = {"size": size, "method": method}
        for name, bpb in references.items():
            value, bound = math.nan, ""
            if points.val_bpb.notna().all():
                log_c, front = frontier(points.compute_tokens.to_numpy(float), points.val_bpb.to_numpy(float))
                log_need, code = invert(log_c, front, np.array(float(bpb)))
                value, bound = float(np.exp(log_need)), BOUNDS[int(code)]
            row |= {f"tokens_to_reference:{name}": math.nan if bound else value,
                    f"tokens_to_reference_bound:{name}": bound,
                    f"tokens_to_reference_bound_value:{name}": value if bound else math.nan}
        rows.append(row)
    return pd.DataFrame(rows)


def welch_interval(a: np.ndarray, b: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean(a) - mean(b), lower, upper): Welch's t interval; NaN ends with fewer than 2 values
    on either side; both ends at the difference when neither side varies."""
    from scipy.stats import t

    delta = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return delta, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return delta, delta, delta
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(t.ppf(0.5 + level / 2, df)) * se
    return delta, delta - half, delta + half


def paired_t_interval(diffs: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, lower, upper) of per-seed differences: Student's t with n-1 degrees of freedom."""
    from scipy.stats import t

    delta = float(diffs.mean())
    half = float(t.ppf(0.5 + level / 2, len(diffs) - 1)) * float(diffs.std(ddof=1)) / math.sqrt(len(diffs))
    return delta, delta - half, delta + half


def verdict(lo: float, hi: float) -> str:
    """`better` (lower loss) / `worse` / `not resolved`, from the interval of the difference."""
    if hi < 0:
        return "better"
    if lo > 0:
        return "worse"
    return "not resolved"  # also a NaN interval


def equal_budget(runs: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    """EQUAL_COLUMNS per size x method x budget x lr_mult of `runs` (one row per run): the
    difference of final losses against `baseline` at the same size, budget and learning rate
    (the learning-rate check pairs each multiplier with random's own), where both trained the same
    tokens (`comparable_tokens`); otherwise empty, with the reason in `equal_budget_note`."""
    rows, runs = [], with_lr(runs)
    for (size, method, budget, lr), runs_of in runs.groupby(GROUP, sort=False):
        base = runs[(runs["size"] == size) & (runs.method == baseline) & (runs.budget == budget)
                    & (runs.lr_mult == lr)]
        row = {"size": size, "method": method, "budget": budget, "lr_mult": lr, "verdict": "",
               "equal_budget_note": ""}
        if not base.empty:
            ours, theirs = runs_of.val_loss.to_numpy(float), base.val_loss.to_numpy(float)
            row |= {"baseline_val_loss": theirs.mean(), "baseline_n_seeds": len(theirs)}
            if (note := comparable_tokens(runs_of, base, method, baseline)):
                rows.append(row | {"equal_budget_note": note})
                continue
            same = sorted(runs_of.seed) == sorted(base.seed) and len(ours) >= 2
            if method == baseline:
                (delta, lo, hi), how = (0.0, 0.0, 0.0), ""
            elif same:
                by_seed = runs_of.set_index("seed").val_loss - base.set_index("seed").val_loss
                (delta, lo, hi), how = paired_t_interval(by_seed.to_numpy(float)), PAIRED
            else:
                (delta, lo, hi), how = welch_interval(ours, theirs), WELCH
            row |= {"delta_val_loss": delta, "delta_val_loss_lo": lo, "delta_val_loss_hi": hi,
                    "delta_interval": how if np.isfinite(lo) else "",
                    "verdict": "baseline" if method == baseline else verdict(lo, hi)}
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=[*GROUP, *EQUAL_COLUMNS])


def comparable_tokens(ours: pd.DataFrame, base: pd.DataFrame, method: str, baseline: str) -> str:
    """'' where the two groups of runs trained the same optimizer-step tokens up to one step's
    (every method plans random's steps unless a config asks otherwise); else why not."""
    if not {"tokens", "steps"} <= set(ours.columns):
        return ""
    step = max(float((ours.tokens / ours.steps).max()), float((base.tokens / base.steps).max()))
    a, b = float(ours.tokens.mean()), float(base.tokens.mean())
    if abs(a - b) <= step:
        return ""
    return (f"not an equal budget: {method} trained {a:,.0f} tokens, {baseline} {b:,.0f} "
            f"({a / b:.2f}x); compare them by iso_speedup")
