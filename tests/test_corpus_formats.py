"""The corpus layouts researchers have: compressed shards, parquet codecs, BOMs, odd text fields,
nested fields and folders that mix corpus files with others. Each case reads the documents or
stops with one ValueError that names the file (docs/data.md, "Your own corpus" and "Bad input data")."""

from __future__ import annotations

import bz2
import codecs
import gzip
import json
import logging
import lzma
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO

from lfr.cli import main
from lfr.config import CorpusConfig
from lfr.corpus import SKIP_HIDDEN, SKIP_META, SKIP_TYPE, iter_documents, prepare_corpus

TEXTS = [f"document {i}: " + "some words " * (i + 1) for i in range(20)]


def jsonl_bytes(records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def compress(data: bytes, codec: str | None) -> bytes:
    if codec in (None, "none"):
        return data
    if codec in ("gzip", "bz2", "xz"):
        return {"gzip": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[codec](data)
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, codec) as f:
        f.write(data)
    return sink.getvalue().to_pybytes()


def run(tmp_path, paths, **corpus):
    """prepare_corpus on `paths`; (stats, all written documents by doc_id)."""
    cfg = CorpusConfig(source="files", paths=[str(p) for p in paths], val_fraction=0.2, **corpus)
    stats = prepare_corpus(cfg, tmp_path / "out/train.parquet", tmp_path / "out/val.parquet")
    docs = pd.concat(pd.read_parquet(tmp_path / f"out/{s}.parquet") for s in ("train", "val"))
    return stats, docs.set_index("doc_id").sort_index()


def fails_naming(path, tmp_path, match="", **corpus):
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + match) as err:
        run(tmp_path, [path], **corpus)
    return str(err.value)


@pytest.mark.parametrize(("name", "codec"), [
    ("c4-train.00000-of-01024.json.gz", "gzip"),  # C4: JSON lines despite .json
    ("dolma-v1_7-0000.json.gz", "gzip"), ("shard.jsonl.gz", "gzip"), ("slimpajama.jsonl.zst", "zstd"),
    ("shard.jsonl.xz", "xz"), ("shard.jsonl.bz2", "bz2"), ("shard.jsonl.lz4", "lz4"),
    ("shard.ndjson.br", "brotli"), ("SHARD.JSONL.GZ", "gzip"), ("plain.jsonl", None),
])
def test_compressed_json_lines_are_read(tmp_path, name, codec):
    records = [{"text": t, "domain": "web"} for t in TEXTS]
    (tmp_path / name).write_bytes(compress(jsonl_bytes(records), codec))
    stats, docs = run(tmp_path, [tmp_path / name])
    assert stats["files_read"] == 1 and len(docs) == 20 and sorted(docs.text) == sorted(TEXTS)
    assert docs.index[0].startswith(f"{tmp_path.name}/{name}:")  # <file>:<line>


def test_multistream_gzip_is_read_whole(tmp_path):
    """Shards concatenated with `cat a.gz b.gz` are one valid gzip file of two members."""
    half = [jsonl_bytes([{"text": t}]) for t in TEXTS]
    (tmp_path / "cat.jsonl.gz").write_bytes(b"".join(gzip.compress(h) for h in half))
    assert len(run(tmp_path, [tmp_path / "cat.jsonl.gz"])[1]) == 20


@pytest.mark.parametrize("codec", ["gzip", "zstd", "bz2", "xz"])
def test_compressed_txt_is_one_document(tmp_path, codec):
    suffix = {"gzip": "gz", "zstd": "zst", "bz2": "bz2", "xz": "xz"}[codec]
    for i, text in enumerate(TEXTS[:10]):
        (tmp_path / f"book{i}.txt.{suffix}").write_bytes(compress(text.encode(), codec))
    _, docs = run(tmp_path, [tmp_path])
    assert len(docs) == 10 and docs.text[f"{tmp_path.name}/book3.txt.{suffix}"] == TEXTS[3]


@pytest.mark.parametrize("codec", ["snappy", "gzip", "zstd", "brotli", "lz4", "none"])
def test_parquet_with_any_codec_is_read(tmp_path, codec):
    table = pa.table({"text": TEXTS, "url": [f"https://x/{i}" for i in range(20)]})
    pq.write_table(table, tmp_path / "000_00000.parquet", compression=codec)
    _, docs = run(tmp_path, [tmp_path / "000_00000.parquet"], domain_field=None)
    assert sorted(docs.text) == sorted(TEXTS)


def test_parquet_row_ids_stay_unique_past_one_batch(tmp_path):
    """Row ids count across batches (they used to restart at each batch of 4096 rows)."""
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(5000)]}), tmp_path / "big.parquet")
    stats, docs = run(tmp_path, [tmp_path / "big.parquet"], domain_field=None)
    assert docs.index.is_unique and len(docs) == 5000 == stats["docs_seen"]
    assert docs.text[f"{tmp_path.name}/big.parquet:4999"] == "row 4999"


def test_a_json_file_may_be_one_array_of_records(tmp_path):
    (tmp_path / "a.json").write_text("\n  " + json.dumps([{"text": t} for t in TEXTS], indent=2))
    _, docs = run(tmp_path, [tmp_path / "a.json"])
    assert len(docs) == 20 and docs.text[f"{tmp_path.name}/a.json:5"] == TEXTS[5]
    (tmp_path / "obj.json").write_text(json.dumps({"data": [{"text": "x"}]}, indent=2))
    fails_naming(tmp_path / "obj.json", tmp_path, "not valid JSON")  # one pretty-printed object


@pytest.mark.parametrize(("name", "data", "why"), [
    ("cut.jsonl.gz", gzip.compress(jsonl_bytes([{"text": t} for t in TEXTS]))[:-30], "EOFError"),
    ("junk.jsonl.gz", b"not gzip at all", "BadGzipFile"),
    ("junk.jsonl.zst", b"not zstd at all", "zstd-compressed"),
    ("junk.jsonl.xz", b"not xz at all", "LZMAError"),
    ("junk.jsonl.bz2", b"not bz2 at all", "bz2-compressed"),
    ("junk.parquet", b"PAR1 but not parquet", "cannot be read as parquet"),
    ("empty.parquet", b"", "cannot be read as parquet"),
])
def test_corrupt_files_stop_naming_the_file(tmp_path, name, data, why):
    (tmp_path / name).write_bytes(data)
    fails_naming(tmp_path / name, tmp_path, why)


@pytest.mark.parametrize("codec", ["utf-8-sig", "utf-16-le", "utf-16-be"])
def test_a_bom_sets_the_encoding(tmp_path, codec):
    bom = {"utf-8-sig": b"", "utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}[codec]
    texts = [t + " café ünïcödé 漢字 🙂" for t in TEXTS]
    lines = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\r\n" for t in texts)
    (tmp_path / "recs.jsonl").write_bytes(bom + lines.encode(codec))
    (tmp_path / "book.txt").write_bytes(bom + "Über\r\nline two 漢字\n".encode(codec))
    stats, docs = run(tmp_path, [tmp_path])
    assert sorted(docs.text) == sorted([*texts, "Über\r\nline two 漢字\n"])  # BOM gone, \r\n kept
    assert stats["bytes_undecodable"] == 0


def test_undecodable_bytes_are_counted_per_file(tmp_path, caplog):
    for i, text in enumerate(TEXTS):
        (tmp_path / f"fine{i}.txt").write_text(text)
    # per line: 1 byte, 2 lone bytes, a 3-byte character cut after 2 bytes (one error of 2 bytes)
    (tmp_path / "a.txt").write_bytes(b"caf\xe9 au lait,\n\xff\xfe not a BOM here\n\xe6\x97 cut\n" * 3)
    (tmp_path / "b.txt").write_bytes(codecs.BOM_UTF16_LE + "odd length".encode("utf-16-le") + b"x")
    with caplog.at_level(logging.WARNING):
        stats, docs = run(tmp_path, [tmp_path])
    warned = [r.getMessage() for r in caplog.records if "undecodable" in r.getMessage()]
    assert warned == [f"{tmp_path / 'a.txt'}: 15 undecodable byte(s) (read as utf-8) were replaced by U+FFFD",
                      f"{tmp_path / 'b.txt'}: 1 undecodable byte(s) (read as utf-16) were replaced by U+FFFD"]
    assert stats["bytes_undecodable"] == 16
    assert docs.text[f"{tmp_path.name}/a.txt"] == (
        "caf\ufffd au lait,\n\ufffd\ufffd not a BOM here\n\ufffd cut\n" * 3)
    assert docs.text[f"{tmp_path.name}/b.txt"] == "odd length\ufffd"


def test_null_empty_and_list_texts_are_counted(tmp_path):
    records = [{"text": t} for t in TEXTS] + [
        {"text": None}, {"text": ""}, {"text": "  \n"}, {"text": []},
        {"text": ["first paragraph", "second paragraph"], "doc_id": "paragraphs"}]
    (tmp_path / "r.jsonl").write_bytes(jsonl_bytes(records))
    stats, docs = run(tmp_path, [tmp_path / "r.jsonl"])
    assert (stats["docs_seen"], stats["docs_empty"]) == (25, 4)
    assert (stats["docs_text_null"], stats["docs_text_list"]) == (1, 2)
    assert docs.text["paragraphs"] == "first paragraph\nsecond paragraph" and len(docs) == 21


@pytest.mark.parametrize(("value", "why"), [
    (42, "holds int 42, not text"), (3.5, "holds float 3.5"), (True, "holds bool True"),
    ({"en": "x"}, r"holds an object \(keys: en\)"), (["a", 1], "a list that is not all strings"),
])
def test_a_text_field_that_is_not_text_stops_naming_file_and_line(tmp_path, value, why):
    (tmp_path / "r.jsonl").write_bytes(jsonl_bytes([{"text": "fine"}, {"text": value}]))
    msg = fails_naming(tmp_path / "r.jsonl", tmp_path, why)
    assert "r.jsonl:2:" in msg and "set corpus.text_field" in msg


def test_parquet_text_columns_of_other_types(tmp_path):
    pq.write_table(pa.table({"text": [[f"p{i}", "q"] for i in range(20)]}), tmp_path / "lists.parquet")
    stats, docs = run(tmp_path, [tmp_path / "lists.parquet"], domain_field=None)
    assert stats["docs_text_list"] == 20 and docs.text[f"{tmp_path.name}/lists.parquet:7"] == "p7\nq"
    binary = [t.encode() for t in TEXTS[:-1]] + [b"caf\xe9"]
    pq.write_table(pa.table({"text": binary}), tmp_path / "bin.parquet")
    stats, docs = run(tmp_path, [tmp_path / "bin.parquet"], domain_field=None)  # binary: UTF-8 bytes
    assert stats["bytes_undecodable"] == 1 and set(docs.text) == {*TEXTS[:-1], "caf\ufffd"}
    pq.write_table(pa.table({"text": list(range(20))}), tmp_path / "ints.parquet")
    fails_naming(tmp_path / "ints.parquet", tmp_path, "row 0: corpus.text_field 'text' holds int 0")
    pq.write_table(pa.table({"body": TEXTS}), tmp_path / "body.parquet")
    fails_naming(tmp_path / "body.parquet", tmp_path, r"no column 'text' \(columns: body\)")


def test_dotted_fields_reach_nested_values(tmp_path):
    """SlimPajama keeps its source in meta.redpajama_set_name; parquet nests it in a struct column."""
    sets = ["RedPajamaC4", "RedPajamaGithub"]
    records = [{"text": t, "meta": {"redpajama_set_name": sets[i % 2]}} for i, t in enumerate(TEXTS)]
    (tmp_path / "slim.jsonl.zst").write_bytes(compress(jsonl_bytes(records), "zstd"))
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "slim.parquet")
    _, docs = run(tmp_path, [tmp_path], domain_field="meta.redpajama_set_name")
    assert len(docs) == 40 and docs.domain.value_counts().to_dict() == dict.fromkeys(sets, 20)
    nested = [{"content": {"body": t}, "meta.src": "flat key"} for t in TEXTS]  # a dotted key wins
    (tmp_path / "n.jsonl").write_bytes(jsonl_bytes(nested))
    pq.write_table(pa.Table.from_pylist(nested), tmp_path / "n.parquet")
    for name in ("n.jsonl", "n.parquet"):
        _, docs = run(tmp_path, [tmp_path / name], text_field="content.body", domain_field="meta.src")
        assert sorted(docs.text) == sorted(TEXTS) and set(docs.domain) == {"flat key"}
    fails_naming(tmp_path / "n.jsonl", tmp_path, "holds an object", text_field="content")


SLIMPAJAMA_SETS = ["RedPajamaCommonCrawl", "RedPajamaC4", "RedPajamaGithub", "RedPajamaBook",
                   "RedPajamaArXiv", "RedPajamaWikipedia", "RedPajamaStackExchange"]


def test_config_paper_v2_reads_slimpajamas_sources_as_domains(tmp_path):
    """config/paper-v2.yaml's corpus section on local shards laid out and shaped like SlimPajama's
    (train/chunk1/example_train_N.jsonl.zst, records {text, meta: {redpajama_set_name}}), through
    the `corpus` stage: every document gets its source set as its domain."""
    corpus = yaml.safe_load((REPO / "config/paper-v2.yaml").read_text())["corpus"]
    assert corpus["domain_field"] == "meta.redpajama_set_name"
    del corpus["hf"]
    corpus |= {"source": "files", "paths": [str(tmp_path / "train")], "fraction": 1.0, "val_fraction": 0.2}
    chunk = tmp_path / "train/chunk1"
    chunk.mkdir(parents=True)
    for shard in range(2):
        records = [{"text": f"{name} document {shard}.{i}: " + "words " * i,
                    "meta": {"redpajama_set_name": name}} for i in range(6) for name in SLIMPAJAMA_SETS]
        (chunk / f"example_train_{shard}.jsonl.zst").write_bytes(compress(jsonl_bytes(records), "zstd"))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"corpus": corpus}))
    main(["corpus", "--config", str(tmp_path / "c.yaml"), "--train-out", str(tmp_path / "out/train.parquet"),
          "--val-out", str(tmp_path / "out/val.parquet")])
    docs = pd.concat(pd.read_parquet(tmp_path / f"out/{s}.parquet") for s in ("train", "val"))
    assert len(docs) == 84 and docs.domain.value_counts().to_dict() == dict.fromkeys(SLIMPAJAMA_SETS, 12)
    assert (docs.text.str.split(" ").str[0] == docs.domain).all()  # each record's own set


def test_a_mixed_folder_reads_corpus_files_and_lists_the_rest(tmp_path):
    root = tmp_path / "corpus"
    for d in ("en/part-1", "fr", ".git/objects", "_temporary/0"):
        (root / d).mkdir(parents=True)
    pq.write_table(pa.table({"text": TEXTS[:5]}), root / "en/part-1/part-00000.snappy.parquet")
    (root / "fr/a.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes([{"text": t} for t in TEXTS[5:]])))
    (root / "notes.txt").write_text("a text file is a document")
    for junk in ("README.md", "LICENSE", "fr/README.txt", "fr/dataset_info.json", "en/part-1/_SUCCESS",
                 "en/part-1/.part-00000.snappy.parquet.crc", ".DS_Store", ".git/objects/ab",
                 "_temporary/0/x.jsonl", "fr/stats.csv", "fr/x.jsonl.lzma"):
        (root / junk).write_text('{"not": "a corpus"}')
    stats, docs = run(tmp_path, [root], domain_field=None)
    assert len(docs) == 21 and stats["files_read"] == 3 and stats["files_skipped"] == 11
    assert stats["skipped"][SKIP_HIDDEN]["count"] == 5  # .DS_Store, .git/, _temporary/, _SUCCESS, .crc
    assert stats["skipped"][SKIP_META]["count"] == 4  # README.md, LICENSE, README.txt, dataset_info.json
    assert stats["skipped"][SKIP_TYPE] == {"count": 2, "names": [str(root / "fr/stats.csv"),
                                                                  str(root / "fr/x.jsonl.lzma")]}
    assert stats["read"] == [str(root / n) for n in ("en/part-1/part-00000.snappy.parquet", "fr/a.jsonl.gz",
                                                     "notes.txt")]
    # a glob skips what a folder skips; a file named exactly must be a corpus file
    assert run(tmp_path, [root / "*"], domain_field=None)[0]["files_skipped"] == 9  # no .git, .DS_Store
    fails_naming(root / "README.md", tmp_path, "unsupported file type; corpus.paths takes .txt")
    named = ["fr/README.txt", "fr/a.jsonl.gz", "notes.txt", "fr/../notes.txt"]  # read, each once
    _, docs = run(tmp_path, [root / n for n in named], domain_field=None)
    assert len(docs) == 17 and docs.text["corpus/fr/README.txt"] == '{"not": "a corpus"}'


def test_a_folder_without_corpus_files_names_what_it_skipped(tmp_path):
    (tmp_path / "d").mkdir()
    for name in ("README.md", "data.arrow", "_SUCCESS"):
        (tmp_path / "d" / name).write_text("x")
    cfg = CorpusConfig(source="files", paths=[str(tmp_path / "d")])
    with pytest.raises(FileNotFoundError, match=r"hold no corpus file .*skipped: 1 hidden .*_SUCCESS; "
                                                r"1 documentation .*README.md; 1 not a corpus .*data.arrow"):
        list(iter_documents(cfg))


def test_the_cli_reports_a_bad_file_in_one_line(tmp_path, capsys):
    (tmp_path / "junk.jsonl.gz").write_bytes(b"not gzip")
    (tmp_path / "c.yaml").write_text(json.dumps({"corpus": {"source": "files",
                                                            "paths": [str(tmp_path / "junk.jsonl.gz")]}}))
    with pytest.raises(SystemExit) as stop:
        main(["corpus", "--config", str(tmp_path / "c.yaml"), "--train-out", str(tmp_path / "t.parquet"),
              "--val-out", str(tmp_path / "v.parquet")])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and err[-1].startswith(f"lfr corpus: error: {tmp_path / 'junk.jsonl.gz'}")


@pytest.mark.parametrize(("line", "why"), [
    (b"not json", "not valid JSON (Expecting value at column 1)"),
    (b'{"text": "cut short', "not valid JSON (Invalid control character at column 20)"),  # the line's end
    (b"[1, 2]", "a record must be a JSON object, got list"),
    (b"3", "a record must be a JSON object, got int"),
])
def test_a_line_that_is_not_a_json_object_stops_the_cli_naming_file_and_line(tmp_path, capsys, line, why):
    (tmp_path / "x.jsonl").write_bytes(b'{"text": "fine"}\n' + line + b"\n")
    (tmp_path / "c.yaml").write_text(json.dumps({"corpus": {"source": "files",
                                                            "paths": [str(tmp_path / "x.jsonl")]}}))
    with pytest.raises(SystemExit) as stop:
        main(["corpus", "--config", str(tmp_path / "c.yaml"), "--train-out", str(tmp_path / "t.parquet"),
              "--val-out", str(tmp_path / "v.parquet")])
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"lfr corpus: error: {tmp_path / 'x.jsonl'}:2: {why}"
    assert not (tmp_path / "t.parquet").exists()


@pytest.mark.parametrize(("line", "why"), [
    (b"[" * 100_000, "cannot parse JSON .maximum recursion depth"),  # was a RecursionError
    (b'{"text": ' + b"1" * 5000 + b"}", r"cannot parse JSON .Exceeds the limit"),  # a bare ValueError
    (b'{"text": "ok", "domain": {"a": 1}}', r"corpus.domain_field holds an object"),  # was "{'a': 1}"
    (b'{"text": "ok", "doc_id": [1]}', "doc_id holds a list"),
    (b'"just a string"', "a record must be a JSON object, got str"),
])
def test_fuzz_found_lines_stop_naming_file_and_line(tmp_path, line, why):
    (tmp_path / "x.jsonl").write_bytes(b'{"text": "fine"}\n' + line + b"\n")
    assert "x.jsonl:2: " in fails_naming(tmp_path / "x.jsonl", tmp_path, why)


def test_fuzz_found_surrogates_and_null_ids_are_written(tmp_path):
    """Lone surrogates in a domain or doc_id crashed the parquet writer; a null doc_id was 'None'."""
    records = [{"text": t} for t in TEXTS] + [
        {"text": "a", "domain": "\ud800"}, {"text": "b", "doc_id": "id\udc00"},
        {"text": "c", "doc_id": None}, {"text": "d", "doc_id": None}]
    (tmp_path / "x.jsonl").write_bytes(jsonl_bytes(records))
    _, docs = run(tmp_path, [tmp_path / "x.jsonl"])
    assert docs.domain[docs.text == "a"].item() == "?" and docs.text["id?"] == "b"
    assert docs.text[f"{tmp_path.name}/x.jsonl:23"] == "c" and docs.text[f"{tmp_path.name}/x.jsonl:24"] == "d"
