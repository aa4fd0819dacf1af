"""Cluster readiness: the SLURM profile through the real plugin (with a fake sbatch), preemption
(SIGTERM) and time-limit stops that resume, a SIGKILL through Snakemake that resumes, and the MFU
arithmetic."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, SNAKEMAKE_LEFTOVERS, data_root, snakemake_in_process, tiny_config
from safetensors.torch import load_file

SMOKE = data_root(REPO / "config/smoke.yaml")  # where the smoke config's runs go
FAKE = {
    "sbatch": 'echo "$@" >> "$SBATCH_LOG"; echo 4242',
    "sacct": 'echo "4242|FAILED|1:0"',
    "squeue": 'echo "4242|FAILED"',
    "sacctmgr": 'echo "myacct"',
    "sshare": 'echo "myacct"',
    "sinfo": 'echo "gpu"',
    "scontrol": 'echo ""',
}


@pytest.mark.slow
def test_slurm_profile_submits_training_with_partition_nodes_gpus_time_and_memory(tmp_path):
    """One size on one node with 2 GPUs, one on 2 nodes with 4 GPUs each (as the config says)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKE.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    cfg = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    cfg["models"] = ["nano", "micro"]
    cfg["resources"] = {"nano": {"gpus": 2, "runtime_min": 90, "mem_mb": 12000},
                        "micro": {"nodes": 2, "gpus": 4, "runtime_min": 60, "mem_mb": 9000}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    root = data_root(tmp_path / "cfg.yaml")
    upstream = [f"{root}/corpus/train.parquet", f"{root}/corpus/val.parquet",
                f"{root}/tokenizer/tokenizer.json"] + [f"{root}/data/{name}" for name in (
                    "train.bin", "val.bin", "train_blocks.parquet", "val_blocks.parquet", "meta.json")]
    for age, path in enumerate(reversed(upstream)):  # upstream outputs exist and are in date order
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text("{}")
        os.utime(work / path, (time.time() - 10 * age - 10,) * 2)
    os.utime(work / root / "tokenizer", (time.time() - 60,) * 2)  # a directory() output
    env = {**os.environ, "PATH": f"{bin_dir}:{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
           "SBATCH_LOG": str(tmp_path / "sbatch.log"), "LFR_SLURM_ACCOUNT": "myacct",
           "LFR_CPU_PARTITION": "cpu", "LFR_GPU_PARTITION": "gpu"}
    log, sbatch_log = tmp_path / "snakemake.log", tmp_path / "sbatch.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work),
             f"{root}/runs/nano/random/budget1/seed0/run.json",
             f"{root}/runs/micro/random/budget1/seed0/run.json",
             "--configfile", str(tmp_path / "cfg.yaml"),
             "--workflow-profile", str(REPO / "workflow/profiles/slurm"), "--retries", "0",
             "--slurm-init-seconds-before-status-checks", "1", "--rerun-triggers", "mtime",
             # fitted key by key over the rule's requests (README: Fitting the profile)
             "--set-resources", "train:qos=long", "train:constraint=a100", "train:slurm_extra='--exclusive'"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def submitted() -> list[str]:
        return sbatch_log.read_text().splitlines() if sbatch_log.exists() else []

    # The two submissions are all this test reads: Snakemake then waits ~10 s for its next status
    # check before it ends on the fake jobs' failure.
    deadline = time.time() + 300
    while len(submitted()) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    lines = submitted()
    assert len(lines) == 2, log.read_text()[-3000:]
    one, two = (next(line.split() for line in lines if f"size={size}" in line) for size in ("nano", "micro"))
    for flags in (one, two):  # no --signal: the run reads its time limit from SLURM
        assert not any(f.startswith("--signal") for f in flags), flags
        assert "-A myacct" in " ".join(flags) and "-p gpu" in " ".join(flags)
        assert "--cpus-per-gpu=8" in flags and not any(f.startswith("--ntasks-per-gpu") for f in flags)
        assert {"--qos=long", "--exclusive"} <= set(flags) and "-C a100" in " ".join(flags)
    # one node: the job's 2 GPUs on it, one task (the plugin's srun step around the rule)
    assert {"--nodes=1", "--gpus=2"} <= set(one) and "-t 90" in " ".join(one)
    assert "--mem 12000" in " ".join(one)
    assert not any(f.startswith(("--ntasks", "--gres")) for f in one), one
    # 2 nodes: one task on each (lfr.launch's torchrun) and 4 GPUs on each (gres: per node)
    assert {"--nodes=2", "--ntasks=2", "--gres=gpu:4"} <= set(two), two
    assert not any(f.startswith("--gpus") for f in two) and "-t 60" in " ".join(two)
    assert "--mem 9000" in " ".join(two)  # per node


def test_the_example_override_profile_sets_only_keys_the_shipped_profile_leaves_out():
    """Snakemake merges profiles key by key with the workflow profile last: an override's key that
    the shipped profile also sets would be silently ignored. Each of its set-resources names a rule."""
    shipped, example = (yaml.safe_load((REPO / f"workflow/profiles/{name}/profile.yaml").read_text())
                        for name in ("slurm", "example-cluster"))
    assert example and not set(example) & set(shipped)
    smk = "".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    rules = set(re.findall(r"^rule (\w+):", smk, flags=re.M))
    assert set(example["set-resources"]) <= rules


def start_training(tmp_path, root, epochs):
    cfg = tiny_config(train={"epochs": epochs, "ckpt_every": 25})
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    cmd = [sys.executable, "-m", "lfr", "train", "--config-json", cfg.model_dump_json(), "--size", "nano",
           "--method", "random", "--seed", "0", "--data", str(root / "data"), "--tokenizer",
           str(root / "tokenizer"), "--out", str(tmp_path / "out"), "--resume-dir", str(tmp_path / "resume"),
           "--threads", "1"]
    return cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigterm_checkpoints_exits_nonzero_and_the_rerun_resumes(prepared, tmp_path):
    _, root = prepared
    cmd, proc = start_training(tmp_path, root, epochs=2)
    deadline = time.time() + 120
    while not list((tmp_path / "resume").glob("ckpt-*.json")) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-2000:]
    assert "SIGTERM" in err and not (tmp_path / "out/run.json").exists()
    assert "to resume later" in err.splitlines()[-1] and "rerun the same command" in err.splitlines()[-1]
    saved = max(int(p.stem.split("-")[1]) for p in (tmp_path / "resume").glob("ckpt-*.json"))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"at step {saved}" in done.stderr  # resumed from the step the signal saved
    assert (tmp_path / "out/run.json").is_file() and not (tmp_path / "resume").exists()


# 4 sizes x {random, lfr} + the 2 controls at gpt2 + random's sweep at gpt2 (4 more budgets); the
# forgetting study at gpt2 (4 methods, budget 1). paper-v2: the same grid at 3 Llama sizes, 3 Pythia
# references evaluated by their own rule.
PAPER_GRIDS = {"paper": {"train": 22, "evaluate": 14, "profile": 4},
               "paper-v2": {"train": 20, "evaluate": 12, "evaluate_reference": 3, "reference_bpb": 3,
                            "profile": 4}}


@pytest.mark.slow
@SNAKEMAKE_LEFTOVERS
@pytest.mark.parametrize("name", PAPER_GRIDS)
def test_slurm_profile_dry_run_plans_the_paper_grid_without_slurm(name, tmp_path):
    profile, paper = REPO / "workflow/profiles/slurm", REPO / f"config/{name}.yaml"
    argv = ["-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n", f"results/{name}/tables/main.csv",
            "--workflow-profile", str(profile), "--configfile", str(paper)]
    r = snakemake_in_process(argv)
    counts = {job: int(n) for job, n in re.findall(r"^(\w+)\s+(\d+)$", r.stdout, flags=re.M)}
    assert {job: counts.get(job) for job in PAPER_GRIDS[name]} == PAPER_GRIDS[name]


def snakemake_cmd(cwd, *args):
    """One training job of the smoke config, shortened (a quarter epoch, ~110 steps, checkpoints
    every 10), on one core (two torch threads on a loaded 2-core machine are slower)."""
    cfg = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    cfg["train"].update(epochs=0.25, ckpt_every=10)
    (cwd / "short.yaml").write_text(yaml.safe_dump(cfg))
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(cwd),
            f"{SMOKE}/runs/nano/random/budget1/seed0/run.json", "--configfile", str(cwd / "short.yaml"),
            "--workflow-profile", "none", "--cores", "1", *args]


SNAKE_ENV = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.slow
def test_sigkill_of_the_snakemake_job_tree_then_a_rerun_resumes_to_the_same_result(tmp_path):
    """A crash (SIGKILL: no handler, no checkpoint on the way out) of snakemake and its training
    job, mid-run. Snakemake's lock stays behind, so the rerun needs `--unlock` first (no
    --rerun-incomplete: train writes its outputs only at the end). It resumes from the last
    periodic checkpoint, which survives because results/resume/ is not an output, and ends
    bit-exactly where an uninterrupted run ends (CPU)."""
    run = tmp_path / SMOKE / "runs/nano/random/budget1/seed0"
    resume = tmp_path / SMOKE / "resume/nano/random/budget1/seed0"
    proc = subprocess.Popen(snakemake_cmd(tmp_path), env=SNAKE_ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(resume.glob("ckpt-*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert list(resume.glob("ckpt-*.json")), "no checkpoint appeared"
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake, the job's shell and the python child
    proc.wait(timeout=30)
    assert not (run / "run.json").exists()
    saved = [int(p.stem.split("-")[1]) for p in resume.glob("ckpt-*.json")]

    r = subprocess.run(snakemake_cmd(tmp_path), env=SNAKE_ENV, capture_output=True, text=True)
    assert r.returncode != 0 and "--unlock" in r.stdout + r.stderr  # snakemake says what to do
    subprocess.run(snakemake_cmd(tmp_path, "--unlock"), env=SNAKE_ENV, check=True, capture_output=True)
    r = subprocess.run(snakemake_cmd(tmp_path), env=SNAKE_ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = (tmp_path / SMOKE / "logs/train/nano/random/budget1/seed0.log").read_text()
    step = int(re.search(r"resumed from \S+ at step (\d+)", log).group(1))
    assert step in saved and step > 0, (step, saved)
    assert not resume.exists()  # removed once the run completed
    resumed = pd.read_parquet(run / "metrics.parquet")
    weights = load_file(run / "model/model.safetensors")

    shutil.rmtree(tmp_path / SMOKE / "runs")  # the same job again, uninterrupted, on the same data
    r = subprocess.run(snakemake_cmd(tmp_path), env=SNAKE_ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resumed" not in (tmp_path / SMOKE / "logs/train/nano/random/budget1/seed0.log").read_text()
    cols = ["step", "tokens", "phase", "train_loss", "val_loss", "lr"]
    pd.testing.assert_frame_equal(resumed[cols], pd.read_parquet(run / "metrics.parquet")[cols])  # bit-exact
    uninterrupted = load_file(run / "model/model.safetensors")
    assert all(torch.equal(weights[k], uninterrupted[k]) for k in weights)
