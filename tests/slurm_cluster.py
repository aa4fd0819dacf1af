"""A one-node SLURM on localhost for the tests (tests/test_slurm.py): munged, slurmctld and slurmd
of Debian's `slurm-wlm` in a folder of their own, on free ports, with `cpu` and `gpu` partitions
and 2 placeholder GPUs (gres backed by empty device files, so SLURM sets CUDA_VISIBLE_DEVICES but
nothing can use them). No accounting database: job states come from `squeue`, which keeps a
finished job for `MinJobAge` seconds. Every client (sbatch, squeue, scancel, the plugin's srun)
finds the cluster through wrappers that set SLURM_CONF, first on PATH in `Cluster.env` (the
plugin's job step drops SLURM_* variables but keeps PATH); nothing outside the folder is touched,
so several test sessions on one machine each run their own cluster.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ["slurm-wlm", "munge"]
CLIENTS = ["sbatch", "squeue", "scancel", "scontrol", "srun", "sinfo", "sacct", "sacctmgr", "sshare"]
DAEMONS = ["munged", "slurmctld", "slurmd", *CLIENTS]
NODE = "lfrnode"
CPUS = min(2, len(os.sched_getaffinity(0)))  # SLURM binds jobs to CPUs (task/affinity): real ones
MEM_MB = 6000  # what the node offers; the tests fit the profile's requests to it
NODE_SIZE = f"CPUs={CPUS} RealMemory={MEM_MB} Gres=gpu:2 State=UNKNOWN"


class Unavailable(RuntimeError):
    """SLURM cannot run here; the message says why, in one line."""


def missing_programs() -> list[str]:
    return [p for p in DAEMONS if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]


def can_start() -> bool:
    """Whether `start` will try: SLURM is installed, or may be (root, apt-get), and not turned off
    (LFR_TEST_SLURM=0)."""
    if os.environ.get("LFR_TEST_SLURM") == "0":
        return False
    return not missing_programs() or (os.geteuid() == 0 and shutil.which("apt-get") is not None)


def install() -> None:
    """apt-get the packages where they are missing and we may (root): the suite's CI runs as root."""
    if not missing_programs():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Unavailable(f"SLURM is not installed ({', '.join(missing_programs())} missing) and "
                          f"installing {' '.join(PACKAGES)} needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            tail = (r.stdout + r.stderr).strip().splitlines()[-1:] or ["no output"]
            raise Unavailable(f"`{' '.join(cmd)}` failed: {tail[0]}")
    if missing := missing_programs():
        raise Unavailable(f"{' '.join(PACKAGES)} installed, but {', '.join(missing)} still missing")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(root: Path, ctld_port: int, node_port: int) -> str:
    host = socket.gethostname().split(".")[0]
    return f"""\
ClusterName=lfrtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/affinity
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# squeue answers for a finished job this long (the plugin's status command without sacct)
MinJobAge=600
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=5
InactiveLimit=0
SchedulerParameters=sched_interval=2
NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 Port={node_port} {NODE_SIZE}
PartitionName=cpu Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={NODE} MaxTime=INFINITE State=UP
"""


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]
    daemons: list[subprocess.Popen] = field(default_factory=list)

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def jobs(self, workdir: Path | None = None) -> list[tuple[int, str, str]]:
        """(job id, state, comment) of every job SLURM still knows, oldest first; only those run
        in `workdir` if given. The SLURM plugin comments a job `rule_<rule>_wildcards_...`."""
        out = self.run("squeue", "--states=all", "--noheader", "--format=%i|%T|%Z|%k", check=False).stdout
        rows = [line.split("|", 3) for line in out.splitlines() if line.count("|") == 3]
        return sorted((int(i), state, comment) for i, state, cwd, comment in rows
                      if workdir is None or Path(cwd) == Path(workdir))

    def stop(self) -> None:
        """Cancel every job, wait for them to end, and stop the daemons (slurmd, slurmctld,
        munged: the reverse order)."""
        self.run("scancel", "--full", "--user", getpass.getuser(), check=False)
        deadline = time.time() + 30
        while any(s in ("RUNNING", "COMPLETING") for _, s, _ in self.jobs()) and time.time() < deadline:
            time.sleep(0.5)
        for daemon in reversed(self.daemons):
            daemon.terminate()
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()

    def logs(self) -> str:
        logs = sorted((self.root / "log").glob("*.log"))
        return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in logs)


def daemon(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start a daemon in the foreground, in its own session (so that a test's signals do not
    reach it)."""
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def start(root: Path) -> Cluster:
    """Install (if needed and allowed), configure and start the cluster under `root`; wait until
    its node is idle. Raises Unavailable with the reason."""
    install()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    for sub in ("munge", "state", "spool", "log", "dev"):
        (root / sub).mkdir(exist_ok=True)
    (root / "munge").chmod(0o700)
    key = root / "munge/munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    for i in range(2):  # the GPUs: SLURM wants a character device per GPU, and never opens it
        (root / f"dev/nvidia{i}").unlink(missing_ok=True)
        (root / f"dev/nvidia{i}").symlink_to("/dev/null")
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, free_port(), free_port()))
    (root / "gres.conf").write_text(f"NodeName={NODE} Name=gpu File={root}/dev/nvidia[0-1]\n")
    (root / "bin").mkdir(exist_ok=True)
    for name in CLIENTS:
        wrapper = root / "bin" / name
        wrapper.write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {shutil.which(name)} "$@"\n')
        wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items()  # a session run inside a SLURM job: not its job's settings
           if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env['PATH']}"
    cluster = Cluster(root, env)
    munge = root / "munge"
    cluster.daemons.append(daemon(["munged", "--foreground", "--force", f"--socket={munge}/munge.socket",
                                f"--key-file={key}", f"--pid-file={munge}/munged.pid",
                                f"--seed-file={munge}/munged.seed", f"--log-file={root}/log/munged.log"],
                               root / "log/munged.out"))
    wait_for(lambda: (munge / "munge.socket").exists(), 10, "munged", cluster)
    for name in ("slurmctld", "slurmd"):
        cmd = ["slurmctld", "-D", "-i", "-f", str(conf)] if name == "slurmctld" else \
            ["slurmd", "-D", "-N", NODE, "-f", str(conf)]
        cluster.daemons.append(daemon(cmd, root / f"log/{name}.out"))
    wait_for(lambda: "idle" in cluster.run("sinfo", "-h", "-N", "-o", "%t", check=False).stdout, 60,
             "the node to come up idle", cluster)
    return cluster


def wait_for(ready, timeout: float, what: str, cluster: Cluster) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            return
        time.sleep(0.2)
    cluster.stop()
    last = cluster.logs().strip().splitlines()[-1:] or ["no log"]
    raise Unavailable(f"SLURM did not start: no {what} after {timeout:.0f} s ({last[0]})")
