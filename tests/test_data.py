"""Token files and fixed blocks: layout, targets, block table, dtypes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config

from lfr.config import ExperimentConfig, token_file_dtype
from lfr.data import BlockStore, check_data_matches
from lfr.grid import validate_config
from lfr.tokenizer import META_FILE, batch_encoder

ALL = set(ExperimentConfig.model_fields)
TRAIN_RULE = {"corpus", "tokenizer", "data", "models", "custom_models", "train", "method_options", "offline"}


def test_blocks_tile_the_token_stream(prepared):
    cfg, root = prepared
    meta = json.loads((root / "data/meta.json").read_text())
    T = cfg.data.block_size
    store = BlockStore.open(root / "data", "train")
    assert store.num_blocks == meta["train_blocks"] == (meta["train_tokens"] - 1) // T
    x, y = store.batch(np.array([0, 1, store.num_blocks - 1]))
    assert x.shape == y.shape == (3, T) and x.dtype == np.int64
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # targets are inputs shifted by one
    np.testing.assert_array_equal(y[0, -1], x[1, 0])  # block i's last target = block i+1's first input
    assert x.max() < meta["vocab_size"]


def test_documents_are_separated_by_eot(prepared):
    _, root = prepared
    docs = pd.read_parquet(root / "corpus/train.parquet")
    tokens = np.memmap(root / "data/train.bin", dtype=np.uint16, mode="r")
    first = batch_encoder(root / "tokenizer")([docs.text.iloc[0]])[0]
    np.testing.assert_array_equal(tokens[: len(first)], first)
    assert tokens[len(first)] == 0  # EOT
    assert (tokens == 0).sum() == len(docs)


def test_block_table_carries_domain_and_document(prepared):
    cfg, root = prepared
    blocks = pd.read_parquet(root / "data/train_blocks.parquet")
    assert list(blocks.columns) == ["block_id", "offset", "domain", "doc_id", "target_bytes"]
    assert (blocks.offset == blocks.block_id * cfg.data.block_size).all()
    docs = pd.read_parquet(root / "corpus/train.parquet").set_index("doc_id")
    assert set(blocks.domain) <= set(docs.domain)
    assert (docs.loc[blocks.doc_id, "domain"].to_numpy() == blocks.domain.to_numpy()).all()


def test_target_bytes_are_the_utf8_bytes_of_the_text_the_targets_encode(prepared):
    """Per block: the UTF-8 size of its targets decoded (EOT: no text); over the whole split: the
    size of every document's text, although characters straddle tokens and blocks."""
    from lfr.tokenizer import load_hf_tokenizer, token_byte_lengths

    cfg, root = prepared
    T, tok = cfg.data.block_size, load_hf_tokenizer(root / "tokenizer")
    blocks = pd.read_parquet(root / "data/val_blocks.parquet")
    tokens = np.memmap(root / "data/val.bin", dtype=np.uint16, mode="r")
    decoded = [tok.decode(tokens[i * T + 1 : i * T + T + 1], skip_special_tokens=True)
               for i in blocks.block_id]
    whole = np.array(["\ufffd" not in text for text in decoded])  # no character cut at the edges
    assert whole.mean() > 0.9
    assert (blocks.target_bytes[whole] == [len(t.encode()) for t in np.array(decoded)[whole]]).all()
    docs = pd.read_parquet(root / "corpus/val.parquet")
    assert token_byte_lengths(root / "tokenizer")[tokens].sum() == sum(len(t.encode()) for t in docs.text)


@pytest.mark.parametrize("chunk", [1, 2, 1 << 14])
def test_target_bytes_by_hand(monkeypatch, chunk):
    """Tokens 0 (EOT), 1, 2, 3 of 0, 1, 3, 4 bytes; blocks of T = 3 predict tokens[1:4], [4:7]."""
    import lfr.tokenize

    monkeypatch.setattr(lfr.tokenize, "CHUNK_BLOCKS", chunk)  # chunks of 1 or 2 blocks: same sums
    tokens = np.array([0, 1, 2, 0, 3, 1, 2, 3], dtype=np.uint16)  # the last token is in no block
    lengths = np.array([0, 1, 3, 4])
    assert lfr.tokenize.block_target_bytes(tokens, 3, 2, lengths).tolist() == [1 + 3 + 0, 4 + 1 + 3]


def test_an_older_data_folder_says_to_rerun_tokenize(prepared, tmp_path):
    cfg, root = prepared
    meta = json.loads((root / "data/meta.json").read_text())
    del meta["format"]  # as the tokenize stage wrote it before block tables had target_bytes
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    message = "meta.json: a data folder of format 1, but this lfr reads format 2 .* rerun the `tokenize`"
    for read in (lambda: check_data_matches(cfg, ALL, tmp_path, None),
                 lambda: BlockStore.open(tmp_path, "val")):
        with pytest.raises(ValueError, match=message):
            read()


@pytest.mark.parametrize(("setting", "vocab", "dtype"), [
    ("auto", 8192, np.uint16), ("auto", 50257, np.uint16), ("auto", 100_000, np.uint32),
    ("uint32", 512, np.uint32),
])
def test_token_file_dtype(setting, vocab, dtype):
    assert np.dtype(token_file_dtype(setting, vocab)) == dtype


def test_data_records_the_config_it_was_built_from(prepared):
    cfg, root = prepared
    built = json.loads((root / "data/meta.json").read_text())["built_from"]
    assert built == {"tokenizer": cfg.tokenizer.model_dump(mode="json"),  # from the tokenizer's meta
                     "data": cfg.data.model_dump(mode="json")}  # no corpus: none was passed
    check_data_matches(cfg, ALL, root / "data", root / "tokenizer")
    check_data_matches(cfg, TRAIN_RULE, root / "data", root / "tokenizer")


@pytest.mark.parametrize(("override", "message"), [
    ({"data": {"block_size": 16}}, "data/meta.json: block_size is 32 but the config's data.block_size "
     "is 16; the data was tokenized with another config: rerun the tokenize stage with this config"),
    ({"tokenizer": {"vocab_size": 600}}, f"tokenizer/{META_FILE}: the tokenizer is bpe with vocab_size "
     "512 but the config's is bpe with 600 (tokenizer.kind, tokenizer.vocab_size); the tokenizer was "
     "built with another config: rerun the tokenizer and tokenize stages with this config"),
    ({"tokenizer": {"train_chars": 300_000}}, "built with tokenizer.train_chars=200000 but the config's "
     "is 300000; the tokenizer was built"),
])
def test_data_built_with_another_config_stops_naming_both_values(prepared, override, message):
    _, root = prepared
    with pytest.raises(ValueError) as err:
        check_data_matches(tiny_config(**override), TRAIN_RULE, root / "data", root / "tokenizer")
    assert message in str(err.value)


def test_several_mismatches_are_one_message_with_the_most_upstream_fix(prepared):
    _, root = prepared
    cfg = tiny_config(data={"block_size": 16}, tokenizer={"vocab_size": 600})
    with pytest.raises(ValueError) as err:
        check_data_matches(cfg, ALL, root / "data", root / "tokenizer")
    lines = str(err.value).splitlines()
    assert len(lines) == 4 and "vocab_size 512" in lines[1] and "block_size is 32" in lines[2]
    assert lines[3].startswith("the tokenizer was built with another config: rerun the tokenizer and")


def test_data_tokenized_with_another_tokenizer_stops(prepared, tmp_path):
    cfg, root = prepared
    shutil.copytree(root / "tokenizer", tmp_path / "tok")
    meta = json.loads((tmp_path / "tok" / META_FILE).read_text())
    (tmp_path / "tok" / META_FILE).write_text(json.dumps({**meta, "sha256": "f" * 64}))
    with pytest.raises(ValueError, match=rf"tokenized with the tokenizer of sha256 {meta['sha256'][:12]}, "
                                         rf"but {tmp_path / 'tok'} holds ffffffffffff; .* pass --tokenizer"):
        check_data_matches(cfg, {"offline"}, root / "data", tmp_path / "tok")  # no config needed


def test_sections_not_given_and_storage_settings_are_not_checked(prepared):
    _, root = prepared
    profile_rule = validate_config({"profile": {"seeds": [0]}, "offline": True})  # defaults elsewhere
    assert (profile_rule.data.block_size, profile_rule.vocab_size) == (128, 8192)
    check_data_matches(profile_rule, {"profile", "offline"}, root / "data", root / "tokenizer")
    eval_rule = validate_config({"eval": {}, "data": {"block_size": 32}, "offline": True})
    check_data_matches(eval_rule, {"eval", "data", "offline"}, None, root / "tokenizer")
    check_data_matches(tiny_config(data={"token_dtype": "uint16"}), ALL, root / "data", root / "tokenizer")
