"""The benchmark table's rows (results/benchmarks.csv, results/gpu_check.csv): one per figure."""

from __future__ import annotations

import os
import platform
import socket
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from lfr.config import config_hash
from lfr.runtime import git_commit

COLUMNS = ["benchmark", "ours", "reference", "unit", "ratio_median", "ratio_min", "ratio_max", "goal",
           "meets_goal"]  # what the console shows


@dataclass
class Row:
    benchmark: str
    description: str
    unit: str
    ratio_is: str
    goal: str  # e.g. ">= 1.0"; empty: informational
    ours: list[float] = field(default_factory=list)
    reference: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)

    def record(self) -> dict:
        def med(xs: list[float]) -> float:
            return statistics.median(xs) if xs else float("nan")

        ratio = med(self.ratios)
        meets = ""
        if self.goal and self.ratios:
            op, value = self.goal.split()
            meets = bool(ratio >= float(value)) if op == ">=" else bool(ratio <= float(value))
        return {"benchmark": self.benchmark, "ours": med(self.ours), "reference": med(self.reference),
                "unit": self.unit, "ratio_median": ratio,
                "ratio_min": min(self.ratios, default=float("nan")),
                "ratio_max": max(self.ratios, default=float("nan")), "repeats": len(self.ratios),
                "ratio_is": self.ratio_is, "goal": self.goal, "meets_goal": meets,
                "description": self.description}


def table_of(rows: list[Row], settings: Any, wall_s: float, load: float, device: str = "") -> pd.DataFrame:
    """The rows with what ran them: commit, hash of the settings, host (and `device`), wall time."""
    table = pd.DataFrame([row.record() for row in rows])
    table["git_commit"] = git_commit()
    table["config_hash"] = config_hash(settings)
    table["host"] = (f"{socket.gethostname()} {platform.machine()}, {os.cpu_count()} cores, "
                     f"torch {torch.__version__} {torch.get_num_threads()} threads, "
                     f"load avg {load:.1f} at start{', ' + device if device else ''}")
    table["suite_wall_s"] = round(wall_s, 1)
    return table


def merge_into(out: Path, table: pd.DataFrame) -> pd.DataFrame:
    """`table` plus the rows of an earlier `out` that this run did not measure again (each keeps
    its own git_commit and host), so `--only` updates its rows and drops no others."""
    if not out.is_file():
        return table
    old = pd.read_csv(out)
    return pd.concat([table, old[~old.benchmark.isin(table.benchmark)]], ignore_index=True)


def show(table: pd.DataFrame) -> None:
    with pd.option_context("display.width", 200, "display.max_colwidth", 40):
        print(table[COLUMNS].to_string(index=False))
