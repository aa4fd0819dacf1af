"""Starts a training command on its job's nodes and GPUs (workflow/rules/train.smk):

    python -m lfr.launch NODES GPUS_PER_NODE THREADS ARGS...    runs `python ARGS...`

One node: plainly for one GPU or the CPU, under `torchrun --standalone` for several GPUs (DDP).
Several nodes, in a SLURM job with one task per node: srun starts this launcher once per node,
and each node's torchrun meets the others at a c10d rendezvous on the job's first node, on a port
and under an id derived from the job id. Where it trains, it first claims its GPUs from the box's
pool (lfr/devices.py: CUDA_VISIBLE_DEVICES, so that jobs side by side never share a device).
Imports no torch: it only builds the command and execs.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping

from lfr import devices

ON_NODE = "LFR_LAUNCH_ON_NODE"  # set in srun's tasks: this launcher runs on one node of the job
USAGE = "usage: python -m lfr.launch NODES GPUS_PER_NODE THREADS ARGS... (runs python ARGS...)"


def rendezvous_port(job_id: int) -> int:
    """Below Linux's ephemeral ports; two jobs share a port only 10,000 job ids apart."""
    return 10000 + job_id % 10000


def first_host(nodelist: str) -> str:
    names = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                           check=True).stdout.split()
    return names[0]


def command(nodes: int, gpus: int, threads: int, args: list[str], env: Mapping[str, str]) -> list[str]:
    """The command that runs `python ARGS` on this job's nodes and GPUs, from where it is called."""
    python, torchrun = [sys.executable], [sys.executable, "-m", "torch.distributed.run"]
    if nodes == 1 and gpus <= 1:
        return [*python, *args]
    if nodes == 1:
        return [*torchrun, "--standalone", f"--nproc_per_node={gpus}", *args]
    job = env.get("SLURM_JOB_ID")
    if job is None:
        raise SystemExit(f"lfr.launch: {nodes} nodes need a SLURM job (resources.<size>.nodes); run "
                         "Snakemake with --workflow-profile workflow/profiles/slurm, or set nodes: 1")
    if ON_NODE not in env:
        # The job's shell, on its first node. The SLURM plugin leaves the rule's shell only the job
        # id (no task or CPU counts to inherit), so the step asks for its tasks, CPUs and GPUs.
        return ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1",
                f"--cpus-per-task={gpus * threads}", f"--gres=gpu:{gpus}", "--kill-on-bad-exit=1",
                *python, "-m", "lfr.launch", str(nodes), str(gpus), str(threads), *args]
    endpoint = f"{first_host(env['SLURM_JOB_NODELIST'])}:{rendezvous_port(int(job))}"
    return [*torchrun, f"--nnodes={nodes}", f"--nproc_per_node={gpus}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={endpoint}", f"--rdzv-id={job}", *args]


def main(argv: list[str]) -> None:
    if len(argv) < 4 or not all(a.isdigit() for a in argv[:3]):
        raise SystemExit(USAGE)
    nodes, gpus, threads = (int(a) for a in argv[:3])
    env = dict(os.environ)
    if nodes == 1 or ON_NODE in env:  # it trains here (else it starts srun): its devices first
        env |= devices.claim(gpus, env)
    cmd = command(nodes, gpus, threads, argv[3:], env)
    if ON_NODE in env:  # the training log starts with each node's torchrun
        sys.stderr.write(f"lfr.launch: node {os.environ.get('SLURM_NODEID', '?')} of {nodes}: "
                         f"{shlex.join(cmd[:len(cmd) - len(argv) + 3])}\n")
        sys.stderr.flush()
    # torchrun has no handler for SIGUSR1 (a time-limit warning: sbatch --signal of the user's), so the
    # signal would kill it under its workers. Ignored here (an ignore survives exec), it is left
    # to the training processes, whose own handler (lfr/train.py: StopRequest) replaces it.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        os.execvpe(cmd[0], cmd, {**env, ON_NODE: "1"} if nodes > 1 else env)
    except FileNotFoundError:
        raise SystemExit(f"lfr.launch: {cmd[0]} is not on PATH (a job on several nodes runs srun, "
                         "inside a SLURM job)") from None


if __name__ == "__main__":
    main(sys.argv[1:])
