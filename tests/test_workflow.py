"""The Snakemake DAG: lint, dry runs, config errors before any job, and one real end-to-end
run of the smoke config (corpus -> tokenizer -> tokens -> training -> table and figure)."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import REPO

from lfr.config import validate_config


def snakemake(target, *args, cwd, check=False):
    """Run snakemake on `target` in cwd (the target goes first: --configfile takes several values)."""
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(cwd),
                        target, "--workflow-profile", "none", *args],
                       capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def test_lint_is_clean():
    r = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("config", ["config.yaml", "peers.yaml", "smoke.yaml", "paper.yaml"])
def test_every_job_of_a_shipped_config_accepts_its_config_sections(tmp_path, config):
    """Each rule passes its job only some config sections; the CLI must accept them on their own
    (a check across sections, e.g. `profile.methods` against `methods`, needs both sections)."""
    r = snakemake("all", "-n", "-p", "--configfile", str(REPO / "config" / config), cwd=tmp_path,
                  check=True)
    out = r.stdout + r.stderr
    assert "train" in out and "main_table" in out
    sections = re.findall(r"--config-json '([^']*)'", out)
    assert len(sections) >= 10
    for section in sections:
        validate_config(json.loads(section), f"{config}: --config-json {section}")


def test_paper_config_plans_every_run_and_reference(tmp_path):
    r = snakemake("results/tables/main.csv", "-n", "--configfile", str(REPO / "config/paper.yaml"),
                  cwd=tmp_path, check=True)
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", r.stdout, flags=re.M))
    # 4 sizes x {random, lfr} + the 2 controls at gpt2; 6 released reference checkpoints
    assert (counts["train"], counts["evaluate"], counts["evaluate_reference"]) == ("10", "10", "6")
    assert "fraction\": 0.15" not in r.stdout  # nothing inherited from the demo config


@pytest.mark.parametrize(("override", "key"), [
    ({"train": {"batch_size": "sixteen"}}, "train.batch_size"),
    ({"models": ["nano", "gpt7"]}, "models[1]='gpt7' is unknown"),
    ({"corpus": {"source": "files", "paths": ["/nonexistent/corpus/*.txt"]}}, "corpus.paths"),
])
def test_invalid_config_stops_before_any_job(tmp_path, override, key):
    cfg = yaml.safe_load((REPO / "config/smoke.yaml").read_text()) | override
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    r = snakemake("results/tables/main.csv", "--cores", "1", "--configfile", str(tmp_path / "bad.yaml"),
                  cwd=tmp_path)
    assert r.returncode != 0
    assert key in r.stdout + r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "results").exists()


MAIN_COLUMNS = ["size", "params", "method", "n_seeds", "tokens", "forward_only_tokens", "val_loss",
                "val_ppl", "tokens_to_baseline", "reached", "speedup", "val_loss_at_baseline_tokens",
                "baseline_val_loss_at_tokens", "wall_s", "gpu_hours", "config_hash", "git_commit",
                "acc:lfr_mc", "acc_stderr:lfr_mc", "acc:lfr_cloze", "bits_per_byte:lfr_ppl"]
TIMING = ["wall_s", "gpu_hours", "train_tokens_per_s"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The smoke config's whole DAG (corpus to figures), run once for the tests below."""
    cwd = tmp_path_factory.mktemp("smoke")
    snakemake("all", "--cores", "2", "--configfile", str(REPO / "config/smoke.yaml"), cwd=cwd, check=True)
    return cwd


@pytest.mark.slow
def test_end_to_end_smoke_run(smoke_run):
    main = pd.read_csv(smoke_run / "results/tables/main.csv")
    assert list(main[["size", "method"]].itertuples(index=False, name=None)) == [
        ("nano", "random"), ("nano", "lfr")]
    assert set(MAIN_COLUMNS) <= set(main.columns), set(MAIN_COLUMNS) - set(main.columns)
    for row in main.itertuples():
        curve = pd.read_parquet(smoke_run / f"results/runs/nano/{row.method}/seed0/metrics.parquet")
        assert row.val_loss < curve.val_loss.dropna().iloc[0]  # validation loss fell
    assert main[MAIN_COLUMNS[:8]].notna().all().all()
    for figure in ("val_loss", "lfr_phases", "speedup", "downstream"):
        assert (smoke_run / f"results/figures/{figure}.png").stat().st_size > 10_000
    assert (smoke_run / "results/runs/nano/lfr/seed0/records/phase01_focus.parquet").is_file()
    forgetting = pd.read_csv(smoke_run / "results/tables/forgetting.csv")
    assert forgetting.run.tolist() == ["nano/random/seed0", "nano/lfr/seed0"]
    assert (forgetting.profile_tokens > 0).all() and main.profile_tokens.notna().all()
    for figure in ("profile_distribution", "forgetting_examples", "forgetting", "kept_domains",
                   "domain_loss"):
        assert (smoke_run / f"results/figures/{figure}.png").stat().st_size > 10_000
    r = snakemake("all", "-n", "--configfile", str(REPO / "config/smoke.yaml"), cwd=smoke_run, check=True)
    assert "Nothing to be done" in r.stdout + r.stderr


@pytest.mark.slow
def test_rerun_gives_the_identical_table(smoke_run, tmp_path):
    """Same config, same seed, fresh folder: main.csv is identical but for wall-time columns."""
    snakemake("results/tables/main.csv", "--cores", "2", "--configfile", str(REPO / "config/smoke.yaml"),
              cwd=tmp_path, check=True)
    a, b = (pd.read_csv(d / "results/tables/main.csv").drop(columns=TIMING) for d in (smoke_run, tmp_path))
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow
def test_report_holds_the_figures(smoke_run):
    snakemake("all", "--report", "results/report.html", "--configfile", str(REPO / "config/smoke.yaml"),
              cwd=smoke_run, check=True)
    html = (smoke_run / "results/report.html").read_text(errors="replace")
    for name in ("val_loss.png", "lfr_phases.png", "speedup.png", "downstream.png", "main.csv",
                 "forgetting.csv", "forgetting.png"):
        assert name in html


@pytest.mark.slow
def test_user_txt_folder_runs_by_changing_only_corpus(tmp_path):
    folder = tmp_path / "my_corpus"
    folder.mkdir()
    rng = random.Random(0)
    words = ["".join(rng.choices("etaoinshrdlucmfwypvbgk", k=rng.randint(2, 9))) for _ in range(3000)]
    for i in range(60):
        (folder / f"doc{i:03d}.txt").write_text(" ".join(rng.choices(words, k=400)) + ".\n")
    cfg = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    cfg["corpus"] = {"source": "files", "paths": [str(folder)], "val_fraction": 0.1}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(cfg))
    snakemake("results/tables/main.csv", "--cores", "2", "--configfile", str(tmp_path / "mine.yaml"),
              cwd=tmp_path, check=True)
    docs = pd.read_parquet(tmp_path / "results/corpus/train.parquet")
    assert docs.doc_id.str.contains("my_corpus").all()
    assert pd.read_csv(tmp_path / "results/tables/main.csv").val_loss.notna().all()
