"""The tokenized data: the block store that training reads, the token-dtype rule and the check
that a stage's config matches the data it is given.

Each split (written by stage `tokenize`) is one flat token file (`train.bin`, `val.bin`:
documents joined, each followed by EOT) plus a block table. Block i is the fixed, contiguous
window tokens[i*T : i*T + T + 1]: T inputs and their T next-token targets, so every token after
the first is predicted exactly once per epoch and a block keeps its identity across epochs (what
LFR tracks). A block's `domain` and `doc_id` are those of the document holding its middle token;
its `target_bytes` the UTF-8 bytes of the text its targets encode (EOT: 0), for bits per byte.

`meta.json` records the config sections the data was built from (`built_from`), and
`check_data_matches` stops a stage given another config before it computes anything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lfr.config import ExperimentConfig
from lfr.tokenizer import META_FILE, tokenizer_meta

log = logging.getLogger(__name__)
# The layout of a data folder, recorded in meta.json and a param of the tokenize rule (so Snakemake
# rebuilds an older folder). 2: block tables carry `target_bytes`.
DATA_FORMAT = 2


def data_meta(data_dir: Path) -> dict:
    path = Path(data_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run the `tokenize` stage first")
    meta = json.loads(path.read_text())
    if (found := meta.get("format", 1)) != DATA_FORMAT:
        raise ValueError(f"{path}: a data folder of format {found}, but this lfr reads format "
                         f"{DATA_FORMAT} (block tables with `target_bytes`, for val_bpb); rerun the "
                         "`tokenize` stage (Snakemake does so by itself)")
    return meta


def target_bytes(data_dir: Path, split: str) -> np.ndarray:
    """Each block's `target_bytes` (block table column), indexed by block id."""
    data_meta(data_dir)  # an older folder has no such column: say so
    return pd.read_parquet(Path(data_dir) / f"{split}_blocks.parquet",
                           columns=["target_bytes"])["target_bytes"].to_numpy()


SECTION_STAGE = {"corpus": 0, "tokenizer": 1, "data": 2}  # the first stage that reads a section
REBUILT_WITH = [  # what differs and the fix, by the first stage to rerun
    "the corpus was read with another config: rerun the corpus, tokenizer and tokenize stages",
    "the tokenizer was built with another config: rerun the tokenizer and tokenize stages",
    "the data was tokenized with another config: rerun the tokenize stage",
]


def unmeasured(section: str, values: dict) -> dict:
    """The keys of a recorded section to compare with the config: those that change the data and
    that the meta files do not hold as measured values (block_size, kind, vocab_size)."""
    if section == "tokenizer":
        return {} if values.get("kind") == "gpt2" else {"train_chars": values.get("train_chars")}
    return {} if section == "data" else values  # token_dtype changes storage, not tokens


def check_data_matches(cfg: ExperimentConfig, given: Collection[str], data_dir: Path | None,
                       tok_dir: Path | None) -> None:
    """Raise one ValueError naming every disagreement between the data/tokenizer folders and the
    config, with the fix. Only the sections in `given` are checked: the others are built-in
    defaults (a Snakemake rule passes only the sections its stage uses)."""
    tok = tokenizer_meta(tok_dir) if tok_dir is not None else None
    data = data_meta(data_dir) if data_dir is not None else None
    tok_path = Path(tok_dir) / META_FILE if tok_dir is not None else None
    data_path = Path(data_dir) / "meta.json" if data_dir is not None else None
    other_tokenizer = tok is not None and data is not None and tok["sha256"] != data["tokenizer_sha256"]
    problems: list[tuple[int, str]] = []  # (first stage to rerun, or -1: another tokenizer; what)
    vocabs = [(tok_path, tok["kind"], tok["vocab_size"])] if tok else []
    if data and (tok is None or other_tokenizer):  # else the same tokenizer as tok's
        vocabs.append((data_path, data["tokenizer_kind"], data["vocab_size"]))
    for path, kind, vocab in vocabs if "tokenizer" in given else []:
        if (kind, vocab) != (cfg.tokenizer.kind, cfg.vocab_size):
            problems.append((1, f"{path}: the tokenizer is {kind} with vocab_size {vocab} but the "
                                f"config's is {cfg.tokenizer.kind} with {cfg.vocab_size} "
                                "(tokenizer.kind, tokenizer.vocab_size)"))
    if data and "data" in given and data["block_size"] != cfg.data.block_size:
        problems.append((2, f"{data_path}: block_size is {data['block_size']} but the config's "
                            f"data.block_size is {cfg.data.block_size}"))
    records = {}  # section -> (file, values); the tokenizer's own record wins over the data's copy
    for path, meta in ((data_path, data), (tok_path, tok)):
        records.update({k: (path, v) for k, v in (meta or {}).get("built_from", {}).items()})
    for section, (path, values) in records.items():
        if section in given and section in SECTION_STAGE:
            recorded = unmeasured(section, values)
            ours = unmeasured(section, getattr(cfg, section).model_dump(mode="json"))
            for key in sorted(recorded.keys() & ours.keys()):  # a key newer than the record: skip
                if recorded[key] != ours[key]:
                    problems.append((SECTION_STAGE[section], f"{path}: built with {section}.{key}="
                                     f"{recorded[key]!r} but the config's is {ours[key]!r}"))
    if other_tokenizer:
        problems.append((-1, f"{data_path}: tokenized with the tokenizer of sha256 "
                             f"{data['tokenizer_sha256'][:12]}, but {tok_dir} holds {tok['sha256'][:12]}"))
    if not problems:
        return
    stages = [stage for stage, _ in problems if stage >= 0]
    fixes = [f"{REBUILT_WITH[min(stages)]} with this config (or pass the config it was built with)"
             ] if stages else []
    if other_tokenizer:
        fixes.append("the data was tokenized with another tokenizer: pass --tokenizer the folder it "
                     "was tokenized with, or rerun the tokenize stage with this one")
    if len(problems) == 1:
        raise ValueError(f"{problems[0][1]}; {fixes[0]}")
    raise ValueError("\n".join(["the data and tokenizer folders do not match the config:",
                                 *(f"  - {what}" for _, what in problems), *fixes]))


@dataclass
class BlockStore:
    """Random access to the fixed blocks of one split, backed by a read-only memmap."""

    tokens: np.memmap
    block_size: int
    num_blocks: int

    @classmethod
    def open(cls, data_dir: Path, split: str) -> BlockStore:
        data_dir = Path(data_dir)
        meta = data_meta(data_dir)
        tokens = np.memmap(data_dir / f"{split}.bin", dtype=meta["dtype"], mode="r")
        return cls(tokens, meta["block_size"], meta[f"{split}_blocks"])

    def batch(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets, each (B, T) int64, for the given block ids."""
        T = self.block_size
        starts = np.asarray(ids, dtype=np.int64)[:, None] * T
        rows = np.asarray(self.tokens[starts + np.arange(T + 1)], dtype=np.int64)  # one gather
        return rows[:, :-1], rows[:, 1:]

    def global_ids(self, ids: np.ndarray) -> np.ndarray:
        """The split's ids of blocks `ids` (a BlockSubset's differ)."""
        return np.asarray(ids, dtype=np.int64)


SUBSET_SEED = 31
"""Seed of the one permutation of the training blocks that every subset takes a prefix of."""


def subset_ids(num_blocks: int, size: int) -> np.ndarray:
    """The training blocks of a run that draws from `size` of the `num_blocks` (train.
    tokens_per_param), sorted: the first `size` of one seeded permutation, so that a smaller
    subset is part of every larger one and every method and seed of a size shares its subset."""
    if size >= num_blocks:
        return np.arange(num_blocks, dtype=np.int64)
    order = np.random.default_rng([SUBSET_SEED, num_blocks]).permutation(num_blocks)
    return np.sort(order[:size]).astype(np.int64)


@dataclass
class BlockSubset:
    """A run's share of a split's blocks: its block i is `ids[i]` of `store`. The sampler sees
    0..len(ids)-1; what the run writes (records) names the split's own ids (`global_ids`)."""

    store: BlockStore
    ids: np.ndarray

    @property
    def block_size(self) -> int:
        return self.store.block_size

    @property
    def num_blocks(self) -> int:
        return len(self.ids)

    def batch(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.store.batch(self.ids[np.asarray(ids, dtype=np.int64)])

    def global_ids(self, ids: np.ndarray) -> np.ndarray:
        return self.ids[np.asarray(ids, dtype=np.int64)]

