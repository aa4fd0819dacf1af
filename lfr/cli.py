"""`python -m lfr <stage>`: one subcommand per pipeline stage (each Snakemake rule calls one).

Stage `s` is the module `STAGES[s]` (lfr/<s>.py, the report side in lfr/report/; `-` is `_`).
The CLI parses the options, reads the config, sets up torch for stages with `--threads`, checks
`--data`/`--tokenizer` against the config (`lfr.data.check_data_matches`), then calls the module's
`main(cfg, **options)`. The config is `--config FILE` (YAML) or `--config-json JSON` (what the
Snakemake rules pass: only the sections that stage depends on, so editing one section reruns
only the stages downstream of it); without either, the built-in defaults of lfr/config.py.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from lfr import devices
from lfr.config import ConfigError, ExperimentConfig
from lfr.runtime import Interrupted, setup_torch

SECTIONS = frozenset(ExperimentConfig.model_fields)
STAGES = {  # stage: its module; the modules import torch etc. only when their stage runs
    "corpus": "lfr.corpus", "tokenizer": "lfr.tokenizer", "tokenize": "lfr.tokenize",
    "train": "lfr.train", "score-reference": "lfr.score_reference", "eval-tasks": "lfr.eval_tasks",
    "evaluate": "lfr.evaluate", "reference-bpb": "lfr.reference_bpb", "prefetch": "lfr.prefetch",
    "profile": "lfr.profile",
    "forgetting": "lfr.report.forgetting", "summarize": "lfr.report.summarize",
    "scaling": "lfr.report.scaling", "plot": "lfr.report.plot",
    "schema": "lfr.schema",
}
NO_CONFIG = {"summarize", "scaling", "plot", "schema"}  # stages that read no config


def read_config(args: argparse.Namespace) -> tuple[ExperimentConfig, frozenset[str]]:
    """The validated config and its sections that the user gave (the others are built-in defaults):
    the top-level keys of --config-json, else all of them. With `offline: true`, HF libraries are
    told not to touch the network."""
    from lfr.grid import load_config, validate_config  # the methods' registry: pandas, numpy

    given = SECTIONS
    if args.config_json:
        raw = json.loads(args.config_json)
        cfg = validate_config(raw, "--config-json")
        given = frozenset(raw)
    elif args.config:
        cfg = load_config(args.config)
    else:
        print(f"lfr {args.stage}: no --config given: using the built-in defaults of lfr/config.py "
              "(the pipeline's default is --config config/config.yaml)", file=sys.stderr)
        cfg = ExperimentConfig()
    if cfg.offline:
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no deadlock when lm-eval forks
    return cfg, given


# The stages that may run on a GPU, and the config section whose `device` says so.
GPU_STAGES = {"train": "train", "score-reference": "train", "profile": "train", "evaluate": "eval",
              "reference-bpb": "eval"}


def claim_device(stage: str, cfg: ExperimentConfig) -> None:
    """Keep the devices of this job claimed while the stage runs (a launcher claimed them), or
    claim one of the box's GPUs for a stage that may use one (lfr/devices.py): jobs side by side
    on one box never share a device."""
    devices.hold(os.environ)
    section = GPU_STAGES.get(stage)
    if section and getattr(cfg, section).device != "cpu":
        os.environ.update(devices.claim(1, os.environ))


def run_stage(args: argparse.Namespace) -> Any:
    """Call the stage's `main`; return what it returns (printed by `main` below)."""
    options = {k: v for k, v in vars(args).items()
               if k not in ("stage", "config", "config_json", "verbose", "threads")}
    if args.stage in NO_CONFIG:
        return importlib.import_module(STAGES[args.stage]).main(**options)
    cfg, given = read_config(args)
    claim_device(args.stage, cfg)  # before the stage's torch starts CUDA
    main = importlib.import_module(STAGES[args.stage]).main
    if "data" in options or "tokenizer" in options:
        from lfr.data import check_data_matches

        check_data_matches(cfg, given, options.get("data"), options.get("tokenizer"))
    if "threads" in vars(args):
        setup_torch(args.threads)
    if "given" in inspect.signature(main).parameters:
        options["given"] = given
    return main(cfg, **options)


TRAIN_DOCS = "training documents written by `corpus` (parquet)"
VAL_DOCS = "held-out documents written by `corpus` (parquet)"
TOKENIZER = "folder written by `tokenizer`"
DATA = "folder written by `tokenize`"
SEED = "the run's seed (model init, data order)"
THREADS = "torch CPU threads"
RUNS = "finished run folders (with run.json and metrics.parquet)"
FIGURE_OUT = "the .png to write; the .pdf goes next to it"


def budget(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r}: a positive multiple, e.g. 0.5 or 2")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lfr", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")

    def stage(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        if name in NO_CONFIG:
            return p
        src = p.add_mutually_exclusive_group()
        src.add_argument("--config", type=Path, help="experiment config YAML; without --config or "
                         "--config-json: the built-in defaults of lfr/config.py, not config/config.yaml")
        src.add_argument("--config-json", help="experiment config (or sections of it) as JSON; "
                         "sections left out take the built-in defaults and are not checked against "
                         "--data/--tokenizer")
        return p

    p = stage("corpus", "read the corpus and split it into train/val documents")
    p.add_argument("--train-out", type=Path, required=True, help="parquet of the training documents")
    p.add_argument("--val-out", type=Path, required=True, help="parquet of the held-out documents")
    p = stage("tokenizer", "train the BPE (or build GPT-2's) into a folder")
    p.add_argument("--train-docs", type=Path, required=True, help=TRAIN_DOCS)
    p.add_argument("--out", type=Path, required=True, help="folder for tokenizer.json and its meta")
    p = stage("tokenize", "tokenize both splits into token files and block tables")
    p.add_argument("--train-docs", type=Path, required=True, help=TRAIN_DOCS)
    p.add_argument("--val-docs", type=Path, required=True, help=VAL_DOCS)
    p.add_argument("--tokenizer", type=Path, required=True, help=TOKENIZER)
    p.add_argument("--out", type=Path, required=True, help="folder for token files, block tables, meta.json")
    p = stage("train", "pretrain one size x method x seed")
    p.add_argument("--size", required=True, help="model size (MODEL_PRESETS or custom_models)")
    p.add_argument("--method", required=True, help="data-selection method (lfr/sampling registry)")
    p.add_argument("--seed", type=int, required=True, help=SEED)
    p.add_argument("--budget", type=budget, default=1.0,
                   help="multiple of the method's default run length (sweep.budgets; default 1)")
    p.add_argument("--lr-mult", type=budget, default=1.0,
                   help="multiple of train.lr (lr_check.multipliers; default 1)")
    p.add_argument("--data", type=Path, required=True, help=DATA)
    p.add_argument("--tokenizer", type=Path, required=True, help=TOKENIZER)
    p.add_argument("--out", type=Path, required=True, help="run folder: model/, metrics.parquet, run.json")
    p.add_argument("--resume-dir", type=Path, help="resume checkpoints (not a Snakemake output)")
    p.add_argument("--threads", type=int, help=THREADS)
    p.add_argument("--time-limit-min", type=float, help="the job's wall-time limit: save and stop before it")
    p.add_argument("--stop-margin-s", type=float,
                   help="stop this long before the job's limit (default: max(120 s, 5%% of the limit))")
    p.add_argument("--snapshots", help="profile settings as JSON: save weight snapshots for `profile`")
    p.add_argument("--block-scores", type=Path,
                   help="reference scores (score-reference) for methods that need them (ppl-prune, rho-loss)")
    p = stage("score-reference", "train a method's reference model on its shard and score every other block")
    p.add_argument("--method", required=True, help="the method whose options hold the reference's")
    p.add_argument("--seed", type=int, required=True, help=SEED)
    p.add_argument("--data", type=Path, required=True, help=DATA)
    p.add_argument("--tokenizer", type=Path, required=True, help=TOKENIZER)
    p.add_argument("--out", type=Path, required=True, help="folder: block_scores.parquet, reference.json")
    p.add_argument("--resume-dir", type=Path, help="resume checkpoints of the reference's training")
    p.add_argument("--threads", type=int, help=THREADS)
    p = stage("eval-tasks", "build the offline lm-eval tasks from held-out documents")
    p.add_argument("--val-docs", type=Path, required=True, help=VAL_DOCS)
    p.add_argument("--tokenizer", type=Path, required=True, help=TOKENIZER)
    p.add_argument("--out", type=Path, required=True, help="folder for the task YAMLs and jsonl files")
    p = stage("evaluate", "run lm-evaluation-harness on one checkpoint")
    p.add_argument("--model", required=True, help="HF model folder, or a hub name (reference)")
    p.add_argument("--tasks", type=Path, help="folder written by `eval-tasks`")
    p.add_argument("--size", required=True, help="the `size` of the result rows (a reference: its name)")
    p.add_argument("--method", required=True, help="the `method` of the result rows")
    p.add_argument("--seed", type=int, required=True, help="the `seed` of the result rows (-1: reference)")
    p.add_argument("--out-json", type=Path, required=True, help="lm-eval's raw results")
    p.add_argument("--out-parquet", type=Path, required=True, help="tidy results, one row per metric")
    p.add_argument("--threads", type=int, help=THREADS)
    p = stage("reference-bpb", "a released model's val_bpb on the validation blocks' text, own tokenizer")
    p.add_argument("--model", required=True, help="hub name of the reference model (or a HF model folder)")
    p.add_argument("--data", type=Path, required=True, help=DATA)
    p.add_argument("--tokenizer", type=Path, required=True, help=TOKENIZER + " (ours: spells the blocks)")
    p.add_argument("--out", type=Path, required=True, help="val_bpb.json to write")
    p.add_argument("--threads", type=int, help=THREADS)
    stage("prefetch", "download the datasets of the standard eval tasks (needs network)")
    p = stage("summarize", "collect finished runs into the main table (csv)")
    p.add_argument("--runs", type=Path, nargs="+", required=True, help=RUNS)
    p.add_argument("--evals", type=Path, nargs="*", help="tidy eval parquets (evaluate)")
    p.add_argument("--forgetting", type=Path, help="results/tables/forgetting.csv (profiled runs)")
    p.add_argument("--reference-bpb", type=Path, nargs="*",
                   help="val_bpb.json of the reference models (reference-bpb)")
    p.add_argument("--reference-tokens",
                   help="JSON {reference: its public training tokens} (eval.reference_tokens)")
    p.add_argument("--out", type=Path, required=True,
                   help="main.csv to write; main_by_seed.csv goes next to it")
    p = stage("scaling", "the speed-up's trend across model sizes and the learning-rate check (csv)")
    p.add_argument("--by-seed", type=Path, required=True, help="results/tables/main_by_seed.csv (summarize)")
    p.add_argument("--forgetting", type=Path, help="results/tables/forgetting.csv (profiled runs)")
    p.add_argument("--out", type=Path, required=True,
                   help="scaling.csv to write; learning_rates.csv and scaling_band.csv go next to it")
    p = stage("plot", "draw one figure (png + pdf) from what it reads")
    p.add_argument("--figure", required=True, help="which figure: a name in FIGURES of lfr/report/plot.py")
    p.add_argument("--out", type=Path, required=True, help=FIGURE_OUT)
    p.add_argument("--runs", type=Path, nargs="+", help=RUNS + " (curve figures)")
    p.add_argument("--main", type=Path, help="results/tables/main.csv (table figures)")
    p.add_argument("--profiles", type=Path, nargs="+", help="`profile` output folders (profiling figures)")
    p.add_argument("--tables", type=Path, help="folder of forgetting.csv etc. (forgetting figures)")
    p.add_argument("--scaling", type=Path, help="results/tables/scaling.csv (the scaling figure)")
    p = stage("profile", "per-block losses of one run at each of its weight snapshots")
    p.add_argument("--run", type=Path, required=True, help="a finished run folder (with snapshots/)")
    p.add_argument("--data", type=Path, required=True, help=DATA)
    p.add_argument("--out", type=Path, required=True, help="folder for losses.parquet, summary.json")
    p.add_argument("--threads", type=int, help=THREADS)
    p = stage("forgetting", "forgetting classes and domain tables of profiled runs")
    p.add_argument("--profiles", type=Path, nargs="+", required=True, help="`profile` output folders")
    p.add_argument("--runs", type=Path, nargs="+", required=True, help="their run folders (records)")
    p.add_argument("--data", type=Path, required=True, help=DATA)
    p.add_argument("--out-forgetting", type=Path, required=True, help="forgetting.csv to write")
    p.add_argument("--out-domains", type=Path, required=True, help="domains.csv to write")
    p.add_argument("--out-kept", type=Path, required=True, help="kept_domains.csv to write")
    p.add_argument("--out-blocks", type=Path, required=True,
                   help="forgetting_blocks.parquet to write (each profiled block's class per run)")
    p = stage("schema", "print the config's JSON Schema, or its reference page (--format markdown)")
    importlib.import_module("lfr.schema").add_arguments(p)
    assert set(sub.choices) == set(STAGES)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        result = run_stage(args)
        if result is not None:
            print(result)  # what the stage made, for its log
    except Interrupted as stop:
        print(f"lfr {args.stage}: {stop}", file=sys.stderr)
        sys.exit(3)  # non-zero: Snakemake's retry (or a requeue) resumes from the checkpoint
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"lfr {args.stage}: error: {e}", file=sys.stderr)
        sys.exit(2)
