"""Stage `evaluate`: lm-evaluation-harness on one HF checkpoint folder.

Runs `lm_eval.simple_evaluate` with model `hf` exactly as anyone would on their checkpoint
(fixed max_length = the model's context, fixed batch size, zero-shot by default), then writes the
raw results JSON and a tidy parquet: `size, method, seed, task, domain, metric, value, stderr`.
Rows with `domain` = `all` are lm-eval's own aggregates; the per-domain rows re-aggregate
lm-eval's per-item scores with the task's own aggregation functions.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd

from lfr.config import EvalConfig, ExperimentConfig, config_hash
from lfr.eval_tasks import load_local_tasks
from lfr.files import write_json, write_parquet
from lfr.runtime import git_commit, resolve_device

log = logging.getLogger(__name__)
TIDY_COLUMNS = ["size", "method", "seed", "task", "domain", "metric", "value", "stderr"]


def task_list(cfg: EvalConfig, task_dir: Path | None) -> list[str | dict]:
    """Task names for lm-eval, with the local `lfr_*` tasks given as config dicts."""
    local = {c["task"]: c for c in load_local_tasks(task_dir)} if task_dir else {}
    missing = [t for t in cfg.tasks if t.startswith("lfr_") and t not in local]
    if missing:
        raise FileNotFoundError(f"local tasks {missing} not found in {task_dir}; run `eval-tasks` first")
    return [local.get(t, t) for t in cfg.tasks]


def run_lm_eval(model_dir: str, cfg: EvalConfig, task_dir: Path | None) -> dict[str, Any]:
    import lm_eval
    from lm_eval.tasks import TaskManager
    from transformers import AutoConfig

    # lm-eval bootstraps stderrs in a forked multiprocessing.Pool; forked after torch started its
    # threads, a worker can deadlock (seen in CI). Its documented switch runs them serially.
    os.environ.setdefault("DISABLE_MULTIPROC", "1")
    tasks = task_list(cfg, task_dir)
    config = AutoConfig.from_pretrained(model_dir)
    max_length = getattr(config, "n_positions", None) or config.max_position_embeddings  # GPT-2 / Pythia
    return lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": model_dir, "tokenizer": model_dir, "dtype": "float32",
                    "max_length": max_length},
        tasks=tasks, task_manager=TaskManager(include_defaults=not all(isinstance(t, dict) for t in tasks)),
        num_fewshot=cfg.num_fewshot,
        batch_size=cfg.batch_size, device=str(resolve_device(cfg.device, "eval.device")), limit=cfg.limit,
        bootstrap_iters=cfg.bootstrap_iters, log_samples=True, random_seed=cfg.seed,
        numpy_random_seed=cfg.seed, torch_random_seed=cfg.seed, fewshot_random_seed=cfg.seed,
        gen_kwargs=({"max_gen_toks": cfg.max_gen_toks, "do_sample": False}  # greedy translation
                    if any(isinstance(t, str) for t in tasks) else None),
    )


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def tidy(res: dict[str, Any]) -> pd.DataFrame:
    """One row per task x domain x metric (run columns are added by the caller)."""
    from lm_eval.api.registry import get_aggregation

    rows = []
    for task, metrics in res["results"].items():
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if not filt or "_stderr" in metric or not isinstance(value, int | float):
                continue
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append({"task": task, "domain": "all", "metric": metric, "value": float(value),
                         "stderr": _number(stderr)})
        aggregations = {m["metric"]: m.get("aggregation") for m in
                        res["configs"].get(task, {}).get("metric_list", [])}
        by_domain: dict[tuple[str, str], list] = defaultdict(list)
        for sample in res.get("samples", {}).get(task, []):
            domain = sample["doc"].get("domain") if isinstance(sample["doc"], dict) else None
            for metric in sample["metrics"]:
                if domain is not None and isinstance(aggregations.get(metric), str):
                    by_domain[(domain, metric)].append(sample[metric])
        if len({domain for domain, _ in by_domain}) < 2:
            continue  # one domain only: its rows would repeat lm-eval's overall ones
        for (domain, metric), values in sorted(by_domain.items()):
            agg = get_aggregation(aggregations[metric])
            rows.append({"task": task, "domain": domain, "metric": metric,
                         "value": float(agg(values)), "stderr": math.nan})
    return pd.DataFrame(rows, columns=TIDY_COLUMNS[3:])


def evaluate(cfg: EvalConfig, model: str, task_dir: Path | None, out_json: Path, out_parquet: Path,
             run: dict[str, Any]) -> pd.DataFrame:
    """Evaluate one checkpoint folder (or reference model name); write json + parquet."""
    if Path(model).exists() and not (Path(model) / "config.json").is_file():
        raise FileNotFoundError(f"{model} is not a HF model folder (no config.json); train it first")
    os.environ.setdefault("HF_HOME", str(Path(cfg.cache_dir).resolve()))
    res = run_lm_eval(str(model), cfg, task_dir)
    from lm_eval.utils import handle_non_serializable

    raw = {k: res[k] for k in ("results", "configs", "versions", "n-shot", "n-samples") if k in res}
    raw["run"] = run
    write_json(out_json, json.loads(json.dumps(raw, default=handle_non_serializable)))
    table = tidy(res)
    for key in ("size", "method", "seed"):
        table.insert(TIDY_COLUMNS.index(key), key, run[key])
    write_parquet(out_parquet, table)
    log.info("evaluate: %s", table[table.domain == "all"].to_string(index=False))
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m lfr evaluate`."""
    parser.add_argument("--model", required=True, help="HF model folder, or a hub name (reference)")
    parser.add_argument("--tasks", type=Path, help="folder written by `eval-tasks`")
    parser.add_argument("--size", required=True, help="the `size` of the result rows (a reference: its name)")
    parser.add_argument("--method", required=True, help="the `method` of the result rows")
    parser.add_argument("--seed", type=int, required=True,
                        help="the `seed` of the result rows (-1: reference)")
    parser.add_argument("--out-json", type=Path, required=True, help="lm-eval's raw results")
    parser.add_argument("--out-parquet", type=Path, required=True, help="tidy results, one row per metric")
    parser.add_argument("--threads", type=int, help="torch CPU threads")


def main(cfg: ExperimentConfig, model: str, tasks: Path | None, size: str, method: str, seed: int,
         out_json: Path, out_parquet: Path) -> None:
    run = {"size": size, "method": method, "seed": seed, "git_commit": git_commit(),
           "config_hash": config_hash(cfg.eval.model_dump())}
    evaluate(cfg.eval, model, tasks, out_json, out_parquet, run)
