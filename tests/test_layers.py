"""The package's layering: the import-linter contracts of pyproject.toml hold, no lfr module is on
an import cycle, a planted violation breaks what it should, and the light modules import no torch
at run time either."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # requirements-dev.txt: import-linter
CONTRACTS = {c["id"]: c["name"] for c in
             tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]}


def run(root: Path, *argv: str) -> subprocess.CompletedProcess:
    """`argv` with the lfr package of `root` first on the path, in `root`."""
    return subprocess.run(argv, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True,
                          text=True, timeout=120)


def lint_imports(root: Path) -> tuple[int, dict[str, str], str]:
    """(exit code, {contract id: KEPT or BROKEN}, output) of `lint-imports` on the lfr package of
    `root`, with the contracts of root/pyproject.toml (no cache: nothing is written)."""
    r = run(root, str(LINT_IMPORTS), "--no-cache", "--no-logo")
    status = dict(re.findall(r"^(.+) (KEPT|BROKEN)$", r.stdout, flags=re.M))
    ids = {name: key for key, name in CONTRACTS.items()}
    assert set(status) == set(ids), r.stdout + r.stderr  # every contract was checked
    return r.returncode, {ids[name]: s for name, s in status.items()}, r.stdout


CYCLE_IMPORTS = """
import json, grimp
graph = grimp.build_graph("lfr", cache_dir=None)
print(json.dumps([[a, b] for a in sorted(graph.modules)
                  for b in sorted(graph.find_modules_directly_imported_by(a))
                  if graph.chain_exists(importer=b, imported=a)]))
"""


def cycle_imports(root: Path) -> set[tuple[str, str]]:
    """The direct imports between lfr modules that lie on an import cycle (module by module, a
    package being its __init__, so a module that imports its own package counts too)."""
    r = run(root, sys.executable, "-c", CYCLE_IMPORTS)
    assert r.returncode == 0, r.stderr
    return {tuple(edge) for edge in json.loads(r.stdout)}


def test_no_lfr_module_is_on_an_import_cycle():
    assert cycle_imports(REPO) == set()


def test_the_layering_contracts_hold():
    rc, status, output = lint_imports(REPO)
    assert rc == 0 and set(status.values()) == {"KEPT"}, output


def planted(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the package (and pyproject.toml) with `line` appended to `module`."""
    shutil.copytree(REPO / "lfr", tmp_path / "lfr", ignore=shutil.ignore_patterns("__pycache__", "assets"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with open(tmp_path / module, "a") as f:
        f.write(f"\n{line}  # planted by tests/test_layers.py\n")
    return tmp_path


PLANTS = [
    ("lfr/sampling/base.py", "import torch", {"sampling", "config-helpers"}),  # schema documents options
    ("lfr/report/summarize.py", "from lfr.train import train", {"report"}),
    ("lfr/devices.py", "from lfr import runtime", {"launch"}),  # runtime imports torch where it runs
    ("lfr/sampling/base.py", "from lfr import grid", {"acyclic"}),  # grid imports sampling
    # cli imports config (a cycle) and torch (through lfr.runtime), and so then does every user of
    # config (the samplers and the config's helpers; the report side does not use it)
    ("lfr/config.py", "from lfr import cli", {"config", "config-helpers", "cli", "acyclic", "sampling"}),
]


@pytest.mark.parametrize(("module", "line", "contracts"), PLANTS, ids=[f"{m}: {ln}" for m, ln, _ in PLANTS])
def test_a_planted_import_breaks_its_contract(tmp_path, module, line, contracts):
    rc, status, output = lint_imports(planted(tmp_path, module, line))
    assert rc == 1, output
    assert {key for key, s in status.items() if s == "BROKEN"} == contracts, output
    if module == "lfr/sampling/base.py" and line == "import torch":
        assert "lfr.sampling.base -> torch" in output, output  # the import is named


def test_a_planted_cycle_through_a_package_is_found(tmp_path):
    """A module that imports its own package's __init__ is on a cycle that the `acyclic` contract
    (siblings only) does not see; the module-by-module check does."""
    root = planted(tmp_path, "lfr/sampling/random.py", "from lfr.sampling import SAMPLERS")
    assert cycle_imports(root) == {("lfr.sampling", "lfr.sampling.random"),
                                                 ("lfr.sampling.random", "lfr.sampling")}


def test_light_modules_do_not_import_torch():
    """At run time too: a top-level import of a library that imports torch (transformers, lm_eval)
    is not in the contracts' graph, which stops at the libraries that lfr imports."""
    code = ("import sys, lfr.config, lfr.grid, lfr.report.summarize, lfr.report.figures, lfr.sampling, "
            "lfr.corpus, lfr.eval_tasks, lfr.report.plot, lfr.launch, lfr.config_files, lfr.schema, lfr.cli; "
            "assert 'torch' not in sys.modules")
    r = run(REPO, sys.executable, "-c", code)
    assert r.returncode == 0, r.stderr


def test_the_schema_loads_no_other_lfr_module():
    code = ("import json, sys, lfr.config; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'lfr')))")
    r = run(REPO, sys.executable, "-c", code)
    assert r.returncode == 0 and json.loads(r.stdout) == ["lfr", "lfr.config"], r.stdout + r.stderr
