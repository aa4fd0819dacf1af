"""The config's schema (lfr/config.py): bad values fail with the key named, defaults, the JSON Schema,
command-line overrides. The methods' checks and the grid's are tests/test_grid.py's."""

from __future__ import annotations

import ast
import json

import pytest
import yaml
from conftest import REPO

from lfr import lm_eval_registry
from lfr.config import ConfigError, ExperimentConfig
from lfr.config_files import merge_config, read_yaml, typed_overrides
from lfr.grid import load_config, validate_config
from lfr.sampling import SAMPLERS
from lfr.schema import json_schema, reference_page, sections


@pytest.mark.parametrize(
    ("raw", "key", "hint"),
    [
        ({"bogus": 1}, "bogus", "unknown key"),
        ({"train": {"batch_size": "big"}}, "train.batch_size", "integer"),
        ({"train": {"lr": -1}}, "train.lr", "greater than 0"),
        ({"train": {"epochs": 0}}, "train.epochs", "greater than 0"),
        ({"models": ["gpt9"]}, "models", "gpt2-medium"),
        ({"seeds": []}, "seeds", "at least 1"),
        ({"corpus": {"source": "files"}}, "corpus.paths", "corpus.paths is empty"),
        ({"corpus": {"source": "hf"}}, "corpus.hf", "corpus.hf is missing"),
        ({"corpus": {"val_fraction": 1.5}}, "corpus.val_fraction", "less than 1"),
        ({"tokenizer": {"kind": "wordpiece"}}, "tokenizer.kind", "'bpe' or 'gpt2'"),
        ({"tokenizer": {"vocab_size": 100_000}, "data": {"token_dtype": "uint16"}}, "data.token_dtype",
         "uint32"),
        ({"data": {"block_size": 4}}, "data.block_size", "greater than or equal to 8"),
        ({"custom_models": {"odd": {"n_layer": 2, "n_head": 3, "n_embd": 64}}}, "custom_models.odd.n_embd",
         "not divisible"),
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


NANO = {"models": ["nano"]}
LFR = {"methods": ["random", "lfr"]}


@pytest.mark.parametrize(
    ("raw", "key", "hint"),
    [
        ({"seeds": [0, -1]}, "seeds[1]", "greater than or equal to 0"),
        ({"seeds": [0, 0]}, "seeds[1]", "listed twice"),
        ({"seeds": [2**32]}, "seeds[0]", "less than or equal to 4294967295"),
        ({**NANO, "size_seeds": {"nano": [1, 1]}}, "size_seeds.nano[1]", "listed twice"),
        ({"size_seeds": {1: [0]}}, "size_seeds.1 (the key)", "valid string"),
        ({"corpus": {"seed": -1}}, "corpus.seed", "greater than or equal to 0"),
        ({"eval": {"seed": -3}}, "eval.seed", "greater than or equal to 0"),
        ({"profile": {"sample_seed": -1}}, "profile.sample_seed", "greater than or equal to 0"),
        ({"models": ["nano", "gpt9"]}, "models[1]: 'gpt9' is unknown", "gpt2-medium"),
        ({"models": ["nano", "nano"]}, "models[1]", "listed twice"),
        ({**LFR, "profile": {"methods": ["lfr", "lfr"]}}, "profile.methods[1]", "listed twice"),
        ({"method_sizes": {"random": []}}, "method_sizes.random", "at least 1"),
        ({"train": {"epochs": 1e300}}, "train.epochs", "less than or equal to 1000000"),
        ({"resources": {"default": {"gpus": -1}}}, "resources.default.gpus", "greater than or equal to 0"),
        ({"train": {"batch_blocks": 480, "grad_accum": 5}}, "train.grad_accum", "not both"),
        ({"train": {"batch_size": 12, "batch_blocks": 480},
          "resources": {"default": {"gpus": 8}, "micro": {"nodes": 4, "gpus": 8}}},
         "train.batch_blocks: train.batch_blocks=480 is not a multiple of train.batch_size x GPUs = "
         "12 x 32 = 384", "resources.micro runs 4 node(s) x 8 GPU(s)"),
        ({"resources": {"default": {"runtime_min": 4}}}, "resources.default.runtime_min: 4 minute(s) is too "
         "short to make progress", "stops 120 s before its job's limit"),  # half the job or more
        ({**NANO, "resources": {"nano": {"runtime_min": 1, "stop_margin_s": 30}}},
         "resources.nano.runtime_min", "give at least 2 minutes, or a smaller stop_margin_s"),
        ({"eval": {"bootstrap_iters": 1}}, "eval.bootstrap_iters", "at least 2"),
        ({"eval": {"mc_choices": 52}}, "eval.mc_choices", "less than or equal to 51"),
        ({"eval": {"tasks": ["lfr_ppl", "lfr_ppl"]}}, "eval.tasks[1]", "listed twice"),
        ({"eval": {"tasks": []}}, "eval.tasks", "at least 1 item"),
        ({"eval": {"references": ["gpt2", "gpt2"]}}, "eval.references[1]", "listed twice"),
        ({"eval": {"tasks": ["lfr_ppl", "hellaswg"]}}, "eval.tasks[1]", "did you mean 'hellaswag'"),
        ({"train": {"lr": "1e-3"}}, "train.lr", "write 1.0e-3"),
        ({"train": {"batch_size": "16"}}, "train.batch_size", "valid integer"),
        ({"train": {"epochs": float("inf")}}, "train.epochs", "finite number"),
        ({"profile": {"threshold_sd": float("nan")}}, "profile.threshold_sd", "finite number"),
        ({"custom_models": {"v 1": {"n_layer": 1, "n_head": 1, "n_embd": 8}}},
         "custom_models['v 1'] (the key)", "should match pattern"),
        ({"eval": {"references": ["/models/mine"]}}, "eval.references[0]", "should match pattern"),
        ({"custom_models": {"gpt2": {"n_layer": 1, "n_head": 1, "n_embd": 8}}}, "custom_models.gpt2",
         "a preset size already"),
    ],
)
def test_bound_error_names_the_full_path(raw, key, hint):
    with pytest.raises(ConfigError) as err:
        validate_config(raw, "my.yaml")
    msg = str(err.value)
    assert f"  - {key}" in msg and hint in msg, msg


def test_grad_accum_follows_from_the_global_batch_for_any_layout():
    train = validate_config({"train": {"batch_size": 12, "batch_blocks": 480}}).train
    assert [train.accumulation(world) for world in (1, 8, 40)] == [40, 5, 1]
    assert validate_config({}).train.accumulation(8) == 1  # without it: grad_accum, as before
    assert "batch_blocks" not in validate_config({}).train.model_dump()  # existing hashes and params


def test_a_time_limit_leaving_more_than_the_stop_margin_is_accepted():
    five = validate_config({"resources": {"default": {"runtime_min": 5}}})  # 3 of 5 minutes to train
    assert five.resources["default"].runtime_min == 5
    validate_config({**NANO, "resources": {"nano": {"runtime_min": 1, "stop_margin_s": 29}}})


def test_generation_budget_must_leave_context_in_the_whole_config():
    raw = {"data": {"block_size": 32}, "eval": {"tasks": ["lfr_ppl", "wmt14-fr-en"], "max_gen_toks": 32}}
    with pytest.raises(ConfigError, match=r"  - eval.max_gen_toks: 32 leaves no context of data.block_size"):
        validate_config(raw, whole=True)
    validate_config(raw)  # a job's sections: the data section may be another job's
    validate_config({**raw, "eval": {"tasks": ["lfr_ppl"], "max_gen_toks": 32}}, whole=True)  # no generation


def test_task_names_are_not_skipped_without_lm_eval(monkeypatch):
    def missing():
        raise ImportError("No module named 'lm_eval'")

    monkeypatch.setattr(lm_eval_registry, "lm_eval_tasks", missing)
    validate_config({"eval": {"tasks": ["lfr_mc"]}})  # the offline tasks need no registry
    with pytest.raises(ConfigError, match=r"eval.tasks\[1\]: cannot check these task names: lm-eval is not"):
        validate_config({"eval": {"tasks": ["lfr_mc", "hellaswag"]}})


def test_the_task_index_is_kept_across_bytecode_and_rebuilt_for_new_tasks(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tasks = tmp_path / "lm_eval/tasks"
    (tasks / "hellaswag").mkdir(parents=True)
    first = lm_eval_registry.index_file("0.4.9", tasks)
    assert first.parent == tmp_path / "cache/lfr"
    (tasks / "__pycache__").mkdir()  # what the first import of lm_eval.tasks writes
    assert lm_eval_registry.index_file("0.4.9", tasks) == first
    (tasks / "arc").mkdir()
    assert lm_eval_registry.index_file("0.4.9", tasks) != first
    assert lm_eval_registry.index_file("0.4.10", tasks) != lm_eval_registry.index_file("0.4.9", tasks)


def test_custom_model_size_is_accepted():
    cfg = validate_config({"models": ["wide"], "custom_models": {"wide": {"n_layer": 1, "n_head": 2,
                                                                          "n_embd": 32}}})
    assert cfg.model_preset("wide").n_embd == 32


def test_a_config_file_must_be_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)
    path.write_text("")
    assert read_yaml(path) == {}
    with pytest.raises(FileNotFoundError, match=r"config file .* not found"):
        read_yaml(tmp_path / "none.yaml")


def test_committed_schema_is_up_to_date():
    committed = json.loads((REPO / "workflow/schemas/config.schema.json").read_text())
    assert committed == json_schema(), "run `make schema` to regenerate the JSON Schema"


def test_committed_reference_page_is_up_to_date():
    committed = (REPO / "docs/configuration.md").read_text()
    assert committed == reference_page(), ("docs/configuration.md differs from the schema's docstrings: "
                                           "run `make schema` to regenerate it (edit the docstrings, not it)")


def test_every_key_has_a_description_on_the_reference_page():
    """Each field of the config and of every method's options has a docstring, and the page shows
    each key with it (nested sections and list items included; methods that share their options,
    LFR's controls, under the first of them)."""
    first = {}
    for name, sampler in SAMPLERS.items():
        first.setdefault(sampler.Options, name)
    page, keys = reference_page(), 0
    options = [s for model, name in first.items() for s in sections(model, f"method_options.{name}")]
    for key, model in [*sections(ExperimentConfig, ""), *options]:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no docstring"
            assert f"| `{key}.{name}` |" in page if key else f"| `{name}` |" in page
            keys += 1
    assert keys == 142  # 102 of the config, 40 of the methods' options
    assert "| `train.lr` | number (above 0) | `0.001` | Peak learning rate" in page
    assert "| `method_options.lfr.schedule[].drop` | number (at least 0, below 1) | `0.0` |" in page
    assert "| `custom_models.<size>.n_layer` | integer (at least 1) | required |" in page


def config_keys() -> dict[str, str]:
    """Every key name of the config and of the methods' options: {name: a full key with it}."""
    keys: dict[str, str] = {}
    options = [s for method, sampler in SAMPLERS.items()
               for s in sections(sampler.Options, f"method_options.{method}")]
    for key, model in [*sections(ExperimentConfig, ""), *options]:
        for name in model.model_fields:
            keys.setdefault(name, f"{key}.{name}" if key else name)
    return keys




def test_no_function_shares_a_name_with_a_config_key():
    """A module-level function named like a key (`method_options(...)` next to
    `cfg.method_options`) reads as the key's value; the functions take other names."""
    keys = config_keys()
    clashes = [f"{path.relative_to(REPO)}: {node.name}() and the key {keys[node.name]}"
               for path in sorted((REPO / "lfr").rglob("*.py"))
               for node in ast.parse(path.read_text()).body
               if isinstance(node, ast.FunctionDef) and node.name in keys]
    assert clashes == []
    assert {"train", "method_options", "token_dtype", "budgets", "reference_size", "band"} <= set(keys)


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


def test_a_config_error_gives_back_its_problems():
    err = ConfigError.of("my.yaml", ["train.lr: too big", "seeds[1]: listed twice\n  (a second line)"])
    assert str(err).splitlines()[0] == "my.yaml: invalid config (2 problem(s)):"
    assert err.problems == ["train.lr: too big", "seeds[1]: listed twice\n  (a second line)"]
    assert ConfigError("c.yaml: the top level must be a mapping").problems == [
        "c.yaml: the top level must be a mapping"]


def test_llama_presets_shapes_and_llama_only_keys():
    from lfr.config import MODEL_PRESETS, ModelPreset, config_hash

    # Llama's MLP rule: 8/3 d rounded up to a multiple of 256; gpt2's 4 d
    assert [MODEL_PRESETS[s].ffn_size for s in ("llama-nano", "llama-120m", "llama-300m", "llama-500m")] \
        == [256, 2048, 2816, 3584]
    assert ModelPreset(arch="llama", n_layer=1, n_head=2, n_embd=64, intermediate_size=100).ffn_size == 100
    assert MODEL_PRESETS["gpt2"].ffn_size == 3072
    # a gpt2 preset dumps as before `arch` existed, so its runs keep their config_hash
    assert MODEL_PRESETS["nano"].model_dump(mode="json") == {"n_layer": 2, "n_head": 2, "n_embd": 64}
    assert config_hash(MODEL_PRESETS["nano"].model_dump(mode="json")) == "ee34981aae21"  # as before arch
    llama = MODEL_PRESETS["llama-nano"].model_dump(mode="json")
    assert llama["arch"] == "llama" and ModelPreset.model_validate(llama) == MODEL_PRESETS["llama-nano"]
    gqa = {"arch": "llama", "n_layer": 1, "n_head": 4, "n_embd": 32, "n_kv_head": 2}
    cfg = validate_config({"models": ["w"], "custom_models": {"w": gqa}})
    assert validate_config(cfg.model_dump(mode="json")) == cfg  # a job's JSON validates back


@pytest.mark.parametrize(
    ("model", "key", "hint"),
    [
        ({"n_kv_head": 1}, "n_kv_head", "n_kv_head is a llama key; remove it or set arch: llama"),
        ({"intermediate_size": 64}, "intermediate_size", "a llama key"),
        ({"tie_embeddings": False}, "tie_embeddings", "gpt2 always ties its embeddings"),
        ({"arch": "llama", "n_kv_head": 3}, "n_kv_head", "n_kv_head=3 does not divide n_head=4"),
        ({"arch": "bert"}, "arch", "'gpt2' or 'llama'"),
    ],
)
def test_a_bad_model_shape_names_the_key(model, key, hint):
    raw = {"custom_models": {"w": {"n_layer": 1, "n_head": 4, "n_embd": 32, **model}}}
    with pytest.raises(ConfigError) as err:
        validate_config(raw, "my.yaml")
    assert f"  - custom_models.w.{key}: " in str(err.value) and hint in str(err.value), str(err.value)
