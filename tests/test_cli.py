"""The command line and the package's import hygiene."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

STAGES = ["corpus", "tokenizer", "tokenize", "train", "score-reference", "eval-tasks", "evaluate",
          "prefetch", "summarize", "plot", "schema"]


def test_help_lists_every_stage():
    out = subprocess.run([sys.executable, "-m", "lfr", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for stage in STAGES:
        assert stage in out
    for stage in STAGES:
        subprocess.run([sys.executable, "-m", "lfr", stage, "--help"], capture_output=True, check=True)


def test_bad_config_exits_with_one_clear_line(tmp_path):
    (tmp_path / "c.yaml").write_text("train: {lr: fast}\n")
    r = subprocess.run([sys.executable, "-m", "lfr", "corpus", "--config", str(tmp_path / "c.yaml"),
                        "--train-out", "t", "--val-out", "v"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    assert "train.lr" in r.stderr and "Traceback" not in r.stderr


def test_light_modules_do_not_import_torch():
    code = ("import sys, lfr.config, lfr.report, lfr.figures, lfr.sampling, lfr.corpus, lfr.eval_tasks, "
            "lfr.reference; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_ruff_is_clean():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "lfr", "tests", "benchmarks", "scripts"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
