"""Stage `reference-bpb`: a released model's `val_bpb` on our validation text, with its own tokenizer.

The text is what every run's val_bpb measures: the fixed validation subset (lfr/train.py's
`val_subset` of `train.eval_blocks` blocks), each block's T targets as bytes, cut at EOT into
document pieces. The reference reads a block as EOS piece EOS piece ... (its own EOS where our
stream has EOT, as the first token too), so, as in val_bpb, the document ends it predicts cost
their loss and no bytes: bits per byte = its nats over every token after the first EOS / (ln 2 x
the pieces' UTF-8 bytes). What differs from a run's val_bpb on the same blocks: the first target
is predicted from EOS, not from the block's first input token; the reference's tokens at a
block's edges are those of the cut text; a character cut by a block's edge is left out (its
bytes are not counted). A block longer than the reference's context is scored in lm-eval's
rolling windows (`get_rolling_token_windows`).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lfr.config import ExperimentConfig
from lfr.data import BlockStore, target_bytes
from lfr.files import write_json
from lfr.runtime import git_commit, resolve_device
from lfr.tokenizer import token_bytes, tokenizer_meta
from lfr.train import val_subset

log = logging.getLogger(__name__)


def block_pieces(data_dir: Path, tok_dir: Path, ids: np.ndarray) -> list[list[str]]:
    """Each block's target text, cut at EOT into pieces (a character cut by the block's edge
    dropped: it is the only place where the bytes can be invalid UTF-8)."""
    spelled, eot = token_bytes(tok_dir), tokenizer_meta(tok_dir)["eot_id"]
    _, targets = BlockStore.open(data_dir, "val").batch(ids)
    return [[b"".join(spelled[t] for t in run).decode("utf-8", errors="ignore")
             for run in np.split(row, np.flatnonzero(row == eot))]  # each run after the first: EOT ...
            for row in targets]


@torch.no_grad()
def sequence_nats(model: torch.nn.Module, ids: list[int], eos: int, max_length: int,
                  device: torch.device) -> float:
    """Sum of the model's next-token losses over `ids`, the first predicted from EOS."""
    from lm_eval.utils import get_rolling_token_windows

    nats = 0.0
    for inputs, predicted in get_rolling_token_windows(ids, eos, max_length, 1):
        logits = model(input_ids=torch.tensor([inputs], device=device)).logits[0, -len(predicted):]
        nats += F.cross_entropy(logits.float(), torch.tensor(predicted, device=device),
                                reduction="sum").item()
    return nats


def reference_bpb(cfg: ExperimentConfig, model_name: str, data_dir: Path, tok_dir: Path,
                  out_json: Path) -> dict[str, Any]:
    """Score the validation subset's text with `model_name` (hub name or HF folder); write
    out_json and return it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if Path(model_name).exists() and not (Path(model_name) / "config.json").is_file():
        raise FileNotFoundError(f"{model_name} is not a HF model folder (no config.json)")
    os.environ.setdefault("HF_HOME", str(Path(cfg.eval.cache_dir).resolve()))
    device = resolve_device(cfg.eval.device, "eval.device")
    tok = AutoTokenizer.from_pretrained(model_name)
    model = AutoModelForCausalLM.from_pretrained(model_name, dtype=torch.float32).to(device).eval()
    if tok.eos_token_id is None:
        raise ValueError(f"{model_name}: its tokenizer has no EOS token to separate documents with")
    conf = model.config
    max_length = getattr(conf, "n_positions", None) or conf.max_position_embeddings  # GPT-2 / Pythia
    ids = val_subset(BlockStore.open(data_dir, "val").num_blocks, cfg.train.eval_blocks)
    nats, n_bytes, n_tokens = 0.0, 0, 0
    for pieces in block_pieces(data_dir, tok_dir, ids):
        enc = tok(pieces, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        seq = [t for k, piece in enumerate(enc) for t in ([tok.eos_token_id] if k else []) + piece]
        nats += sequence_nats(model, seq, tok.eos_token_id, max_length, device)
        n_bytes += sum(len(p.encode()) for p in pieces)
        n_tokens += len(seq)
    info = {"model": model_name, "val_bpb": nats / (math.log(2) * n_bytes), "nats": nats,
            "bytes": n_bytes, "tokens": n_tokens, "blocks": len(ids),
            "our_target_bytes": int(target_bytes(data_dir, "val")[ids].sum()),
            "eval_blocks": cfg.train.eval_blocks, "git_commit": git_commit()}
    write_json(out_json, info)
    log.info("reference-bpb: %s", info)
    return info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m lfr reference-bpb`."""
    parser.add_argument("--model", required=True,
                        help="hub name of the reference model (or a HF model folder)")
    parser.add_argument("--data", type=Path, required=True, help="folder written by `tokenize`")
    parser.add_argument("--tokenizer", type=Path, required=True,
                        help="folder written by `tokenizer` (ours: spells the blocks)")
    parser.add_argument("--out", type=Path, required=True, help="val_bpb.json to write")
    parser.add_argument("--threads", type=int, help="torch CPU threads")


def main(cfg: ExperimentConfig, model: str, data: Path, tokenizer: Path, out: Path) -> str:
    info = reference_bpb(cfg, model, data, tokenizer, out)
    return f"{model}: val_bpb {info['val_bpb']:.4f} over {info['bytes']} bytes"
