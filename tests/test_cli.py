"""The command line (the package's import layering: tests/test_layers.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, tiny_config

from lfr.cli import STAGES, main

HELP_IMPORTS = """
import runpy, sys
sys.argv = ["lfr", "--help"]
try:
    runpy.run_module("lfr", run_name="__main__")
except SystemExit:
    pass
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("lfr.")))
"""


def test_help_lists_every_stage_and_imports_no_stage_module():
    """The top-level help is a static table: no stage module is imported, torch neither."""
    r = subprocess.run([sys.executable, "-c", HELP_IMPORTS], capture_output=True, text=True, check=True)
    help_text, imported = r.stdout.rsplit("\n", 2)[0], r.stdout.splitlines()[-1]
    assert all(f"    {stage}" in help_text for stage in STAGES), help_text
    assert imported == "['lfr.cli', 'lfr.config', 'lfr.devices', 'lfr.runtime']"


def test_every_stage_declares_its_options_next_to_its_main(capsys, monkeypatch):
    """Each stage's --help lists the options of its module's `add_arguments`, all with help text,
    and every option reaches its `main` (or the CLI's own: config, threads)."""
    import argparse
    import importlib
    import inspect

    monkeypatch.setenv("COLUMNS", "400")
    for stage, (module_name, _) in STAGES.items():
        assert run_cli(stage, "--help") == 0
        out = capsys.readouterr().out
        module = importlib.import_module(module_name)
        own = argparse.ArgumentParser()
        if hasattr(module, "add_arguments"):
            module.add_arguments(own)
        options = [a for a in own._actions if a.option_strings and a.dest != "help"]
        assert all(a.help and a.option_strings[0] in out for a in options), stage
        params = set(inspect.signature(module.main).parameters)
        assert {a.dest for a in options} - {"threads"} <= params, stage


def test_bad_config_exits_with_one_clear_line(tmp_path):
    (tmp_path / "c.yaml").write_text("train: {lr: fast}\n")
    r = subprocess.run([sys.executable, "-m", "lfr", "corpus", "--config", str(tmp_path / "c.yaml"),
                        "--train-out", "t", "--val-out", "v"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    assert "train.lr" in r.stderr and "Traceback" not in r.stderr


def run_cli(*argv) -> int:
    try:
        main([str(a) for a in argv])
    except SystemExit as stop:
        return stop.code
    return 0


def write_config(path, cfg):
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


@pytest.mark.parametrize(("stage", "args"), [("train", ["--size", "nano", "--method", "random"]),
                                             ("score-reference", ["--method", "ppl-prune"])])
def test_a_run_on_data_of_another_config_stops_before_writing(prepared, tmp_path, capsys, stage, args):
    _, root = prepared
    config = write_config(tmp_path / "c.yaml", tiny_config(data={"block_size": 16}))
    rc = run_cli(stage, "--config", config, *args, "--seed", 0, "--data", root / "data",
                 "--tokenizer", root / "tokenizer", "--out", tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 2 and f"lfr {stage}: error: {root / 'data/meta.json'}: block_size is 32 but the " \
        "config's data.block_size is 16; the data was tokenized with another config: rerun" in err
    assert not (tmp_path / "out").exists()


def test_a_stage_without_config_says_it_uses_the_built_in_defaults(tmp_path, capsys, monkeypatch):
    rc = run_cli("tokenize", "--train-docs", "t", "--val-docs", "v", "--tokenizer", tmp_path / "none",
                 "--out", tmp_path / "data")
    notice = ("lfr tokenize: no --config given: using the built-in defaults of lfr/config.py "
              "(the pipeline's default is --config config/config.yaml)\n")
    assert rc == 2 and notice in capsys.readouterr().err
    monkeypatch.setenv("COLUMNS", "400")
    assert run_cli("train", "--help") == 0
    out = capsys.readouterr().out
    assert "without --config or --config-json: the built-in defaults of lfr/config.py, not config/" in out
    assert "sections left out take the built-in defaults and are not checked against" in out


def test_the_pipelines_partial_configs_pass_and_record_what_they_used(prepared, tmp_path):
    """As the rules run them: tokenizer with only its section, tokenize with only `data`: no
    false mismatch with the defaults of the other sections; a corpus given by hand is recorded."""
    from lfr.data import check_data_matches

    cfg, root = prepared
    config = write_config(tmp_path / "c.yaml", cfg)
    assert run_cli("tokenizer", "--config", config, "--train-docs", root / "corpus/train.parquet",
                   "--out", tmp_path / "tok") == 0
    data_rule = json.dumps({"data": cfg.data.model_dump(mode="json"), "offline": True})
    assert run_cli("tokenize", "--config-json", data_rule, "--train-docs", root / "corpus/train.parquet",
                   "--val-docs", root / "corpus/val.parquet", "--tokenizer", tmp_path / "tok",
                   "--out", tmp_path / "data") == 0
    built = json.loads((tmp_path / "data/meta.json").read_text())["built_from"]
    assert built == {key: getattr(cfg, key).model_dump(mode="json")
                     for key in ("corpus", "tokenizer", "data")}
    with pytest.raises(ValueError, match=r"built with corpus.seed=0 but the config's is 1; the corpus "
                                         r"was read with another config: rerun the corpus, tokenizer"):
        check_data_matches(tiny_config(corpus={"seed": 1}), {"corpus"}, tmp_path / "data", tmp_path / "tok")


def test_ruff_is_clean():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "lfr", "tests", "benchmarks", "scripts"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


PAGE_FAULTS = """
import resource, sys, torch
from lfr.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.empty(16 << 20).fill_(1.0)  # warm up: 64 MiB, above glibc's default 32 MiB mmap limit
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    torch.empty(16 << 20).fill_(1.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.slow
def test_stages_reuse_large_freed_cpu_tensors():
    """A 64 MiB tensor (demo logits) made and freed 50 times: with glibc's defaults each one is
    fresh zero-filled pages (a page fault per 4 KiB page); after `keep_freed_memory` the heap
    reuses them, so a small fraction of those faults remain."""
    faults = {mode: int(subprocess.run([sys.executable, "-c", PAGE_FAULTS, mode], capture_output=True,
                                        text=True, check=True).stdout)
              for mode in ("default", "keep")}
    assert faults["default"] > 50 * 15_000, faults
    assert faults["keep"] * 5 < faults["default"], faults
