"""`python -m lfr <stage>`: one subcommand per pipeline stage (each Snakemake rule calls one).

Every stage takes the experiment config as `--config FILE` (YAML) or `--config-json JSON`
(what the Snakemake rules pass: only the sections that stage depends on, so editing one section
reruns only the stages downstream of it); without either, the built-in defaults of lfr/config.py.
Stages that read --data/--tokenizer stop when those folders were built with another config
(`lfr.data.check_data_matches`). Heavy imports happen inside each subcommand.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from lfr.config import ConfigError, ExperimentConfig, config_hash, load_config, validate_config

SECTIONS = frozenset(ExperimentConfig.model_fields)

REPO = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    """The commit of the code that ran, with -dirty for uncommitted changes; unknown outside git."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=REPO,
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def keep_freed_memory() -> bool:
    """Make glibc keep large freed blocks for reuse instead of returning them to the kernel.

    By default glibc serves every allocation over 32 MiB with fresh mmap'd pages (a 16x128x8192
    float32 logits tensor is 64 MiB), which the kernel zero-fills again on each training step:
    on the demo model that was over a third of CPU time, in page faults. Raising both
    thresholds cut a 1-epoch nano run (1 thread) from 38 s to 22 s. Process-wide, CPU memory
    only; False where there is no glibc (macOS, musl).
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 256 << 20) and mallopt(m_trim_threshold, 1 << 30))


def setup_torch(threads: int | None) -> None:
    """Torch's CPU threads (None: torch's default) and the allocator setting above."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    keep_freed_memory()


def read_config(args: argparse.Namespace) -> tuple[ExperimentConfig, frozenset[str]]:
    """The validated config and its sections that the user gave (the others are built-in defaults):
    the top-level keys of --config-json, else all of them. With `offline: true`, HF libraries are
    told not to touch the network."""
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


def cmd_corpus(args: argparse.Namespace) -> None:
    from lfr.corpus import prepare_corpus

    prepare_corpus(read_config(args)[0].corpus, args.train_out, args.val_out)


def cmd_tokenizer(args: argparse.Namespace) -> None:
    from lfr.tokenizer import prepare_tokenizer

    cfg, given = read_config(args)
    prepare_tokenizer(cfg.tokenizer, args.train_docs, args.out,
                      corpus=cfg.corpus if "corpus" in given else None)


def cmd_tokenize(args: argparse.Namespace) -> None:
    from lfr.data import check_data_matches, tokenize

    cfg, given = read_config(args)
    check_data_matches(cfg, given, None, args.tokenizer)
    tokenize(args.train_docs, args.val_docs, args.tokenizer, cfg.data, args.out,
             corpus=cfg.corpus if "corpus" in given else None)


def cmd_train(args: argparse.Namespace) -> None:
    from lfr.data import check_data_matches

    cfg, given = read_config(args)
    check_data_matches(cfg, given, args.data, args.tokenizer)
    from lfr.train import TrainingInterrupted, train

    setup_torch(args.threads)
    info = {"git_commit": git_commit()}

    snapshots = None
    if args.snapshots:
        from lfr.config import ProfileConfig

        snapshots = ProfileConfig.model_validate_json(args.snapshots)
    try:
        train(cfg, args.size, args.method, args.seed, args.data, args.tokenizer, args.out,
              args.resume_dir, info, time_limit_min=args.time_limit_min, snapshots=snapshots,
              block_scores=args.block_scores)
    except TrainingInterrupted as stop:
        print(f"lfr train: {stop}", file=sys.stderr)
        sys.exit(3)  # non-zero: Snakemake's retry (or a requeue) resumes from the checkpoint


def cmd_score_reference(args: argparse.Namespace) -> None:
    from lfr.data import check_data_matches

    cfg, given = read_config(args)
    check_data_matches(cfg, given, args.data, args.tokenizer)
    from lfr.reference import score_reference
    from lfr.train import TrainingInterrupted

    setup_torch(args.threads)
    info = {"git_commit": git_commit()}
    try:
        print(score_reference(cfg, args.method, args.seed, args.data, args.tokenizer, args.out,
                              args.resume_dir, info))
    except TrainingInterrupted as stop:
        print(f"lfr score-reference: {stop}", file=sys.stderr)
        sys.exit(3)


def cmd_eval_tasks(args: argparse.Namespace) -> None:
    from lfr.data import check_data_matches
    from lfr.eval_tasks import prepare_eval_tasks

    cfg, given = read_config(args)
    check_data_matches(cfg, given, None, args.tokenizer)
    print(prepare_eval_tasks(args.val_docs, args.tokenizer, cfg.eval, cfg.data.block_size, args.out))


def cmd_evaluate(args: argparse.Namespace) -> None:
    cfg, _ = read_config(args)
    from lfr.evaluate import evaluate

    run = {"size": args.size, "method": args.method, "seed": args.seed, "git_commit": git_commit(),
           "config_hash": config_hash(cfg.eval.model_dump())}
    setup_torch(args.threads)
    evaluate(cfg.eval, args.model, args.tasks, args.out_json, args.out_parquet, run)



def cmd_prefetch(args: argparse.Namespace) -> None:
    from lfr.evaluate import prefetch_eval_data

    print("cached:", prefetch_eval_data(read_config(args)[0].eval))


def cmd_summarize(args: argparse.Namespace) -> None:
    from lfr.report import summarize

    print(summarize(args.runs, args.out, args.evals or [],
                    forgetting_csv=args.forgetting).to_string(index=False))


def cmd_plot(args: argparse.Namespace) -> None:
    from lfr.figures import plot

    plot(args.figure, args.runs, args.main, args.out)


def cmd_profile(args: argparse.Namespace) -> None:
    cfg, _ = read_config(args)
    from lfr.profile import profile_run

    setup_torch(args.threads)
    out = Path(args.out)
    print(profile_run(args.run, args.data, cfg.profile, out / "losses.parquet", out / "summary.json",
                      cfg.train.device))


def cmd_forgetting(args: argparse.Namespace) -> None:
    from lfr.forgetting import analyze

    table = analyze(args.profiles, args.runs, args.data, read_config(args)[0].profile,
                    args.out_forgetting, args.out_domains, args.out_kept)
    print(table.to_string(index=False))


def cmd_plot_profile(args: argparse.Namespace) -> None:
    from lfr.profile_figures import plot_profile

    plot_profile(args.figure, args.profiles, args.tables, args.out)


def cmd_schema(args: argparse.Namespace) -> None:
    from lfr.config import json_schema

    print(json.dumps(json_schema(), indent=2))


TRAIN_DOCS = "training documents written by `corpus` (parquet)"
VAL_DOCS = "held-out documents written by `corpus` (parquet)"
TOKENIZER = "folder written by `tokenizer`"
DATA = "folder written by `tokenize`"
SEED = "the run's seed (model init, data order)"
THREADS = "torch CPU threads"
RUNS = "finished run folders (with run.json and metrics.parquet)"
FIGURE_OUT = "the .png to write; the .pdf goes next to it"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lfr", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")

    def stage(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        src = p.add_mutually_exclusive_group()
        src.add_argument("--config", type=Path, help="experiment config YAML; without --config or "
                         "--config-json: the built-in defaults of lfr/config.py, not config/config.yaml")
        src.add_argument("--config-json", help="experiment config (or sections of it) as JSON; "
                         "sections left out take the built-in defaults and are not checked against "
                         "--data/--tokenizer")
        return p

    p = stage("corpus", cmd_corpus, "read the corpus and split it into train/val documents")
    p.add_argument("--train-out", type=Path, required=True, help="parquet of the training documents")
    p.add_argument("--val-out", type=Path, required=True, help="parquet of the held-out documents")
    p = stage("tokenizer", cmd_tokenizer, "train the BPE (or build GPT-2's) into a folder")
    p.add_argument("--train-docs", type=Path, required=True, help=TRAIN_DOCS)
    p.add_argument("--out", type=Path, required=True, help="folder for tokenizer.json and its meta")
    p = stage("tokenize", cmd_tokenize, "tokenize both splits into token files and block tables")
    p.add_argument("--train-docs", type=Path, required=True, help=TRAIN_DOCS)
    p.add_argument("--val-docs", type=Path, required=True, help=VAL_DOCS)
    p.add_argument("--tokenizer", type=Path, required=True, help=TOKENIZER)
    p.add_argument("--out", type=Path, required=True, help="folder for token files, block tables, meta.json")
    p = stage("train", cmd_train, "pretrain one size x method x seed")
    p.add_argument("--size", required=True, help="model size (MODEL_PRESETS or custom_models)")
    p.add_argument("--method", required=True, help="data-selection method (lfr/sampling registry)")
    p.add_argument("--seed", type=int, required=True, help=SEED)
    p.add_argument("--data", type=Path, required=True, help=DATA)
    p.add_argument("--tokenizer", type=Path, required=True, help=TOKENIZER)
    p.add_argument("--out", type=Path, required=True, help="run folder: model/, metrics.parquet, run.json")
    p.add_argument("--resume-dir", type=Path, help="resume checkpoints (not a Snakemake output)")
    p.add_argument("--threads", type=int, help=THREADS)
    p.add_argument("--time-limit-min", type=float, help="the job's wall-time limit: save and stop before it")
    p.add_argument("--snapshots", help="profile settings as JSON: save weight snapshots for `profile`")
    p.add_argument("--block-scores", type=Path,
                   help="reference scores (score-reference) for methods that need them (ppl-prune)")
    p = stage("score-reference", cmd_score_reference,
              "train a method's reference model on its shard and score every other block")
    p.add_argument("--method", required=True, help="the method whose options hold the reference's")
    p.add_argument("--seed", type=int, required=True, help=SEED)
    p.add_argument("--data", type=Path, required=True, help=DATA)
    p.add_argument("--tokenizer", type=Path, required=True, help=TOKENIZER)
    p.add_argument("--out", type=Path, required=True, help="folder: block_scores.parquet, reference.json")
    p.add_argument("--resume-dir", type=Path, help="resume checkpoints of the reference's training")
    p.add_argument("--threads", type=int, help=THREADS)
    p = stage("eval-tasks", cmd_eval_tasks, "build the offline lm-eval tasks from held-out documents")
    p.add_argument("--val-docs", type=Path, required=True, help=VAL_DOCS)
    p.add_argument("--tokenizer", type=Path, required=True, help=TOKENIZER)
    p.add_argument("--out", type=Path, required=True, help="folder for the task YAMLs and jsonl files")
    p = stage("evaluate", cmd_evaluate, "run lm-evaluation-harness on one checkpoint")
    p.add_argument("--model", required=True, help="HF model folder, or a hub name (reference)")
    p.add_argument("--tasks", type=Path, help="folder written by `eval-tasks`")
    p.add_argument("--size", required=True, help="the `size` of the result rows (a reference: its name)")
    p.add_argument("--method", required=True, help="the `method` of the result rows")
    p.add_argument("--seed", type=int, required=True, help="the `seed` of the result rows (-1: reference)")
    p.add_argument("--out-json", type=Path, required=True, help="lm-eval's raw results")
    p.add_argument("--out-parquet", type=Path, required=True, help="tidy results, one row per metric")
    p.add_argument("--threads", type=int, help=THREADS)
    stage("prefetch", cmd_prefetch, "download the datasets of the standard eval tasks (needs network)")
    p = stage("summarize", cmd_summarize, "collect finished runs into the main table (csv)")
    p.add_argument("--runs", type=Path, nargs="+", required=True, help=RUNS)
    p.add_argument("--evals", type=Path, nargs="*", help="tidy eval parquets (evaluate)")
    p.add_argument("--forgetting", type=Path, help="results/tables/forgetting.csv (profiled runs)")
    p.add_argument("--out", type=Path, required=True,
                   help="main.csv to write; main_by_seed.csv goes next to it")
    p = stage("plot", cmd_plot, "draw one figure (png + pdf)")
    p.add_argument("--figure", required=True, choices=["val_loss", "lfr_phases", "speedup", "downstream"],
                   help="which figure")
    p.add_argument("--runs", type=Path, nargs="+", required=True, help=RUNS)
    p.add_argument("--main", type=Path, help="results/tables/main.csv (table figures)")
    p.add_argument("--out", type=Path, required=True, help=FIGURE_OUT)
    p = stage("profile", cmd_profile, "per-block losses of one run at each of its weight snapshots")
    p.add_argument("--run", type=Path, required=True, help="a finished run folder (with snapshots/)")
    p.add_argument("--data", type=Path, required=True, help=DATA)
    p.add_argument("--out", type=Path, required=True, help="folder for losses.parquet, summary.json")
    p.add_argument("--threads", type=int, help=THREADS)
    p = stage("forgetting", cmd_forgetting, "forgetting classes and domain tables of profiled runs")
    p.add_argument("--profiles", type=Path, nargs="+", required=True, help="`profile` output folders")
    p.add_argument("--runs", type=Path, nargs="+", required=True, help="their run folders (records)")
    p.add_argument("--data", type=Path, required=True, help=DATA)
    p.add_argument("--out-forgetting", type=Path, required=True, help="forgetting.csv to write")
    p.add_argument("--out-domains", type=Path, required=True, help="domains.csv to write")
    p.add_argument("--out-kept", type=Path, required=True, help="kept_domains.csv to write")
    p = stage("plot-profile", cmd_plot_profile, "draw one profiling figure (png + pdf)")
    p.add_argument("--figure", required=True, choices=["profile_distribution", "forgetting_examples",
                                                       "forgetting", "kept_domains", "domain_loss"],
                   help="which figure")
    p.add_argument("--profiles", type=Path, nargs="+", required=True, help="`profile` output folders")
    p.add_argument("--tables", type=Path, required=True, help="folder of forgetting.csv etc.")
    p.add_argument("--out", type=Path, required=True, help=FIGURE_OUT)
    stage("schema", cmd_schema, "print the config's JSON Schema")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        args.func(args)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"lfr {args.stage}: error: {e}", file=sys.stderr)
        sys.exit(2)
