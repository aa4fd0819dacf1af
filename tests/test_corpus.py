"""Corpus sources, deterministic document split, and clear errors on bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lfr.config import CorpusConfig
from lfr.corpus import iter_documents, prepare_corpus


def test_bundled_corpus_has_all_domains():
    docs = list(iter_documents(CorpusConfig(source="bundled")))
    domains = pd.Series([d[1] for d in docs]).value_counts()
    assert set(domains.index) == {"kjv", "pydoc", "jargon", "devil"}
    chars = sum(len(d[2]) for d in docs)
    assert 5e6 <= chars <= 10e6
    assert len({d[0] for d in docs}) == len(docs), "doc ids must be unique"


def test_split_is_deterministic_disjoint_and_sized(tmp_path):
    cfg = CorpusConfig(source="bundled", fraction=0.1, val_fraction=0.2)
    stats = prepare_corpus(cfg, tmp_path / "a/train.parquet", tmp_path / "a/val.parquet")
    prepare_corpus(cfg, tmp_path / "b/train.parquet", tmp_path / "b/val.parquet")
    for split in ("train", "val"):
        a, b = (pd.read_parquet(tmp_path / f"{d}/{split}.parquet") for d in "ab")
        pd.testing.assert_frame_equal(a, b)
    train, val = (pd.read_parquet(tmp_path / f"a/{s}.parquet") for s in ("train", "val"))
    assert not set(train.doc_id) & set(val.doc_id)
    assert abs(stats["val_docs"] / stats["docs_seen"] - 0.2) < 0.03  # of the whole corpus
    assert abs(stats["train_docs"] / (stats["docs_seen"] - stats["val_docs"]) - 0.1) < 0.03
    assert set(val.domain) == {"kjv", "pydoc", "jargon", "devil"}


def test_files_source_reads_txt_jsonl_parquet(tmp_path):
    (tmp_path / "docs").mkdir()
    for i in range(30):
        (tmp_path / "docs" / f"{i:02d}.txt").write_text(f"document number {i} " * 20)
    (tmp_path / "docs" / "bad.txt").write_bytes(b"caf\xe9 au lait " * 10)  # latin-1, not UTF-8
    with open(tmp_path / "recs.jsonl", "w") as f:
        for i in range(5):
            f.write(json.dumps({"body": f"json doc {i}", "src": "web"}) + "\n")
    pd.DataFrame({"body": ["pq doc"], "src": ["books"]}).to_parquet(tmp_path / "recs.parquet")
    cfg = CorpusConfig(source="files", paths=[str(tmp_path / "docs"), str(tmp_path / "recs.*")],
                       text_field="body", domain_field="src", val_fraction=0.1)
    docs = list(iter_documents(cfg))
    assert len(docs) == 37
    assert {d[1] for d in docs} == {None, "web", "books"}
    assert any("caf\ufffd au lait" in d[2] for d in docs)


def test_files_split_does_not_depend_on_where_the_corpus_lies(tmp_path):
    for where in ("a", "b/deeper"):
        folder = tmp_path / where / "my_corpus"
        (folder / "sub").mkdir(parents=True)
        for i in range(40):
            (folder / ("sub" if i % 2 else "") / f"{i:02d}.txt").write_text(f"document {i} " * 20)
        with open(folder / "recs.jsonl", "w") as f:
            f.writelines(json.dumps({"text": f"json doc {i}"}) + "\n" for i in range(5))
    splits = []
    for where in ("a", "b/deeper"):
        cfg = CorpusConfig(source="files", paths=[str(tmp_path / where / "my_corpus")], val_fraction=0.3)
        out = tmp_path / "out" / where
        prepare_corpus(cfg, out / "train.parquet", out / "val.parquet")
        splits.append({s: pd.read_parquet(out / f"{s}.parquet") for s in ("train", "val")})
    for split in ("train", "val"):
        pd.testing.assert_frame_equal(splits[0][split], splits[1][split])
    ids = pd.concat(splits[0].values()).doc_id
    assert ids.is_unique and len(ids) == 45 and 5 <= len(splits[0]["val"]) <= 25
    assert {"my_corpus/00.txt", "my_corpus/sub/01.txt", "my_corpus/recs.jsonl:3"} <= set(ids)


def test_missing_text_field_names_the_key(tmp_path):
    (tmp_path / "r.jsonl").write_text(json.dumps({"content": "x"}) + "\n")
    cfg = CorpusConfig(source="files", paths=[str(tmp_path / "r.jsonl")])
    with pytest.raises(ValueError, match=r"corpus\.text_field"):
        list(iter_documents(cfg))


def test_missing_path_and_empty_corpus_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="matches no file"):
        list(iter_documents(CorpusConfig(source="files", paths=[str(tmp_path / "nope/*.txt")])))
    (tmp_path / "empty.txt").write_text("   \n")
    cfg = CorpusConfig(source="files", paths=[str(tmp_path / "empty.txt")])
    with pytest.raises(ValueError, match="split is empty"):
        prepare_corpus(cfg, tmp_path / "t.parquet", tmp_path / "v.parquet")
    assert not (tmp_path / "t.parquet").exists() and not (tmp_path / "v.parquet").exists()


@pytest.mark.parametrize("name", ["with space", "quote ' and \"", "dollar $HOME", "paren (1)",
                                  "brackets [1]", "glob *?", "tilde ~x", "non-ASCII é中"])
def test_a_corpus_folder_with_an_odd_name_is_read_as_it_is(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    for i in range(20):
        (folder / f"doc {i}.txt").write_text(f"document number {i} " * 20)
    cfg = CorpusConfig(source="files", paths=[str(folder)], val_fraction=0.2)
    stats = prepare_corpus(cfg, tmp_path / "train.parquet", tmp_path / "val.parquet")
    docs = pd.concat([pd.read_parquet(tmp_path / f"{s}.parquet") for s in ("train", "val")])
    assert stats["train_docs"] + stats["val_docs"] == 20 == len(docs)
    assert sorted(docs.text) == sorted(f"document number {i} " * 20 for i in range(20))
    assert docs.doc_id.str.startswith(f"{name}/doc ").all()
