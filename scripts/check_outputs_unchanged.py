"""Show that a change of the code leaves the pipeline's results as they were.

Runs, for the code at a git revision (`--before`, default HEAD) and for the working tree
(`--after`), each in its own scratch folder:
- the smoke DAG (`config/smoke.yaml`) with every registered method, up to its main table;
- the demo's `nano` runs (`config/config.yaml`: every method, seeds 0 and 1), up to their run.json;
then compares what determines a result: `main_by_seed.csv`, every run's `metrics.parquet` and
`run.json` (its `sampler_state_sha256`, steps, tokens, losses and `config_hash`) and its
sampler records, leaving out wall time, throughput and commit. Exit status 0 when identical.

    python scripts/check_outputs_unchanged.py --before main          # before vs the working tree
    python scripts/check_outputs_unchanged.py --save after.json      # only fingerprint one side
    python scripts/check_outputs_unchanged.py --compare before.json after.json

Needs the project's environment (make .venv/.installed) and ~10 CPU-minutes per side.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
VOLATILE = {"wall_s", "gpu_hours", "train_tokens_per_s", "git_commit", "elapsed_s", "tokens_per_s",
            "mfu", "device", "wall_s_std", "gpu_hours_std", "train_tokens_per_s_std"}
METHODS = ["random", "lfr", "lfr-random-drop", "lfr-reverse", "infobatch", "ppl-prune",
           "loss-prop", "leitner"]
NANO = [("nano", m, s) for m in ("random", "lfr", "lfr-random-drop") for s in (0, 1)]  # the demo's methods


def nano_runs(code: Path) -> list[str]:
    """The demo's nano run.json targets in the layout of the code tree (budget folders or not)."""
    text = (code / "workflow/rules/common.smk").read_text()
    budgets = "budget{budget}" in text or "budget{{budget}}" in text  # a plain or an f-string pattern
    return [f"results/runs/{size}/{m}/{'budget1/' if budgets else ''}seed{s}/run.json"
            for size, m, s in NANO]


def snakemake(code: Path, workdir: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(code / "Snakefile"), "--directory",
           str(workdir), "--cores", "2", *args]  # --config last: it takes several values
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "snakemake.log", "a") as log:
        if subprocess.run(cmd, env=env, cwd=code, stdout=log, stderr=log).returncode:
            sys.exit(f"snakemake failed in {workdir}; see {workdir / 'snakemake.log'}")


def frame_digest(df: pd.DataFrame) -> dict[str, str]:
    """Per column, a sha256 of its values (floats exactly, as their bytes)."""
    out = {}
    for col in sorted(c for c in df.columns if c not in VOLATILE):
        values = df[col].to_numpy()
        data = values.tobytes() if values.dtype.kind in "fiub" else repr(values.tolist()).encode()
        out[col] = hashlib.sha256(data).hexdigest()[:16]
    return out


def fingerprint_folder(workdir: Path, tables: str) -> dict[str, object]:
    fp: dict[str, object] = {}
    if (workdir / tables).is_file():
        fp[tables] = frame_digest(pd.read_csv(workdir / tables))
    for run_json in sorted(workdir.glob("results/runs/**/run.json")):
        run = run_json.parent
        info = json.loads(run_json.read_text())
        name = f"{info['size']}/{info['method']}/budget{info.get('budget', 1)}/seed{info['seed']}"
        fp[f"{name}/run.json"] = {k: v for k, v in sorted(info.items()) if k not in VOLATILE}
        fp[f"{name}/metrics.parquet"] = frame_digest(pd.read_parquet(run / "metrics.parquet"))
        for table in sorted((run / "records").glob("*.parquet")):
            fp[f"{name}/records/{table.name}"] = frame_digest(pd.read_parquet(table))
    return fp


def fingerprint(code: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="lfr-outputs-") as tmp:
        smoke, demo = Path(tmp, "smoke"), Path(tmp, "demo")
        methods = "methods=" + json.dumps(METHODS, separators=(",", ":"))
        snakemake(code, smoke, "results/smoke/tables/main.csv", "--configfile",
                  str(code / "config/smoke.yaml"), "--config", methods)
        snakemake(code, demo, *nano_runs(code))
        return {"smoke": fingerprint_folder(smoke, "results/smoke/tables/main_by_seed.csv"),
                "demo": fingerprint_folder(demo, "results/tables/main_by_seed.csv")}


def checkout(rev: str, into: Path) -> Path:
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(into), rev], cwd=REPO, check=True)
    return into


def compare(before: dict, after: dict) -> list[str]:
    diffs = []
    for side in ("smoke", "demo"):
        b, a = before[side], after[side]
        for key in sorted(set(b) | set(a)):
            if b.get(key) != a.get(key):
                diffs.append(f"{side}: {key}: {b.get(key)} != {a.get(key)}")
    return diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="HEAD", help="git revision of the code before")
    parser.add_argument("--save", type=Path, help="only fingerprint the working tree, into this file")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"),
                        help="compare two saved fingerprints")
    args = parser.parse_args()
    if args.save:
        args.save.write_text(json.dumps(fingerprint(REPO), indent=1))
        return
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
    else:
        with tempfile.TemporaryDirectory(prefix="lfr-before-") as tmp:
            code = checkout(args.before, Path(tmp, "code"))
            try:
                before = fingerprint(code)
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(code)], cwd=REPO)
        after = fingerprint(REPO)
    diffs = compare(before, after)
    checked = sum(len(before[side]) for side in ("smoke", "demo"))
    for line in diffs:
        print(line)
    print(f"{checked} files compared (column by column, wall time, throughput and commit left out): "
          + ("identical" if not diffs else f"{len(diffs)} differ"))
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
