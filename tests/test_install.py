"""The installs: `make` (and CI, which runs `make test`) and environment.yml hold torch at the
version the suite runs on, through constraints-cpu.txt, and `make` reinstalls when that pin
changes; requirements.txt alone leaves torch open for a GPU machine (tests/test_docs.py checks the
printed cluster install)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time

import torch
import yaml
from conftest import REPO, pip_requirements
from packaging.version import Version

TESTED = Version(torch.__version__)  # e.g. 2.13.0+cpu
OTHERS = ["2.14.1", "2.6.0+cu124"]  # a newer torch, and a CUDA build


def torch_admitted(requirements) -> list[str]:
    """Which of the tested torch and OTHERS every torch requirement (and constraint) admits."""
    specs = [r.specifier for r in requirements if r.name == "torch"]
    assert specs, "no torch requirement"
    return [v for v in (str(TESTED), *OTHERS) if all(s.contains(v) for s in specs)]


def make_installs(cwd, *flags: str) -> list[list[str]]:
    """The arguments of each `pip install` that `make` would run for the venv (none: up to date)."""
    r = subprocess.run(["make", "-n", *flags, ".venv/.installed"], cwd=cwd, capture_output=True,
                       text=True, check=True)
    return [shlex.split(line)[2:] for line in r.stdout.splitlines() if re.match(r"\S*pip install", line)]


def test_make_installs_the_tested_torch_and_reinstalls_when_its_pin_changes(tmp_path):
    quiet = ("-q", "--upgrade", "--no-compile")  # flags that choose no requirement
    installs = [[w for w in args if w not in quiet] for args in make_installs(REPO, "-B")]
    assert installs[1][:2] == ["-c", "constraints-cpu.txt"], installs
    assert torch_admitted(pip_requirements(installs[1])) == [str(TESTED)]
    # a venv newer than every file it was installed from; then a newer constraints file
    for name in ("Makefile", "requirements.txt", "requirements-dev.txt", "constraints-cpu.txt",
                 "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv/.installed").touch()
    assert make_installs(tmp_path) == []
    later = time.time() + 10
    os.utime(tmp_path / "constraints-cpu.txt", (later, later))
    assert len(make_installs(tmp_path)) == 3  # pip, the requirements, the package


def test_environment_yml_installs_the_tested_torch():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    # conda writes these lines to a requirements file next to environment.yml
    assert torch_admitted(pip_requirements([w for line in pip for w in line.split()])) == [str(TESTED)]


def test_requirements_txt_alone_keeps_any_recent_torch():
    assert torch_admitted(pip_requirements(["-r", "requirements.txt", "-e", "."])) == [str(TESTED), *OTHERS]
