"""Stage `corpus`: read documents from a source and split them into train/val by document.

Sources: the bundled demo corpus, local files or a Hugging Face dataset. Local files: `.txt`
(one document per file), `.jsonl`/`.ndjson`/`.json` (JSON lines; a `.json` file may also be one
top-level array of records) and `.parquet` (any codec); the text formats may be compressed
(`.gz`, `.bz2`, `.xz`, `.zst`, `.lz4`, `.br`), as C4, Dolma, RedPajama and SlimPajama ship them.
Each document is `doc_id`, `domain` (may be null) and `text`. The split and the optional subsample
of the training documents use a seeded hash of `doc_id`, so they are deterministic, streamable and
independent of input order and, for local files (whose `doc_id` is the path from the folder that
holds them all), of where the corpus lies. The validation split is always `val_fraction` of the
whole corpus, whatever `fraction` keeps for training. Output: two parquet files, in row groups.
"""

from __future__ import annotations

import argparse
import bz2
import codecs
import glob
import gzip
import hashlib
import io
import json
import logging
import lzma
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from lfr.config import CorpusConfig, ExperimentConfig
from lfr.files import atomic_path

log = logging.getLogger(__name__)

BUNDLED_CORPUS = Path(__file__).parent / "assets" / "demo_corpus.jsonl.xz"
SCHEMA = pa.schema([("doc_id", pa.string()), ("domain", pa.string()), ("text", pa.string())])
Doc = tuple[str, str | None, str]  # (doc_id, domain, text)
UNKNOWN_DOMAIN = "unknown"  # the domain of a record without corpus.domain_field

FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd",
                ".lz4": "lz4", ".br": "brotli"}
SUFFIXES = ".txt, .jsonl, .ndjson, .json (each also .gz, .bz2, .xz, .zst, .lz4, .br) and .parquet"
SKIP_HIDDEN = "hidden (name starts with . or _)"  # .DS_Store, .crc, _SUCCESS, _temporary/
SKIP_TYPE = "not a corpus file type"
SKIP_META = "documentation or dataset metadata"  # README.txt is no document, dataset_info.json no shard
META_STEMS = {"readme", "license", "licence", "notice", "changelog", "citation", "copying", "authors",
              "dataset_info", "dataset_infos", "dataset_dict", "state"}
READ_ERRORS = (OSError, EOFError, lzma.LZMAError, zlib.error, pa.ArrowException)
# No UTF-32: its LE BOM is UTF-16's followed by a NUL character, so the two cannot be told apart.
BOMS = [(codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")]
_MISSING = object()


def unit_hash(seed: int, tag: str, doc_id: str) -> float:
    """Uniform number in [0, 1) from (seed, tag, doc_id); stable across machines."""
    digest = hashlib.blake2b(f"{seed}:{tag}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _count(stats: dict, key: str, n: int = 1) -> None:
    stats[key] = stats.get(key, 0) + n


# Undecodable bytes become U+FFFD and are counted; files are read one at a time, so one counter.
_undecodable = [0]


def _replace_counting(err: UnicodeError) -> tuple[str, int]:
    _undecodable[0] += err.end - err.start
    return "\ufffd", err.end


codecs.register_error("lfr-count", _replace_counting)


def file_format(path: Path) -> tuple[str, str | None] | None:
    """(format, compression) from the name (x.jsonl.zst -> jsonl, zstd); None: not a corpus file."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if not suffixes:
        return None
    compression = COMPRESSIONS.get(suffixes[-1])
    if compression:
        suffixes.pop()
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None or (fmt == "parquet" and compression):
        return None
    return fmt, compression


def _open_bytes(path: Path, compression: str | None) -> BinaryIO:
    if compression is None:
        return open(path, "rb")
    if compression in ("gzip", "bz2", "xz"):  # the stdlib also reads multi-stream files
        return {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}[compression](path)
    return io.BufferedReader(pa.input_stream(str(path), compression=compression))


def _text_lines(path: Path, compression: str | None, stats: dict) -> Iterator[str]:
    """Lines of a text file (ends kept), decoded by its BOM (UTF-8, UTF-16), else as UTF-8."""
    with _open_bytes(path, compression) as f:
        head = f.read(3)
    encoding = next((enc for bom, enc in BOMS if head.startswith(bom)), "utf-8")
    before = _undecodable[0]
    with io.TextIOWrapper(_open_bytes(path, compression), encoding=encoding, errors="lfr-count",
                          newline="\n") as f:  # newline: split at \n only, keep \r\n as it is
        yield from f
    _report_undecodable(path, _undecodable[0] - before, encoding, stats)


def _report_undecodable(path: Path, bad: int, encoding: str, stats: dict) -> None:
    if bad:
        _count(stats, "bytes_undecodable", bad)
        log.warning("%s: %d undecodable byte(s) (read as %s) were replaced by U+FFFD", path, bad, encoding)


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        at = f"line {e.lineno} column {e.colno}" if e.lineno > 1 else f"column {e.colno}"
        msg = e.msg.removesuffix(" at")  # "Invalid control character at", "Unterminated string starting at"
        raise ValueError(f"{where}: not valid JSON ({msg} at {at})") from None
    except (ValueError, RecursionError) as e:  # a huge integer; nesting deeper than Python's stack
        raise ValueError(f"{where}: cannot parse JSON ({e})") from None


def _jsonl_docs(lines: Iterator[str], where: str, id_prefix: str, cfg: CorpusConfig,
                stats: dict) -> Iterator[Doc]:
    """Records of JSON lines; one without a doc_id gets `<id_prefix>:<line>`."""
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            rec = _json(line, f"{where}:{lineno}")
            yield _record_doc(rec, f"{id_prefix}:{lineno}", f"{where}:{lineno}", cfg, stats)


def _json_docs(lines: Iterator[str], where: str, id_prefix: str, cfg: CorpusConfig,
               stats: dict) -> Iterator[Doc]:
    """A .json file: JSON lines (as C4 ships them), or one top-level array of records."""
    head = []
    for line in lines:
        head.append(line)
        if line.strip():
            break
    if not head or not head[-1].lstrip().startswith("["):
        yield from _jsonl_docs(_chain(head, lines), where, id_prefix, cfg, stats)
        return
    records = _json("".join(_chain(head, lines)), where)
    for i, rec in enumerate(records):
        yield _record_doc(rec, f"{id_prefix}:{i}", f"{where}: record {i}", cfg, stats)


def _chain(head: list[str], rest: Iterator[str]) -> Iterator[str]:
    yield from head
    yield from rest


def _parquet_docs(path: Path, doc_name: str, cfg: CorpusConfig, stats: dict) -> Iterator[Doc]:
    """Rows of a parquet file, reading only the columns the fields need (a struct column whole)."""
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    if _column(cfg.text_field, names) is None:
        raise ValueError(f"{path}: no column {cfg.text_field!r} (columns: {', '.join(names[:20])}); "
                         f"set corpus.text_field to the field that holds the text")
    columns = {_column(f, names) for f in (cfg.text_field, cfg.domain_field, "doc_id") if f} - {None}
    row, before = 0, _undecodable[0]
    for batch in pf.iter_batches(batch_size=4096, columns=sorted(columns)):
        for rec in batch.to_pylist():
            yield _record_doc(rec, f"{doc_name}:{row}", f"{path}: row {row}", cfg, stats)
            row += 1
    _report_undecodable(path, _undecodable[0] - before, "utf-8", stats)  # binary text columns


def _column(field: str, names: list[str]) -> str | None:
    """The top-level column holding `field` (itself, or the struct of a dotted path)."""
    top = field.split(".")[0]
    return field if field in names else top if top in names else None


def _field(rec: dict, path: str) -> Any:
    """rec[path] if that key exists, else the dotted path through nested objects
    (meta.redpajama_set_name -> rec["meta"]["redpajama_set_name"]); _MISSING if absent."""
    if path in rec:
        return rec[path]
    value: Any = rec
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return f"an object (keys: {', '.join(map(str, list(value)[:5]))})"
    if isinstance(value, list):
        return "a list that is not all strings"
    return f"{type(value).__name__} {str(value)[:40]}"


def _clean(text: str, what: str, where: str) -> str:
    """Lone surrogates (an escaped "\\ud800" in JSON) cannot be written as UTF-8: they become '?'."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        log.warning("%s: the %s has unpaired surrogates; they were replaced by '?'", where, what)
        text = text.encode("utf-8", errors="replace").decode("utf-8")
    return text


def _text(value: Any, where: str, cfg: CorpusConfig, stats: dict) -> str:
    """A record's text: a string; null counts as empty; a list of strings is joined by newlines.
    Anything else (a number, a boolean, an object) means text_field names the wrong field: stop."""
    if value is _MISSING:
        raise ValueError(f"{where}: no field {cfg.text_field!r}; set corpus.text_field to the field "
                         f"that holds the text (a dotted path for a nested one: meta.text)")
    if isinstance(value, str):
        return _clean(value, "text", where)
    if value is None:
        _count(stats, "docs_text_null")
        return ""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        _count(stats, "docs_text_list")
        return _clean("\n".join(value), "text", where)
    if isinstance(value, bytes):  # a parquet binary column
        return value.decode("utf-8", errors="lfr-count")
    raise ValueError(f"{where}: corpus.text_field {cfg.text_field!r} holds {_kind(value)}, not text; "
                     f"set corpus.text_field to the field that holds the text")


def _label(value: Any, what: str, where: str) -> str | None:
    """A domain or doc_id: a string or a number; null or missing: None; an object or list: stop."""
    if value is _MISSING or value is None:
        return None
    if isinstance(value, dict | list | bytes):
        raise ValueError(f"{where}: {what} holds {_kind(value)}; it must be a string or a number "
                         f"(a dotted path reaches a nested field: meta.source)")
    return _clean(str(value), what, where)


def _record_doc(rec: Any, default_id: str, where: str, cfg: CorpusConfig, stats: dict) -> Doc:
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: a record must be a JSON object, got {type(rec).__name__}")
    text = _text(_field(rec, cfg.text_field), where, cfg, stats)
    domain = _label(_field(rec, cfg.domain_field), "corpus.domain_field", where) if cfg.domain_field else None
    doc_id = _label(rec.get("doc_id"), "doc_id", where)
    return default_id if doc_id is None else doc_id, domain, text


def _file_docs(path: Path, doc_name: str, cfg: CorpusConfig, stats: dict) -> Iterator[Doc]:
    """Documents of one file. Their ids derive from `doc_name` (see `portable_names`), not from
    `path`, so that the split does not change when the corpus moves; messages name `path`."""
    fmt, compression = file_format(path) or (None, None)
    if fmt is None:
        raise ValueError(f"{path}: unsupported file type; corpus.paths takes {SUFFIXES}")
    try:
        if fmt == "parquet":
            yield from _parquet_docs(path, doc_name, cfg, stats)
        elif fmt == "txt":
            yield doc_name, None, "".join(_text_lines(path, compression, stats))
        else:
            reader = _json_docs if fmt == "json" else _jsonl_docs
            yield from reader(_text_lines(path, compression, stats), str(path), doc_name, cfg, stats)
    except READ_ERRORS as e:  # corrupt or truncated archives, not a parquet file, unreadable
        how = f"{fmt}, {compression}-compressed" if compression else fmt
        raise ValueError(f"{path}: cannot be read as {how} ({type(e).__name__}: {e})") from None


def _is_hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _walk(folder: Path, found: dict[Path, Path], skipped: dict[str, set[str]]) -> None:
    """Corpus files under `folder`, recursively (symlinked folders too, once each)."""
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        for d in [d for d in dirs if _is_hidden(d)]:
            skipped[SKIP_HIDDEN].add(os.path.join(root, d) + "/")
            dirs.remove(d)
        for name in files:
            _consider(Path(root) / name, found, skipped)


def _consider(path: Path, found: dict[Path, Path], skipped: dict[str, set[str]]) -> None:
    if _is_hidden(path.name):
        skipped[SKIP_HIDDEN].add(str(path))
    elif path.name.split(".")[0].lower() in META_STEMS:
        skipped[SKIP_META].add(str(path))
    elif file_format(path) is None:
        skipped[SKIP_TYPE].add(str(path))
    else:
        found.setdefault(path.resolve(), path)  # once, however many patterns or links reach it


def resolve_paths(patterns: list[str]) -> tuple[list[Path], dict[str, list[str]]]:
    """The corpus files that `patterns` name, sorted, and those skipped by reason. A folder or glob
    keeps the corpus file types and skips the rest; a file named exactly must be a corpus file."""
    found: dict[Path, Path] = {}  # resolved -> as given
    skipped: dict[str, set[str]] = {SKIP_HIDDEN: set(), SKIP_META: set(), SKIP_TYPE: set()}
    for pattern in patterns:
        exact = os.path.lexists(pattern) or glob.escape(pattern) == pattern  # "corpus [1]/" exists
        matches = [Path(pattern)] if exact else [Path(p) for p in glob.glob(pattern, recursive=True)]
        if not matches or not matches[0].exists():
            raise FileNotFoundError(f"corpus.paths: {pattern!r} matches no file")
        for m in matches:
            if not exact and _is_hidden(m.name):
                skipped[SKIP_HIDDEN].add(str(m) + ("/" if m.is_dir() else ""))
            elif m.is_dir():
                _walk(m, found, skipped)
            elif exact:  # named by hand: read it, whatever its name
                if file_format(m) is None:
                    raise ValueError(f"{m}: unsupported file type; corpus.paths takes {SUFFIXES}")
                found.setdefault(m.resolve(), m)
            else:
                _consider(m, found, skipped)
    listed = {reason: sorted(names) for reason, names in skipped.items() if names}
    if not found:
        raise FileNotFoundError(f"corpus.paths: {patterns} hold no corpus file ({SUFFIXES}); "
                                f"skipped: {_skip_summary(listed) or 'nothing'}")
    return sorted(found.values()), listed


def _skip_summary(skipped: dict[str, list[str]], few: int = 3) -> str:
    return "; ".join(f"{len(names)} {reason}: {', '.join(names[:few])}{', ...' if len(names) > few else ''}"
                     for reason, names in skipped.items())


def portable_names(paths: list[Path]) -> list[str]:
    """Each file's path from the folder that holds them all, that folder's name first
    (/data/my_corpus/a/x.txt -> my_corpus/a/x.txt): unique, and the same wherever the corpus lies."""
    absolute = [p.resolve() for p in paths]
    base = Path(os.path.commonpath([p.parent for p in absolute]))
    return [(Path(base.name) / p.relative_to(base)).as_posix() for p in absolute]


def iter_documents(cfg: CorpusConfig, stats: dict | None = None) -> Iterator[Doc]:
    """All documents of the configured source, before subsampling and splitting. `stats` gets
    the files read and skipped and the counts of null/list texts and undecodable bytes."""
    stats = {} if stats is None else stats
    if cfg.source == "bundled":
        with lzma.open(BUNDLED_CORPUS, "rt", encoding="utf-8") as f:
            yield from _jsonl_docs(f, BUNDLED_CORPUS.name, BUNDLED_CORPUS.name, cfg, stats)
    elif cfg.source == "files":
        paths, skipped = resolve_paths(cfg.paths)
        stats["files_read"], stats["files_skipped"] = len(paths), sum(map(len, skipped.values()))
        stats["skipped"] = {why: {"count": len(names), "names": names[:5]} for why, names in skipped.items()}
        stats["read"] = [str(p) for p in paths[:5]] + (["..."] if len(paths) > 5 else [])
        log.info("corpus: reading %d file(s): %s", len(paths), ", ".join(stats["read"]))
        if skipped:
            log.info("corpus: skipped %s", _skip_summary(skipped))
        for path, doc_name in zip(paths, portable_names(paths), strict=True):
            yield from _file_docs(path, doc_name, cfg, stats)
    else:
        import datasets  # heavy; only for the hf source

        assert cfg.hf is not None
        ds = datasets.load_dataset(cfg.hf.name, cfg.hf.config, split=cfg.hf.split, streaming=True)
        for i, rec in enumerate(ds):
            yield _record_doc(rec, str(i), f"{cfg.hf.name}: record {i}", cfg, stats)


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


def _files_read(stats: dict[str, Any]) -> str:
    return f", from {stats['files_read']} file(s): {', '.join(stats['read'])}" if "read" in stats else ""


def prepare_corpus(cfg: CorpusConfig, train_out: Path, val_out: Path) -> dict[str, Any]:
    """Write the train and val documents; return counts. Fails on an empty split.

    Documents with only whitespace, a null text or an empty list are dropped (counted in
    `docs_empty`; nulls also in `docs_text_null`, lists of strings, joined by newlines, in
    `docs_text_list`). With a `corpus.domain_field`, a document without that field (or with null)
    gets the domain "unknown" (counted in `docs_no_domain`, with a warning); without one, every
    domain is null. For local files, `files_read`, `files_skipped` and `skipped` (per reason: a
    count and a few names) say which files were read.
    """
    stats: dict[str, Any] = dict.fromkeys(["docs_seen", "docs_empty", "docs_text_null", "docs_text_list",
                                           "docs_skipped", "docs_no_domain", "bytes_undecodable"], 0)
    with atomic_path(train_out) as train_tmp, atomic_path(val_out) as val_tmp:
        sinks = {"train": _ParquetSink(train_tmp), "val": _ParquetSink(val_tmp)}
        for doc_id, domain, text in tqdm(iter_documents(cfg, stats), desc="corpus", unit=" docs"):
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
                fix = empty_split_fix(split, stats, cfg)
                raise ValueError(f"corpus: the {split} split is empty ({stats['docs_seen']} documents "
                                 f"read, {stats['docs_empty']} empty, {stats['docs_skipped']} left out "
                                 f"by corpus.fraction{_files_read(stats)}); {fix}")
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m lfr corpus`."""
    parser.add_argument("--train-out", type=Path, required=True, help="parquet of the training documents")
    parser.add_argument("--val-out", type=Path, required=True, help="parquet of the held-out documents")


def main(cfg: ExperimentConfig, train_out: Path, val_out: Path) -> None:
    prepare_corpus(cfg.corpus, train_out, val_out)
