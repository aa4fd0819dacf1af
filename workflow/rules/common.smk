# Config validation and the helpers that the rules share.
# -------------------------------------------------------------------------------------------
import json
import os
import re
import shlex
import sys
from pathlib import PurePosixPath

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

from lfr import folders, grid
from lfr.config import MODEL_PRESETS, ConfigError, budget_name
from lfr.config_files import merge_config, typed_overrides
from lfr.data import DATA_FORMAT
from lfr.sampling import SAMPLERS, validated_options

# --config values come as strings (`seeds=[0,1]`: ['0', '1']); re-read them as typed values. Snakemake
# has merged them into config already, mappings key by key, so this replaces the same leaves.
merge_config(config, typed_overrides(workflow.config_settings.config))

# The lfr models and the methods (lfr/grid.py) give one clear message per bad key; the JSON Schema
# generated from the models (`python -m lfr schema`) then checks the structure; CFG carries the
# filled-in defaults.
try:
    CFG = grid.validate_config(config, "config", whole=True)
except ConfigError as err:
    sys.exit(f"{err}\nNothing was run.")
validate(config, "../schemas/config.schema.json", set_default=False)  # CFG holds the defaults
for note in grid.unequal_lengths(CFG):
    print(f"Note: {note}", file=sys.stderr)

# Where this config's data and everything built on it live (corpus, tokenizer, data, runs,
# evaluations, profiles, their logs): results/ for the embedded default's data (the demo's
# paths), results/corpora/<fingerprint>/ for any other corpus, tokenizer or data setting, so that
# one never replaces another's runs. The checks below stop before any job.
DATA = folders.data_root(CFG, grid.load_config(f"{workflow.basedir}/config/config.yaml"))
try:
    folders.check_data_root(CFG, DATA)
    CORPUS_FILES = folders.corpus_files(CFG)
    folders.check_corpus_size(CFG, DATA)
except (ConfigError, FileNotFoundError, ValueError) as err:
    sys.exit(f"{err}\nNothing was run.")

# {lr}: "" or "-lr<multiplier>" (the learning-rate check's runs, lr_check)
RUNS_DIR = f"{DATA}/runs/{{size}}/{{method}}/budget{{budget}}{{lr}}/seed{{seed}}"
GRID_RUN = RUNS_DIR.replace("{budget}", budget_name(1.0)).replace("{lr}", "")  # the runs that are profiled and evaluated
# This config's tables and figures (config key `name`); runs, profiles and evaluations are shared.
TABLES, FIGURES = f"{CFG.result_set}/tables", f"{CFG.result_set}/figures"
SET_LOGS = f"results/logs/{CFG.name}" if CFG.name else "results/logs"
SCORES_DIR = f"{DATA}/scores/{{method}}/{{ref_size}}/seed{{seed}}"  # reference model + block scores


# Rules run `python -m lfr`. Without --sdm conda, that `python` must be the one running snakemake
# (e.g. .venv/bin/python even when the venv is not activated), so put its folder first on PATH.
if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
    os.environ.update(PATH=os.pathsep.join([os.path.dirname(sys.executable), os.getenv("PATH", "")]))


def alternation(names):
    return "|".join(re.escape(n) for n in sorted(names))


def lr_suffix(multiplier):
    """A learning-rate check's run folder suffix (budget1-lr0.5); "" at train.lr."""
    return "" if multiplier == 1 else f"-lr{budget_name(multiplier)}"


wildcard_constraints:
    size=alternation(CFG.models),
    ref_size=alternation({**MODEL_PRESETS, **CFG.custom_models}),
    method=alternation(CFG.methods),
    budget=alternation({budget_name(b) for b in (1.0, *CFG.sweep.budgets)}),
    lr=f"({alternation([lr_suffix(m) for m in CFG.lr_check.multipliers])})?",  # may be empty
    seed=r"\d+",


def stage_config(*sections, exclude=()):
    """The config sections a stage depends on, as JSON (a param: editing one reruns its users);
    `exclude`: keys of those sections that do not change the stage's output."""
    dump = CFG.model_dump(mode="json")
    job = {key: dump[key] for key in (*sections, "offline")}
    for dotted in exclude:
        section, key = dotted.split(".")
        del job[section][key]
    return json.dumps(job, sort_keys=True)


def config_keys(section, *keys, **more):
    """Like stage_config, for only some keys of one section (and of the sections in `more`:
    section=(key, ...))."""
    dump = CFG.model_dump(mode="json")
    job = {name: {k: dump[name][k] for k in names} for name, names in {section: keys, **more}.items()}
    return json.dumps({**job, "offline": dump["offline"]}, sort_keys=True)


def run_config(size, method):
    """The config of one training job: its own size and method and that method's options (with
    their defaults filled in), not the grid's lists, so adding a size or a method, or editing
    another method's options, changes no param of this job and retrains nothing."""
    dump = CFG.model_dump(mode="json")
    options = validated_options(method, CFG.method_options.get(method, {})).model_dump(mode="json")
    sizes = {size, options.get("reference_size")}  # a reference (ppl-prune, rho-loss) may be custom
    job = {key: dump[key] for key in ("corpus", "tokenizer", "data", "train", "offline")}
    job |= {"models": [size], "methods": [method], "method_options": {method: options},
            "custom_models": {k: v for k, v in dump["custom_models"].items() if k in sizes}}
    return json.dumps(job, sort_keys=True)


def corpus_inputs(wildcards):
    from lfr.corpus import BUNDLED_CORPUS

    if CFG.corpus.source == "bundled":
        return [str(BUNDLED_CORPUS)]
    return [str(p) for p in CORPUS_FILES]


def all_runs():
    """Every training run's folder, the sweep's included."""
    return [RUNS_DIR.format(size=size, method=method, budget=budget_name(budget), lr=lr_suffix(lr), seed=seed)
            for size, method, budget, lr, seed in [
                *((size, method, budget, 1.0, seed) for size, method, budget, seed in grid.trained_runs(CFG)),
                *((size, method, 1.0, lr, seed) for size, method, lr, seed in grid.lr_runs(CFG))]]


def reference_slug(name):
    """A hub name as one path component: EleutherAI/pythia-160m -> EleutherAI--pythia-160m."""
    return "--".join(PurePosixPath(name).parts)


def reference_model(wildcards):
    return str(PurePosixPath(*wildcards.reference.split("--")))


def all_evals():
    runs = [f"{DATA}/eval/{size}/{method}/seed{seed}/results.parquet"
            for size, method, seed in grid.runs(CFG)]
    refs = [f"{DATA}/eval/reference/{reference_slug(r)}/results.parquet" for r in CFG.eval.references]
    return runs + refs


def all_reference_bpb():
    return [f"{DATA}/eval/reference/{reference_slug(r)}/val_bpb.json" for r in CFG.eval.references]


def train_gpus(wildcards):
    """GPUs per node of a training job."""
    return grid.size_resources(CFG, wildcards.size).gpus


def profile_gpus(wildcards):
    """A profiling pass runs on one GPU where its run trained on GPUs."""
    return min(1, train_gpus(wildcards))


def reference_gpus(wildcards):
    """A reference model (ppl-prune, rho-loss) trains on one GPU where its size's runs use GPUs."""
    return min(1, grid.size_resources(CFG, wildcards.ref_size).gpus)


# What each job asks a cluster for, in the SLURM plugin's resource names (docs/cluster.md: Fitting
# the profile to a cluster). They sit in the rules, not in the profile, so that a user fits them one
# key at a time: `--set-resources evaluate:mem_mb=32000` (or the set-resources of an override
# profile) replaces that key of that rule and keeps the rest, whereas a command line's
# --set-resources replaces a profile's whole set-resources. A local run reads only `gpu` (with
# the local profile: how many of the box's devices a job takes).
CPU_JOB = {"mem_mb": 16000, "runtime": 120}
GPU_JOB = {"gpu": 1, "cpus_per_gpu": 8, "mem_mb": 64000, "runtime": 240}
CLUSTER_JOBS = {
    "corpus": CPU_JOB,  # paper-v2 streams SlimPajama for hours: docs/cluster.md, where the corpus is read
    "tokenizer": CPU_JOB,
    "tokenize": {**CPU_JOB, "cpus_per_task": 32, "mem_mb": 64000, "runtime": 480},
    "eval_tasks": CPU_JOB,
    "train": {"cpus_per_gpu": 8},  # nodes, GPUs, memory and time limit per size: the config's
    "score_reference": {"cpus_per_gpu": 8},
    "evaluate": GPU_JOB,
    "evaluate_reference": GPU_JOB,
    "profile": {key: v for key, v in GPU_JOB.items() if key != "gpu"},  # gpu: profile.smk
    "reference_bpb": {**GPU_JOB, "runtime": 60},  # one forward pass per validation block
}


def cluster_resources(rule, gpus=None):
    """The rule's CLUSTER_JOBS entry and its partition: $LFR_GPU_PARTITION for a job with GPUs,
    else $LFR_CPU_PARTITION (either unset: the cluster's default). `gpus`: the job's GPU count, a
    function of the wildcards, where the config decides it (the size's resources); else the
    entry's `gpu`."""

    def partition(wildcards):
        has_gpus = gpus(wildcards) if gpus else CLUSTER_JOBS[rule].get("gpu")
        return os.environ.get("LFR_GPU_PARTITION" if has_gpus else "LFR_CPU_PARTITION")

    return {**CLUSTER_JOBS[rule], "slurm_partition": partition}


def train_slurm(size):
    """A training job's resources (None: unset), in the SLURM plugin's terms where it reads them;
    `node_gpus`, GPUs per node, is lfr.launch's. `runtime` only if the config asks for a limit.
    One node: `gpu`, sbatch's --gpus (the job's total). Several nodes: a task and `gres` G GPUs on
    each (gres counts per node), and `mpi`, so that the rule's shell runs in the job itself, not
    inside a one-task srun step, and starts its own step across the nodes (lfr/launch.py);
    tasks_per_gpu 0 keeps the plugin from also passing `tasks` as --ntasks-per-gpu."""
    r = grid.size_resources(CFG, size)
    if r.nodes == 1:
        placement = {"gpu": r.gpus}
    else:
        placement = {"gres": f"gpu:{r.gpus}", "tasks": r.nodes, "tasks_per_gpu": 0, "mpi": "srun"}
    return {"nodes": r.nodes, "node_gpus": r.gpus, **placement, "runtime": r.runtime_min,
            "mem_mb": r.mem_mb}


# The train rule's resources, each looked up per size (resources, unlike params, rerun nothing).
TRAIN_RESOURCES = {
    key: lambda wildcards, key=key: train_slurm(wildcards.size).get(key)
    for key in ("nodes", "node_gpus", "gpu", "gres", "tasks", "tasks_per_gpu", "mpi", "runtime", "mem_mb")
}


def time_limit_arg(wildcards, resources):
    """`--time-limit-min` only where the job has a limit (the config's runtime_min, or
    --set-resources): the run then checkpoints and stops before it, and the retry resumes (under
    SLURM it also reads the limit that SLURM enforces). `--stop-margin-s`: the config's."""
    margin = grid.size_resources(CFG, wildcards.size).stop_margin_s
    limit = [f"--time-limit-min {resources.runtime}"] if "runtime" in resources.keys() else []
    return " ".join(limit + ([f"--stop-margin-s {margin:g}"] if margin else []))


def profiled_runs():
    return [GRID_RUN.format(size=s, method=m, seed=seed) for s, m, seed in grid.profiled_runs(CFG)]


def profile_dirs():
    return [f"{DATA}/profiles/{s}/{m}/seed{seed}" for s, m, seed in grid.profiled_runs(CFG)]


def snapshot_arg(wildcards):
    """`--snapshots JSON` for the runs that `profile:` selects: they save weight snapshots."""
    if wildcards.budget != budget_name(1.0) or wildcards.lr or not grid.profiled(
            CFG, wildcards.size, wildcards.method, int(wildcards.seed)):
        return ""
    keys = ("every_tokens", "phase_boundaries", "snapshot_dtype")
    return f"--snapshots {shlex.quote(CFG.profile.model_dump_json(include=set(keys)))}"


def block_scores_input(wildcards):
    """The reference scores of a method that needs them (ppl-prune, rho-loss), else nothing."""
    if not SAMPLERS[wildcards.method].needs_block_scores:
        return []
    ref_size = grid.reference_model_size(CFG, wildcards.method)
    folder = SCORES_DIR.format(method=wildcards.method, ref_size=ref_size, seed=wildcards.seed)
    return os.path.join(folder, "block_scores.parquet")


def block_scores_arg(wildcards, input):
    return f"--block-scores {input.block_scores}" if input.block_scores else ""
