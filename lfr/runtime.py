"""What every compute stage sets up the same way: the device, torch's threads and allocator, the
commit of the code that ran, and the exception that means "stopped early, rerun to resume"."""

from __future__ import annotations

import ctypes
import re
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


class Interrupted(RuntimeError):
    """A stage stopped before its end after saving a resume checkpoint; rerunning resumes it."""


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
    float32 logits tensor is 64 MiB), which the kernel zero-fills again on every training step;
    raising both thresholds removes those page faults (docs/benchmarks.md). Process-wide, CPU memory
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


def resolve_device(requested: str, key: str = "train.device") -> Any:
    """The torch.device for a `device` setting: cpu, cuda, or auto (CUDA when visible). An explicit
    cuda without a visible CUDA device is an error naming the config key, never a CPU fallback."""
    import torch

    cuda = torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        raise RuntimeError(f"{key}=cuda but no CUDA device is visible; use cpu or auto")
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"{key}={requested!r}: choose auto, cpu or cuda")
    return torch.device("cuda" if requested == "cuda" or (requested == "auto" and cuda) else "cpu")


def slurm_seconds(text: str) -> float | None:
    """A SLURM duration in seconds: minutes, minutes:seconds, hours:minutes:seconds, or
    days-hours[:minutes[:seconds]]; None for UNLIMITED, NOT_SET, INVALID and anything else."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+(?::\d+){0,2})", text.strip())
    if m is None:
        return None
    fields = [int(f) for f in m[2].split(":")]
    if m[1] is not None:  # days-hours[:minutes[:seconds]]
        hours, minutes, seconds = fields + [0] * (3 - len(fields))
    else:  # minutes[:seconds], or hours:minutes:seconds
        hours, minutes, seconds = fields if len(fields) == 3 else [0, *fields, 0][:3]
    return float(((int(m[1] or 0) * 24 + hours) * 60 + minutes) * 60 + seconds)


def slurm_time(env: dict[str, str] | None = None) -> tuple[float, float] | None:
    """(seconds left, time limit in seconds) of the SLURM job this process runs in, from squeue;
    None outside a job, without a limit, or if squeue does not answer in 10 s. Whatever set the
    limit (sbatch -t, the partition's default, a later `scontrol update`), this is the one that
    SLURM will enforce."""
    import os

    job = (os.environ if env is None else env).get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        out = subprocess.run(["squeue", "--noheader", "--jobs", job, "--format", "%L|%l"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    left, _, limit = out.strip().partition("|")
    seconds = slurm_seconds(left), slurm_seconds(limit)
    return None if None in seconds else seconds  # type: ignore[return-value]
