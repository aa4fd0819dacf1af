"""A ladder of sizes at matched tokens per parameter (train.tokens_per_param), and the learning-rate
check (lr_check): the budget arithmetic, the subsets, the refusals, and real runs of both."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, run_train, tiny_config

from lfr.data import BlockStore, subset_ids
from lfr.grid import block_budget, load_config, lr_runs, param_count, trained_runs, validate_config
from lfr.sampling import RunFacts, build_sampler


def ladder(**train):
    return validate_config({"custom_models": {"llama-gqa": {"arch": "llama", "n_layer": 2, "n_head": 4,
                                                            "n_kv_head": 2, "n_embd": 64,
                                                            "tie_embeddings": False}},
                            "models": ["nano", "micro", "llama-gqa"], "methods": ["random", "lfr"],
                            "tokenizer": {"vocab_size": 2048}, "train": {"epochs": 4, **train}})


@pytest.mark.parametrize("size", ["nano", "micro", "mini", "llama-nano", "llama-micro", "llama-gqa"])
def test_param_count_is_what_the_model_builds(size):
    """The config check counts parameters without torch; the train stage counts the model's."""
    from lfr.model import build_model, embedding_params, model_config, num_params

    cfg = ladder()
    model = build_model(model_config(cfg.model_preset(size), 2048, 128, 0, 0.0))
    assert param_count(cfg, size) == (num_params(model), num_params(model) - embedding_params(model))


@pytest.mark.parametrize("tokens_per_param", [2.5, 5, 20])
@pytest.mark.parametrize(("size", "batch_blocks"), [("nano", 16), ("micro", 16), ("llama-gqa", 48)])
def test_budget_one_trains_tokens_per_param_for_random_and_lfr(tokens_per_param, size, batch_blocks):
    """tokens_per_param x total parameters at budget 1, to the nearest optimizer step, for random and
    LFR alike (equal tokens); a sweep's budget b repeats the subset b x epochs times."""
    cfg = ladder(tokens_per_param=tokens_per_param)
    params = param_count(cfg, size)[0]
    plan = block_budget(cfg, size, 10**6, params, batch_blocks)
    T = cfg.data.block_size
    assert abs(plan.tokens - tokens_per_param * params) <= batch_blocks * T / 2
    assert plan.epochs == 4 and plan.blocks < 10**6
    for budget in (0.5, 1.0, 2.0):
        facts = RunFacts(plan.blocks, batch_blocks, T, 0, plan.epochs, budget=budget)
        steps = {name: build_sampler(name, facts, {}).num_steps() for name in ("random", "lfr")}
        assert steps["random"] == steps["lfr"]
        assert abs(steps["random"] * batch_blocks * T - budget * plan.tokens) <= batch_blocks * T


def test_a_corpus_too_small_is_refused_naming_the_size_or_repeated_on_request():
    cfg = ladder(tokens_per_param=20)
    params = param_count(cfg, "micro")[0]
    with pytest.raises(ValueError, match=r"size micro \(1,071,872 parameters\) needs 21,43\d,\d+ tokens "
                                         r".* but the corpus has 1,000 training blocks \(128,000 tokens\)"):
        block_budget(cfg, "micro", 1000, params, 16)
    repeated = block_budget(ladder(tokens_per_param=20, repeat_data=True), "micro", 1000, params, 16)
    assert repeated.blocks == 1000 and repeated.epochs == pytest.approx(repeated.tokens / 128_000, abs=1e-3)
    facts = RunFacts(repeated.blocks, 16, 128, 0, repeated.epochs)
    assert build_sampler("random", facts, {}).num_steps() * 16 * 128 == repeated.tokens
    assert block_budget(ladder(), "micro", 1000, params, 16) is None  # no tokens_per_param: all blocks


def test_subsets_nest_across_sizes_and_are_seeded():
    small, large = subset_ids(5000, 300), subset_ids(5000, 1200)
    assert set(small) < set(large) and len(set(large)) == 1200
    assert np.array_equal(small, np.sort(small)) and np.array_equal(small, subset_ids(5000, 300))
    assert np.array_equal(subset_ids(5000, 9000), np.arange(5000))


def test_lr_check_plans_budget_one_runs_at_each_multiplier_and_names_bad_keys():
    cfg = validate_config({"models": ["nano", "micro"], "methods": ["random", "lfr", "lfr-random-drop"],
                           "seeds": [0, 1], "lr_check": {"methods": ["random", "lfr"], "sizes": ["nano"],
                                                         "multipliers": [0.5, 2]}})
    assert lr_runs(cfg) == [("nano", m, lr, s) for m in ("random", "lfr") for s in (0, 1)
                            for lr in (0.5, 2)]
    from lfr.config import ConfigError

    with pytest.raises(ConfigError, match=r"lr_check.methods\[0\]: 'leitner' is not in `methods`"):
        validate_config({"methods": ["random"], "lr_check": {"methods": ["leitner"], "multipliers": [2]}})
    with pytest.raises(ConfigError, match=r"lr_check.multipliers\[1\]: 1 is the grid's own"):
        validate_config({"methods": ["random"], "lr_check": {"methods": ["random"], "multipliers": [2, 1]}})


def test_the_new_train_keys_change_no_existing_run():
    """tokens_per_param and repeat_data are left out of the train section's dump at their defaults:
    every existing run keeps its job params and config_hash (the demo's nano hash as before)."""
    from lfr.grid import load_config

    cfg = load_config(REPO / "config/config.yaml")
    assert not {"tokens_per_param", "repeat_data"} & set(cfg.train.model_dump())
    set_ = cfg.train.model_copy(update={"tokens_per_param": 5.0})
    assert set_.model_dump()["tokens_per_param"] == 5.0


@pytest.fixture(scope="module")
def subset_run(prepared, tmp_path_factory):
    """An LFR run of the tiny data at half a token per parameter (a subset of the blocks),
    snapshots on, profiled over 32 blocks."""
    from lfr.config import ProfileConfig
    from lfr.profile import profile_run

    _, root = prepared
    cfg = tiny_config(train={"tokens_per_param": 0.5, "epochs": 2},
                      method_options={"lfr": {"preset": "paper-v1", "reps": 1}})
    out = tmp_path_factory.mktemp("subset")
    spec = ProfileConfig(every_tokens=20_000, sample_blocks=32)
    summary = run_train(cfg, "lfr", root, out / "run", snapshots=spec)
    profile_run(out / "run", root / "data", spec, out / "prof/losses.parquet", out / "prof/summary.json",
                "cpu")
    return cfg, root, out, summary


@pytest.mark.slow
def test_a_run_trains_on_its_sizes_subset_and_says_so(subset_run):
    _, root, out, summary = subset_run
    available = BlockStore.open(root / "data", "train").num_blocks
    blocks = summary["subset_blocks"]
    assert 0 < blocks < available and summary["passes"] == pytest.approx(2.0, abs=8 / blocks)
    assert summary["tokens_per_param"] == pytest.approx(0.5, abs=8 * 32 / summary["params"])
    assert summary["params_nonemb"] == summary["params"] - 512 * 64 - 32 * 64
    ids = set(subset_ids(available, blocks))
    final = pd.read_parquet(out / "run/records/final.parquet")  # the split's own block ids
    assert len(final) == blocks and set(final.block_id) == ids
    assert (final.visits > 0).mean() > 0.8  # the schedule scaled to 2 passes visits most of them
    profiled = pd.read_parquet(out / "prof/losses.parquet")
    assert profiled.block_id.nunique() == 32 and set(profiled.block_id) <= ids


@pytest.mark.slow
def test_a_learning_rate_multiple_is_its_own_run(prepared, trained, tmp_path):
    cfg, root, _, base = trained
    summary = run_train(cfg, "random", root, tmp_path / "run", lr_mult=2.0)
    settings = json.loads((tmp_path / "run/run.json").read_text())["settings"]
    assert summary["lr_mult"] == 2.0 and settings["train"]["lr"] == 2 * cfg.train.lr
    assert summary["config_hash"] != base["config_hash"] and summary["tokens"] == base["tokens"]
    lr = pd.read_parquet(tmp_path / "run/metrics.parquet").lr
    assert lr.max() == pytest.approx(2 * cfg.train.lr, rel=0.05)


@pytest.mark.slow
def test_a_too_small_corpus_stops_the_dry_run_once_the_data_exists(tmp_path):
    """Before any job: the corpus's size is known from data/meta.json of the config's data root."""
    import yaml
    from conftest import data_root
    from test_workflow import snakemake

    cfg = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    cfg["train"] |= {"tokens_per_param": 400}
    (tmp_path / "big.yaml").write_text(yaml.safe_dump(cfg))
    loaded = validate_config(cfg)
    data = tmp_path / data_root(tmp_path / "big.yaml") / "data"
    data.mkdir(parents=True)
    built = loaded.model_dump(mode="json", include={"corpus", "tokenizer", "data"})
    (data / "meta.json").write_text(json.dumps({"train_blocks": 2000, "built_from": built}))
    r = snakemake("all", "-n", "--configfile", str(tmp_path / "big.yaml"), cwd=tmp_path)
    assert r.returncode != 0
    assert "train.tokens_per_param: size nano (134,912 parameters) needs" in r.stderr
    assert "the corpus has 2,000 training blocks (64,000 tokens)" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("name", "train", "evaluate"), [("scale", 96, 36), ("scale-gpu", 106, 42)])
def test_the_ladder_configs_plan_every_run(name, train, evaluate, tmp_path):
    """Every size x method x seed at budget 1, random's sweep at every size and the learning-rate
    check; only the grid's runs evaluated. The GPU ladder's corpus needs the network: planned only."""
    from test_workflow import snakemake

    cfg = load_config(REPO / f"config/{name}.yaml")
    assert len(trained_runs(cfg)) + len(lr_runs(cfg)) == train
    r = snakemake(f"results/{name}/tables/main.csv", "-n", "--configfile", str(REPO / f"config/{name}.yaml"),
                  cwd=tmp_path, check=True)
    counts = {job: int(n) for job, n in re.findall(r"^(\w+)\s+(\d+)$", r.stdout, flags=re.M)}
    assert (counts["train"], counts["evaluate"]) == (train, evaluate)
    sizes = [param_count(cfg, size)[0] for size in cfg.models]
    assert sizes == sorted(sizes) and sizes[-1] / sizes[0] >= 8  # the ladder spans at least 8x
