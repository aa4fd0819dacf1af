"""Stage `eval-tasks`: offline lm-eval tasks built from held-out (validation) documents.

Three tasks, each a YAML config plus a jsonl of items, in one folder that lm-eval indexes with
`--include_path` (the YAML names its jsonl relative to the folder, fixed up at evaluation time):
- `lfr_ppl`: rolling perplexity over documents (like `wikitext`): word/byte perplexity, bits/byte;
- `lfr_cloze`: predict a passage's last word (like LAMBADA): accuracy and perplexity;
- `lfr_mc`: pick a passage's true continuation among distractors taken from other documents of
  the same domain (like HellaSwag): acc, acc_norm.
Every item carries its `domain`, so results can be broken down per domain. Items are drawn
round-robin over domains with a seeded order, so every domain is represented.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from lfr.config import EvalConfig, ExperimentConfig
from lfr.files import atomic_dir
from lfr.tokenizer import batch_encoder

TASKS = ("lfr_ppl", "lfr_cloze", "lfr_mc")
METRICS = {
    "lfr_ppl": [("word_perplexity", "weighted_perplexity", False), ("byte_perplexity",
                "weighted_perplexity", False), ("bits_per_byte", "bits_per_byte", False)],
    "lfr_cloze": [("perplexity", "perplexity", False), ("acc", "mean", True)],
    "lfr_mc": [("acc", "mean", True), ("acc_norm", "mean", True)],
}
SHAPES = {
    "lfr_ppl": {"output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "{{text}}"},
    "lfr_cloze": {"output_type": "loglikelihood", "doc_to_text": "{{context}}",
                  "doc_to_target": "{{' ' + target}}"},
    "lfr_mc": {"output_type": "multiple_choice", "doc_to_text": "{{context}}", "doc_to_choice": "{{choices}}",
               "doc_to_target": "label", "target_delimiter": ""},  # the choices carry their own space
}
WORD = re.compile(r"[A-Za-z][a-z]+")


def task_config(name: str, data_file: str) -> dict:
    """The lm-eval config of one local task reading `data_file`."""
    return {
        "task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": data_file}},
        "test_split": "test", **SHAPES[name],
        "metric_list": [{"metric": m, "aggregation": agg, "higher_is_better": hib}
                        for m, agg, hib in METRICS[name]],
        "metadata": {"version": 2},
    }


def clip_tokens(text: str, max_tokens: int, encode: Callable) -> str:
    """The longest prefix of text, cut at whitespace, with at most max_tokens tokens."""
    words = re.split(r"(\s+)", text)
    lo, hi = 0, len(words)
    while lo < hi:  # binary search on the number of pieces
        mid = (lo + hi + 1) // 2
        if len(encode(["".join(words[:mid])])[0]) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return "".join(words[:lo]).rstrip()


def passages(text: str, max_chars: int) -> list[str]:
    """Non-overlapping runs of lines (long lines wrapped), each at most ~max_chars, with prose in them."""
    out, current = [], ""
    lines = [piece for line in text.splitlines() for piece in wrap(line, max_chars)]
    for line in lines:
        if current and len(current) + len(line) + 1 > max_chars:
            out.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    out.append(current)
    return [p.strip() for p in out if len(WORD.findall(p)) >= 8]


def wrap(line: str, width: int) -> list[str]:
    """A long line cut at spaces into pieces of at most ~width characters."""
    pieces, current = [], ""
    for word in line.split(" "):
        if current and len(current) + len(word) + 1 > width:
            pieces.append(current)
            current = ""
        current = f"{current} {word}" if current else word
    return [*pieces, current]


def round_robin(by_domain: dict[str, list], n: int, rng: random.Random) -> list:
    pools = {d: rng.sample(items, len(items)) for d, items in sorted(by_domain.items())}
    out = []
    while len(out) < n and any(pools.values()):
        for pool in pools.values():
            if pool and len(out) < n:
                out.append(pool.pop())
    return out


def build_items(docs: pd.DataFrame, cfg: EvalConfig, block_size: int, encode: Callable) -> dict[str, list]:
    """Items of the three tasks from held-out documents (deterministic for a given seed)."""
    rng = random.Random(cfg.seed)
    docs = docs.sort_values("doc_id")
    domain = docs["domain"].fillna("all").tolist()
    chars = block_size * 4  # ~4 chars/token, so ~1 block; every text is clipped by tokens afterwards
    by_domain: dict[str, list] = defaultdict(list)
    for doc_id, dom, text in zip(docs["doc_id"], domain, docs["text"], strict=True):
        for p in passages(text, chars):
            by_domain[dom].append((doc_id, dom, p))
    if not by_domain:
        raise ValueError("eval-tasks: the held-out documents hold no passage with prose; "
                         "raise corpus.val_fraction")
    whole_docs: dict[str, list] = defaultdict(list)
    for doc_id, dom, text in zip(docs["doc_id"], domain, docs["text"], strict=True):
        whole_docs[dom].append((doc_id, dom, text))
    items: dict[str, list] = {"lfr_ppl": [
        {"doc_id": d, "domain": dom, "text": clip_tokens(t, cfg.ppl_tokens, encode)}
        for d, dom, t in round_robin(whole_docs, cfg.local_items, rng)], "lfr_cloze": [], "lfr_mc": []}
    makers = {"lfr_cloze": lambda src: cloze_item(src, block_size, encode),
              "lfr_mc": lambda src: mc_item(src, by_domain, cfg, block_size, encode, rng)}
    for src in round_robin(by_domain, sum(map(len, by_domain.values())), rng):
        task = min(makers, key=lambda t: len(items[t]))  # fill both tasks evenly
        if len(items[task]) >= cfg.local_items:
            break
        item = makers[task](src)
        if item is not None:
            items[task].append(item)
    return items


def cloze_item(src: tuple, block_size: int, encode: Callable) -> dict | None:
    """Context = a passage up to its last word; target = that word (letters only, >= 3)."""
    doc_id, domain, passage = src
    text = clip_tokens(passage, block_size - 8, encode)
    words = list(WORD.finditer(text))
    if not words or len(words[-1].group()) < 3 or text[words[-1].end():].strip(" .,;:!?\n"):
        return None
    if not text[: words[-1].start()].endswith((" ", "\n")):  # "well-known": no whole-word target
        return None
    return {"doc_id": doc_id, "domain": domain, "context": text[: words[-1].start()].rstrip(),
            "target": words[-1].group()}


def mc_item(src: tuple, by_domain: dict[str, list], cfg: EvalConfig, block_size: int,
            encode: Callable, rng: random.Random) -> dict | None:
    """Context = the first half of a passage; choices = its true ending and the endings of other
    passages of the same domain (distinct, at least two words each)."""
    def split(p: str) -> tuple[str, str]:
        ctx = clip_tokens(p, block_size // 2, encode)
        return ctx, clip_tokens(p[len(ctx):].strip(), block_size // 4, encode)

    doc_id, domain, passage = src
    ctx, true_end = split(passage)
    if len(WORD.findall(true_end)) < 2:
        return None
    endings = [true_end]
    for other_id, _, other in rng.sample(by_domain[domain], min(len(by_domain[domain]), 50)):
        ending = split(other)[1]
        if other_id != doc_id and len(WORD.findall(ending)) >= 2 and ending not in endings:
            endings.append(ending)
        if len(endings) == cfg.mc_choices:
            break
    if len(endings) < cfg.mc_choices:
        return None
    choices = [" " + e for e in endings]
    rng.shuffle(choices)
    return {"doc_id": doc_id, "domain": domain, "context": ctx, "choices": choices,
            "label": choices.index(" " + true_end)}


def prepare_eval_tasks(val_docs: Path, tok_dir: Path, cfg: EvalConfig, block_size: int,
                       out_dir: Path) -> dict:
    """Write <task>.yaml + <task>.jsonl for each local task into out_dir; return item counts."""
    docs = pd.read_parquet(val_docs)
    items = build_items(docs, cfg, block_size, batch_encoder(tok_dir))
    with atomic_dir(out_dir) as tmp:
        for name, rows in items.items():
            if not rows:
                raise ValueError(f"eval-tasks: task {name} got no items; raise corpus.val_fraction")
            with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            (tmp / f"{name}.yaml").write_text(yaml.safe_dump(task_config(name, f"{name}.jsonl"),
                                                             sort_keys=False))
    return {name: len(rows) for name, rows in items.items()}


def jsonl_dataset(data_files: dict[str, str], **_: Any):
    """The local tasks' lm-eval `custom_dataset`: their jsonl files read directly, not through HF
    datasets' file resolution, which expands `$VAR` and `~` inside the paths it is given."""
    import datasets

    def records(path: str) -> list[dict]:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    return datasets.DatasetDict({split: datasets.Dataset.from_list(records(path))
                                 for split, path in data_files.items()})


def load_local_tasks(task_dir: Path) -> list[dict]:
    """The local task configs, their data files absolute and read by `jsonl_dataset` (the YAMLs on
    disk keep lm-eval's standard `dataset_path: json`, for running lm_eval by hand)."""
    configs = []
    for path in sorted(Path(task_dir).glob("lfr_*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        files = cfg["dataset_kwargs"]["data_files"]
        files["test"] = str((path.parent / files["test"]).resolve())
        configs.append({**cfg, "custom_dataset": jsonl_dataset})
    return configs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m lfr eval-tasks`."""
    parser.add_argument("--val-docs", type=Path, required=True,
                        help="held-out documents written by `corpus` (parquet)")
    parser.add_argument("--tokenizer", type=Path, required=True, help="folder written by `tokenizer`")
    parser.add_argument("--out", type=Path, required=True, help="folder for the task YAMLs and jsonl files")


def main(cfg: ExperimentConfig, val_docs: Path, tokenizer: Path, out: Path) -> dict:
    return prepare_eval_tasks(val_docs, tokenizer, cfg.eval, cfg.data.block_size, out)
