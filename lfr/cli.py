"""`python -m lfr <stage>`: one subcommand per pipeline stage (each Snakemake rule calls one).

Stage `s` is the module `STAGES[s]` (lfr/<s>.py, the report side in lfr/report/; `-` is `_`),
which declares its options in `add_arguments`, next to its `main`; it is imported only when its
stage runs or its --help is asked. The CLI parses the options, reads the config, sets up torch
for stages with `--threads`, checks `--data`/`--tokenizer` against the config
(`lfr.data.check_data_matches`), then calls the module's `main(cfg, **options)`. The config is
`--config FILE` (YAML) or `--config-json JSON` (what the Snakemake rules pass: only the sections
that stage depends on, so editing one section reruns only the stages downstream of it); without
either, the built-in defaults of lfr/config.py.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from lfr import devices
from lfr.config import ConfigError, ExperimentConfig
from lfr.runtime import Interrupted, setup_torch

SECTIONS = frozenset(ExperimentConfig.model_fields)
STAGES = {  # stage: its module, one line of help; a module is imported only for its stage (torch etc.)
    "corpus": ("lfr.corpus", "read the corpus and split it into train/val documents"),
    "tokenizer": ("lfr.tokenizer", "train the BPE (or build GPT-2's) into a folder"),
    "tokenize": ("lfr.tokenize", "tokenize both splits into token files and block tables"),
    "train": ("lfr.train", "pretrain one size x method x seed"),
    "score-reference": ("lfr.score_reference",
                        "train a method's reference model on its shard and score every other block"),
    "eval-tasks": ("lfr.eval_tasks", "build the offline lm-eval tasks from held-out documents"),
    "evaluate": ("lfr.evaluate", "run lm-evaluation-harness on one checkpoint"),
    "reference-bpb": ("lfr.reference_bpb",
                      "a released model's val_bpb on the validation blocks' text, own tokenizer"),
    "prefetch": ("lfr.prefetch", "download the datasets of the standard eval tasks (needs network)"),
    "summarize": ("lfr.report.summarize", "collect finished runs into the main table (csv)"),
    "scaling": ("lfr.report.scaling",
                "the speed-up's trend across model sizes and the learning-rate check (csv)"),
    "plot": ("lfr.report.plot", "draw one figure (png + pdf) from what it reads"),
    "profile": ("lfr.profile", "per-block losses of one run at each of its weight snapshots"),
    "forgetting": ("lfr.report.forgetting", "forgetting classes and domain tables of profiled runs"),
    "schema": ("lfr.schema", "print the config's JSON Schema, or its reference page (--format markdown)"),
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
        return importlib.import_module(STAGES[args.stage][0]).main(**options)
    cfg, given = read_config(args)
    claim_device(args.stage, cfg)  # before the stage's torch starts CUDA (importing torch does not)
    main = importlib.import_module(STAGES[args.stage][0]).main
    if "data" in options or "tokenizer" in options:
        from lfr.data import check_data_matches

        check_data_matches(cfg, given, options.get("data"), options.get("tokenizer"))
    if "threads" in vars(args):
        setup_torch(args.threads)
    if "given" in inspect.signature(main).parameters:
        options["given"] = given
    return main(cfg, **options)


def build_parser(stage: str | None = None) -> argparse.ArgumentParser:
    """The parser of every stage's name; only `stage`'s module is imported, for its options
    (`add_arguments`, next to its `main`), so that `python -m lfr --help` stays fast and torch-free."""
    parser = argparse.ArgumentParser(prog="lfr", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, (module, summary) in STAGES.items():
        p = sub.add_parser(name, help=summary, description=summary)
        if name == stage:
            add_stage_arguments(p, name, importlib.import_module(module))
    return parser


def add_stage_arguments(p: argparse.ArgumentParser, stage: str, module: Any) -> None:
    """The config options (of a stage that reads the config) and the stage's own."""
    if stage not in NO_CONFIG:
        src = p.add_mutually_exclusive_group()
        src.add_argument("--config", type=Path, help="experiment config YAML; without --config or "
                         "--config-json: the built-in defaults of lfr/config.py, not config/config.yaml")
        src.add_argument("--config-json", help="experiment config (or sections of it) as JSON; "
                         "sections left out take the built-in defaults and are not checked against "
                         "--data/--tokenizer")
    if hasattr(module, "add_arguments"):  # a stage without options has none (prefetch)
        module.add_arguments(p)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    stage = next((a for a in argv if not a.startswith("-")), None)  # the only top-level option is -v
    args = build_parser(stage).parse_args(argv)
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
