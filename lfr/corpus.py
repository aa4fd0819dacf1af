"""Stage `corpus`: read documents from a source and split them into train/val by document.

Sources: the bundled demo corpus, local files (.txt = one document, .jsonl, .parquet) or a
Hugging Face dataset. Each document is `doc_id`, `domain` (may be null) and `text`. The split
and the optional subsample of the training documents use a seeded hash of `doc_id`, so they are
deterministic, streamable and independent of input order and, for local files (whose `doc_id` is
the path from the folder that holds them all), of where the corpus lies. The validation split is
always `val_fraction` of the whole corpus, whatever `fraction` keeps for training. Output: two
parquet files, written in row groups.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import lzma
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from lfr.config import CorpusConfig
from lfr.files import atomic_path

log = logging.getLogger(__name__)

BUNDLED_CORPUS = Path(__file__).parent / "assets" / "demo_corpus.jsonl.xz"
SCHEMA = pa.schema([("doc_id", pa.string()), ("domain", pa.string()), ("text", pa.string())])
Doc = tuple[str, str | None, str]  # (doc_id, domain, text)
UNKNOWN_DOMAIN = "unknown"  # the domain of a record without corpus.domain_field


def unit_hash(seed: int, tag: str, doc_id: str) -> float:
    """Uniform number in [0, 1) from (seed, tag, doc_id); stable across machines."""
    digest = hashlib.blake2b(f"{seed}:{tag}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _decoded(lines: Iterator[bytes], name: str) -> Iterator[str]:
    """UTF-8 lines; invalid bytes become U+FFFD, with one warning per file."""
    bad = 0
    for raw in lines:
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
            yield raw.decode("utf-8", errors="replace")
    if bad:
        log.warning("%s: %d line(s) with invalid UTF-8 bytes; they were replaced by U+FFFD", name, bad)


def _jsonl_docs(lines: Iterator[str], name: str, cfg: CorpusConfig,
                id_prefix: str | None = None) -> Iterator[Doc]:
    """Records of a JSON-lines file `name`; one without a doc_id gets `<id_prefix>:<line>`."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{name}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{name}:{lineno}: a record must be a JSON object, got {type(rec).__name__}")
        yield _record_doc(rec, rec.get("doc_id", f"{id_prefix or name}:{lineno}"), name, cfg)


def _record_doc(rec: dict, doc_id: str, name: str, cfg: CorpusConfig) -> Doc:
    if cfg.text_field not in rec:
        raise ValueError(
            f"{name}: record {doc_id} has no field {cfg.text_field!r}; "
            f"set corpus.text_field to the field that holds the text"
        )
    domain = rec.get(cfg.domain_field) if cfg.domain_field else None
    text = str(rec[cfg.text_field])
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. an escaped "\ud800" in JSON
        log.warning("%s: record %s has unpaired surrogates; they were replaced by '?'", name, doc_id)
        text = text.encode("utf-8", errors="replace").decode("utf-8")
    return str(doc_id), None if domain is None else str(domain), text


def _file_docs(path: Path, doc_name: str, cfg: CorpusConfig) -> Iterator[Doc]:
    """Documents of one file. Their ids derive from `doc_name` (see `portable_names`), not from
    `path`, so that the split does not change when the corpus moves; messages name `path`."""
    if path.suffix == ".txt":
        raw = path.read_bytes()
        text = raw.decode("utf-8", errors="replace")
        if "\ufffd" in text and b"\xef\xbf\xbd" not in raw:
            log.warning("%s: invalid UTF-8 bytes were replaced by U+FFFD", path)
        yield doc_name, None, text
    elif path.suffix == ".jsonl":
        with open(path, "rb") as f:
            yield from _jsonl_docs(_decoded(f, str(path)), str(path), cfg, id_prefix=doc_name)
    elif path.suffix == ".parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for i, rec in enumerate(batch.to_pylist()):
                yield _record_doc(rec, rec.get("doc_id", f"{doc_name}:{i}"), str(path), cfg)
    else:
        raise ValueError(f"{path}: unsupported file type; corpus.paths takes .txt, .jsonl, .parquet")


def resolve_paths(patterns: list[str]) -> list[Path]:
    """Expand globs and folders (their .txt/.jsonl/.parquet files), sorted and de-duplicated."""
    found: set[Path] = set()
    for pattern in patterns:
        matches = [Path(p) for p in glob.glob(pattern, recursive=True)]
        if not matches:
            raise FileNotFoundError(f"corpus.paths: {pattern!r} matches no file")
        for m in matches:
            if m.is_dir():
                found |= {p for ext in ("txt", "jsonl", "parquet") for p in m.rglob(f"*.{ext}")}
            else:
                found.add(m)
    if not found:
        raise FileNotFoundError(f"corpus.paths: {patterns} hold no .txt/.jsonl/.parquet file")
    return sorted(found)


def portable_names(paths: list[Path]) -> list[str]:
    """Each file's path from the folder that holds them all, that folder's name first
    (/data/my_corpus/a/x.txt -> my_corpus/a/x.txt): unique, and the same wherever the corpus lies."""
    absolute = [p.resolve() for p in paths]
    base = Path(os.path.commonpath([p.parent for p in absolute]))
    return [(Path(base.name) / p.relative_to(base)).as_posix() for p in absolute]


def iter_documents(cfg: CorpusConfig) -> Iterator[Doc]:
    """All documents of the configured source, before subsampling and splitting."""
    if cfg.source == "bundled":
        with lzma.open(BUNDLED_CORPUS, "rt", encoding="utf-8") as f:
            yield from _jsonl_docs(f, BUNDLED_CORPUS.name, cfg)
    elif cfg.source == "files":
        paths = resolve_paths(cfg.paths)
        for path, doc_name in zip(paths, portable_names(paths), strict=True):
            yield from _file_docs(path, doc_name, cfg)
    else:
        import datasets  # heavy; only for the hf source

        assert cfg.hf is not None
        ds = datasets.load_dataset(cfg.hf.name, cfg.hf.config, split=cfg.hf.split, streaming=True)
        for i, rec in enumerate(ds):
            yield _record_doc(rec, rec.get("doc_id", str(i)), cfg.hf.name, cfg)


class _ParquetSink:
    """Buffers documents and writes them as parquet row groups."""

    def __init__(self, path: Path, rows_per_group: int = 8192) -> None:
        self.writer = pq.ParquetWriter(path, SCHEMA, compression="zstd")
        self.rows: list[Doc] = []
        self.rows_per_group = rows_per_group
        self.num_docs = self.num_chars = 0

    def add(self, doc: Doc) -> None:
        self.rows.append(doc)
        self.num_docs += 1
        self.num_chars += len(doc[2])
        if len(self.rows) >= self.rows_per_group:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            cols = list(zip(*self.rows, strict=True))
            self.writer.write_table(pa.table(dict(zip(SCHEMA.names, cols, strict=True)), SCHEMA))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


def empty_split_fix(split: str, stats: dict[str, int], cfg: CorpusConfig) -> str:
    """What to change when a split came out empty: the key that emptied it, else the data."""
    if split == "train" and stats["docs_skipped"]:
        return f"raise corpus.fraction (now {cfg.fraction}) or add documents"
    if split == "val" and stats["docs_seen"] > stats["docs_empty"]:
        return f"raise corpus.val_fraction (now {cfg.val_fraction}) or add documents"
    if split == "train" and stats["docs_seen"] > stats["docs_empty"]:
        return f"lower corpus.val_fraction (now {cfg.val_fraction}) or add documents"
    return "add documents with text (check corpus.paths and corpus.text_field)"


def prepare_corpus(cfg: CorpusConfig, train_out: Path, val_out: Path) -> dict[str, int]:
    """Write the train and val documents; return counts. Fails on an empty split.

    Documents with only whitespace are dropped (counted in `docs_empty`). With a
    `corpus.domain_field`, a document without that field (or with null) gets the domain
    "unknown" (counted in `docs_no_domain`, with a warning); without one, every domain is null.
    """
    stats = {"docs_seen": 0, "docs_empty": 0, "docs_skipped": 0, "docs_no_domain": 0}
    with atomic_path(train_out) as train_tmp, atomic_path(val_out) as val_tmp:
        sinks = {"train": _ParquetSink(train_tmp), "val": _ParquetSink(val_tmp)}
        for doc_id, domain, text in tqdm(iter_documents(cfg), desc="corpus", unit=" docs"):
            stats["docs_seen"] += 1
            if not text.strip():
                stats["docs_empty"] += 1
                continue
            split = "val" if unit_hash(cfg.seed, "val", doc_id) < cfg.val_fraction else "train"
            if split == "train" and unit_hash(cfg.seed, "keep", doc_id) >= cfg.fraction:
                stats["docs_skipped"] += 1
                continue
            if domain is None and cfg.domain_field:
                stats["docs_no_domain"] += 1
                domain = UNKNOWN_DOMAIN
            sinks[split].add((doc_id, domain, text))
        for sink in sinks.values():
            sink.close()
        for split, sink in sinks.items():
            stats[f"{split}_docs"], stats[f"{split}_chars"] = sink.num_docs, sink.num_chars
            if sink.num_docs == 0:
                raise ValueError(f"corpus: the {split} split is empty ({stats['docs_seen']} documents "
                                 f"read, {stats['docs_empty']} empty, {stats['docs_skipped']} left out "
                                 f"by corpus.fraction); {empty_split_fix(split, stats, cfg)}")
    if stats["docs_no_domain"]:
        log.warning("corpus: %d of %d documents have no %r field (corpus.domain_field); their domain "
                    "is %r", stats["docs_no_domain"], stats["train_docs"] + stats["val_docs"],
                    cfg.domain_field, UNKNOWN_DOMAIN)
    log.info("corpus: %s", stats)
    return stats


def read_documents(path: Path, batch_size: int = 4096) -> Iterator[list[dict]]:
    """Batches of {doc_id, domain, text} records from a corpus parquet file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found; run the `corpus` stage first")
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
        yield batch.to_pylist()
