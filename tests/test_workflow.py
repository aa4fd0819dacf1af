"""The Snakemake DAG: lint, dry runs, config errors before any job, and one real end-to-end
run of the smoke config (corpus -> tokenizer -> tokens -> training -> table and figure)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import slurm_cluster
import yaml
from conftest import ODD, REPO, SNAKEMAKE_LEFTOVERS, data_root, snakemake_in_process

from lfr.config import ConfigError
from lfr.grid import load_config, validate_config

pytestmark = SNAKEMAKE_LEFTOVERS  # its dry runs run in this process (snakemake)


def snakemake(target, *args, cwd, check=False):
    """Run snakemake on `target` (or a list of targets) in cwd (targets go first: --configfile takes
    several values). A dry run that must pass runs in this process (conftest.snakemake_in_process)."""
    targets = [target] if isinstance(target, str) else target
    argv = ["-s", str(REPO / "Snakefile"), "-d", str(cwd), *targets, "--workflow-profile", "none", *args]
    if check and "-n" in args:
        return snakemake_in_process(argv)
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run([sys.executable, "-m", "snakemake", *argv], capture_output=True, text=True, env=env,
                       timeout=600)
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_lint_is_clean():
    r = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("config", ["config.yaml", "peers.yaml", "smoke.yaml", "paper.yaml"])
def test_every_job_of_a_shipped_config_accepts_its_config_sections(tmp_path, config):
    """Each rule passes its job only some config sections; the CLI must accept them on their own
    (a check across sections, e.g. `profile.methods` against `methods`, needs both sections)."""
    r = snakemake("all", "-n", "-p", "--configfile", str(REPO / "config" / config), cwd=tmp_path,
                  check=True)
    out = r.stdout + r.stderr
    assert "train" in out and "summarize" in out
    sections = re.findall(r"--config-json '([^']*)'", out)
    assert len(sections) >= 10
    for section in sections:
        validate_config(json.loads(section), f"{config}: --config-json {section}")


def test_the_own_corpus_config_is_the_demos_but_for_its_corpus_and_name():
    """README: Your own corpus starts from a complete config, so a first run includes LFR, its
    control and random's frontier; it builds in a data root of its own."""
    demo, own = (load_config(REPO / f"config/{name}.yaml").model_dump() for name in ("config", "own-corpus"))
    assert {k for k in demo if demo[k] != own[k]} == {"name", "corpus"}
    assert own["corpus"]["source"] == "files" and own["name"] == "own-corpus"
    assert data_root(REPO / "config/own-corpus.yaml").startswith("results/corpora/")
    assert data_root(REPO / "config/peers.yaml") == "results"  # the demo's data: its runs shared


@pytest.mark.slow
def test_paper_config_plans_every_run_and_reference(tmp_path):
    r = snakemake("results/paper/tables/main.csv", "-n", "-p", "--configfile",
                  str(REPO / "config/paper.yaml"), cwd=tmp_path, check=True)
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", r.stdout, flags=re.M))
    # 4 sizes x {random, lfr} + the 2 controls at gpt2 + random's 4 more budgets at gpt2 (not
    # evaluated downstream), the swept gpt2's with a second seed; 6 released reference checkpoints
    assert (counts["train"], counts["evaluate"], counts["evaluate_reference"]) == ("22", "14", "6")
    assert sorted(set(re.findall(r"--size gpt2 --method lfr --seed (\d)", r.stdout))) == ["0", "1"]
    budgets = re.findall(r"--method random --seed 0 --budget (\S+)", r.stdout)
    assert sorted(budgets, key=float) == ["0.25", "0.5", "1", "1", "1", "1", "2", "4"]
    assert counts["reference_bpb"] == "6"  # their bits per byte on our validation text
    # nothing inherited from the demo config: every job's corpus section is the paper's own
    paper = load_config(REPO / "config/paper.yaml").corpus.model_dump(mode="json")
    jobs = [json.loads(s) for s in re.findall(r"--config-json '([^']*)'", r.stdout)]
    corpora = [job["corpus"] for job in jobs if "corpus" in job]
    assert len(corpora) >= 10 and all(c == paper for c in corpora), corpora[:1]


@pytest.mark.slow
@pytest.mark.parametrize(("override", "key"), [
    ({"train": {"batch_size": "sixteen"}}, "train.batch_size"),
    ({"models": ["nano", "gpt7"]}, "models[1]: 'gpt7' is unknown"),
    ({"corpus": {"source": "files", "paths": ["/nonexistent/corpus/*.txt"]}}, "corpus.paths"),
    ({"eval": {"tasks": ["lfr_ppl", "hellaswg"]}}, "eval.tasks[1]: 'hellaswg' is not an lm-eval task"),
    ({"eval": {"tasks": ["hellaswag"], "max_gen_toks": 32}}, "eval.max_gen_toks: 32 leaves no context"),
])
def test_invalid_config_stops_before_any_job(tmp_path, override, key):
    cfg = yaml.safe_load((REPO / "config/smoke.yaml").read_text()) | override
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    r = snakemake("results/smoke/tables/main.csv", "--cores", "1", "--configfile", str(tmp_path / "bad.yaml"),
                  cwd=tmp_path)
    assert r.returncode != 0
    assert key in r.stdout + r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "results").exists()


MAIN_COLUMNS = ["size", "params", "method", "budget", "n_seeds", "tokens", "forward_only_tokens", "val_loss",
                "val_ppl", "iso_speedup", "iso_speedup_bound", "verdict", "tokens_to_baseline", "reached",
                "crossing_speedup", "val_loss_at_baseline_tokens",
                "baseline_val_loss_at_tokens", "wall_s", "gpu_hours", "config_hash", "git_commit",
                "acc:lfr_mc", "acc_stderr:lfr_mc", "acc:lfr_cloze", "bits_per_byte:lfr_ppl"]
TIMING = ["wall_s", "gpu_hours", "train_tokens_per_s"]
SMOKE = data_root(REPO / "config/smoke.yaml")  # results/corpora/<key>: the smoke data's root


@pytest.mark.slow
def test_end_to_end_smoke_run(smoke_run):
    main = pd.read_csv(smoke_run / "results/smoke/tables/main.csv")
    assert list(main[["size", "method"]].itertuples(index=False, name=None)) == [
        ("nano", "random"), ("nano", "lfr")]
    assert set(MAIN_COLUMNS) <= set(main.columns), set(MAIN_COLUMNS) - set(main.columns)
    for row in main.itertuples():
        curve = pd.read_parquet(smoke_run / f"{SMOKE}/runs/nano/{row.method}/budget1/seed0/metrics.parquet")
        assert row.val_loss < curve.val_loss.dropna().iloc[0]  # validation loss fell
    assert main[MAIN_COLUMNS[:8]].notna().all().all()
    # equal budget is equal tokens: smoke's LFR (reps 1, a 2.8-epoch schedule) is scaled to
    # random's one epoch, so its row has a verdict
    assert main.tokens.nunique() == 1 and (main.equal_budget_note.isna()).all()
    assert main.set_index("method").verdict.loc["lfr"] in ("better", "worse", "not resolved")
    for figure in ("val_loss", "lfr_phases", "speedup", "downstream"):
        assert (smoke_run / f"results/smoke/figures/{figure}.png").stat().st_size > 10_000
    assert (smoke_run / f"{SMOKE}/runs/nano/lfr/budget1/seed0/records/phase01_focus.parquet").is_file()
    forgetting = pd.read_csv(smoke_run / "results/smoke/tables/forgetting.csv")
    assert forgetting.run.tolist() == ["nano/random/seed0", "nano/lfr/seed0"]
    assert (forgetting.profile_tokens > 0).all() and main.profile_tokens.notna().all()
    for figure in ("profile_distribution", "forgetting_examples", "forgetting", "kept_domains",
                   "domain_loss"):
        assert (smoke_run / f"results/smoke/figures/{figure}.png").stat().st_size > 10_000
    r = snakemake("all", "-n", "--configfile", str(REPO / "config/smoke.yaml"), cwd=smoke_run, check=True)
    assert "Nothing to be done" in r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.skipif(slurm_cluster.can_start(), reason="the smoke DAG reruns on the cluster: "
                    "tests/test_slurm.py compares its tables with the local run's")
def test_rerun_gives_the_identical_table(smoke_run, tmp_path):
    """Same config, same seed, fresh folder: main.csv is identical but for wall-time columns.
    Where a SLURM cluster can start, tests/test_slurm.py reruns the smoke DAG there (a fresh
    folder, the same config) and compares its tables with the same local run: this test through
    the cluster, so the DAG reruns once."""
    snakemake("results/smoke/tables/main.csv", "--cores", "2", "--configfile",
              str(REPO / "config/smoke.yaml"), cwd=tmp_path, check=True)
    a, b = (pd.read_csv(d / "results/smoke/tables/main.csv").drop(columns=TIMING)
            for d in (smoke_run, tmp_path))
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow
def test_report_holds_the_figures(smoke_copy):
    snakemake("all", "--report", "results/smoke/report.html", "--configfile", str(REPO / "config/smoke.yaml"),
              cwd=smoke_copy, check=True)
    html = (smoke_copy / "results/smoke/report.html").read_text(errors="replace")
    for name in ("val_loss.png", "lfr_phases.png", "speedup.png", "downstream.png", "main.csv",
                 "main_by_seed.csv", "forgetting.csv", "domains.csv", "kept_domains.csv",
                 "forgetting.png"):
        assert name in html


def smoke_with(tmp_path, file="variant.yaml", **changes):
    """The smoke config with some top-level keys replaced, written to tmp_path/file."""
    cfg = yaml.safe_load((REPO / "config/smoke.yaml").read_text()) | changes
    (tmp_path / file).write_text(yaml.safe_dump(cfg))
    return str(tmp_path / file)


def planned_training(r, budgets=False):
    """(size, method, seed) of every training job a dry run plans (the rule's message); with
    `budgets`, (size, method, budget, seed)."""
    jobs = re.findall(r"--- Training (\S+) with (\S+), budget (\S+), seed (\d+)\.", r.stdout + r.stderr)
    return sorted(jobs if budgets else [(size, method, seed) for size, method, _, seed in jobs])


@pytest.mark.slow
def test_adding_a_size_and_a_method_plans_only_the_new_runs(smoke_run, tmp_path):
    grown = smoke_with(tmp_path, models=["nano", "micro"], methods=["random", "lfr", "lfr-reverse"])
    r = snakemake("all", "-n", "--configfile", grown, cwd=smoke_run, check=True)
    assert planned_training(r) == [("micro", "lfr", "0"), ("micro", "lfr-reverse", "0"),
                                   ("micro", "random", "0"), ("nano", "lfr-reverse", "0")]


@pytest.mark.slow
def test_a_sweep_plans_only_its_new_budgets(smoke_run, tmp_path):
    """The finished budget-1 run is reused; the sweep's runs are trained and summarized but not
    profiled or evaluated."""
    swept = smoke_with(tmp_path, sweep={"methods": ["random"], "budgets": [0.5, 1, 2]})
    r = snakemake("all", "-n", "--configfile", swept, cwd=smoke_run, check=True)
    assert planned_training(r, budgets=True) == [("nano", "random", "0.5", "0"), ("nano", "random", "2", "0")]
    jobs = re.findall(r"^(\w+)\s+(\d+)$", r.stdout, re.M)  # snakemake's job-count table
    assert {rule for rule, _ in jobs} - {"total"} == {"train", "summarize", "scaling", "plot", "all"}


@pytest.mark.slow
def test_changing_one_methods_options_retrains_only_that_method(smoke_run, tmp_path):
    edited = smoke_with(tmp_path, method_options={"lfr": {"preset": "paper-v1", "reps": 2}})
    r = snakemake("all", "-n", "--configfile", edited, cwd=smoke_run, check=True)
    assert planned_training(r) == [("nano", "lfr", "0")]
    same = smoke_with(tmp_path, file="same.yaml", method_options={"lfr": {"reps": 1}})  # = defaults
    r = snakemake("all", "-n", "--configfile", same, cwd=smoke_run, check=True)
    assert planned_training(r) == [] and "Nothing to be done" in r.stdout + r.stderr


@pytest.mark.slow
def test_a_second_config_builds_its_own_tables_and_keeps_the_firsts(smoke_copy, tmp_path):
    """Like config/peers.yaml after the demo: it reuses the finished runs, trains only its new
    method, and writes results/<name>/ while results/smoke/ stays as it was."""
    first = {p: p.read_bytes() for p in (smoke_copy / "results/smoke").rglob("*") if p.is_file()}
    other = smoke_with(tmp_path, name="other", methods=["random", "lfr", "infobatch"],
                       profile={"methods": ["random", "lfr"], "sample_blocks": 64})
    r = snakemake("all", "-n", "--configfile", other, cwd=smoke_copy, check=True)
    assert planned_training(r) == [("nano", "infobatch", "0")]
    # three of `all`'s outputs: the tables and one figure (each of the 12 figures is a job of its own)
    outputs = [f"results/other/{name}" for name in ("tables/main.csv", "tables/forgetting.csv",
                                                    "figures/val_loss.png")]
    snakemake(outputs, "--cores", "2", "--configfile", other, cwd=smoke_copy, check=True)
    assert {p: p.read_bytes() for p in (smoke_copy / "results/smoke").rglob("*") if p.is_file()} == first
    main = pd.read_csv(smoke_copy / "results/other/tables/main.csv")
    assert main.method.tolist() == ["random", "lfr", "infobatch"]
    assert (smoke_copy / "results/other/figures/val_loss.png").is_file()
    assert (smoke_copy / "results/other/tables/forgetting.csv").is_file()


def tree_digest(root):
    """md5 of every file under root, by path."""
    import hashlib

    return {p.relative_to(root): hashlib.md5(p.read_bytes()).hexdigest() for p in root.rglob("*")
            if p.is_file()}


@pytest.mark.slow
def test_edited_data_sections_of_the_default_config_never_replace_its_runs(tmp_path):
    """results/ belongs to config/config.yaml's data: a folder whose results/data was built with
    other settings (as after editing those sections in place) stops before any job."""
    (tmp_path / "results/data").mkdir(parents=True)
    demo = load_config(REPO / "config/config.yaml").model_dump(mode="json")
    built = {k: demo[k] for k in ("corpus", "tokenizer", "data")}
    built["corpus"] = built["corpus"] | {"fraction": 0.5}
    (tmp_path / "results/data/meta.json").write_text(json.dumps({"built_from": built}))
    r = snakemake("all", "-n", cwd=tmp_path)
    assert r.returncode != 0
    assert "results/ holds data built with other settings" in r.stderr
    assert "corpus.fraction: 0.5 there, 0.1 here" in r.stderr and "--directory DIR" in r.stderr


def ladder_config(tmp_path):
    """The smoke config as a tiny ladder in the smoke run's folder (its data, reused): two sizes
    of its own at half a token per parameter, random swept over 2 budgets, one seed, the
    learning-rate check at the smaller size, no profiling."""
    smoke = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    return smoke_with(
        tmp_path, file="ladder.yaml", name="ladder", models=["p32", "p64"], methods=["random", "lfr"],
        custom_models={"p32": {"n_layer": 1, "n_head": 2, "n_embd": 32},
                       "p64": {"n_layer": 2, "n_head": 2, "n_embd": 64}},
        sweep={"methods": ["random"], "budgets": [0.5, 1]}, profile={"methods": []},
        lr_check={"methods": ["random", "lfr"], "sizes": ["p32"], "multipliers": [2]},
        train=smoke["train"] | {"tokens_per_param": 0.5, "epochs": 2})


@pytest.mark.slow
def test_a_tiny_ladder_reaches_the_trend_and_its_figure(smoke_copy, tmp_path):
    """Two sizes through the DAG to scaling.csv and the `scaling` figure: each at half a token
    per parameter in 2 passes over its subset, measured against a 2-budget frontier, lfr's line
    refused with its reason (one seed: no interval to weigh a size by; tests/test_scaling.py fits
    lines), and the learning-rate check's rows."""
    snakemake("results/ladder/figures/scaling.png", "--cores", "2", "--configfile", ladder_config(tmp_path),
              cwd=smoke_copy, check=True)
    tables = smoke_copy / "results/ladder/tables"
    table = pd.read_csv(tables / "scaling.csv", keep_default_na=False, na_values=[""])
    measured = table[table.kind == "measured"]
    assert list(zip(measured["size"], measured.method, strict=True)) == [
        ("p32", "random"), ("p32", "lfr"), ("p64", "random"), ("p64", "lfr")]
    assert measured.params.is_monotonic_increasing and (measured.frontier_budgets == 2).all()
    assert measured.tokens_per_param.between(0.49, 0.51).all() and (measured.verdict != "").all()
    lfr = measured[measured.method == "lfr"]
    assert (lfr.iso_speedup.notna() != lfr.iso_speedup_bound.notna()).all()  # a value or a bound
    assert (lfr.in_fit.astype(str) == "False").all()  # one seed: no interval, so no weight
    slope = table[(table.kind == "fit") & (table.quantity == "slope")].iloc[0]
    assert np.isnan(slope.estimate) and slope.note.startswith("no slope: 0 size(s) with a value")
    assert "p32 (no interval (no seed-noise estimate: one seed everywhere))" in slope.note
    rates = pd.read_csv(tables / "learning_rates.csv")
    same = rates[rates.comparison == "same lr"]
    pairs = sorted(zip(same.method, same.lr_mult, strict=True))
    assert pairs == [("lfr", 1.0), ("lfr", 2.0), ("random", 1.0), ("random", 2.0)]
    assert (smoke_copy / "results/ladder/figures/scaling.png").stat().st_size > 10_000
    main = pd.read_csv(tables / "main.csv")
    # budget 0.5 of 2 passes is one, less its last step's rounding on a small subset
    assert main.passes.between(0.95, 2.01).all() and set(main.lr_mult) == {1.0, 2.0}


@pytest.mark.slow
def test_a_time_limit_only_where_one_is_asked_for(tmp_path):
    r = snakemake("all", "-n", "-p", "--configfile", str(REPO / "config/smoke.yaml"), cwd=tmp_path,
                  check=True)
    assert "lfr train" in r.stdout and "--time-limit-min" not in r.stdout
    limited = smoke_with(tmp_path, resources={"nano": {"runtime_min": 90}})
    r = snakemake("all", "-n", "-p", "--configfile", limited, cwd=tmp_path, check=True)
    assert r.stdout.count("--time-limit-min 90") == 2  # the two training jobs


@pytest.mark.parametrize("name", ["tables", "runs", "a/b", "../x"])
def test_a_result_set_name_cannot_hide_another_folder(name):
    with pytest.raises(ConfigError, match="name"):
        validate_config({"name": name})


def documented(section):
    """Backticked names in the first column of a tables-README section's table rows, as regexes
    (`<metric>:<task>` and `*_std` are patterns)."""
    names = []
    for line in section.splitlines():
        if line.startswith("| `"):
            names += re.findall(r"`([^`]+)`", line.split("|")[1])
    return names


def as_regex(name):
    return re.sub(r"<[^>]+>", "[^:]+", re.escape(name).replace(r"\<", "<").replace(r"\>", ">")
                  .replace(r"\*", ".*"))


def undocumented_and_absent(columns, section):
    """(columns the README section does not document, documented names the table lacks)."""
    names = documented(section)
    undocumented = [c for c in columns if not any(re.fullmatch(as_regex(n), c) for n in names)]
    return undocumented, [n for n in names if "<" not in n and n not in columns]


@pytest.mark.slow
def test_tables_readme_documents_exactly_the_columns_of_both_tables(smoke_run):
    """main.csv, main_by_seed.csv, and the scaling stage's scaling.csv, learning_rates.csv and
    scaling_band.csv (empty at the smoke config's one size: their columns all the same)."""
    text = (REPO / "results/tables/README.md").read_text()
    main_doc = text.split("## `main.csv`")[1].split("\n## ")[0]
    by_seed_doc = text.split("## `main_by_seed.csv`")[1].split("\n## ")[0]
    tables = smoke_run / "results/smoke/tables"
    main = list(pd.read_csv(tables / "main.csv").columns)
    assert undocumented_and_absent(main, main_doc) == ([], [])
    for name in ("scaling.csv", "learning_rates.csv", "scaling_band.csv"):
        section = text.split(f"## `{name}`")[1].split("\n## ")[0]
        assert undocumented_and_absent(list(pd.read_csv(tables / name).columns), section) == ([], []), name
    rules = {k: re.findall(r"`([^`]+)`", v) for k, v in
             re.findall(r"^- (not here|added)\b(.*)$", by_seed_doc, flags=re.M)}
    gone = [c for c in main if any(re.fullmatch(as_regex(n), c) for n in rules["not here"])]
    expected = [c for c in main if c not in gone] + [n for n in rules["added"]]
    assert sorted(pd.read_csv(tables / "main_by_seed.csv").columns) == sorted(expected)


@pytest.mark.slow
def test_a_folder_of_txt_files_at_odd_paths_builds_data_of_its_own_beside_another_corpus(smoke_run, tmp_path):
    """A user's folder of .txt files, by changing only `corpus` and `name` in the smoke config, in a
    copy of the smoke run's folder (whose every rule ran in a folder and from a config file named
    with ODD: conftest.smoke_run). A mistyped corpus path stops the dry run naming the key and the
    path. A corpus folder, documents and config file with odd names: the stages that read the
    documents (corpus, tokenizer, tokens, eval tasks) read the folder's into a data root of their
    own, and every file of the smoke run (its runs, data, tables, figures) stays byte-identical
    (a second config's runs and tables beside the first's: test_a_second_config_...)."""
    work = Path(shutil.copytree(smoke_run, tmp_path / "work", symlinks=True))  # times kept: nothing reruns
    before = tree_digest(work / "results")
    typo = smoke_with(tmp_path, file="typo.yaml", corpus={"source": "files", "paths": ["corpsu/*.txt"]})
    r = snakemake("all", "-n", "--configfile", typo, cwd=work)
    assert r.returncode != 0
    assert "corpus.paths: 'corpsu/*.txt' matches no file" in r.stderr and "Nothing was run" in r.stderr

    folder = work / f"corpus {ODD}"
    folder.mkdir()
    rng = random.Random(1)
    words = ["".join(rng.choices("etaoinshrdlucmfwypvbgk", k=rng.randint(2, 9))) for _ in range(3000)]
    for i in range(60):
        (folder / f"doc {i:03d} é.txt").write_text(" ".join(rng.choices(words, k=400)) + ".\n")
    config = smoke_with(work, file=f"config {ODD}.yaml", name="odd",
                        corpus={"source": "files", "paths": [str(folder)], "val_fraction": 0.1})
    root = data_root(config)
    snakemake([f"{root}/data/meta.json", f"{root}/eval_tasks"], "--cores", "2", "--configfile", config,
              cwd=work, check=True)
    docs = pd.read_parquet(work / root / "corpus/train.parquet")
    assert len(docs) + len(pd.read_parquet(work / root / "corpus/val.parquet")) == 60
    assert docs.doc_id.str.startswith(f"corpus {ODD}/doc ").all()
    meta = json.loads((work / root / "data/meta.json").read_text())
    assert meta["train_documents"] + meta["val_documents"] == 60 and meta["train_blocks"] > 0
    assert any((work / root / "eval_tasks").iterdir())
    assert root.startswith("results/corpora/") and root != SMOKE
    after = tree_digest(work / "results")
    assert {p: h for p, h in after.items() if p in before} == before
    new = {p.parts[0] if p.parts[0] != "corpora" else "/".join(p.parts[:2]) for p in set(after) - set(before)}
    assert new == {root.removeprefix("results/")}  # its data root, nothing else


DEMO_NANO = ["random", "lfr", "lfr-random-drop"]
DEMO_BUDGETS = ["0.25", "0.5", "1", "2", "4"]  # random's sweep at nano


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "nano_seeds", "micro_seeds"), [
    (["seeds=[0,1]"], "012", "01"),  # size_seeds: {nano: [0, 1, 2]} wins for nano
    (["seeds=[0,1]", "size_seeds={nano: [0, 1, 2, 3, 4]}"], "01234", "01"),  # README's "more seeds"
])
def test_seed_overrides_on_the_command_line(tmp_path, overrides, nano_seeds, micro_seeds):
    """--config values reach Snakemake as strings; they validate like a file's (the demo config)."""
    r = snakemake("results/tables/main.csv", "-n", "--cores", "1", "--config", *overrides, cwd=tmp_path,
                  check=True)
    expected = [("nano", m, b, s) for m in DEMO_NANO for s in nano_seeds
                for b in (DEMO_BUDGETS if m == "random" else ["1"])]
    expected += [("micro", m, "1", s) for m in ("random", "lfr") for s in micro_seeds]
    assert planned_training(r, budgets=True) == sorted(expected)


def test_a_section_override_merges_into_the_section(tmp_path):
    r = snakemake("results/smoke/tables/main.csv", "-n", "-p", "--cores", "1", "--configfile",
                  str(REPO / "config/smoke.yaml"), "--config", 'train={"epochs": 2}', cwd=tmp_path,
                  check=True)
    assert planned_training(r) == [("nano", "lfr", "0"), ("nano", "random", "0")]
    trains = [json.loads(s)["train"] for s in re.findall(r"lfr train --config-json '([^']*)'", r.stdout)]
    assert len(trains) == 2
    assert all(t["epochs"] == 2 and t["batch_size"] == 8 for t in trains)  # smoke.yaml's batch kept


def test_a_bad_override_names_its_key_in_one_line(tmp_path):
    r = snakemake("results/tables/main.csv", "-n", "--cores", "1", "--config", "seeds=[a]", cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "  - seeds[0]: Input should be a valid integer" in out, out
    assert "Failed validating" not in out  # no JSON Schema dump
