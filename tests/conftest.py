"""Shared fixtures: offline env, CPU only, and one tiny prepared dataset per session.

`make test` spreads the suite over the cores (pytest-xdist, `--dist loadfile`: a file's tests
run in one worker, so the SLURM tests share one cluster): the expensive session fixtures are built
once per session for all workers (`shared`), and the longest files are handed out first."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
if os.environ.get("LFR_TEST_GPU") != "1":  # CPU only, unless the GPU tests are asked for
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ["TOKENIZERS_PARALLELISM"] = "false"  # a forked child would otherwise deadlock on its pool
# HF's caches stay out of the repo, in a folder for each pytest process (each xdist worker), which
# its children share (they import this file too) and pytest_unconfigure removes
_PROCESS = os.environ.get("PYTEST_XDIST_WORKER", "main")
if os.environ.get("LFR_TEST_HF_HOME_OF") != _PROCESS:
    os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="lfr-tests-hf-")
    os.environ["LFR_TEST_HF_HOME_OF"] = _PROCESS
HF_HOME = os.environ["HF_HOME"]
if os.environ.get("PYTEST_XDIST_WORKER"):  # one torch thread a worker: the workers fill the cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent


def data_root(config_path=None) -> str:
    """Where a config file's corpus, data and runs go (lfr/folders.py): `results` for the data of
    the embedded default (config/config.yaml), `results/corpora/<key>` for any other."""
    from lfr.folders import data_root as root_of
    from lfr.grid import load_config

    home = load_config(REPO / "config/config.yaml")
    return root_of(load_config(config_path) if config_path else home, home)


def tiny_config(**overrides):
    """A config small enough for unit tests: ~200 KB of the bundled corpus, 2-layer model."""
    from lfr.grid import validate_config

    raw = {
        "corpus": {"source": "bundled", "fraction": 0.03, "val_fraction": 0.03},
        "tokenizer": {"kind": "bpe", "vocab_size": 512, "train_chars": 200_000},
        "data": {"block_size": 32},
        "models": ["nano"],
        "train": {"batch_size": 8, "epochs": 1, "eval_every": 10, "eval_blocks": 32,
                  "log_every": 5, "ckpt_every": 10},
    }
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return validate_config(raw, "tiny_config")


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """(config, dir) with corpus/, tokenizer/ and data/ built from the bundled corpus."""
    from lfr.corpus import prepare_corpus
    from lfr.tokenize import tokenize
    from lfr.tokenizer import prepare_tokenizer

    cfg = tiny_config()
    root = tmp_path_factory.mktemp("prepared")
    prepare_corpus(cfg.corpus, root / "corpus/train.parquet", root / "corpus/val.parquet")
    prepare_tokenizer(cfg.tokenizer, root / "corpus/train.parquet", root / "tokenizer")
    tokenize(root / "corpus/train.parquet", root / "corpus/val.parquet", root / "tokenizer",
             cfg.data, root / "data")
    return cfg, root


def shared(tmp_path_factory, name: str, build) -> Path:
    """The folder `name`, filled by `build(folder)` once per test session however many xdist
    workers ask for it: the first builds it, the others wait for it and read it."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder; each worker's own lies below it
    folder, done = base / name, base / f"{name}.done"
    with FileLock(str(base / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a failed build left
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


# A folder or file name that holds what shells and libraries like to interpret: space, $VAR,
# parentheses, quotes, ~, non-ASCII.
ODD = "wörk dir $HOME (1) 'q' \"dq\" ~x"


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The smoke config's whole DAG (corpus to figures), run once per session on the local
    executor, in a working folder and from a config file (a copy of config/smoke.yaml) named with
    ODD, so that every rule's command must quote its paths: tests/test_workflow.py checks it,
    tests/test_slurm.py compares a cluster's run with it. Read it only; a test that runs Snakemake
    in it takes `smoke_copy`."""
    import subprocess
    import sys

    def build(folder: Path) -> None:
        cwd = folder / ODD
        cwd.mkdir()
        config = Path(shutil.copy(REPO / "config/smoke.yaml", cwd / f"config {ODD}.yaml"))
        env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
        r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(cwd),
                            "all", "--workflow-profile", "none", "--cores", "2", "--configfile", str(config)],
                           capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    return shared(tmp_path_factory, "smoke", build) / ODD


@pytest.fixture
def smoke_copy(smoke_run, tmp_path):
    """A copy of the smoke run of this test's own (times kept: nothing reruns), to run Snakemake in."""
    return Path(shutil.copytree(smoke_run, tmp_path / "smoke", symlinks=True))


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A one-node SLURM on localhost (tests/slurm_cluster.py), started once per session and
    stopped at its end; skipped, with the reason, where it cannot start (LFR_TEST_SLURM=0: never)."""
    import slurm_cluster

    if os.environ.get("LFR_TEST_SLURM") == "0":
        pytest.skip("LFR_TEST_SLURM=0")
    try:
        cluster = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    except slurm_cluster.Unavailable as err:
        pytest.skip(str(err))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def trained(prepared, tmp_path_factory):
    """(config, prepared dir, run dir, summary) of one tiny `random` run."""
    cfg, root = prepared
    out = tmp_path_factory.mktemp("run")
    summary = run_train(cfg, "random", root, out, run_info={"config_hash": "abc", "git_commit": "x"})
    return cfg, root, out, summary


def fake_run(root, size, method, seed, tokens, losses, phases=None):
    """A finished run folder (metrics.parquet, run.json) with the given validation curve."""
    import json

    import pandas as pd

    d = root / f"{size}-{method}-{seed}"
    d.mkdir()
    metrics = pd.DataFrame({"step": range(len(tokens)), "tokens": tokens, "val_loss": losses,
                            "phase": phases or ["train"] * len(tokens), "train_loss": losses})
    metrics.to_parquet(d / "metrics.parquet")
    info = {"size": size, "method": method, "seed": seed, "params": 1000, "tokens": tokens[-1],
            "forward_only_tokens": 0, "steps": len(tokens) - 1, "val_loss": losses[-1], "wall_s": 10.0,
            "train_tokens_per_s": 1.0, "device": "cpu", "world_size": 1, "config_hash": "h",
            "git_commit": "c"}
    (d / "run.json").write_text(json.dumps(info))
    return d


@pytest.fixture
def runs(tmp_path):
    """Hand-built runs of one size: random, lfr (2 seeds each) and lfr-reverse."""
    t = [0, 100, 200, 300, 400]
    return [
        fake_run(tmp_path, "s", "random", 0, t, [6.0, 5.0, 4.6, 4.3, 4.0]),
        fake_run(tmp_path, "s", "random", 1, t, [6.0, 5.0, 4.4, 4.1, 4.0]),  # final mean: 4.0
        fake_run(tmp_path, "s", "lfr", 0, t, [6.0, 4.6, 4.2, 3.8, 3.5],
                 ["0:learn", "0:learn", "1:focus", "2:review", "3:focus"]),  # reaches 4.0 at 250
        fake_run(tmp_path, "s", "lfr", 1, t, [6.0, 4.4, 4.0, 3.8, 3.5],
                 ["0:learn", "0:learn", "1:focus", "2:review", "3:focus"]),
        fake_run(tmp_path, "s", "lfr-reverse", 0, t, [6.0, 5.5, 5.0, 4.8, 4.7]),  # never reaches 4.0
    ]


@pytest.fixture(scope="session")
def profiled(prepared, tmp_path_factory):
    """A tiny LFR run with snapshots, profiled over 48 sampled blocks:
    (prepared dir, dir with run/ and prof/, profile settings, train summary, profile summary)."""
    from lfr.config import ProfileConfig
    from lfr.profile import profile_run

    cfg, root = prepared
    cfg = cfg.model_copy(update={"method_options": {"lfr": {"preset": "paper-v1", "reps": 1}}})
    out = tmp_path_factory.mktemp("profiled")
    spec = ProfileConfig(every_tokens=20_000, sample_blocks=48, batch_size=16)
    summary = run_train(cfg, "lfr", root, out / "run", run_info={"config_hash": "h", "git_commit": "c"},
                        snapshots=spec)
    profile = profile_run(out / "run", root / "data", spec, out / "prof/losses.parquet",
                          out / "prof/summary.json", "cpu")
    return root, out, spec, summary, profile


@pytest.fixture(scope="session")
def forgetting_tables(profiled, tmp_path_factory):
    """(folder, forgetting table) of the `forgetting` stage on the profiled run."""
    from lfr.report.forgetting import analyze

    root, out, spec, _, _ = profiled
    tables = tmp_path_factory.mktemp("tables")
    table = analyze([out / "prof"], [out / "run"], root / "data", tables / "forgetting.csv",
                    tables / "domains.csv", tables / "kept_domains.csv",
                    tables / "forgetting_blocks.parquet", threshold_nats=spec.threshold_nats,
                    threshold_sd=spec.threshold_sd)
    return tables, table


def run_train(cfg, method, root, out, size="nano", seed=0, block_scores=None, data=None, **job):
    """Train one run of `method` on the prepared folder `root` (its data, or `data`) into `out`."""
    from lfr.train import Job, Method, train_run

    job = Job(size, seed, data or root / "data", root / "tokenizer", out, **job)
    return train_run(cfg, job, Method.registered(cfg, method, block_scores))


def fixed_losses(num_blocks, seed=0):
    return np.random.default_rng([seed, 5]).uniform(1, 5, num_blocks).astype(np.float32)


def random_tokens(cfg, root):
    """Optimizer-step tokens of a `random` run of this config (what every peer must match)."""
    from lfr.data import BlockStore
    from lfr.sampling import RunFacts, build_sampler

    store = BlockStore.open(root / "data", "train")
    facts = RunFacts(store.num_blocks, cfg.train.batch_size, store.block_size, 0, cfg.train.epochs)
    steps = build_sampler("random", facts, {}).num_steps()
    return steps * cfg.train.batch_size * store.block_size


@pytest.fixture(scope="session")
def reference(prepared, tmp_path_factory):
    """(config, folder, reference.json) of a ppl-prune reference on a 20% shard."""
    from lfr.score_reference import score_reference

    cfg, root = prepared
    cfg = tiny_config(method_options={"ppl-prune": {"reference_fraction": 0.2, "reference_epochs": 1}})
    out = tmp_path_factory.mktemp("scores")
    info = score_reference(cfg, "ppl-prune", 0, root / "data", root / "tokenizer", out)
    return cfg, out, info


# The files of the longest chains of work, longest first (the SLURM cluster's, the DAG runs'), as
# measured on 2 cores: xdist hands them out in this order (make test: --no-loadscope-reorder).
LONGEST_FILES = ["test_slurm.py", "test_workflow.py", "test_scale.py", "test_ddp.py", "test_benchmarks.py",
                 "test_docs.py", "test_fuzz_config.py", "test_evaluate.py", "test_train.py",
                 "test_scaling.py", "test_candidates.py", "test_speedup.py", "test_loop.py", "test_ladder.py"]


def pytest_collection_modifyitems(config, items):
    """The longest files first, then the rest as collected: xdist hands files out in this order,
    so that no long one ends the run alone. `gpu` tests run only with LFR_TEST_GPU=1 on a machine
    with CUDA."""
    import torch

    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
    if os.environ.get("LFR_TEST_GPU") == "1" and torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA and LFR_TEST_GPU=1")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# Snakemake's leftovers after a command in this process, which its own process would drop on exit
SNAKEMAKE_LEFTOVERS = pytest.mark.filterwarnings("ignore:unclosed file:ResourceWarning",
                                                 "ignore:coroutine:RuntimeWarning")


def snakemake_in_process(argv: list[str], env: dict[str, str] | None = None,
                         what: str = "snakemake") -> subprocess.CompletedProcess:
    """Snakemake's command line (snakemake.cli.main) in this process, from the repository root,
    with `env` over the environment, for a command that must pass: its output (its log in stdout).
    Its imports and the Snakefile's are paid once a worker, not once a command (~2 CPU-s each in a
    process of its own). If it fails, the test fails with the output of the same command run in a
    process of its own (a failure's message may bypass the capture here)."""
    from unittest import mock

    from snakemake.cli import main

    cwd, code, out, err = os.getcwd(), 0, io.StringIO(), io.StringIO()
    try:
        os.chdir(REPO)  # -d moves Snakemake into the working folder; back here afterwards
        with mock.patch.dict(os.environ, env or {}), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            main(argv)
    except SystemExit as stop:
        code = 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1
    finally:
        os.chdir(cwd)
    if code != 0:
        alone = subprocess.run([sys.executable, "-m", "snakemake", *argv], cwd=REPO, capture_output=True,
                               text=True, env={**os.environ, **(env or {})}, timeout=600)
        why = (alone.stdout + alone.stderr)[-3000:] if alone.returncode else "failed in this process only"
        pytest.fail(f"{what}\nexit {code}:\n{why}")
    return subprocess.CompletedProcess(["snakemake", *argv], code, out.getvalue(), err.getvalue())


def pytest_unconfigure(config):
    shutil.rmtree(HF_HOME, ignore_errors=True)


def pip_requirements(args, cwd=REPO):
    """What `pip install ARGS` (run in `cwd`) asks for, as packaging Requirements: the -r and -c
    files (and theirs, relative to each file), `-e .`'s project dependencies, and requirements
    given by name; a file that is not there is an error, as in pip."""
    import tomllib

    from packaging.requirements import Requirement

    found, words = [], list(args)
    while words:
        word = words.pop(0)
        if word in ("-r", "-c", "--requirement", "--constraint"):
            path = Path(cwd) / words.pop(0)
            for line in path.read_text().splitlines():
                line = line.split(" #")[0].strip()
                if line and not line.startswith("#"):
                    found += pip_requirements(line.split() if line.startswith("-") else [line], path.parent)
        elif word in ("-e", "--editable"):
            project = tomllib.loads((Path(cwd) / words.pop(0) / "pyproject.toml").read_text())["project"]
            found += [Requirement(r) for r in project["dependencies"]]
        elif not word.startswith("-"):
            found.append(Requirement(word))
    return found
