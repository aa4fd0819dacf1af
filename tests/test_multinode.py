"""The train rule's launcher (lfr/launch.py): python or torchrun on one node, and
training across nodes: two "nodes" on localhost, one CPU process each (gloo), with SLURM's srun and
scontrol faked; two torchrun launchers meet at a c10d rendezvous on the job's first host, and train
the same run as one process with the same global batch, ending with the same sampler state on both
ranks."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from conftest import run_train, tiny_config

from lfr.launch import command, rendezvous_port

LAUNCH = [sys.executable, "-m", "lfr.launch"]
# Short: 23 optimizer steps of 8 blocks, a validation every 5, no periodic checkpoint.
SHORT = {"epochs": 0.05, "eval_every": 5, "ckpt_every": 1000}
ONE = {"train": {**SHORT, "batch_size": 8}}
TWO = {"train": {**SHORT, "batch_size": 2, "grad_accum": 2}}  # per rank: 2 ranks x 2 x 2 = 8

WORKER = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from conftest import run_train, tiny_config

    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    summary = run_train(tiny_config(**json.loads(sys.argv[3])), "random", root, out)
    (out / f"rank{{os.environ['RANK']}}.json").write_text(json.dumps(summary))
""")

# What SLURM gives a job step: srun runs its command once per task, as node i, with the job's node
# list set (the plugin leaves the rule's shell only the job id); scontrol expands that list (here
# comma-separated).
FAKE_SLURM = {
    "srun": """#!/bin/sh
echo "$@" > "$SRUN_LOG"
n=1
while [ $# -gt 0 ]; do
  case $1 in --ntasks=*) n=${1#--ntasks=}; shift ;; --*) shift ;; *) break ;; esac
done
pids="" i=0
while [ $i -lt $n ]; do
  SLURM_NODEID=$i SLURM_PROCID=$i SLURM_JOB_NODELIST=$FAKE_NODELIST "$@" & pids="$pids $!"
  i=$((i + 1))
done
rc=0
for pid in $pids; do wait $pid || rc=$?; done
exit $rc
""",
    "scontrol": """#!/bin/sh
[ "$1 $2" = "show hostnames" ] && echo "$3" | tr , '\\n'
""",
}


def free_port(low: int, high: int) -> int:
    """A port in [low, high) that nothing listens on, from an offset of this process's own (other
    test runs on the machine start elsewhere)."""
    for i in range(high - low):
        port = low + (os.getpid() + i) % (high - low)
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in [{low}, {high})")


def launch_two_nodes(tmp_path: Path, job_id: int, *args: str) -> subprocess.CompletedProcess:
    """The launcher as a 2-node job with 1 GPU per node and 1 thread runs it, on `python ARGS`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKE_SLURM.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
           "SLURM_JOB_ID": str(job_id), "FAKE_NODELIST": "127.0.0.1,127.0.0.1",
           "SRUN_LOG": str(tmp_path / "srun.log"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*LAUNCH, "2", "1", "1", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:  # torchrun starts its workers in sessions of their own
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_two_nodes_through_the_launcher_train_the_same_run_as_one_process(prepared, tmp_path):
    """The job id picks the rendezvous port (10000 + id % 10000): the test picks an id whose port
    is free."""
    _, root = prepared
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER.format(tests=str(Path(__file__).parent)))
    port = free_port(10000, 20000)
    job_id = 4_210_000 + port - 10000
    r = launch_two_nodes(tmp_path, job_id, str(worker), str(root), str(tmp_path / "two"), json.dumps(TWO))
    assert r.returncode == 0, r.stderr[:6000]  # the workers' tracebacks come before torchrun's
    # one task per node, with its CPUs (GPUs x threads) and GPUs
    step = (tmp_path / "srun.log").read_text().split()
    assert step[:5] == ["--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=1",
                        "--gres=gpu:1"], step
    torchrun = (f"-m torch.distributed.run --nnodes=2 --nproc_per_node=1 --rdzv-backend=c10d "
                f"--rdzv-endpoint=127.0.0.1:{port} --rdzv-id={job_id}")  # the first host, the job's port
    for node in (0, 1):
        line = f"^lfr.launch: node {node} of 2: \\S+ {re.escape(torchrun)}$"
        assert re.search(line, r.stderr, flags=re.M), r.stderr

    one = run_train(tiny_config(**ONE), "random", root, tmp_path / "one")
    ranks = [json.loads((tmp_path / f"two/rank{i}.json").read_text()) for i in (0, 1)]
    assert ranks[0]["world_size"] == 2 and ranks[0]["batch_blocks"] == one["batch_blocks"] == 8
    assert ranks[0]["steps"] == one["steps"] == 23
    assert ranks[0]["sampler_state_sha256"] == ranks[1]["sampler_state_sha256"] == one["sampler_state_sha256"]
    cols = ["step", "tokens", "phase", "train_loss", "val_loss"]
    a, b = (pd.read_parquet(tmp_path / d / "metrics.parquet")[cols] for d in ("one", "two"))
    assert a["val_loss"].notna().sum() >= 5
    pd.testing.assert_frame_equal(a, b, rtol=1e-4)  # float sums differ in order across ranks


def test_the_job_shell_asks_srun_for_a_task_per_node_with_its_gpus_and_their_cpus():
    args = ["-m", "lfr", "train", "--threads", "6"]
    cmd = command(4, 8, 6, args, {"SLURM_JOB_ID": "4212345"})
    assert cmd[:7] == ["srun", "--nodes=4", "--ntasks=4", "--ntasks-per-node=1", "--cpus-per-task=48",
                       "--gres=gpu:8", "--kill-on-bad-exit=1"]
    assert cmd[7:] == [sys.executable, "-m", "lfr.launch", "4", "8", "6", *args]  # again, on each node
    assert rendezvous_port(4212345) == 12345 and rendezvous_port(12) == 10012


def test_the_launcher_refuses_several_nodes_outside_slurm(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    r = subprocess.run([*LAUNCH, "2", "8", "8", "-c", "pass"], env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and "2 nodes need a SLURM job" in r.stderr
    assert "--workflow-profile workflow/profiles/slurm" in r.stderr


# Each process writes its rank and world size, and waits for `go` (so the test can signal torchrun).
PROBE = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    out = Path(sys.argv[1])
    env = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    (out / f"{os.getpid()}.json").write_text(json.dumps(env))
    while not (out / "go").exists():
        time.sleep(0.05)
""")


@pytest.mark.parametrize(("gpus", "world"), [(0, None), (1, None), (2, "2")])
def test_one_node_runs_python_for_one_gpu_and_torchrun_for_several(tmp_path, gpus, world):
    """A SIGUSR1 (SLURM's warning before the time limit) leaves python and torchrun running (the
    default action, without the launcher's ignore, kills them)."""
    (tmp_path / "probe.py").write_text(PROBE)
    proc = subprocess.Popen([*LAUNCH, "1", str(gpus), "1", str(tmp_path / "probe.py"), str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while len(list(tmp_path.glob("*.json"))) < max(gpus, 1) and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGUSR1)  # proc is python or torchrun itself: the launcher execs
        (tmp_path / "go").touch()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # torchrun starts its workers in sessions of their own
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    ranks = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert len(ranks) == max(gpus, 1) and {r["WORLD_SIZE"] for r in ranks} == {world}
    if world:
        assert sorted(r["RANK"] for r in ranks) == ["0", "1"]
