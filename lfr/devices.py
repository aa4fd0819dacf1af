"""The GPUs of one box, shared out to the jobs that run on it side by side.

Snakemake's local executor sets no CUDA_VISIBLE_DEVICES, so two GPU jobs would both use device 0.
Here each device is a lock file; a job claims its devices all at once (under a pool-wide lock,
so two jobs never hold half of each other's), gets CUDA_VISIBLE_DEVICES naming them, and keeps
them while any of its processes lives: the claim is an exclusive flock turned shared, kept open
across exec (the launcher's python or torchrun), and every lfr process of the job takes the same
shared locks again (LFR_DEVICE_LOCKS), since torchrun's workers run in sessions of their own and
can outlive it. The kernel drops the flocks of a process that dies, however it dies, so a crash
frees its devices.

No torch: the launcher claims before anything starts CUDA.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path

DEVICES = "LFR_DEVICES"  # a count: the box's devices are 0..N-1 (tests fake a box with it)
LOCK_DIR = "LFR_DEVICE_LOCK_DIR"  # default /tmp/lfr-devices, shared by every user of the box
HELD = "LFR_DEVICE_LOCKS"  # set for a job's processes: the lock files of its devices
POLL_S = 0.5
_open: list[int] = []  # this process's lock descriptors: closing one would drop its lock


def box_devices(env: Mapping[str, str]) -> list[str]:
    """The devices jobs here may use: LFR_DEVICES of them, else CUDA_VISIBLE_DEVICES (set and
    empty: none), else one per NVIDIA GPU that the driver lists."""
    if DEVICES in env:
        return [str(i) for i in range(int(env[DEVICES]))]
    if "CUDA_VISIBLE_DEVICES" in env:
        return [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    gpus = Path("/proc/driver/nvidia/gpus")
    return [str(i) for i in range(len(list(gpus.iterdir())))] if gpus.is_dir() else []


def lock_dir(env: Mapping[str, str]) -> Path:
    """The pool's folder. Inside a SLURM job, one of its own: SLURM numbers each job's GPUs from
    0, so jobs that share a node would otherwise lock each other's \"0\"."""
    folder = Path(env.get(LOCK_DIR) or "/tmp/lfr-devices")
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):  # another user's process made it first
            folder.chmod(0o1777)  # every user's jobs share the box's devices (sticky, like /tmp)
    if job := env.get("SLURM_JOB_ID"):
        folder = folder / f"slurm-job-{job}"
        folder.mkdir(exist_ok=True)
    return folder


def _lock(path: Path, how: int) -> int | None:
    """A descriptor of `path` holding the flock `how` (non-blocking), or None if taken."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)  # flock needs no write access
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _keep(fd: int) -> None:
    """Keep the lock for this process's life, and across exec."""
    os.set_inheritable(fd, True)
    _open.append(fd)


def lock_file(folder: Path, device: str) -> Path:
    return folder / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', device)}.lock"


def try_claim(count: int, devices: list[str], folder: Path) -> list[str] | None:
    """`count` free devices of `devices`, now locked by this process, or None (nothing held)."""
    pool = os.open(folder / "pool.lock", os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(pool, fcntl.LOCK_EX)  # one claim at a time: all of a job's devices or none
        got: list[tuple[str, int]] = []
        for device in devices:
            if (fd := _lock(lock_file(folder, device), fcntl.LOCK_EX)) is not None:
                got.append((device, fd))
            if len(got) == count:
                break
        if len(got) < count:
            for _, fd in got:
                os.close(fd)
            return None
        for _, fd in got:  # shared from now on: the job's other processes lock them too
            fcntl.flock(fd, fcntl.LOCK_SH)
            _keep(fd)
        return [device for device, _ in got]
    finally:
        os.close(pool)


def claim(count: int, env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a job that needs `count` of this box's devices: CUDA_VISIBLE_DEVICES
    naming free ones, claimed until this process and its children end (waits while fewer are
    free)."""
    devices = box_devices(env)
    if count < 1 or HELD in env or "TORCHELASTIC_RUN_ID" in env or not devices:
        return {}  # a CPU run, or a process of a job whose devices are claimed (torchrun's workers)
    if count > len(devices):
        raise SystemExit(f"lfr: the job asks for {count} GPUs, this box has {len(devices)} "
                         f"({', '.join(devices)}); lower resources.<size>.gpus")
    folder, waited = lock_dir(env), False
    while (got := try_claim(count, devices, folder)) is None:
        if not waited:
            sys.stderr.write(f"lfr: waiting for {count} of the box's {len(devices)} GPUs to be free\n")
            sys.stderr.flush()
            waited = True
        time.sleep(POLL_S)
    held = os.pathsep.join(str(lock_file(folder, d)) for d in got)
    return {"CUDA_VISIBLE_DEVICES": ",".join(got), HELD: held}


def hold(env: Mapping[str, str]) -> None:
    """Take the shared locks of this process's devices (LFR_DEVICE_LOCKS), so that they stay
    claimed while it runs, even if the process that claimed them is gone."""
    for path in filter(None, env.get(HELD, "").split(os.pathsep)):
        fd = os.open(path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH)  # never waits: a job's claim holds no exclusive lock
        _keep(fd)
