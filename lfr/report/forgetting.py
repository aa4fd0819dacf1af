"""Stage `forgetting`: classify each profiled block's loss trajectory and break it down by domain.

A trajectory is a block's loss at the K snapshots of a run, in token order. With a threshold
d (nats):
- a *fall* is reached when the running minimum drops more than d below the anchor (the first
  loss, or the loss at the last forgetting event);
- a *forgetting event* is a rise of more than d above the running minimum after a fall; the
  anchor then moves to that loss, so the next event needs a new fall first;
- *forgotten*: at least one event; *multiple descent*: two or more (the paper's shares: PAPER);
  *learned*: a fall and no event; *unlearned*: no fall.
The default d is `threshold_sd` robust SDs (1.4826 x MAD) of the checkpoint-to-checkpoint change
of a block's loss around the median change of all blocks over the same interval, i.e. the
block-level noise around the shared learning trend; `threshold_nats` fixes it instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lfr.files import write_csv, write_parquet

PAPER = {"forgotten": 0.25, "multiple_descent_of_forgotten": 0.82}
CLASSES = ("learned", "forgotten", "unlearned")


def trajectories(profile: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """block ids (N,), checkpoint tokens (K,), losses (N, K) of one run, in token order."""
    wide = profile.pivot_table(index="block_id", columns="checkpoint_tokens", values="loss",
                               observed=True).sort_index(axis=1)
    return wide.index.to_numpy(), wide.columns.to_numpy(), wide.to_numpy(dtype=np.float64)


def noise_threshold(losses: np.ndarray, sds: float) -> float:
    """`sds` robust SDs of the per-interval changes of block losses around their median change."""
    if losses.shape[1] < 2:
        raise ValueError("a trajectory needs at least 2 snapshots; lower profile.every_tokens")
    diffs = np.diff(losses, axis=1)
    resid = diffs - np.median(diffs, axis=0, keepdims=True)
    return float(sds * 1.4826 * np.median(np.abs(resid)))


def forgetting_events(losses: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per block: the number of forgetting events and whether it ever fell (see the module doc)."""
    anchor = losses[:, 0].copy()
    low = anchor.copy()
    fallen = np.zeros(len(losses), dtype=bool)
    ever_fell = np.zeros(len(losses), dtype=bool)
    events = np.zeros(len(losses), dtype=np.int64)
    for k in range(1, losses.shape[1]):
        loss = losses[:, k]
        low = np.minimum(low, loss)
        fell = ~fallen & (low < anchor - threshold)
        fallen |= fell
        ever_fell |= fell
        rise = fallen & (loss > low + threshold)
        events += rise
        fallen &= ~rise
        anchor = np.where(rise, loss, anchor)
        low = np.where(rise, loss, low)
    return events, ever_fell


def classify(events: np.ndarray, fell: np.ndarray) -> np.ndarray:
    return np.where(events > 0, "forgotten", np.where(fell, "learned", "unlearned"))


def class_fractions(classes: np.ndarray, events: np.ndarray) -> dict[str, float]:
    n = max(len(classes), 1)
    forgotten = int((classes == "forgotten").sum())
    multiple = int((events >= 2).sum())
    return {
        **{name: float((classes == name).sum() / n) for name in CLASSES},
        "multiple_descent": multiple / n,
        "multiple_descent_of_forgotten": multiple / forgotten if forgotten else float("nan"),
        "mean_events": float(events.mean()) if len(events) else float("nan"),
    }


def classify_run(profile: pd.DataFrame, threshold_nats: float | None,
                 threshold_sd: float) -> tuple[pd.DataFrame, float]:
    """Per-block domain, class and events of one run's profile, and the threshold used: d =
    `threshold_nats`, or without it `threshold_sd` robust SDs of the block noise."""
    ids, _, losses = trajectories(profile)
    threshold = threshold_nats or noise_threshold(losses, threshold_sd)
    events, fell = forgetting_events(losses, threshold)
    domain = profile.drop_duplicates("block_id").set_index("block_id")["domain"].reindex(ids)
    blocks = pd.DataFrame({"block_id": ids, "domain": domain.to_numpy(), "class": classify(events, fell),
                           "events": events})
    return blocks, threshold


def half_drop_tokens(tokens: np.ndarray, loss: np.ndarray) -> float:
    """Tokens at which a loss curve first covers half of its total drop (linear interpolation)."""
    target = loss[0] - 0.5 * (loss[0] - loss[-1])
    below = np.flatnonzero(loss <= target)
    if loss[-1] >= loss[0] or not len(below):
        return float("nan")
    i = below[0]
    if i == 0:
        return float(tokens[0])
    frac = (loss[i - 1] - target) / (loss[i - 1] - loss[i])
    return float(tokens[i - 1] + frac * (tokens[i] - tokens[i - 1]))


def domain_rows(profile: pd.DataFrame, blocks: pd.DataFrame) -> list[dict]:
    """Per domain: block share, class fractions, first/last loss and when half the drop happened."""
    curves = profile.groupby(["domain", "checkpoint_tokens"], observed=True)["loss"].mean()
    rows = []
    for domain, part in blocks.groupby("domain", observed=True):
        curve = curves.loc[domain].sort_index()
        rows.append({
            "domain": domain, "blocks": len(part), "share": len(part) / len(blocks),
            **class_fractions(part["class"].to_numpy(), part["events"].to_numpy()),
            "loss_first": float(curve.iloc[0]), "loss_last": float(curve.iloc[-1]),
            "half_drop_tokens": half_drop_tokens(curve.index.to_numpy(), curve.to_numpy()),
        })
    order = pd.Series([r["half_drop_tokens"] for r in rows]).rank(method="min")
    for row, rank in zip(rows, order, strict=True):
        row["learned_order"] = rank  # 1 = the domain whose loss halved its drop first
    return rows


def kept_rows(run_dir: Path, block_domains: pd.Series) -> list[dict]:
    """Per focus phase of a run's sampler records: each domain's share of the kept set."""
    rows = []
    for path in sorted((Path(run_dir) / "records").glob("phase*_focus.parquet")):
        table = pd.read_parquet(path, columns=["block_id", "kept"])
        kept = block_domains.iloc[table.block_id[table.kept].to_numpy()].value_counts()
        total = block_domains.value_counts()
        for domain, n in total.items():
            rows.append({"phase": path.stem.split("_")[0].removeprefix("phase"), "domain": domain,
                         "kept_blocks": int(kept.get(domain, 0)),
                         "kept_share": kept.get(domain, 0) / max(kept.sum(), 1),
                         "data_share": n / total.sum(), "keep_rate": kept.get(domain, 0) / n})
    return rows


def analyze(profile_dirs: list[Path], run_dirs: list[Path], data_dir: Path, out_forgetting: Path,
            out_domains: Path, out_kept: Path, out_blocks: Path, *, threshold_nats: float | None,
            threshold_sd: float) -> pd.DataFrame:
    """Write the forgetting table (a row per run), the per-domain table, the kept-set table and
    the per-block classes (a row per run and profiled block); return the forgetting table."""
    block_domains = pd.read_parquet(Path(data_dir) / "train_blocks.parquet")["domain"]
    has_domains = bool(block_domains.notna().any())
    run_by_key = {}
    for run_dir in map(Path, run_dirs):
        info = json.loads((run_dir / "run.json").read_text())
        run_by_key[(info["size"], info["method"], info["seed"])] = run_dir
    forgetting, domains, kept, classes = [], [], [], []
    for pdir in profile_dirs:
        summary = json.loads((Path(pdir) / "summary.json").read_text())
        profile = pd.read_parquet(Path(pdir) / "losses.parquet")
        blocks, threshold = classify_run(profile, threshold_nats, threshold_sd)
        key = {k: summary[k] for k in ("run", "size", "method", "seed")}
        classes.append(blocks.assign(**key)[[*key, *blocks.columns]])
        forgetting.append({
            **key, "blocks": len(blocks), "snapshots": summary["snapshots"],
            "threshold_nats": threshold, "threshold_source": "config" if threshold_nats else
            f"{threshold_sd} robust SD", **class_fractions(blocks["class"].to_numpy(),
                                                          blocks["events"].to_numpy()),
            **{f"paper_{k}": v for k, v in PAPER.items()},
            "profile_tokens": summary["profile_tokens"], "train_tokens": summary["train_tokens"],
            "config_hash": summary["config_hash"], "git_commit": summary["git_commit"]})
        if has_domains:
            domains += [{**key, **row} for row in domain_rows(profile, blocks)]
            run_dir = run_by_key.get((summary["size"], summary["method"], summary["seed"]))
            if run_dir is not None:
                kept += [{**key, **row} for row in kept_rows(run_dir, block_domains)]
    table = pd.DataFrame(forgetting)
    skipped = [{"note": "skipped: the corpus has no domain field"}]
    no_focus = [{"note": "no profiled run has focus phases"}]
    for path, rows in ((out_forgetting, forgetting), (out_domains, domains or skipped),
                       (out_kept, kept or (no_focus if has_domains else skipped))):
        write_csv(path, pd.DataFrame(rows))
    write_parquet(out_blocks, pd.concat(classes, ignore_index=True))
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m lfr forgetting`."""
    parser.add_argument("--profiles", type=Path, nargs="+", required=True, help="`profile` output folders")
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="their run folders (records)")
    parser.add_argument("--data", type=Path, required=True, help="folder written by `tokenize`")
    parser.add_argument("--out-forgetting", type=Path, required=True, help="forgetting.csv to write")
    parser.add_argument("--out-domains", type=Path, required=True, help="domains.csv to write")
    parser.add_argument("--out-kept", type=Path, required=True, help="kept_domains.csv to write")
    parser.add_argument("--out-blocks", type=Path, required=True,
                        help="forgetting_blocks.parquet to write (each profiled block's class per run)")


def main(cfg: Any, profiles: list[Path], runs: list[Path], data: Path, out_forgetting: Path,
         out_domains: Path, out_kept: Path, out_blocks: Path) -> str:
    """The stage: `cfg` is the experiment config (lfr.config.ExperimentConfig); only its
    `profile` thresholds are read."""
    table = analyze(profiles, runs, data, out_forgetting, out_domains, out_kept, out_blocks,
                    threshold_nats=cfg.profile.threshold_nats, threshold_sd=cfg.profile.threshold_sd)
    return table.to_string(index=False)
