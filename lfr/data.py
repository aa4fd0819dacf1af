"""Stage `tokenize` and the block store that training reads.

Each split becomes one flat token file (`train.bin`, `val.bin`: documents joined, each followed
by EOT) plus a block table. Block i is the fixed, contiguous window tokens[i*T : i*T + T + 1]:
T inputs and their T next-token targets, so every token after the first is predicted exactly
once per epoch and a block keeps its identity across epochs (what LFR tracks). A block's
`domain` and `doc_id` are those of the document holding its middle token.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from lfr.config import DataConfig
from lfr.corpus import read_documents
from lfr.files import atomic_path, write_json, write_parquet
from lfr.tokenizer import piece_encoder, tokenizer_meta

log = logging.getLogger(__name__)


def token_dtype(cfg: DataConfig, vocab_size: int) -> np.dtype:
    if cfg.token_dtype == "uint32" or (cfg.token_dtype == "auto" and vocab_size > 65_536):
        return np.dtype(np.uint32)
    if vocab_size > 65_536:
        raise ValueError(f"data.token_dtype=uint16 cannot hold vocab {vocab_size}; use uint32")
    return np.dtype(np.uint16)


def tokenize_split(docs_path: Path, tok_dir: Path, cfg: DataConfig, bin_out: Path,
                   blocks_out: Path) -> dict:
    """Tokenize one split to a flat token file and its block table; return its statistics."""
    meta = tokenizer_meta(tok_dir)
    encode, eot, dtype = piece_encoder(tok_dir), meta["eot_id"], token_dtype(cfg, meta["vocab_size"])
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
    })
    write_parquet(blocks_out, blocks)
    return {"tokens": num_tokens, "documents": len(doc_ids), "blocks": num_blocks}


def tokenize(train_docs: Path, val_docs: Path, tok_dir: Path, cfg: DataConfig, out_dir: Path) -> dict:
    """Tokenize both splits into out_dir and write meta.json last (it marks completion)."""
    meta = tokenizer_meta(tok_dir)
    out_dir = Path(out_dir)
    splits = {
        split: tokenize_split(docs, tok_dir, cfg, out_dir / f"{split}.bin",
                              out_dir / f"{split}_blocks.parquet")
        for split, docs in (("train", train_docs), ("val", val_docs))
    }
    info = {
        "block_size": cfg.block_size,
        "dtype": token_dtype(cfg, meta["vocab_size"]).name,
        "vocab_size": meta["vocab_size"],
        "eot_id": meta["eot_id"],
        "tokenizer_kind": meta["kind"],
        "tokenizer_sha256": meta["sha256"],
        **{f"{split}_{k}": v for split, s in splits.items() for k, v in s.items()},
    }
    write_json(out_dir / "meta.json", info)
    log.info("tokenize: %s", info)
    return info


@dataclass
class BlockStore:
    """Random access to the fixed blocks of one split, backed by a read-only memmap."""

    tokens: np.memmap
    block_size: int
    num_blocks: int

    @classmethod
    def open(cls, data_dir: Path, split: str) -> BlockStore:
        data_dir = Path(data_dir)
        meta_path = data_dir / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} not found; run the `tokenize` stage first")
        meta = json.loads(meta_path.read_text())
        tokens = np.memmap(data_dir / f"{split}.bin", dtype=meta["dtype"], mode="r")
        return cls(tokens, meta["block_size"], meta[f"{split}_blocks"])

    def batch(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets, each (B, T) int64, for the given block ids."""
        T = self.block_size
        rows = np.stack([self.tokens[i * T : i * T + T + 1] for i in np.asarray(ids)])
        rows = rows.astype(np.int64)
        return rows[:, :-1], rows[:, 1:]
