"""The experiment config's schema: one typed view of `config/*.yaml`.

The same models validate the Snakemake config and the JSON that each `python -m lfr <stage>`
receives, so a typo fails before any job runs, with a message that names the key. Each field's
docstring is its documentation: docs/configuration.md and workflow/schemas/config.schema.json are
generated from these models (`make schema`; lfr/schema.py), and a test keeps both in sync.

This module is the schema alone: it imports no other lfr module (and no torch), so that everything
else can import it. Around it: lfr/config_errors.py turns validation errors into one line per bad
key; lfr/config_files.py reads config files and Snakemake's `--config` overrides; lfr/grid.py adds
the checks that need a registry (method names and options, lm-eval task names) or the whole grid,
and its `validate_config`/`load_config` are the entry points.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError


def key_error(msg: str, *sub: str | int) -> PydanticCustomError:
    """A validation error at `sub` below the validated field (list index or key), so that the
    message names the full key path, e.g. `models[1]` or `method_sizes.lfr`."""
    return PydanticCustomError("config_key", "{msg}", {"msg": msg, "sub": sub})


def unique(items: list[Any]) -> list[Any]:
    """A name or seed listed twice would plan the same run twice (and count it twice)."""
    for i, item in enumerate(items):
        if item in items[:i]:
            raise key_error(f"{item!r} is listed twice", i)
    return items


Unique = [AfterValidator(unique), Field(json_schema_extra={"uniqueItems": True})]
# Seeds feed np.random.default_rng (no negatives), the run folders (`seed\d+`) and lm-eval's
# np.random.seed (at most 32 bits).
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
Seeds = Annotated[list[Seed], *Unique]
Names = Annotated[list[str], *Unique]
FOLDER = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
"""A name that becomes a folder of results/ (a size, a result set): no slash, space or newline."""
HUB_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$"


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, never ignored. Strict types, as in
    the JSON Schema: YAML reads `1e-3` as a string, which must fail here too, not be parsed; and
    no YAML `.inf`/`.nan`, which pass `gt=0` (inf) and would fail inside a job."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False,
                              use_attribute_docstrings=True)
    QUIET: ClassVar[frozenset[str]] = frozenset()
    """Keys added after runs were made with this section: left out of its dump (a job's params, a
    run's config_hash) while at their default, so that adding them retrains nothing."""

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        dump = handler(self)
        fields = type(self).model_fields
        for key in self.QUIET:
            if key in dump and getattr(self, key) == fields[key].default:
                del dump[key]
        return dump


class HFSource(Section):
    name: str
    """Hugging Face dataset name, e.g. `Skylion007/openwebtext`."""
    config: str | None = None
    """Dataset config (subset) name, if the dataset has several."""
    split: str = "train"
    """Split to read; the validation split is carved out of it by document."""


class CorpusConfig(Section):
    source: Literal["bundled", "files", "hf"] = "bundled"
    """`bundled`: the demo corpus shipped in lfr/assets; `files`: local paths; `hf`: a HF dataset."""
    paths: list[str] = []
    """For `files`: folders, files or globs of .txt (one document per file), .jsonl/.ndjson/.json (JSON
    lines, or a .json array of records), each also .gz/.bz2/.xz/.zst/.lz4/.br, or .parquet. Folders and
    globs skip hidden files, documentation and other types, and the stage's stats list them."""
    hf: HFSource | None = None
    """For `hf`: which dataset to read."""
    text_field: str = "text"
    """Field holding the document text in JSON/parquet/HF records; a dotted path reaches a nested field
    (`meta.text`). A string; null or empty: an empty document; a list of strings: joined by newlines;
    anything else stops the stage."""
    domain_field: str | None = "domain"
    """Optional field holding a domain label (a dotted path reaches a nested one:
    `meta.redpajama_set_name`); records without it get the domain `unknown` (with a warning and a
    count); null: no domains at all."""
    fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Keep this fraction of the training documents (seeded hash of the id); val is unaffected."""
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.05
    """Fraction of documents held out for validation (and local eval tasks)."""
    seed: Seed = 0
    """Seed of the document hash that decides subsampling and the validation split."""

    @model_validator(mode="after")
    def _source_fields(self) -> CorpusConfig:
        if self.source == "files" and not self.paths:
            raise key_error("corpus.paths is empty; list corpus folders, files or globs", "paths")
        if self.source == "hf" and self.hf is None:
            raise key_error("corpus.hf is missing; give {name: <dataset>, split: train}", "hf")
        return self


class TokenizerConfig(Section):
    kind: Literal["bpe", "gpt2"] = "bpe"
    """`bpe`: a byte-level BPE trained on the train split; `gpt2`: OpenAI's GPT-2 BPE (50257)."""
    vocab_size: Annotated[int, Field(ge=260, le=1_000_000)] = 8192
    """Vocabulary size of the trained BPE (ignored for gpt2, which is always 50257)."""
    train_chars: Annotated[int, Field(ge=10_000)] = 50_000_000
    """The BPE is trained on at most this many characters of the train split."""
    vocab_multiple: Annotated[int, Field(ge=1, le=4096)] | None = None
    """Pad the vocabulary with unused tokens up to a multiple of this (64: GPT-2's 50,257 to
    50,304, as nanoGPT, for faster output-layer kernels); text encodes to the same ids, and the
    model learns never to predict the padding. None: no padding."""

    QUIET = frozenset({"vocab_multiple"})  # unpadded: the data folders and runs of before

    @property
    def base_vocab_size(self) -> int:
        """The tokenizer's own vocabulary, before padding."""
        return 50257 if self.kind == "gpt2" else self.vocab_size

    @property
    def padded_vocab_size(self) -> int:
        """The vocabulary with its padding: what the model's input and output layers have."""
        multiple = self.vocab_multiple or 1
        return -(-self.base_vocab_size // multiple) * multiple


class DataConfig(Section):
    block_size: Annotated[int, Field(ge=8, le=65_536)] = 128
    """Tokens per data block = model context. Blocks are fixed and tracked across epochs."""
    token_dtype: Literal["auto", "uint16", "uint32"] = "auto"
    """Dtype of train.bin/val.bin; `auto` picks uint16 when the vocab fits, else uint32."""


class ModelPreset(Section):
    arch: Literal["gpt2", "llama"] = "gpt2"
    """`gpt2`: transformers' GPT2LMHeadModel (learned positions, LayerNorm, GELU MLP); `llama`:
    LlamaForCausalLM (RoPE, RMSNorm, SwiGLU MLP, no biases)."""
    n_layer: Annotated[int, Field(ge=1)]
    """Transformer blocks (depth)."""
    n_head: Annotated[int, Field(ge=1)]
    """Attention heads per block; a divisor of n_embd (head width n_embd / n_head)."""
    n_embd: Annotated[int, Field(ge=8)]
    """Width: the embedding and residual-stream dimension."""
    n_kv_head: Annotated[int, Field(ge=1)] | None = None
    """llama only: key/value heads (grouped-query attention), a divisor of n_head; None: n_head."""
    intermediate_size: Annotated[int, Field(ge=1)] | None = None
    """llama only: SwiGLU hidden width; None: Llama's rule, 8/3 n_embd rounded up to a multiple of 256."""
    tie_embeddings: bool = True
    """The output layer shares the input embedding's weights; gpt2 always does (GPT-2's design),
    llama by choice (Llama 1/2 untie theirs; small models often tie)."""

    @model_validator(mode="after")
    def _shape(self) -> ModelPreset:
        if self.n_embd % self.n_head:
            raise key_error(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}", "n_embd")
        if self.arch == "gpt2":
            for key in ("n_kv_head", "intermediate_size"):
                if getattr(self, key) is not None:
                    raise key_error(f"{key} is a llama key; remove it or set arch: llama", key)
            if not self.tie_embeddings:
                raise key_error("gpt2 always ties its embeddings; remove tie_embeddings or set "
                                "arch: llama", "tie_embeddings")
        elif self.n_head % self.kv_heads:
            raise key_error(f"n_kv_head={self.n_kv_head} does not divide n_head={self.n_head}",
                            "n_kv_head")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A gpt2 preset dumps its three keys only, as before `arch` existed: its runs keep their
        `config_hash` and their jobs' params, so adding the keys retrains nothing."""
        dump = handler(self)
        return {k: dump[k] for k in ("n_layer", "n_head", "n_embd")} if self.arch == "gpt2" else dump

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def ffn_size(self) -> int:
        """The MLP's hidden width: gpt2 4 n_embd; llama `intermediate_size` or Llama's rule."""
        if self.arch == "gpt2":
            return 4 * self.n_embd
        return self.intermediate_size or -(-(8 * self.n_embd // 3) // 256) * 256


def llama(n_layer: int, n_head: int, n_embd: int, **keys: Any) -> ModelPreset:
    return ModelPreset(arch="llama", n_layer=n_layer, n_head=n_head, n_embd=n_embd, **keys)


MODEL_PRESETS: dict[str, ModelPreset] = {
    # CPU sizes: "nano" for tests, "micro"/"mini" for the laptop demo.
    "nano": ModelPreset(n_layer=2, n_head=2, n_embd=64),
    "micro": ModelPreset(n_layer=4, n_head=4, n_embd=128),
    "mini": ModelPreset(n_layer=6, n_head=6, n_embd=192),
    # The GPT-2 family (Radford et al. 2019), context 1024, vocab 50257.
    "gpt2": ModelPreset(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": ModelPreset(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": ModelPreset(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": ModelPreset(n_layer=48, n_head=25, n_embd=1600),
    # Llama at nano's and micro's shapes, for tests and CPU runs.
    "llama-nano": llama(2, 2, 64),
    "llama-micro": llama(4, 4, 128),
    # The LFR paper v2's Llama sizes (config/paper-v2.yaml). Its shapes are known only second-hand,
    # by their names: these are ours, heads of 64, Llama's MLP rule, tied embeddings, the depth
    # chosen (even) to land near the name at vocab 32000 (README: Llama on SlimPajama).
    "llama-120m": llama(14, 12, 768),
    "llama-300m": llama(20, 16, 1024),
    "llama-500m": llama(22, 20, 1280),
}


def default_stop_margin_s(limit_s: float) -> float:
    """Seconds before a job's time limit at which a run checkpoints and stops, unless
    `resources.<size>.stop_margin_s` says: enough to save GPT-2 XL's weights and AdamW state
    (~18 GB) to a shared filesystem after the step in flight."""
    return max(120.0, 0.05 * limit_s)


class SizeResources(Section):
    """The resources of a size's training jobs (`resources.default` for the sizes not named). The
    cluster profile maps them to SLURM: --nodes, --gpus (or --ntasks and --gres=gpu:<gpus> across
    nodes), -t and --mem; on one GPU box a job claims `gpus` of its GPUs."""

    nodes: Annotated[int, Field(ge=1)] = 1
    """Nodes per training job; more than 1 needs SLURM (the cluster profile): srun starts one
    torchrun per node, which meet at a rendezvous on the job's first node."""
    gpus: Annotated[int, Field(ge=0)] = 0
    """GPUs per node of a training job; more than 1 GPU in all launches torchrun (DDP)."""
    runtime_min: Annotated[int, Field(ge=1)] | None = None
    """Wall-time limit of a training job in minutes (SLURM -t): the run checkpoints and stops
    `stop_margin_s` before it, and the retry resumes. None: no limit of ours (under SLURM the
    run reads its job's limit, the partition's, from squeue and stops before that)."""
    stop_margin_s: Annotated[float, Field(gt=0, le=86400)] | None = None
    """How long before its job's time limit a run checkpoints and stops (None: max(120 s, 5% of
    the limit); at most a day); a small model saves in seconds, a large one on a slow filesystem
    needs more."""
    mem_mb: Annotated[int, Field(ge=100)] = 8000
    """Memory per node (SLURM --mem)."""

    @model_validator(mode="after")
    def _nodes_have_gpus(self) -> SizeResources:
        if self.nodes > 1 and self.gpus < 1:
            raise key_error(f"nodes={self.nodes} needs gpus >= 1 (GPUs per node): training across "
                            "nodes is DDP over GPUs; set gpus, or nodes: 1", "gpus")
        return self

    @model_validator(mode="after")
    def _time_to_train(self) -> SizeResources:
        """A limit whose stop margin takes half the job or more is refused before any job runs:
        each job would spend most of its time starting and saving, and a retry gets no further."""
        if self.runtime_min is None:
            return self
        limit = 60 * self.runtime_min
        margin = self.stop_margin_s or default_stop_margin_s(limit)
        if 2 * margin >= limit:
            shortest = math.floor(2 * margin / 60) + 1
            raise key_error(
                f"{self.runtime_min} minute(s) is too short to make progress: a run checkpoints and stops "
                f"{margin:.0f} s before its job's limit (stop_margin_s; default max(120 s, 5% of the "
                f"limit)), which leaves at most half of each job to train; give at least {shortest} "
                "minutes, or a smaller stop_margin_s for a model that saves in seconds", "runtime_min")
        return self


class TrainConfig(Section):
    batch_size: Annotated[int, Field(ge=1)] = 16
    """Blocks per micro-batch (per GPU)."""
    grad_accum: Annotated[int, Field(ge=1)] = 1
    """Micro-batches per optimizer step."""
    batch_blocks: Annotated[int, Field(ge=1)] | None = None
    """Blocks per optimizer step, all GPUs and nodes together: grad_accum follows for each run,
    batch_blocks / (batch_size x nodes x GPUs), the same step for every size and layout (an error
    where it does not divide). None: batch_size x grad_accum x nodes x GPUs."""
    epochs: Annotated[float, Field(gt=0, le=1e6)] = 4.0
    """Run length of every method in passes over all train blocks (over each size's subset with
    tokens_per_param): LFR scales its schedule to fill it; at most a million, like every epochs
    option (lfr/sampling/base.py: MAX_EPOCHS)."""
    lr: Annotated[float, Field(gt=0)] = 1e-3
    """Peak learning rate of AdamW, reached after the warmup; lr_check.multipliers scale it."""
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1
    """The cosine schedule decays to lr * min_lr_ratio at the last step."""
    warmup_frac: Annotated[float, Field(ge=0, lt=1)] = 0.02
    """Linear warmup over this fraction of the planned steps."""
    weight_decay: Annotated[float, Field(ge=0)] = 0.1
    """AdamW's decoupled weight decay, applied to the weight matrices and embeddings (not to
    biases and norm weights)."""
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    """AdamW's decay rate of the gradient's running mean."""
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.95
    """AdamW's decay rate of the squared gradient's running mean."""
    grad_clip: Annotated[float, Field(ge=0)] = 1.0
    """Clip the global grad norm to this value; 0 disables clipping."""
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Dropout probability while training (a llama has it in its attention only); 0: none."""
    eval_every: Annotated[int, Field(ge=1)] = 100
    """Optimizer steps between validation-loss evaluations (and always at the last step)."""
    eval_blocks: Annotated[int, Field(ge=1)] = 256
    """Size of the fixed validation subset (seed 0, the same for every run)."""
    log_every: Annotated[int, Field(ge=1)] = 10
    """Optimizer steps between rows of the metrics log (metrics.parquet); each row waits for the
    device once, so on a GPU keep it at tens of steps or more."""
    ckpt_every: Annotated[int, Field(ge=1)] = 500
    """Optimizer steps between resume checkpoints."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where training (and reference scoring and profiling) runs: `auto` takes a GPU if there is
    one; `cuda` fails if there is none."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Autocast dtype on CUDA; CPU always trains in float32."""
    compile: bool = False
    """torch.compile the model (worth it only for runs longer than a few minutes)."""
    peak_tflops: Annotated[float, Field(gt=0)] | None = None
    """Peak bf16 TFLOP/s per GPU for MFU; default: looked up from the detected GPU's name."""
    tensorboard: bool = False
    """Also write the metrics log as TensorBoard events to the run's `tb/` folder, live (needs
    the `tensorboard` package; `tensorboard --logdir results/runs`); changes no result."""
    tokens_per_param: Annotated[float, Field(gt=0)] | None = None
    """Budget 1 of every size = this x the model's total parameters (embeddings counted once; 20 is
    Chinchilla's): each size trains `epochs` passes over a seeded subset of the training blocks
    sized to that token count (the same subset for every method and seed; smaller sizes' subsets
    nest in larger ones'), and a sweep's budget b repeats it b x epochs times. None: every size
    trains on all blocks."""
    repeat_data: bool = False
    """With tokens_per_param: a size whose subset would need more blocks than the corpus holds is
    refused (false: the message names the size, the tokens needed and those available), or
    trains on every block with as many more passes as that takes (true; the tables give the
    tokens per parameter and the passes reached)."""
    wandb: bool = False
    """Also log the metrics rows to Weights & Biases, live (needs the `wandb` package): offline
    into the run's `wandb/` folder where the config is `offline` (`wandb sync` uploads it), else
    as W&B's own settings say (WANDB_PROJECT, default lfr-repro; WANDB_ENTITY, WANDB_MODE); one
    W&B run per run folder, continued on a resume; changes no result."""

    QUIET = frozenset({"tokens_per_param", "repeat_data", "batch_blocks", "wandb"})

    @model_validator(mode="after")
    def _one_batch_setting(self) -> TrainConfig:
        if self.batch_blocks is not None and self.grad_accum != 1:
            raise key_error("give train.batch_blocks or train.grad_accum, not both: grad_accum follows "
                            "from batch_blocks", "grad_accum")
        return self

    def accumulation(self, world: int) -> int:
        """Micro-batches per optimizer step of a run on `world` processes (nodes x GPUs)."""
        if self.batch_blocks is None:
            return self.grad_accum
        per_micro = self.batch_size * world
        if self.batch_blocks % per_micro:
            raise ValueError(f"train.batch_blocks={self.batch_blocks} is not a multiple of train.batch_size "
                             f"x GPUs = {self.batch_size} x {world} = {per_micro}; change one of them (or "
                             "the size's resources)")
        return self.batch_blocks // per_micro


class EvalConfig(Section):
    tasks: Annotated[Names, Field(min_length=1)] = ["lfr_ppl", "lfr_cloze", "lfr_mc"]
    """lm-eval task, group or tag names, checked against lm-eval's registry before any job (its
    list is cached in ~/.cache/lfr/); `lfr_*` are the offline tasks built from held-out
    documents. Not empty: every run is evaluated, and lm-eval fails on no task (after
    training)."""
    references: Annotated[list[Annotated[str, Field(pattern=HUB_ID)]], *Unique] = []
    """HF hub models (`gpt2`, `EleutherAI/pythia-160m`) evaluated by the same rule as rows with
    method `reference`, and their val_bpb on our validation text; the name becomes a folder of
    results/eval/reference/."""
    reference_tokens: dict[str, Annotated[float, Field(gt=0)]] = {}
    """Public training tokens of some `references` (e.g. Pythia's 300B): the main table then gives
    the paper-style share `reference_token_share:<name>` (tokens to reach its val_bpb / these)."""
    batch_size: Annotated[int, Field(ge=1)] = 16
    """lm-eval's batch size: requests per forward pass."""
    num_fewshot: Annotated[int, Field(ge=0)] = 0
    """Examples shown before each item (lm-eval's few-shot); 0: zero-shot."""
    limit: Annotated[int, Field(ge=1)] | None = None
    """Evaluate at most this many items per task (None: all)."""
    bootstrap_iters: Annotated[int, Field(ge=0)] = 1000
    """Bootstrap resamples for the stderr of perplexity-like metrics (0: no stderr; 1 is an error:
    lm-eval's sample SD of one resample divides by zero)."""
    max_gen_toks: Annotated[int, Field(ge=1)] = 64
    """Generation budget of generate_until tasks (translation), greedy."""
    local_items: Annotated[int, Field(ge=4)] = 200
    """Items per local task."""
    ppl_tokens: Annotated[int, Field(ge=8)] = 512
    """lfr_ppl: each held-out document is clipped to this many tokens."""
    mc_choices: Annotated[int, Field(ge=2, le=51)] = 4
    """lfr_mc: choices per item (the true continuation + distractors of the same domain); at most
    51, since the distractors come from 50 sampled passages (lfr/eval_tasks.py: mc_item)."""
    seed: Seed = 0
    """Seed of the local task items and of lm-eval's sampling."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where lm-eval runs the model: `auto` takes a GPU if there is one; `cuda` fails if there is
    none."""
    cache_dir: str = "resources/hf_cache"
    """HF_HOME for datasets of standard tasks (filled by the prefetch rule)."""

    @field_validator("bootstrap_iters")
    @classmethod
    def _not_one(cls, iters: int) -> int:
        if iters == 1:
            raise ValueError("one resample has no spread; use 0 (no stderr) or at least 2")
        return iters


class ProfileConfig(Section):
    """The perplexity-profiling pass and the forgetting analysis (lfr/profile.py, forgetting.py)."""

    methods: Names | None = None
    """Methods whose runs are profiled (None: all of `methods`; []: profile nothing)."""
    sizes: Names | None = None
    """Sizes whose runs are profiled (None: all of `models`)."""
    seeds: Seeds = [0]
    """Seeds whose runs are profiled."""
    every_tokens: Annotated[int, Field(ge=1)] | None = None
    """Save a weight snapshot every this many training tokens (None: 8 evenly spaced)."""
    phase_boundaries: bool = True
    """Also snapshot at every phase boundary of the sampler (LFR's learn/focus/review)."""
    snapshot_dtype: Literal["float32", "bfloat16"] = "float32"
    """Storage dtype of snapshots (bfloat16 halves the disk of large models)."""
    sample_blocks: Annotated[int, Field(ge=1)] | None = 20_000
    """Profile a fixed seeded sample of this many training blocks (None: all of them); it caps
    the pass's cost and memory at any corpus size (lfr/profile.py: BYTES_PER_ROW)."""
    sample_seed: Seed = 0
    """Seed of that sample; the same blocks for every run, so runs compare block by block."""
    batch_size: Annotated[int, Field(ge=1)] = 16
    """Blocks per no-grad forward of the profiling pass: small batches keep a CPU's caches warm;
    raise it on GPUs, which need large batches to be busy (config/paper.yaml)."""
    threshold_nats: Annotated[float, Field(gt=0)] | None = None
    """Forgetting threshold in nats (mean token loss of a block); None: threshold_sd x noise."""
    threshold_sd: Annotated[float, Field(gt=0)] = 2.0
    """Automatic threshold: this many robust SDs of the checkpoint-to-checkpoint change of a
    block's loss around the median change of all blocks (the shared learning trend)."""


MAX_BUDGET = 1000.0


class SweepConfig(Section):
    """Budget sweeps (lfr/grid.py `trained_runs`): more runs of some methods, each at a multiple
    of the method's default run length and its LR schedule decayed at its own end."""

    methods: Names = []
    """Methods swept (names of `methods`); each at every size it runs at (`method_sizes`)."""
    sizes: Names | None = None
    """Sweep only these sizes (None: every size in `models`)."""
    budgets: Annotated[list[Annotated[float, Field(gt=0, le=MAX_BUDGET)]], Field(min_length=1)] = [1.0]
    """Multiples of each method's default run length (1: the grid's run, always trained), each a
    run of its own (`results/runs/<size>/<method>/budget<b>/`) whose LR schedule decays at its own
    end. Sweep runs are summarized (the frontier behind the iso-loss speed-ups), not profiled or
    evaluated."""

    @field_validator("budgets")
    @classmethod
    def _distinct_folders(cls, budgets: list[float]) -> list[float]:
        seen: dict[str, int] = {}
        for i, budget in enumerate(budgets):
            if (name := budget_name(budget)) in seen:
                raise key_error(f"{budget} repeats budget {budgets[seen[name]]} (both name the "
                                f"folder budget{name}); give each budget once", i)
            seen[name] = i
        return budgets


class LRCheckConfig(Section):
    """Learning-rate check (lfr/grid.py `lr_runs`): budget-1 runs of some methods and sizes at
    multiples of train.lr, every seed of the size, so that each method's verdict is also read at
    its own best learning rate (tables/learning_rates.csv)."""

    methods: Names = []
    """Methods checked (names of `methods`), each at every size it runs at (`method_sizes`)."""
    sizes: Names | None = None
    """Check only these sizes (None: every size in `models`)."""
    multipliers: Annotated[list[Annotated[float, Field(gt=0, le=MAX_BUDGET)]], *Unique] = []
    """Multiples of train.lr, each a run of its own (`results/runs/<size>/<method>/budget1-lr<m>/`);
    1 is the grid's run, always trained."""

    @field_validator("multipliers")
    @classmethod
    def _not_one(cls, multipliers: list[float]) -> list[float]:
        for i, m in enumerate(multipliers):
            if m == 1:
                raise key_error("1 is the grid's own learning rate, trained anyway; list the others", i)
        return multipliers


def budget_name(budget: float) -> str:
    """A budget as it appears in run folders (results/runs/<size>/<method>/budget<name>/...)."""
    return f"{budget:.4g}"


def check_names(names: list[str], known: Iterable[str]) -> list[str]:
    for i, name in enumerate(names):
        if name not in known:
            raise key_error(f"{name!r} is unknown; choose from {sorted(known)}", i)
    return names


RESULTS_FOLDERS = {"corpora", "corpus", "tokenizer", "data", "runs", "resume", "scores", "profiles", "eval",
                   "eval_tasks", "tables", "figures", "logs", "benchmarks"}


class ExperimentConfig(Section):
    name: Annotated[str, Field(pattern=f"^({FOLDER[1:-1]})?$")] = ""
    """Name of this result set: its tables and figures go to results/<name>/ (empty: results/tables
    and results/figures), so configs sharing a working folder keep their own tables. Runs,
    profiles and evaluations are shared by every config of the same corpus, tokenizer and data
    (results/runs etc.; another data setting's under results/corpora/<key>/: lfr/folders.py)."""
    corpus: CorpusConfig = CorpusConfig()
    """The text to train on and its split into train and validation documents."""
    tokenizer: TokenizerConfig = TokenizerConfig()
    """The tokenizer that turns the documents into tokens."""
    data: DataConfig = DataConfig()
    """The token files and their fixed blocks, the unit that every method selects."""
    custom_models: dict[Annotated[str, Field(pattern=FOLDER)], ModelPreset] = {}
    """Extra model sizes, e.g. {wide: {n_layer: 2, n_head: 4, n_embd: 256}}; a name is a folder of
    results/runs/."""
    models: Annotated[Names, Field(min_length=1)] = ["micro"]
    """Model sizes to train: names from MODEL_PRESETS or `custom_models`."""
    methods: Annotated[Names, Field(min_length=1)] = ["random"]
    """Data-selection methods (samplers) to compare: names of the lfr/sampling registry."""
    method_sizes: dict[str, Annotated[Names, Field(min_length=1)]] = {}
    """Restrict a method to some sizes, e.g. {lfr-reverse: [nano]}; default: every size. Not
    empty: a method without sizes has no runs (remove it from `methods` instead)."""
    method_options: dict[str, dict[str, Any]] = {}
    """Per-method options, e.g. {lfr: {preset: paper-v1}}; each method validates its own."""
    seeds: Annotated[Seeds, Field(min_length=1)] = [0]
    """Seeds of every size that `size_seeds` does not name."""
    size_seeds: dict[str, Annotated[Seeds, Field(min_length=1)]] = {}
    """Seeds for some sizes instead of `seeds` (it wins for the sizes it names), e.g. {nano: [0, 1]}:
    more seeds where runs are cheap."""
    train: TrainConfig = TrainConfig()
    """Training: batch, run length, optimizer and schedule, logging, device (every run)."""
    eval: EvalConfig = EvalConfig()
    """Downstream evaluation with lm-evaluation-harness."""
    profile: ProfileConfig = ProfileConfig()
    """Per-block perplexity profiling of selected runs and the forgetting/domain analysis."""
    sweep: SweepConfig = SweepConfig()
    """Budget sweeps: the frontier that the iso-loss speed-ups are read from."""
    lr_check: LRCheckConfig = LRCheckConfig()
    """Learning-rate check: budget-1 runs at other multiples of train.lr."""
    resources: dict[str, SizeResources] = {}
    """Per-size job resources ({default: ..., gpt2-xl: ...}); the cluster profile maps them to SLURM."""
    offline: bool = True
    """Set HF_HUB_OFFLINE/HF_DATASETS_OFFLINE in every stage so nothing waits on the network."""

    @field_validator("name")
    @classmethod
    def _not_a_results_folder(cls, name: str) -> str:
        if name in RESULTS_FOLDERS:
            raise ValueError(f"name={name!r} is a folder of results/ already; choose another name")
        return name

    @field_validator("custom_models")
    @classmethod
    def _not_a_preset(cls, models: dict[str, ModelPreset]) -> dict[str, ModelPreset]:
        for name in models:  # runs are shared by name (results/runs/<size>) across configs
            if name in MODEL_PRESETS:
                raise key_error(f"{name!r} is a preset size already; choose another name", name)
        return models

    @field_validator("models")
    @classmethod
    def _known_sizes(cls, models: list[str], info: ValidationInfo) -> list[str]:
        return check_names(models, {**MODEL_PRESETS, **info.data.get("custom_models", {})})

    @model_validator(mode="after")
    def _dtype_fits(self) -> ExperimentConfig:
        try:
            token_file_dtype(self.data.token_dtype, self.vocab_size)
        except ValueError as err:
            raise key_error(str(err), "data", "token_dtype") from None
        return self

    def model_preset(self, size: str) -> ModelPreset:
        return {**MODEL_PRESETS, **self.custom_models}[size]

    @property
    def result_set(self) -> str:
        """Folder of this config's tables/ and figures/: results/<name>, or results without a name."""
        return f"results/{self.name}" if self.name else "results"

    @property
    def vocab_size(self) -> int:
        """The model's vocabulary: the tokenizer's, padded to tokenizer.vocab_multiple."""
        return self.tokenizer.padded_vocab_size


def token_file_dtype(choice: str, vocab_size: int) -> str:
    """The dtype name of the token files for `data.token_dtype` and a vocabulary size."""
    if choice == "uint32" or (choice == "auto" and vocab_size > 65_536):
        return "uint32"
    if vocab_size > 65_536:
        raise ValueError(f"data.token_dtype=uint16 cannot hold a vocabulary of {vocab_size}; "
                         "use uint32 or auto")
    return "uint16"


class ConfigError(ValueError):
    """A config that fails validation; the message names each bad key, one problem a line:
    `<source>: invalid config (N problem(s)):` and then `  - <key>: <what is wrong>` each."""

    @classmethod
    def of(cls, source: str, problems: list[str]) -> ConfigError:
        return cls("\n".join([f"{source}: invalid config ({len(problems)} problem(s)):",
                              *(f"  - {p}" for p in problems)]))

    @property
    def problems(self) -> list[str]:
        """The `<key>: <what is wrong>` lines of the message, so that several validations (the
        schema's, each method's) make one message; a message without them is one problem."""
        lines = str(self).splitlines()
        if not any(line.startswith("  - ") for line in lines[1:]):
            return [str(self)]
        problems: list[str] = []
        for line in lines[1:]:
            if line.startswith("  - "):
                problems.append(line[4:])
            elif problems:  # a message of several lines stays with its key
                problems[-1] += "\n" + line
        return problems


def config_hash(payload: Any) -> str:
    """Short, stable hash of any JSON-serialisable payload (sorted keys)."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
