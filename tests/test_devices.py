"""One box, every GPU: the device pool (lfr/devices.py) that lfr.launch and every GPU stage claim
from, on a CPU with a fake box of 4 GPUs (LFR_DEVICES=4, a lock folder of the test's own).

Through Snakemake and the local profile, jobs of 1 and 2 GPUs record the CUDA_VISIBLE_DEVICES they
got and when they ran: jobs that overlap in time never share a device, and every device is used.
A claim dies with its processes (SIGKILL included), and torchrun's workers keep their job's
devices even if torchrun itself is killed."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from itertools import combinations
from pathlib import Path

import pytest
from conftest import REPO

from lfr import devices

# Records its devices and its span, holding them as every lfr stage does (lfr/cli.py), until the
# file `go` exists (or for `seconds`); under torchrun, rank 0 writes the record.
PROBE = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from lfr import devices
    devices.hold(os.environ)
    out, seconds = Path(sys.argv[1]), float(sys.argv[2])
    start = time.time()
    (out.parent / f"{out.name}.{os.getpid()}.pid").write_text("")
    while time.time() < start + seconds and not (out.parent / "go").exists():
        time.sleep(0.05)
    if os.environ.get("RANK", "0") == "0":
        out.write_text(json.dumps({"devices": os.environ["CUDA_VISIBLE_DEVICES"].split(","),
                                   "start": start, "end": time.time()}))
""")

SNAKEFILE = """
GPUS = {gpus}
rule all:
    input: expand("out/{{i}}.json", i=range(len(GPUS)))
rule job:
    output: "out/{{i}}.json"
    resources: gpu=lambda wildcards: GPUS[int(wildcards.i)]
    shell: "python -m lfr.launch 1 {{resources.gpu}} 1 {probe} {{output}} 1.5"
"""


@pytest.fixture
def box(tmp_path):
    """The environment of a box with 4 GPUs whose pool lives in tmp_path/locks."""
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", devices.HELD)}
    return env | {devices.DEVICES: "4", devices.LOCK_DIR: str(tmp_path / "locks"), "OMP_NUM_THREADS": "1",
                  "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}


def overlap(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


@pytest.mark.slow
def test_jobs_side_by_side_never_share_a_device_and_use_every_one(box, tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    gpus = [2, 1, 1, 1, 1, 2, 1, 1]  # 10 device-jobs on 4 devices: some wait for theirs
    (tmp_path / "Snakefile").write_text(SNAKEFILE.format(gpus=gpus, probe=tmp_path / "probe.py"))
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(tmp_path / "Snakefile"), "-d",
                        str(tmp_path), "--workflow-profile", str(REPO / "workflow/profiles/local"),
                        "--cores", "8"], env=box, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    jobs = [json.loads((tmp_path / f"out/{i}.json").read_text()) for i in range(len(gpus))]
    assert [len(set(job["devices"])) for job in jobs] == gpus
    for a, b in combinations(jobs, 2):
        assert not (overlap(a, b) and set(a["devices"]) & set(b["devices"])), (a, b)
    assert set().union(*(job["devices"] for job in jobs)) == {"0", "1", "2", "3"}
    assert sum(overlap(a, b) for a, b in combinations(jobs, 2)) >= 3  # they did run side by side


def launch(box: dict, tmp_path: Path, gpus: int, name: str) -> subprocess.Popen:
    """A job of `gpus` devices that holds them until tmp_path/go exists."""
    (tmp_path / "probe.py").write_text(PROBE)
    cmd = [sys.executable, "-m", "lfr.launch", "1", str(gpus), "1", str(tmp_path / "probe.py"),
           str(tmp_path / name), "300"]
    return subprocess.Popen(cmd, env=box, start_new_session=True)


def free(box: dict) -> int:
    """How many of the box's devices no job holds now."""
    count = 0
    for device in devices.box_devices(box):
        fd = os.open(devices.lock_file(devices.lock_dir(box), device), os.O_RDONLY | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            count += 1
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
    return count


def wait_until(ready, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_a_killed_job_frees_its_devices(box, tmp_path):
    job = launch(box, tmp_path, 1, "one")
    wait_until(lambda: list(tmp_path.glob("one.*.pid")))
    assert free(box) == 3
    job.send_signal(signal.SIGKILL)  # no handler runs: the kernel drops the flock
    job.wait()
    assert free(box) == 4


@pytest.mark.slow
def test_torchruns_workers_keep_their_devices_when_torchrun_is_killed(box, tmp_path):
    job = launch(box, tmp_path, 2, "two")  # the launcher execs torchrun, which starts 2 workers
    wait_until(lambda: len(list(tmp_path.glob("two.*.pid"))) == 2)
    assert free(box) == 2
    os.kill(job.pid, signal.SIGKILL)  # torchrun only: its workers run in sessions of their own
    job.wait()
    time.sleep(0.5)
    assert free(box) == 2  # the orphaned workers still hold both
    (tmp_path / "go").touch()
    wait_until(lambda: free(box) == 4)


def test_a_job_asking_more_gpus_than_the_box_has_stops_at_once(box):
    r = subprocess.run([sys.executable, "-m", "lfr.launch", "1", "8", "1", "-c", "pass"], env=box,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "asks for 8 GPUs, this box has 4 (0, 1, 2, 3)" in r.stderr


def test_no_pool_on_a_box_without_gpus_or_in_a_claimed_job(box):
    assert devices.claim(1, box | {"CUDA_VISIBLE_DEVICES": ""} | {devices.DEVICES: "0"}) == {}
    assert devices.claim(2, box | {devices.HELD: "/x.lock"}) == {}  # a launcher claimed the job's
    assert devices.claim(1, box | {"TORCHELASTIC_RUN_ID": "1"}) == {}  # a torchrun worker
    assert devices.box_devices({"CUDA_VISIBLE_DEVICES": "2,5"}) == ["2", "5"]


def test_a_gpu_stage_run_by_hand_claims_one_device(box, tmp_path):
    """What `python -m lfr evaluate` (or profile, reference-bpb, score-reference, train) does first
    outside a launcher; a CPU setting claims none."""
    code = ("import os, sys; from lfr import cli; from lfr.config import ExperimentConfig; "
            "cli.claim_device(sys.argv[1], ExperimentConfig.model_validate_json(sys.argv[2])); "
            "print(os.environ.get('CUDA_VISIBLE_DEVICES'))")
    for config, visible in (("{}", "0"), ('{"eval": {"device": "cpu"}}', "None")):
        r = subprocess.run([sys.executable, "-c", code, "evaluate", config], env=box, capture_output=True,
                           text=True, timeout=60)
        assert r.stdout.strip() == visible, r.stderr
