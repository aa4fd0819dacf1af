"""Config validation: every shipped config loads; bad values fail with the key named."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import REPO

from lfr.config import ConfigError, json_schema, load_config, merge_config, typed_overrides, validate_config


@pytest.mark.parametrize("path", sorted((REPO / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.models and cfg.methods and cfg.seeds


@pytest.mark.parametrize(
    ("raw", "key", "hint"),
    [
        ({"bogus": 1}, "bogus", "unknown key"),
        ({"train": {"batch_size": "big"}}, "train.batch_size", "integer"),
        ({"train": {"lr": -1}}, "train.lr", "greater than 0"),
        ({"train": {"epochs": 0}}, "train.epochs", "greater than 0"),
        ({"models": ["gpt9"]}, "models", "gpt2-medium"),
        ({"methods": ["magic"]}, "methods", "random"),
        ({"seeds": []}, "seeds", "at least 1"),
        ({"corpus": {"source": "files"}}, "corpus", "corpus.paths is empty"),
        ({"corpus": {"source": "hf"}}, "corpus", "corpus.hf is missing"),
        ({"corpus": {"val_fraction": 1.5}}, "corpus.val_fraction", "less than 1"),
        ({"tokenizer": {"kind": "wordpiece"}}, "tokenizer.kind", "'bpe' or 'gpt2'"),
        ({"tokenizer": {"vocab_size": 100_000}, "data": {"token_dtype": "uint16"}}, "uint16", "uint32"),
        ({"data": {"block_size": 4}}, "data.block_size", "greater than or equal to 8"),
        ({"custom_models": {"odd": {"n_layer": 2, "n_head": 3, "n_embd": 64}}}, "custom_models.odd",
         "not divisible"),
        ({"method_options": {"random": {"epochz": 2}}}, "method_options", "random: epochz"),
        ({"profile": {"methods": ["lfr"]}}, "profile.methods=['lfr']", "choose from ['random']"),
        ({"profile": {"sample_blocks": 0}}, "profile.sample_blocks", "greater than or equal to 1"),
        ({"profile": {"threshold_nats": -0.1}}, "profile.threshold_nats", "greater than 0"),
    ],
)
def test_bad_config_names_the_key(raw, key, hint):
    with pytest.raises(ConfigError) as err:
        validate_config(raw, "my.yaml")
    msg = str(err.value)
    assert msg.startswith("my.yaml: invalid config")
    assert key in msg and hint in msg, msg


def test_custom_model_size_is_accepted():
    cfg = validate_config({"models": ["wide"], "custom_models": {"wide": {"n_layer": 1, "n_head": 2,
                                                                          "n_embd": 32}}})
    assert cfg.model_preset("wide").n_embd == 32


def test_load_config_rejects_non_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)


def test_committed_schema_is_up_to_date():
    committed = json.loads((REPO / "workflow/schemas/config.schema.json").read_text())
    assert committed == json_schema(), "run `make schema` to regenerate the JSON Schema"


@pytest.mark.parametrize(("given", "typed"), [
    ({"seeds": ["0", "1", "2"]}, {"seeds": [0, 1, 2]}),  # how Snakemake reads --config seeds=[0,1,2]
    ({"train": {"epochs": "2", "lr": "3e-4", "compile": "true"}},
     {"train": {"epochs": 2, "lr": 3e-4, "compile": True}}),
    ({"size_seeds": {"nano": ["0", "1"]}}, {"size_seeds": {"nano": [0, 1]}}),
    ({"profile": {"threshold_nats": "null", "methods": ["lfr"]}},
     {"profile": {"threshold_nats": None, "methods": ["lfr"]}}),
    ({"method_options": {"lfr": {"reps": "2", "preset": "paper-v1"}}},
     {"method_options": {"lfr": {"reps": 2, "preset": "paper-v1"}}}),
    ({"name": "2024", "models": ["nano"], "corpus": {"paths": ["1.txt"]}},  # strings stay strings
     {"name": "2024", "models": ["nano"], "corpus": {"paths": ["1.txt"]}}),
    ({"corpus": {"hf": {"name": "x", "config": "2"}, "seed": "1"}},  # through an optional section
     {"corpus": {"hf": {"name": "x", "config": "2"}, "seed": 1}}),
    ({"seeds": ["a"]}, {"seeds": ["a"]}),  # left for the validation to name
])
def test_command_line_overrides_get_the_types_a_file_gives(given, typed):
    assert typed_overrides(given) == typed


def test_overrides_merge_into_sections():
    config = {"train": {"batch_size": 8, "epochs": 1}, "seeds": [0]}
    merge_config(config, {"train": {"epochs": 2}, "seeds": [0, 1]})
    assert config == {"train": {"batch_size": 8, "epochs": 2}, "seeds": [0, 1]}
