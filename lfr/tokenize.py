"""Stage `tokenize`: both document splits into token files and block tables (lfr/data.py reads
them back).

Each split becomes one flat token file (`train.bin`, `val.bin`: documents joined, each followed
by EOT) plus a block table; `meta.json`, written last, records the config sections the data was
built from (`built_from`) and the folder's `format` (lfr.data.DATA_FORMAT).

A block's `target_bytes` is the UTF-8 size of the text its T targets encode, EOT counting 0
bytes: the denominator of bits per byte (val_bpb, lfr/train.py). Like lm-eval's `bits_per_byte`,
only document text counts as bytes; unlike it, predicting a document's closing EOT still costs
its loss (the loss that val_loss includes), so val_bpb is val_loss rescaled by one constant.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from lfr.config import CorpusConfig, DataConfig, ExperimentConfig, token_file_dtype
from lfr.corpus import read_documents
from lfr.data import DATA_FORMAT
from lfr.files import atomic_path, write_json, write_parquet
from lfr.tokenizer import piece_encoder, token_byte_lengths, tokenizer_meta

log = logging.getLogger(__name__)
CHUNK_BLOCKS = 1 << 14  # blocks per pass of block_target_bytes: memory stays bounded


def block_target_bytes(tokens: np.ndarray, block_size: int, num_blocks: int,
                       byte_lengths: np.ndarray) -> np.ndarray:
    """UTF-8 bytes of the text that each block's targets tokens[i*T + 1 : i*T + T + 1] encode."""
    T = block_size
    out = np.empty(num_blocks, dtype=np.int64)
    for start in range(0, num_blocks, CHUNK_BLOCKS):
        stop = min(start + CHUNK_BLOCKS, num_blocks)
        targets = np.asarray(tokens[start * T + 1 : stop * T + 1])
        out[start:stop] = byte_lengths[targets].reshape(stop - start, T).sum(axis=1)
    return out


def tokenize_split(docs_path: Path, tok_dir: Path, cfg: DataConfig, bin_out: Path,
                   blocks_out: Path) -> dict:
    """Tokenize one split to a flat token file and its block table; return its statistics."""
    meta = tokenizer_meta(tok_dir)
    encode, eot = piece_encoder(tok_dir), meta["eot_id"]
    dtype = np.dtype(token_file_dtype(cfg.token_dtype, meta["vocab_size"]))
    doc_ids: list[str] = []
    domains: list[str | None] = []
    doc_ends: list[int] = []
    num_tokens = 0
    eot_bytes = np.asarray([eot], dtype=dtype).tobytes()
    with atomic_path(bin_out) as tmp, open(tmp, "wb") as f:
        for batch in tqdm(read_documents(docs_path), desc=f"tokenize {docs_path.stem}", unit=" batch"):
            # Long documents arrive in pieces (bounded memory), in document order.
            for i, ids, last in encode([r["text"] for r in batch]):
                f.write(np.asarray(ids, dtype=dtype).tobytes())
                num_tokens += len(ids)
                if last:
                    f.write(eot_bytes)
                    num_tokens += 1
                    doc_ids.append(batch[i]["doc_id"])
                    domains.append(batch[i]["domain"])
                    doc_ends.append(num_tokens)
    T = cfg.block_size
    num_blocks = (num_tokens - 1) // T
    if num_blocks < 1:
        bin_out.unlink()
        raise ValueError(
            f"{docs_path}: {num_tokens} tokens make no block of data.block_size={T}+1; "
            f"add text or lower data.block_size"
        )
    offsets = np.arange(num_blocks, dtype=np.int64) * T
    doc_index = np.searchsorted(np.asarray(doc_ends), offsets + T // 2, side="right")
    blocks = pd.DataFrame({
        "block_id": np.arange(num_blocks, dtype=np.int64),
        "offset": offsets,
        "domain": pd.array(np.asarray(domains, dtype=object)[doc_index], dtype="string"),
        "doc_id": pd.array(np.asarray(doc_ids, dtype=object)[doc_index], dtype="string"),
        "target_bytes": block_target_bytes(np.memmap(bin_out, dtype=dtype, mode="r"), T, num_blocks,
                                           token_byte_lengths(tok_dir)),
    })
    write_parquet(blocks_out, blocks)
    return {"tokens": num_tokens, "documents": len(doc_ids), "blocks": num_blocks}


def tokenize(train_docs: Path, val_docs: Path, tok_dir: Path, cfg: DataConfig, out_dir: Path,
             corpus: CorpusConfig | None = None) -> dict:
    """Tokenize both splits into out_dir and write meta.json last (it marks completion).

    `built_from` in meta.json: the tokenizer's record, `cfg` and `corpus` (the config the
    documents were read with, when the stage was given it)."""
    meta = tokenizer_meta(tok_dir)
    out_dir = Path(out_dir)
    splits = {
        split: tokenize_split(docs, tok_dir, cfg, out_dir / f"{split}.bin",
                              out_dir / f"{split}_blocks.parquet")
        for split, docs in (("train", train_docs), ("val", val_docs))
    }
    info = {
        "format": DATA_FORMAT,
        "block_size": cfg.block_size,
        "dtype": np.dtype(token_file_dtype(cfg.token_dtype, meta["vocab_size"])).name,
        "vocab_size": meta["vocab_size"],
        "eot_id": meta["eot_id"],
        "tokenizer_kind": meta["kind"],
        "tokenizer_sha256": meta["sha256"],
        **{f"{split}_{k}": v for split, s in splits.items() for k, v in s.items()},
        "built_from": {**({"corpus": corpus.model_dump(mode="json")} if corpus else {}),
                       **meta.get("built_from", {}), "data": cfg.model_dump(mode="json")},
    }
    write_json(out_dir / "meta.json", info)
    log.info("tokenize: %s", info)
    return info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m lfr tokenize`."""
    parser.add_argument("--train-docs", type=Path, required=True,
                        help="training documents written by `corpus` (parquet)")
    parser.add_argument("--val-docs", type=Path, required=True,
                        help="held-out documents written by `corpus` (parquet)")
    parser.add_argument("--tokenizer", type=Path, required=True, help="folder written by `tokenizer`")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for token files, block tables, meta.json")


def main(cfg: ExperimentConfig, given: frozenset[str], train_docs: Path, val_docs: Path,
         tokenizer: Path, out: Path) -> None:
    tokenize(train_docs, val_docs, tokenizer, cfg.data, out,
             corpus=cfg.corpus if "corpus" in given else None)
