"""Fuzzing the `corpus` stage: random bytes, random JSON values and random encodings, in every
file type it reads. It either writes documents whose texts come from the input or stops with a
ValueError that names the file; never another exception. Fixed seed, a few seconds."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_corpus_formats import compress

from lfr.config import CorpusConfig
from lfr.corpus import prepare_corpus

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("LFR_FUZZ_EXAMPLES", "150"))  # raise it for a longer hunt
FUZZ = settings(derandomize=EXAMPLES <= 150, deadline=None, max_examples=EXAMPLES, database=None,
                suppress_health_check=[HealthCheck.too_slow])
SUFFIXES = {"": None, ".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".lz4": "lz4",
            ".br": "brotli"}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
records = st.lists(st.one_of(json_values, st.fixed_dictionaries({"text": json_values}, optional={
    "domain": json_values, "doc_id": json_values,
    "meta": json_values | st.fixed_dictionaries({"source": json_values})})), max_size=8)


def run_stage(folder: Path, name: str, data: bytes, **corpus) -> pd.DataFrame | None:
    """The documents written from `name` (filler aside), or None if it stopped naming the file."""
    (folder / name).write_bytes(data)
    field = corpus.get("text_field", "text")
    filler = [{"text": {"body": f"filler {i}"}} if field == "text.body" else {field: f"filler {i}"}
              for i in range(40)]  # keeps both splits non-empty
    (folder / "filler.jsonl").write_text("".join(json.dumps(r) + "\n" for r in filler))
    cfg = CorpusConfig(source="files", paths=[str(folder)], val_fraction=0.3, **corpus)
    try:
        prepare_corpus(cfg, folder / "out/train.parquet", folder / "out/val.parquet")
    except ValueError as e:
        assert str(folder / name) in str(e), e
        return None
    docs = pd.concat(pd.read_parquet(folder / f"out/{s}.parquet") for s in ("train", "val"))
    assert all(isinstance(t, str) and t.strip() for t in docs.text)
    return docs[~docs.doc_id.str.startswith(f"{folder.name}/filler.jsonl")]


def expected_texts(recs: list) -> set[str]:
    """Every text a record may give: a string, or a list of strings joined by newlines."""
    texts = {r.get("text") for r in recs if isinstance(r, dict) and isinstance(r.get("text"), str)}
    return texts | {"\n".join(r["text"]) for r in recs if isinstance(r, dict) and isinstance(
        r.get("text"), list) and all(isinstance(v, str) for v in r["text"])}


@FUZZ
@given(data=st.binary(max_size=300), base=st.sampled_from([".txt", ".jsonl", ".json", ".parquet"]),
       suffix=st.sampled_from(sorted(SUFFIXES)), raw=st.booleans())
def test_random_bytes_read_or_stop_naming_the_file(data, base, suffix, raw):
    """Random bytes, as they are (corrupt archives) or validly compressed (random content)."""
    suffix = "" if base == ".parquet" else suffix
    payload = data if raw else compress(data, SUFFIXES[suffix])
    with tempfile.TemporaryDirectory() as tmp:
        run_stage(Path(tmp), f"x{base}{suffix}", payload)


@FUZZ
@given(recs=records, as_array=st.booleans(), encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
       ascii_only=st.booleans(), suffix=st.sampled_from(sorted(SUFFIXES)),
       domain_field=st.sampled_from(["domain", "meta.source", None]))
def test_random_json_records_read_or_stop_naming_the_file(recs, as_array, encoding, ascii_only, suffix,
                                                          domain_field):
    if as_array:
        text, name = json.dumps(recs, ensure_ascii=ascii_only), f"x.json{suffix}"
    else:
        text, name = "".join(json.dumps(r, ensure_ascii=ascii_only) + "\n" for r in recs), f"x.jsonl{suffix}"
    with tempfile.TemporaryDirectory() as tmp:
        docs = run_stage(Path(tmp), name, compress(text.encode(encoding), SUFFIXES[suffix]),
                         domain_field=domain_field)
    if docs is not None:
        assert set(docs.text) <= expected_texts(recs)
        assert all(d is None if domain_field is None else isinstance(d, str) for d in docs.domain)


@FUZZ
@given(text=st.text(max_size=200), encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le",
                                                              "utf-16-be"]))
def test_random_text_in_random_encodings_is_read_exactly(text, encoding):
    """A .txt document decodes to its text: by its BOM, else as UTF-8 (a BOM-less UTF-16 file is
    UTF-8 with undecodable bytes and NULs, so it is left out here)."""
    bom = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}.get(encoding, b"")
    expected = text[1:] if encoding == "utf-8" and text.startswith("\ufeff") else text  # read as a BOM
    with tempfile.TemporaryDirectory() as tmp:
        docs = run_stage(Path(tmp), "x.txt", bom + text.encode(encoding))
    assert docs is not None
    assert list(docs.text) == ([expected] if expected.strip() else [])


columns = st.one_of(st.lists(st.text(max_size=20) | st.none(), min_size=1, max_size=6),
                    st.lists(st.integers(-2**63, 2**63 - 1), min_size=1, max_size=6),
                    st.lists(st.lists(st.text(max_size=5), max_size=3), min_size=1, max_size=6),
                    st.lists(st.fixed_dictionaries({"body": st.text(max_size=5)}), min_size=1, max_size=6),
                    st.lists(st.binary(max_size=10), min_size=1, max_size=6))


@FUZZ
@given(column=columns, field=st.sampled_from(["text", "text.body", "other"]),
       codec=st.sampled_from(["snappy", "zstd", "none"]))
def test_random_parquet_columns_read_or_stop_naming_the_file(column, field, codec):
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"text": column, "domain": ["d"] * len(column)}), sink, compression=codec)
    with tempfile.TemporaryDirectory() as tmp:
        docs = run_stage(Path(tmp), "x.parquet", sink.getvalue().to_pybytes(), text_field=field)
    if docs is not None:
        values = [v.get("body") if isinstance(v, dict) and field == "text.body" else v for v in column]
        recs = [{"text": v.decode("utf-8", "replace") if isinstance(v, bytes) else v} for v in values]
        assert set(docs.text) <= expected_texts(recs)
