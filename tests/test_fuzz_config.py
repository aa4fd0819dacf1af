"""Fuzzing the config: generated configs and one-key mutations of config/smoke.yaml either validate
or fail with a ConfigError that names a key, never another exception; a few accepted ones plan a
Snakemake dry run."""

from __future__ import annotations

import copy
import json
import types
from typing import Any

import hypothesis.internal.conjecture.utils as cu
import hypothesis_jsonschema._from_schema as hjs
import jsonschema
import numpy as np
import pytest
import yaml
from conftest import REPO
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from lfr import grid
from lfr.config import ConfigError, ExperimentConfig
from lfr.grid import validate_config
from lfr.sampling import SAMPLERS, RunFacts, build_sampler, validated_options

if not hasattr(cu.many, "more"):
    class OldMany(cu.many):
        """The `while elements.more():` protocol that hypothesis-jsonschema 0.23.1 (the latest)
        still uses; newer hypothesis iterates `many` inside a with-block instead."""

        def more(self) -> bool:
            if self._depth is None:
                self.__enter__()
                self._elements = iter(self)
            if next(self._elements, False) is None:
                return True
            self.__exit__(None)
            return False

    hjs.cu = types.SimpleNamespace(**{**vars(cu), "many": OldMany})  # for hypothesis-jsonschema only

SCHEMA = json.loads((REPO / "workflow/schemas/config.schema.json").read_text())
SMOKE = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
TOP = set(SCHEMA["properties"])
pytestmark = pytest.mark.slow  # fuzzing: hundreds of configs
FAST = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def with_defs(sub: dict[str, Any]) -> dict[str, Any]:
    return {**sub, "$defs": SCHEMA["$defs"]}


def key_schemas() -> dict[tuple[str, ...], dict[str, Any]]:
    """Every key the mutations replace: sections' keys, per-size entries and method options
    (those are free-form in the schema: `{}` generates any JSON value)."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for key, sub in SCHEMA["properties"].items():
        out[(key,)] = sub
        ref = sub.get("$ref", "").removeprefix("#/$defs/")
        for name, field in SCHEMA["$defs"].get(ref, {}).get("properties", {}).items():
            out[(key, name)] = field
    for name, field in SCHEMA["$defs"]["SizeResources"]["properties"].items():
        out[("resources", "default", name)] = field
    for name, field in SCHEMA["$defs"]["ModelPreset"]["properties"].items():
        out[("custom_models", "wide", name)] = field
    out[("size_seeds", "nano")] = {}
    out[("method_sizes", "lfr")] = {}
    for method, cls in SAMPLERS.items():
        for name in cls.Options.model_fields:
            out[("method_options", method, name)] = {}
    out[("method_options", "lfr", "schedule", 0)] = {}
    return out


KEYS = key_schemas()
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8)
                    | st.floats(allow_nan=True, allow_infinity=True),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                 max_size=3), max_leaves=6)


def put(raw: dict[str, Any], key: tuple, value: Any) -> dict[str, Any]:
    """`raw` with `value` at `key`, creating (or replacing non-dict) parents as needed."""
    raw = copy.deepcopy(raw)
    node = raw
    for part in key[:-1]:
        if isinstance(part, int):  # a list position, e.g. schedule[0]
            break
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    last = key[-1]
    if isinstance(last, int):
        node["schedule"] = [value]
    else:
        node[last] = value
    return raw


@st.composite
def mutations(draw: st.DrawFn, valid_values: bool = False) -> dict[str, Any]:
    """smoke.yaml with one to three keys replaced by a value of any JSON type (or, with
    `valid_values`, by one that its own schema allows)."""
    raw = SMOKE
    for _ in range(draw(st.integers(1, 1 if valid_values else 3))):
        key = draw(st.sampled_from(sorted(KEYS, key=str)))
        schema = KEYS[key]
        value = draw(from_schema(with_defs(schema)) if valid_values and schema
                     else st.one_of(JSON, from_schema(with_defs(schema))))
        raw = put(raw, key, value)
    return raw


def check(raw: dict[str, Any]) -> ExperimentConfig | None:
    """The accepted config, or None after checking that each problem line names a key."""
    try:
        cfg = validate_config(raw, "fuzz.yaml", whole=True)
    except ConfigError as err:
        lines = str(err).splitlines()
        assert lines[0].startswith("fuzz.yaml: invalid config") and len(lines) > 1, err
        for line in lines[1:]:
            assert any(line.startswith(f"  - {key}") for key in TOP | set(raw)), err
        return None
    # what the Snakefile asks of an accepted config must work too, its schema check included
    jsonschema.validate(raw, SCHEMA)
    for size, method, seed in grid.runs(cfg):
        grid.size_resources(cfg, size), cfg.model_preset(size), grid.profiled(cfg, size, method, seed)
        validated_options(method, cfg.method_options.get(method, {}))
        if SAMPLERS[method].needs_block_scores:
            cfg.model_preset(grid.reference_model_size(cfg, method))
    grid.smallest_model(cfg)
    validate_config(json.loads(cfg.model_dump_json()), "dumped")  # the stages' --config-json
    return cfg


@settings(FAST, max_examples=150)
@given(from_schema(SCHEMA))
def test_configs_from_the_schema_validate_or_name_a_key(raw):
    check(raw)


@settings(FAST, max_examples=400)
@given(mutations())
def test_mutated_smoke_config_validates_or_names_a_key(raw):
    check(raw)


@settings(FAST, max_examples=150)
@given(st.sampled_from(sorted(m for m, s in SAMPLERS.items() if not s.needs_block_scores)), st.data(),
       st.integers(1, 200), st.integers(1, 16))
def test_accepted_method_options_plan_and_run_a_sampler(method, data, num_blocks, batch_blocks):
    """Options that validate must not fail inside a run (ppl-prune and rho-loss need reference
    scores)."""
    options = data.draw(from_schema(SAMPLERS[method].Options.model_json_schema()))
    raw = {**SMOKE, "methods": [method], "method_options": {method: options}}
    cfg = check(raw)
    assume(cfg is not None)
    try:
        sampler = build_sampler(method, RunFacts(num_blocks, batch_blocks, 32, 0, 1.0), options)
    except ValueError as err:  # a corpus too small for the schedule: named, at run start
        assert (("LFR phase" in str(err) and "keeps no block" in str(err))
                or "phases need more than" in str(err)), err
        return
    rng = np.random.default_rng(0)
    for step in range(min(sampler.num_steps(), 20)):
        while (c := sampler.candidate_ids(step)) is not None:
            sampler.observe_candidates(step, c, rng.uniform(0, 12, len(c)).astype(np.float32))
        ids = sampler.batch_ids(step).ids
        sampler.observe(step, ids, rng.uniform(0, 12, len(ids)).astype(np.float32))


@settings(FAST, max_examples=5)
@given(mutations(valid_values=True))
def test_accepted_mutations_plan_a_dry_run(tmp_path_factory, raw):
    from test_workflow import snakemake

    assume(check(raw) is not None)
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "fuzz.yaml").write_text(yaml.safe_dump(raw))
    snakemake("all", "-n", "--configfile", str(tmp / "fuzz.yaml"), cwd=tmp, check=True)
