"""The experiment grid (lfr/grid.py): the runs a config plans, and the validation that needs the
method registry: method names, each method's options, the checks across the grid's keys; one
message names every bad key, the schema's included."""

from __future__ import annotations

import re

import pytest
from conftest import REPO

from lfr import grid
from lfr.config import ConfigError, SizeResources
from lfr.grid import load_config, schema_problems, unequal_lengths, validate_config
from lfr.sampling import SAMPLERS


@pytest.mark.parametrize("path", sorted((REPO / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_plan_runs(path):
    cfg = load_config(path)
    assert cfg.models and cfg.methods and cfg.seeds and grid.runs(cfg)


LFR = {"methods": ["random", "lfr"]}


@pytest.mark.parametrize(
    ("raw", "key", "hint"),
    [
        ({"methods": ["magic"]}, "methods[0]: 'magic' is unknown", "choose from ['infobatch'"),
        ({"methods": ["random", "magic"]}, "methods[1]", "'lfr'"),
        ({"method_options": {"magic": {}}}, "method_options.magic", "not a method"),
        ({"method_options": {"random": {"epochz": 2}}}, "method_options.random.epochz", "unknown key"),
        ({"method_options": {"lfr": {"schedule": [{"kind": "learn", "epochs": 1},
                                                  {"kind": "focus", "drop": 1.5, "epochs": 1}]}}},
         "method_options.lfr.schedule[1].drop", "less than 1"),
        ({"method_options": {"lfr": {"schedule": [{"kind": "learn"}]}}}, "method_options.lfr.schedule[0]:",
         "exactly one of `epochs` or `tokens`"),
        ({"method_options": {"leitner": {"intervals": [1, 0]}}}, "method_options.leitner.intervals[1]",
         "greater than 0"),
        ({"method_options": {"loss-prop": {"alpha": 400}}}, "method_options.loss-prop.alpha",
         "less than or equal to 10"),
        ({"method_options": {"leitner": {"intervals": [1, 1e300]}}}, "method_options.leitner.intervals[1]",
         "less than or equal to 1000000"),
        ({"method_options": {"lfr": {"reps": 10**9}}}, "method_options.lfr.reps",
         "less than or equal to 1000 (got"),
        ({"method_options": {"lfr": {"schedule": [{"kind": "learn", "epochs": 1e9}]}}},
         "method_options.lfr.schedule[0].epochs", "less than or equal to 1000000"),
        ({"method_options": {"random": {"epochs": float("inf")}}}, "method_options.random.epochs",
         "finite number"),
        ({"method_options": {"ppl-prune": {"reference_size": "huge"}}},
         "method_options.ppl-prune.reference_size", "'huge' is unknown"),
        ({"method_sizes": {"lfr": ["micro"]}}, "method_sizes.lfr", "not in `methods`"),
        ({"method_sizes": {"random": ["micro", "nano"]}}, "method_sizes.random[1]", "not in `models`"),
        ({"profile": {"methods": ["lfr"]}}, "profile.methods[0]: 'lfr'", "choose from ['random']"),
        ({"profile": {"sizes": ["nano"]}}, "profile.sizes[0]: 'nano'", "choose from ['micro']"),
        ({"profile": {"seeds": [1]}}, "profile.seeds[0]", "no run has seed 1"),
        ({"models": ["nano", "micro"], **LFR, "method_sizes": {"lfr": ["nano"]},
          "profile": {"methods": ["lfr"], "sizes": ["micro"]}}, "profile", "selects no run of the grid"),
        ({"models": ["nano", "micro"], "size_seeds": {"nano": [1]},
          "profile": {"sizes": ["nano"]}}, "profile", "selects no run of the grid"),
        ({"size_seeds": {"nano": [0]}}, "size_seeds.nano", "not in `models`"),
        ({"resources": {"gpt2": {"gpus": 1}}}, "resources.gpt2", "a reference_size or `default`"),
    ],
)
def test_method_or_cross_key_error_names_the_full_path(raw, key, hint):
    with pytest.raises(ConfigError) as err:
        validate_config(raw, "my.yaml")
    msg = str(err.value)
    assert msg.startswith("my.yaml: invalid config (1 problem(s)):")
    assert f"  - {key}" in msg and hint in msg, msg


def test_one_message_names_the_schemas_and_the_methods_problems_in_config_order():
    raw = {"train": {"lr": -1}, "seeds": [], "method_options": {"loss-prop": {"alpha": -1}, "magic": {}},
           "methods": ["random", "magic"], "bogus": 1}
    with pytest.raises(ConfigError) as err:
        validate_config(raw, "my.yaml")
    lines = str(err.value).splitlines()
    assert lines[0] == "my.yaml: invalid config (6 problem(s)):"
    keys = [line.split(":")[0] for line in lines[1:]]
    assert keys == ["  - bogus", "  - methods[1]", "  - method_options.loss-prop.alpha",
                    "  - method_options.magic", "  - seeds", "  - train.lr"]


def test_every_bad_method_option_is_listed():
    with pytest.raises(ConfigError) as err:
        validate_config({"method_options": {"infobatch": {"delta": 2}, "loss-prop": {"alpha": -1}}})
    msg = str(err.value)
    assert "(2 problem(s))" in msg and "method_options.infobatch.delta" in msg
    assert "method_options.loss-prop.alpha" in msg


def test_every_cross_key_problem_is_listed():
    raw = {"method_sizes": {"lfr": ["micro"]}, "size_seeds": {"nano": [0]}, "resources": {"gpt2": {}}}
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    msg = str(err.value)
    assert "(3 problem(s))" in msg
    for key in ("method_sizes.lfr", "size_seeds.nano", "resources.gpt2"):
        assert f"  - {key}: " in msg, msg


def test_the_grid_is_checked_only_once_the_sections_are_valid():
    """`size_seeds.nano` would be a problem of the grid too, but a bad section comes first."""
    with pytest.raises(ConfigError) as err:
        validate_config({"size_seeds": {"nano": [0]}, "train": {"lr": -1}})
    assert "(1 problem(s))" in str(err.value) and "train.lr" in str(err.value)


@pytest.mark.parametrize("raw", [
    {"models": ["nano"], "methods": ["ppl-prune"], "resources": {"micro": {"gpus": 1}},
     "method_options": {"ppl-prune": {"reference_size": "micro"}}},  # the reference's own job
    {"seeds": [1], "size_seeds": {"micro": [2, 3]}, "profile": {"seeds": [3]}},
    {"seeds": [1]},  # profile.seeds' default [0] then profiles nothing, as before
    {"profile": {"methods": []}},
    {"method_options": {"lfr": {"preset": "paper-v1"}}},  # options of a method that is not run
])
def test_cross_key_edge_cases_are_accepted(raw):
    validate_config(raw)


def test_the_schema_leaves_methods_to_the_grid():
    """lfr/config.py knows no method: any name passes its schema, and the grid names it."""
    raw = {"methods": ["magic"], "method_options": {"magic": {"x": 1}}}
    cfg, problems = schema_problems(raw)
    assert cfg is not None and cfg.methods == ["magic"] and problems == []
    with pytest.raises(ConfigError, match=r"(?s)methods\[0\]: 'magic' is unknown.*method_options.magic"):
        validate_config(raw)


# -- the queries ----------------------------------------------------------------------------------
GRID = {"models": ["nano", "micro"], "methods": ["random", "lfr"], "method_sizes": {"lfr": ["nano"]},
        "seeds": [0], "size_seeds": {"nano": [0, 1]}}


def test_runs_follow_the_config_order_with_method_sizes_and_size_seeds():
    cfg = validate_config(GRID)
    assert grid.runs(cfg) == [("nano", "random", 0), ("nano", "random", 1), ("nano", "lfr", 0),
                              ("nano", "lfr", 1), ("micro", "random", 0)]


def test_a_sweep_adds_each_budget_of_its_methods_and_sizes():
    cfg = validate_config({**GRID, "sweep": {"methods": ["random"], "sizes": ["nano"],
                                             "budgets": [2, 0.5, 1]}})
    assert grid.run_budgets(cfg, "nano", "random") == [0.5, 1.0, 2.0]
    assert grid.run_budgets(cfg, "micro", "random") == grid.run_budgets(cfg, "nano", "lfr") == [1.0]
    assert grid.trained_runs(cfg) == [
        ("nano", "random", 0.5, 0), ("nano", "random", 0.5, 1), ("nano", "random", 1.0, 0),
        ("nano", "random", 1.0, 1), ("nano", "random", 2.0, 0), ("nano", "random", 2.0, 1),
        ("nano", "lfr", 1.0, 0), ("nano", "lfr", 1.0, 1), ("micro", "random", 1.0, 0)]
    assert grid.runs(cfg) == grid.runs(validate_config(GRID))  # profiled and evaluated: budget 1


@pytest.mark.parametrize(("sweep", "key", "hint"), [
    ({"methods": ["leitner"]}, "sweep.methods[0]", "'leitner' is not in `methods`"),
    ({"methods": ["random"], "sizes": ["gpt2"]}, "sweep.sizes[0]", "'gpt2' is not in `models`"),
    ({"methods": ["random"], "budgets": [0.5, 0]}, "sweep.budgets[1]", "greater than 0"),
    ({"methods": ["random"], "budgets": [1, 1.00001]}, "sweep.budgets[1]", "folder budget1"),
])
def test_a_bad_sweep_names_its_key(sweep, key, hint):
    with pytest.raises(ConfigError, match=re.escape(key)) as err:
        validate_config({**GRID, "sweep": sweep})
    assert hint in str(err.value)


@pytest.mark.parametrize(("profile", "expected"), [
    ({}, [("nano", "random", 0), ("nano", "lfr", 0), ("micro", "random", 0)]),
    ({"methods": ["lfr"], "seeds": [0, 1]}, [("nano", "lfr", 0), ("nano", "lfr", 1)]),
    ({"sizes": ["micro"]}, [("micro", "random", 0)]),
    ({"methods": []}, []),
])
def test_profiled_runs_are_the_runs_that_profile_selects(profile, expected):
    cfg = validate_config({**GRID, "profile": profile})
    assert grid.profiled_runs(cfg) == expected
    assert [run for run in grid.runs(cfg) if grid.profiled(cfg, *run)] == expected


def test_size_resources_fall_back_to_default_then_the_built_in():
    cfg = validate_config({**GRID, "resources": {"default": {"mem_mb": 2000}, "micro": {"gpus": 2}}})
    assert grid.size_resources(cfg, "micro") == SizeResources(gpus=2)
    assert grid.size_resources(cfg, "nano") == SizeResources(mem_mb=2000)
    assert grid.size_resources(validate_config({}), "micro") == SizeResources()


def test_smallest_model_counts_parameters_first_on_ties():
    custom = {"wide": {"n_layer": 1, "n_head": 2, "n_embd": 256}, "twin": {"n_layer": 2, "n_head": 2,
                                                                            "n_embd": 64}}
    cfg = validate_config({"models": ["micro", "wide", "nano", "twin"], "custom_models": custom})
    assert grid.smallest_model(cfg) == "nano"  # twin has the same parameters, listed later
    assert grid.smallest_model(validate_config({"models": ["gpt2", "micro"]})) == "micro"


def test_reference_size_is_the_option_else_the_smallest_model():
    raw = {"models": ["micro", "nano"], "methods": ["random", "ppl-prune"]}
    assert grid.reference_model_size(validate_config(raw), "ppl-prune") == "nano"
    cfg = validate_config({**raw, "method_options": {"ppl-prune": {"reference_size": "gpt2"}}})
    assert grid.reference_model_size(cfg, "ppl-prune") == "gpt2"
    assert [m for m, s in SAMPLERS.items() if s.needs_block_scores] == ["ppl-prune", "rho-loss"]
    with pytest.raises(ValueError, match="uses no reference model"):
        grid.reference_model_size(cfg, "random")


def test_a_method_given_another_run_length_is_noted_naming_both_keys():
    """LFR's own `epochs` against train.epochs, and a peer's against random's own option: each a
    line naming both keys; equal lengths (the default) are no note."""
    cfg = validate_config({"methods": ["random", "lfr", "infobatch"], "train": {"epochs": 4},
                           "method_options": {"lfr": {"epochs": 2}}})
    assert unequal_lengths(cfg) == [
        "method_options.lfr.epochs=2 but train.epochs=4: lfr trains 0.50x random's tokens at every "
        "budget, so its rows have no equal-budget comparison (delta_val_loss, verdict); remove the "
        "option for equal tokens"]
    cfg = validate_config({"methods": ["random", "leitner"], "method_options": {"random": {"epochs": 3}}})
    assert unequal_lengths(cfg)[0].startswith(
        "method_options.leitner.epochs=4 but method_options.random.epochs=3: leitner trains 1.33x")
    assert unequal_lengths(validate_config({"methods": ["random", "lfr", "rho-loss"]})) == []
