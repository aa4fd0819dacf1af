"""The workflow on a real one-node SLURM (tests/slurm_cluster.py: 2 CPUs, 6 GB, 2 placeholder
GPUs, no accounting database), through workflow/profiles/slurm fitted to that node by an override
profile, as the README's "Fitting the profile to a cluster" says; and what a cluster does to a
training job: its time limit, a scancel, a hard kill.

Two workflows share the cluster at once, to keep the wall time down: the smoke DAG (compared with
the local run of tests/conftest.py: smoke_run) and one longer training run that a time limit, a
scancel and a SIGKILL interrupt in turn (compared with the same run trained in one go)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

# The override profile for a node of 2 CPUs and 6 GB without accounting: layered on the shipped
# profile with --profile, it sets keys the shipped one leaves to the cluster.
FIT = {
    "slurm-status-command": "squeue",  # no accounting database, so no sacct
    "slurm-init-seconds-before-status-checks": 1,  # a test's jobs last seconds
    "set-resources": {
        "corpus": {"mem_mb": 1000}, "tokenizer": {"mem_mb": 1000}, "eval_tasks": {"mem_mb": 1000},
        "tokenize": {"mem_mb": 1000, "cpus_per_task": 1},
        "train": {"cpus_per_task": 1, "mem_mb": 1500},  # the smoke config trains on CPUs, one each
        "evaluate": {"mem_mb": 1500, "cpus_per_gpu": 1}, "profile": {"mem_mb": 1500, "cpus_per_gpu": 1},
    },
}
TIMING = ["wall_s", "gpu_hours", "train_tokens_per_s"]
RUN = "nano/random/budget1/seed0"  # the interrupted run's wildcards
# The interrupted run: nano on the smoke data, a checkpoint every 100 steps, as many epochs as ~45 s
# of training on this machine (interrupted_epochs). Its jobs have SLURM's shortest limit, 1 minute,
# of which the run keeps 29 s to save: the first job ends ~31 s after it started (the plugin's
# third status check), after 15-25 s of training.
LIMITED = {"name": "limits", "methods": ["random"], "profile": {"methods": []},
           "resources": {"nano": {"runtime_min": 1, "stop_margin_s": 29, "mem_mb": 1500}}}
LIMITED_TRAIN = {"ckpt_every": 100, "eval_every": 400, "log_every": 50}
UNTIL = ["--until", "train"]  # (target all) the training job and what it needs, wherever they are


def snakemake_cmd(cwd: Path, target: str, config: Path, *args: str) -> list[str]:
    """The shipped SLURM profile with the override profile FIT layered on it (target first)."""
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(cwd), target,
            "--configfile", str(config), "--workflow-profile", str(REPO / "workflow/profiles/slurm"),
            "--profile", str(cwd / "fit"), *args]


def prepare(cwd: Path, config: dict) -> Path:
    (cwd / "fit").mkdir(parents=True)
    (cwd / "fit/profile.yaml").write_text(yaml.safe_dump(FIT))
    (cwd / "config.yaml").write_text(yaml.safe_dump(config))
    return cwd / "config.yaml"


def cluster_env(slurm) -> dict[str, str]:
    return {**slurm.env, "LFR_SLURM_ACCOUNT": "root", "LFR_CPU_PARTITION": "cpu", "LFR_GPU_PARTITION": "gpu",
            "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{slurm.env['PATH']}"}


def smoke_config() -> dict:
    return yaml.safe_load((REPO / "config/smoke.yaml").read_text())


@pytest.fixture(scope="session")
def slurm_smoke(slurm, smoke_run, tmp_path_factory):
    """The smoke DAG's tables through the cluster, started in the background once the local smoke
    run is done (its training speed sizes the interrupted run, interrupted_epochs: measured beside
    the cluster's DAG, it came out so slow that the run fit in one job): (folder, process)."""
    cwd = tmp_path_factory.mktemp("slurm-smoke")
    config = prepare(cwd, smoke_config())
    proc = start(snakemake_cmd(cwd, "results/smoke/tables/main_by_seed.csv", config), cluster_env(slurm),
                 cwd / "snakemake.log")
    yield cwd, proc
    if proc.poll() is None:
        proc.kill()


def one(paths, what: str) -> Path:
    found = list(paths)
    assert len(found) == 1, f"{what}: {found}"
    return found[0]


def train_log(cwd: Path) -> str:
    """The training job's log (each job of the run rewrites it); where the config keeps it."""
    logs = list((cwd / "results").glob(f"**/logs/train/{RUN}.log"))
    return logs[0].read_text() if logs else ""


def checkpoints(cwd: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in (cwd / "results").glob(f"**/resume/{RUN}/ckpt-*.json"))


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, log: Path) -> str:
    proc.wait(timeout=300)
    return log.read_text()


def wait_for(what: str, ready, proc: subprocess.Popen | None = None, timeout: float = 240):
    """`ready()` once it is true; fails after `timeout` s, or if `proc` ended before."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := ready():
            return value
        ended = proc is not None and proc.poll() is not None
        assert not ended or ready(), f"snakemake ended ({proc.returncode}) before {what}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def running_train_job(slurm, cwd: Path, after: int = 0) -> int | None:
    """The id of the training job running in `cwd` once its run has resumed or started, newer
    than job `after`."""
    jobs = [i for i, state, comment in slurm.jobs(cwd) if comment.startswith("rule_train") and
            state == "RUNNING" and i > after]
    return jobs[-1] if jobs else None


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else ""


def resumed_at(log: str) -> int | None:
    found = re.search(r"resumed from \S+ at step (\d+)", log)
    return int(found[1]) if found else None


def stopped_at(line: str) -> tuple[int, str] | None:
    found = re.search(r"stopped at step (\d+)/\d+ \(([^)]*)\)", line)
    return (int(found[1]), found[2]) if found else None


def interrupted_epochs(smoke_run: Path, seconds: float) -> int:
    """Epochs of the smoke config's nano `random` run that take about `seconds` to train here (its
    speed in the local smoke run): more than the first job's 15-25 s, whatever the machine."""
    run = one((smoke_run / "results").glob("**/nano/random/budget1/seed0/run.json"), "the smoke run")
    info = json.loads(run.read_text())
    epoch_tokens = info["tokens"] / smoke_config()["train"]["epochs"]
    return math.ceil(seconds * info["train_tokens_per_s"] / epoch_tokens)


@pytest.fixture(scope="module")
def interrupted(slurm, slurm_smoke, smoke_run, tmp_path_factory):
    """One training run on the cluster, interrupted three ways; what each step saw.

    Invocation 1: job A reaches its time limit, checkpoints and ends; Snakemake's retry, job B,
    resumes; B is scancelled (SIGTERM) after its first checkpoint and saves. Invocation 2: job C
    resumes where B stopped and is killed hard after a checkpoint. Invocation 3: job D resumes from
    the newest checkpoint and finishes. Meanwhile the same run trains in one go in a local process,
    for the comparison. Once a job is cancelled or killed, the test kills its Snakemake (SIGKILL: a
    lost login session), so nothing cleans up after it: a Snakemake that saw its job fail would
    exit only after its next status check, up to minutes later (the plugin's checks grow 10 s
    further apart each time no job succeeded). The invocations run with --nolock, so that none
    needs the --unlock that a killed Snakemake's lock asks for (tests/test_scale.py runs that)."""
    cwd = tmp_path_factory.mktemp("slurm-limits")
    shutil.copytree(smoke_run / "results", cwd / "results", ignore=shutil.ignore_patterns(
        "runs", "resume", "eval", "profiles", "logs", "benchmarks", "smoke", "tables", "figures"))
    shutil.copytree(smoke_run / ".snakemake/metadata", cwd / ".snakemake/metadata")  # nothing upstream reruns
    smoke = smoke_config()
    train = smoke["train"] | LIMITED_TRAIN | {"epochs": interrupted_epochs(smoke_run, 45)}
    config = prepare(cwd, smoke | LIMITED | {"train": train})
    env, seen = cluster_env(slurm), {"epochs": train["epochs"]}

    def invocation(name: str, *args: str) -> subprocess.Popen:
        return start(snakemake_cmd(cwd, "all", config, *UNTIL, "--nolock", *args), env, cwd / f"{name}.log")

    def resumed_or_done(after: int = 0) -> int | None:
        """A training job newer than job `after` that runs its resumed run (its id); fails if the
        run ended in one job: then it is too short for this machine."""
        assert not list((cwd / "results").glob("**/run.json")), "the run fit in one job: raise its epochs"
        return resumed_at(train_log(cwd)) is not None and running_train_job(slurm, cwd, after)

    data = one((cwd / "results").glob("**/data/meta.json"), "data folder").parent
    tokenizer = one((cwd / "results").glob("**/tokenizer/lfr_tokenizer.json"), "tokenizer").parent
    uninterrupted = subprocess.Popen(
        [sys.executable, "-m", "lfr", "train", "--config", str(config), "--size", "nano", "--method",
         "random", "--seed", "0", "--data", str(data), "--tokenizer", str(tokenizer), "--out",
         str(cwd / "uninterrupted"), "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)

    first = invocation("first", "--retries", "1")
    job_b = wait_for("the retry to resume", resumed_or_done, first)
    seen["job_a"] = one((i for i, _, c in slurm.jobs(cwd) if c.startswith("rule_train") and i < job_b),
                        "job A")
    seen["resumed_b"] = resumed_at(train_log(cwd))
    wait_for("a checkpoint of job B", lambda: checkpoints(cwd)[-1] > seen["resumed_b"], first)
    slurm.run("scancel", str(job_b))
    seen["stopped_b"] = wait_for("job B to stop", lambda: stopped_at(last_line(train_log(cwd))), first)
    first.kill()

    second = invocation("second", "--retries", "0")
    job_c = wait_for("job C to resume", lambda: resumed_at(train_log(cwd)) == seen["stopped_b"][0] and
                     running_train_job(slurm, cwd, job_b), second)
    seen["job_b"], seen["resumed_c"] = job_b, resumed_at(train_log(cwd))
    seen["ckpt_before_kill"] = wait_for("a checkpoint of job C", lambda: max(
        [c for c in checkpoints(cwd) if c > seen["stopped_b"][0]], default=None), second)
    second.kill()  # Snakemake dies first, so that nothing reacts to the kill below
    # The rule's step, that is the training process: a job-level `scancel --signal=KILL` is a plain
    # cancel in SLURM 22.05, SIGTERM first, which the run answers with a checkpoint.
    slurm.run("scancel", "--signal=KILL", f"{job_c}.0")
    wait_for("job C to end", lambda: dict((i, s) for i, s, _ in slurm.jobs(cwd))[job_c] != "RUNNING")
    seen["jobs"] = slurm.jobs(cwd)
    seen["ckpt_after_kill"] = checkpoints(cwd)[-1]
    seen["runs_after_kill"] = list((cwd / "results").glob("**/run.json"))

    third = invocation("third", "--retries", "3")
    # job D's own resume: on a busy machine it may reach its limit too, and its retry rewrites the log
    seen["resumed_d"] = wait_for("job D to resume", lambda: (
        at := resumed_at(train_log(cwd))) != seen["resumed_c"] and at, third)
    assert third.wait(timeout=600) == 0, (cwd / "third.log").read_text()[-3000:]
    seen["third"] = (cwd / "third.log").read_text()
    seen["run"] = one((cwd / "results").glob("**/run.json"), "finished run").parent
    seen["slurm_logs"] = {int(p.stem): p.read_text()
                          for p in (cwd / "results/logs/slurm").glob("rule_train/*/*.log")}
    _, err = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, err[-3000:]
    seen["uninterrupted"] = cwd / "uninterrupted"
    return seen


def test_a_job_at_its_time_limit_checkpoints_and_ends_and_the_retry_resumes_it(interrupted):
    """Job A stops on its own before SLURM's limit (so its state is FAILED, exit 3, not TIMEOUT)
    and Snakemake's retry resumes at the step A saved: nothing is trained twice."""
    states = {i: state for i, state, _ in interrupted["jobs"]}
    assert states[interrupted["job_a"]] == "FAILED"
    stop = stopped_at(interrupted["slurm_logs"][interrupted["job_a"]])  # the log's last line, repeated
    assert stop is not None and stop[1].startswith("the job's time limit is near"), interrupted["slurm_logs"]
    assert stop[0] > 0 and interrupted["resumed_b"] == stop[0]


def test_a_scancelled_job_checkpoints_and_the_next_invocation_resumes_where_it_stopped(interrupted):
    step, why = interrupted["stopped_b"]
    assert why == "SIGTERM" and step > interrupted["resumed_b"]
    assert {i: state for i, state, _ in interrupted["jobs"]}[interrupted["job_b"]] == "CANCELLED"
    assert interrupted["resumed_c"] == step  # nothing trained twice


def test_a_job_killed_hard_leaves_no_output_that_snakemake_takes_for_finished(interrupted):
    """SIGKILL gives the run no time to save, and its Snakemake had died: the next invocation
    plans the training job again and resumes it from the newest periodic checkpoint, at most
    train.ckpt_every steps back."""
    assert interrupted["runs_after_kill"] == []
    assert re.search(r"^train\s+1$", interrupted["third"], flags=re.M), interrupted["third"]  # planned
    assert "Reason: Missing output files" in interrupted["third"]
    assert interrupted["ckpt_after_kill"] >= interrupted["ckpt_before_kill"] > interrupted["stopped_b"][0]
    assert interrupted["resumed_d"] == interrupted["ckpt_after_kill"]


def test_the_interrupted_run_ends_exactly_as_the_run_trained_in_one_go(interrupted):
    run, ref = interrupted["run"], interrupted["uninterrupted"]
    cols = ["step", "tokens", "phase", "train_loss", "val_loss", "lr"]
    pd.testing.assert_frame_equal(pd.read_parquet(run / "metrics.parquet")[cols],
                                  pd.read_parquet(ref / "metrics.parquet")[cols])
    weights, expected = load_file(run / "model/model.safetensors"), load_file(ref / "model/model.safetensors")
    assert weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in weights)


def test_the_smoke_dag_on_the_cluster_gives_the_local_runs_table(slurm_smoke, smoke_run):
    cwd, proc = slurm_smoke
    assert proc.wait(timeout=600) == 0, (cwd / "snakemake.log").read_text()[-3000:]
    for table in ("main_by_seed.csv", "main.csv"):  # a fresh folder: the same tables (test_workflow's rerun)
        a, b = (pd.read_csv(d / "results/smoke/tables" / table) for d in (smoke_run, cwd))
        pd.testing.assert_frame_equal(a.drop(columns=TIMING), b.drop(columns=TIMING), obj=table)
    assert len(list((cwd / "results/logs/slurm").glob("rule_*/**/*.log"))) >= 10  # the jobs ran on SLURM


def test_a_time_limit_too_short_to_train_is_refused_before_any_job_is_submitted(slurm, tmp_path):
    config = prepare(tmp_path, smoke_config() | {"resources": {"nano": {"runtime_min": 3}}})
    before = slurm.jobs()
    r = subprocess.run(snakemake_cmd(tmp_path, "results/smoke/tables/main_by_seed.csv", config),
                       env=cluster_env(slurm), capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and slurm.jobs() == before
    refusal = "resources.nano.runtime_min: 3 minute(s) is too short to make progress"
    assert refusal in r.stderr, r.stderr[-2000:]
