"""The experiment grid: which runs a validated config plans, and the checks that need the methods.

lfr/config.py is the schema alone; this module adds what needs a registry: method names, each
method's options (validated by the method itself, through `lfr.sampling.validated_options`),
lm-eval's task names (lfr/lm_eval_registry.py), and the checks across keys of the grid
(`method_sizes`, `profile`, `size_seeds`, `resources`). `validate_config` and `load_config` are
the entry points of the CLI and the Snakefile: one ConfigError names every bad key. The queries (`runs`,
`profiled_runs`, ...) are functions of a config that these validated. This module imports no torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lfr.config import MODEL_PRESETS, ConfigError, ExperimentConfig, SizeResources
from lfr.config_errors import path, problem_lines
from lfr.config_files import read_yaml
from lfr.lm_eval_registry import LOCAL_TASKS, unknown_task
from lfr.sampling import SAMPLERS, validated_options

Run = tuple[str, str, int]
"""(size, method, seed) of one run of the grid, at the default budget 1."""
TrainedRun = tuple[str, str, float, int]
"""(size, method, budget, seed) of one training run, the sweep's included."""
LRRun = tuple[str, str, float, int]
"""(size, method, learning-rate multiplier, seed) of one run of the learning-rate check."""


# -- the runs of a config ---------------------------------------------------------------------------
def runs(cfg: ExperimentConfig) -> list[Run]:
    """Every (size, method, seed) of the grid, in config order."""
    return [(size, method, seed) for size in cfg.models for method in cfg.methods
            if size in cfg.method_sizes.get(method, cfg.models)
            for seed in cfg.size_seeds.get(size, cfg.seeds)]


def run_budgets(cfg: ExperimentConfig, size: str, method: str) -> list[float]:
    """The budgets (multiples of the default run length) a method trains at a size: 1, and the
    sweep's where it sweeps that method and size; ascending."""
    sw = cfg.sweep
    swept = method in sw.methods and (sw.sizes is None or size in sw.sizes)
    return sorted({1.0, *(sw.budgets if swept else [])})


def trained_runs(cfg: ExperimentConfig) -> list[TrainedRun]:
    """Every training run: each run of the grid at each of its budgets (`run_budgets`). Only the
    budget-1 runs (`runs`) are profiled and evaluated downstream."""
    seeds: dict[tuple[str, str], list[int]] = {}
    for size, method, seed in runs(cfg):
        seeds.setdefault((size, method), []).append(seed)
    return [(size, method, budget, seed) for (size, method), run_seeds in seeds.items()
            for budget in run_budgets(cfg, size, method) for seed in run_seeds]


def lr_runs(cfg: ExperimentConfig) -> list[LRRun]:
    """Every run of the learning-rate check (`lr_check`): each run of the grid whose method and
    size it names, at each multiplier of train.lr, at budget 1. Neither profiled nor evaluated
    downstream."""
    lc = cfg.lr_check
    return [(size, method, mult, seed) for size, method, seed in runs(cfg)
            if method in lc.methods and (lc.sizes is None or size in lc.sizes)
            for mult in lc.multipliers]


def profiled(cfg: ExperimentConfig, size: str, method: str, seed: int) -> bool:
    """Whether the run (size, method, seed) is profiled (saves snapshots, gets a profile)."""
    p = cfg.profile
    return ((p.methods is None or method in p.methods) and (p.sizes is None or size in p.sizes)
            and seed in p.seeds)


def profiled_runs(cfg: ExperimentConfig) -> list[Run]:
    return [run for run in runs(cfg) if profiled(cfg, *run)]


def size_resources(cfg: ExperimentConfig, size: str) -> SizeResources:
    """The job resources of a size: its own entry of `resources`, else `default`'s."""
    return cfg.resources.get(size, cfg.resources.get("default", SizeResources()))


def smallest_model(cfg: ExperimentConfig) -> str:
    """The size in `models` with the fewest parameters (first on ties)."""
    return min(cfg.models, key=lambda size: param_count(cfg, size)[0])


def param_count(cfg: ExperimentConfig, size: str, vocab_size: int | None = None) -> tuple[int, int]:
    """(total, non-embedding) parameters of a size as lfr.model builds it, without torch: tied
    embeddings counted once, position embeddings (GPT-2's) included in the total; non-embedding
    leaves out the token and position embeddings (an untied output layer stays in). `vocab_size`:
    the tokenizer's, if known (default: the config's)."""
    p, V, T = cfg.model_preset(size), vocab_size or cfg.vocab_size, cfg.data.block_size
    d, L = p.n_embd, p.n_layer
    if p.arch == "gpt2":  # LayerNorms and biases; the output layer is the token embedding
        nonemb = L * (12 * d * d + 13 * d) + 2 * d
        return V * d + T * d + nonemb, nonemb
    kv = p.kv_heads * d // p.n_head  # llama: no biases, RMSNorm weights only
    nonemb = L * (2 * d * d + 2 * d * kv + 3 * d * p.ffn_size + 2 * d) + d
    if not p.tie_embeddings:
        nonemb += V * d
    return V * d + nonemb, nonemb


def world_size(cfg: ExperimentConfig, size: str) -> int:
    """Training processes of a size's job: nodes x GPUs per node (1 on a CPU)."""
    r = size_resources(cfg, size)
    return r.nodes * max(1, r.gpus)


@dataclass(frozen=True)
class BlockBudget:
    """How a size meets `train.tokens_per_param` at budget 1 (`block_budget`)."""

    blocks: int
    """Training blocks it draws from: a seeded subset (lfr.data.subset_ids), or all."""
    epochs: float
    """Passes over them at budget 1: train.epochs, or more where the corpus is too small."""
    tokens: int
    """tokens_per_param x total parameters, rounded to whole optimizer steps."""


def block_budget(cfg: ExperimentConfig, size: str, available: int, params: int,
                 batch_blocks: int) -> BlockBudget | None:
    """With `train.tokens_per_param`, the blocks and passes that give a size that many tokens
    per parameter at budget 1 (None without it): `train.epochs` passes over a subset of
    ceil(steps x batch / epochs) of the `available` training blocks, steps = the tokens in
    whole steps of `batch_blocks`. A corpus too small raises ValueError naming the size, the
    tokens needed and those available, unless `train.repeat_data` (then more passes over all)."""
    tc, T = cfg.train, cfg.data.block_size
    if tc.tokens_per_param is None:
        return None
    steps = max(1, round(tc.tokens_per_param * params / (batch_blocks * T)))
    tokens = steps * batch_blocks * T
    blocks = math.ceil(steps * batch_blocks / tc.epochs)
    if blocks <= available:
        return BlockBudget(blocks, tc.epochs, tokens)
    if not tc.repeat_data:
        raise ValueError(
            f"size {size} ({params:,} parameters) needs {tokens:,} tokens at train.tokens_per_param="
            f"{tc.tokens_per_param:g}, i.e. {blocks:,} blocks of {T} for train.epochs={tc.epochs:g} "
            f"passes, but the corpus has {available:,} training blocks ({available * T:,} tokens). "
            "Lower train.tokens_per_param, raise train.epochs, add data, or set "
            "train.repeat_data: true to train on every block with more passes")
    return BlockBudget(available, (steps * batch_blocks + 0.5) / available, tokens)


def corpus_problems(cfg: ExperimentConfig, available: int) -> list[str]:
    """`block_budget`'s refusal for every size, given the corpus's training blocks (the config
    check, once the data exists)."""
    problems = []
    for size in cfg.models:
        try:
            world = world_size(cfg, size)
            block_budget(cfg, size, available, param_count(cfg, size)[0],
                         cfg.train.batch_size * cfg.train.accumulation(world) * world)
        except ValueError as err:
            problems.append(f"train.tokens_per_param: {err}")
    return problems


def reference_model_size(cfg: ExperimentConfig, method: str) -> str:
    """The size of the reference model of a method that needs reference scores (ppl-prune, rho-loss): its
    option `reference_size`, else the smallest size in `models`, the cheapest to train."""
    if not SAMPLERS[method].needs_block_scores:
        raise ValueError(f"method {method!r} uses no reference model")
    opts = validated_options(method, cfg.method_options.get(method, {}))
    return getattr(opts, "reference_size", None) or smallest_model(cfg)


def unequal_lengths(cfg: ExperimentConfig) -> list[str]:
    """A line for each method that the config gives another run length than random's (its
    `epochs` option): its runs train other tokens at every budget, so the tables leave it out of
    the equal-budget comparison (iso_speedup still compares it, at its own compute)."""
    def epochs(method: str) -> float:
        return getattr(validated_options(method, cfg.method_options.get(method, {})), "epochs",
                       None) or cfg.train.epochs

    if "random" not in cfg.methods:
        return []
    base = epochs("random")
    random_key = ("method_options.random.epochs" if "epochs" in cfg.method_options.get("random", {})
                  else "train.epochs")
    return [f"method_options.{m}.epochs={epochs(m):g} but {random_key}={base:g}: {m} trains "
            f"{epochs(m) / base:.2f}x random's tokens at every budget, so its rows have no "
            "equal-budget comparison (delta_val_loss, verdict); remove the option for equal tokens"
            for m in cfg.methods if epochs(m) != base]


# -- validation -------------------------------------------------------------------------------------
def validate_config(raw: Any, source: str = "config", whole: bool = False) -> ExperimentConfig:
    """Validate a raw config mapping: the schema, the methods, then the checks across the grid's
    keys; raise one ConfigError naming every bad key. `whole`: `raw` is the whole config (the
    Snakefile's), not the sections of one job."""
    cfg, problems = schema_problems(raw, whole)
    problems += method_problems(raw) + task_problems(raw)
    if cfg is not None and not problems:
        problems = grid_problems(cfg)
    if problems:
        raise ConfigError.of(source, sorted(problems, key=config_order))
    assert cfg is not None
    return cfg


def load_config(path: str | Path) -> ExperimentConfig:
    """The validated config of a YAML file, a whole config."""
    return validate_config(read_yaml(path), str(path), whole=True)


TOP_KEYS = {key: i for i, key in enumerate(ExperimentConfig.model_fields)}


def config_order(problem: str) -> int:
    """Position of a problem's top-level key in the config, so that the schema's problems and the
    methods' read in one order (a problem of the top level, or of an unknown key, first)."""
    key = re.match(r"[A-Za-z0-9_-]*", problem).group()
    return TOP_KEYS.get(key, -1)


def whole_config_problems(cfg: ExperimentConfig) -> list[str]:
    """Checks across sections that only the whole config can make: a job validates just the
    sections it gets (the others take their defaults)."""
    problems = []
    if cfg.eval.max_gen_toks >= cfg.data.block_size and set(cfg.eval.tasks) - set(LOCAL_TASKS):
        problems.append(f"eval.max_gen_toks: {cfg.eval.max_gen_toks} leaves no context of "
                        f"data.block_size={cfg.data.block_size} to generation tasks; lower it")
    return problems


def schema_problems(raw: Any, whole: bool = False) -> tuple[ExperimentConfig | None, list[str]]:
    """The config that `raw` validates to by lfr/config.py's schema (None if it does not) and its
    problems, `<key>: <what is wrong>` each. `whole`: `raw` is the whole config (the Snakefile's),
    not the sections of one job."""
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        return None, problem_lines(err)
    return cfg, whole_config_problems(cfg) if whole else []




def task_problems(raw: Any) -> list[str]:
    """Every name of `eval.tasks` that is neither ours nor lm-eval's: a typo fails now, not after
    the training jobs. Values of the wrong type are the schema's to name."""
    section = raw.get("eval") if isinstance(raw, dict) else None
    tasks = section.get("tasks") if isinstance(section, dict) else None
    problems = []
    for i, name in enumerate(tasks if isinstance(tasks, list) else []):
        if isinstance(name, str) and (why := unknown_task(name)):
            problems.append(f"{path(('eval', 'tasks', i))}: {why}")
            if "not importable" in why:
                break  # one line says it
    return problems


def method_problems(raw: Any) -> list[str]:
    """The unknown names of `methods` and every bad key of `method_options`, each method's options
    validated by the method. Values of the wrong type are the schema's to name."""
    if not isinstance(raw, dict):
        return []
    problems = []
    methods = raw.get("methods")
    for i, name in enumerate(methods if isinstance(methods, list) else []):
        if isinstance(name, str) and name not in SAMPLERS:
            problems.append(f"{path(('methods', i))}: {name!r} is unknown; choose from {sorted(SAMPLERS)}")
    options = raw.get("method_options")
    for name, opts in (options.items() if isinstance(options, dict) else []):
        if not isinstance(name, str) or not isinstance(opts, dict):
            continue
        if name not in SAMPLERS:
            problems.append(f"{path(('method_options', name))}: {name!r} is not a method; choose from "
                            f"{sorted(SAMPLERS)}")
            continue
        try:
            validated_options(name, opts)
        except ConfigError as err:
            problems += err.problems
    return problems


def grid_problems(cfg: ExperimentConfig) -> list[str]:
    """Checks across keys of a config whose sections and methods are valid: every name a key
    refers to exists, and a `profile` selection selects some run."""
    problems = []

    def problem(msg: str, *key: str | int) -> None:
        problems.append(f"{path(key)}: {msg}")

    for method, sizes in cfg.method_sizes.items():
        if method not in cfg.methods:
            problem(f"{method!r} is not in `methods` ({cfg.methods})", "method_sizes", method)
        for i, size in enumerate(sizes):
            if size not in cfg.models:
                problem(f"{size!r} is not in `models` ({cfg.models})", "method_sizes", method, i)
    for key, known in (("methods", cfg.methods), ("sizes", cfg.models)):
        for i, name in enumerate(getattr(cfg.profile, key) or []):
            if name not in known:
                problem(f"{name!r} is not run; choose from {known}", "profile", key, i)
    sizes = {**MODEL_PRESETS, **cfg.custom_models}
    references = set()  # e.g. ppl-prune's or rho-loss's reference model, trained by a job of its own
    for method, raw in cfg.method_options.items():
        size = getattr(validated_options(method, raw), "reference_size", None)
        if size is not None and size not in sizes:
            problem(f"{size!r} is unknown; choose from {sorted(sizes)}", "method_options", method,
                    "reference_size")
        references.add(size)
    run_seeds = {*cfg.seeds, *(s for seeds in cfg.size_seeds.values() for s in seeds)}
    if cfg.profile.seeds != [0]:  # the default may profile nothing (seeds: [1]) as before
        for i, seed in enumerate(cfg.profile.seeds):
            if seed not in run_seeds:
                problem(f"no run has seed {seed} (`seeds`, `size_seeds`)", "profile", "seeds", i)
    p = cfg.profile
    if not problems and (p.methods or p.sizes or p.seeds != [0]) and not profiled_runs(cfg):
        problem("selects no run of the grid (`method_sizes` and `size_seeds` included); "
                "`methods: []` profiles nothing on purpose", "profile")
    if cfg.train.batch_blocks is not None:  # each size's step, across its nodes and GPUs
        for size in cfg.models:
            r = size_resources(cfg, size)
            try:
                cfg.train.accumulation(r.nodes * max(r.gpus, 1))
            except ValueError as err:
                problem(f"{err}: resources.{size} runs {r.nodes} node(s) x {max(r.gpus, 1)} GPU(s)",
                        "train", "batch_blocks")
    for name in cfg.eval.reference_tokens:
        if name not in cfg.eval.references:
            problem(f"{name!r} is not in `eval.references` ({cfg.eval.references})", "eval",
                    "reference_tokens", name)
    for section in ("sweep", "lr_check"):  # more runs of some methods and sizes of the grid
        more = getattr(cfg, section)
        for i, method in enumerate(more.methods):
            if method not in cfg.methods:
                problem(f"{method!r} is not in `methods` ({cfg.methods})", section, "methods", i)
        for i, size in enumerate(more.sizes or []):
            if size not in cfg.models:
                problem(f"{size!r} is not in `models` ({cfg.models})", section, "sizes", i)
    if cfg.lr_check.multipliers and not cfg.lr_check.methods:
        problem("multipliers without methods check nothing; name the methods to check", "lr_check",
                "methods")
    for size in cfg.size_seeds:
        if size not in cfg.models:
            problem(f"{size!r} is not in `models` ({cfg.models})", "size_seeds", size)
    for size in cfg.resources:
        if size not in {*cfg.models, *references, "default"}:
            problem(f"{size!r} is not in `models` ({cfg.models}), a reference_size or `default`",
                    "resources", size)
    return problems
