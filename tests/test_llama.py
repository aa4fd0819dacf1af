"""Llama (`arch: llama`): a tiny one trains through the same loop as GPT-2, resumes bit-exactly on
CPU, and its folder loads in transformers and lm-eval like any HF checkpoint."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_train
from test_evaluate import lm_eval_vs_our_nats

from lfr.config import ProfileConfig
from lfr.data import BlockStore
from lfr.distributed import Dist
from lfr.train import TrainingInterrupted, estimate_val_loss, val_subset

SIZE = "llama-nano"  # 2 layers, d 64, 2 heads, SwiGLU 256, tied embeddings


def short(cfg):
    """A quarter epoch of the tiny config (117 steps; checkpoints every 10)."""
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 0.25})})


SNAPSHOTS = ProfileConfig(every_tokens=10_000, sample_blocks=48, batch_size=16)


@pytest.fixture(scope="module")
def llama_run(prepared, tmp_path_factory):
    """(config, prepared dir, run dir, summary) of a short `random` llama-nano run with snapshots."""
    cfg, root = prepared
    out = tmp_path_factory.mktemp("llama")
    return short(cfg), root, out, run_train(short(cfg), "random", root, out, size=SIZE, snapshots=SNAPSHOTS)


def test_a_tiny_llama_trains_and_exports_an_hf_llama(llama_run):
    """The loss falls; run.json's params and FLOPs are Llama's by hand (V 512, d 64, L 2, FFN 256,
    T 32: embedding 32,768 once, 65,664 per layer, final norm 64; no position embeddings); the
    settings name the architecture; the folder is a LlamaForCausalLM that AutoModelForCausalLM
    loads to the trained weights (its validation loss is the run's last)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    cfg, root, out, summary = llama_run
    val = pd.read_parquet(out / "metrics.parquet").dropna(subset=["val_loss"])
    assert val.val_loss.iloc[-1] < val.val_loss.iloc[0] - 0.5  # ln(512) = 6.24 at init
    n = 512 * 64 + 2 * (4 * 64 * 64 + 3 * 64 * 256 + 2 * 64) + 64
    assert summary["params"] == n == 164_160
    assert summary["flops_per_token"] == 6 * n + 12 * 2 * 32 * 64
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert settings["model"] == {"arch": "llama", "n_layer": 2, "n_head": 2, "n_embd": 64,
                                 "n_kv_head": None, "intermediate_size": None, "tie_embeddings": True}
    model = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    assert isinstance(model, LlamaForCausalLM)
    c = model.config
    assert (c.max_position_embeddings, c.intermediate_size, c.hidden_act, c.tie_word_embeddings) == (
        32, 256, "silu", True)
    assert c.bos_token_id == c.eos_token_id == 0  # the end-of-text token
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert len(AutoTokenizer.from_pretrained(out / "model")) == 512
    store = BlockStore.open(root / "data", "val")
    ids = val_subset(store.num_blocks, cfg.train.eval_blocks)
    assert estimate_val_loss(model, store, ids, 8, Dist()) == pytest.approx(summary["val_loss"], abs=1e-5)


@pytest.mark.slow
def test_a_llama_run_resumes_bit_exactly(llama_run, tmp_path):
    from safetensors.torch import load_file

    cfg, root, out, _ = llama_run
    resume = tmp_path / "resume"
    with pytest.raises(TrainingInterrupted):
        run_train(cfg, "random", root, tmp_path / "b", size=SIZE, resume_dir=resume, stop_at_step=13)
    run_train(cfg, "random", root, tmp_path / "b", size=SIZE, resume_dir=resume)
    cols = ["step", "tokens", "train_loss", "val_loss", "lr"]
    pd.testing.assert_frame_equal(pd.read_parquet(out / "metrics.parquet")[cols],
                                  pd.read_parquet(tmp_path / "b/metrics.parquet")[cols])
    wa, wb = load_file(out / "model/model.safetensors"), load_file(tmp_path / "b/model/model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_profiling_a_llama_run_scores_its_snapshots(llama_run, tmp_path):
    """The profile stage on the run's weight snapshots: the last one's losses are the exported
    model's, the first one's an untrained model's (near ln 512)."""
    from transformers import AutoModelForCausalLM

    from lfr.model import block_losses
    from lfr.profile import profile_run

    _, root, out, summary = llama_run
    info = profile_run(out, root / "data", SNAPSHOTS, tmp_path / "losses.parquet", tmp_path / "s.json", "cpu")
    table = pd.read_parquet(tmp_path / "losses.parquet")
    assert info["snapshots"] >= 3 and len(table) == info["snapshots"] * 48
    last = table[table.checkpoint_step == summary["steps"]].sort_values("block_id")
    model = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    with torch.no_grad():
        want = block_losses(model, *(torch.from_numpy(a) for a in BlockStore.open(
            root / "data", "train").batch(last.block_id.to_numpy()))).numpy()
    np.testing.assert_allclose(last.loss.to_numpy(), want, atol=1e-5)
    assert abs(table[table.checkpoint_step == 0].loss.mean() - math.log(512)) < 0.3


@pytest.mark.slow
def test_lm_eval_loads_the_llama_folder(llama_run, tmp_path):
    """lm-eval's HF model on the exported folder, offline, on the local perplexity task over every
    held-out document: its bits per byte agree with our validation loss's (as for GPT-2 in
    tests/test_evaluate.py, within 0.05 nats per token: lm-eval scores each document alone)."""
    cfg, root, out, _ = llama_run
    lm_eval_nats, ours, _ = lm_eval_vs_our_nats(root, out / "model", cfg.data.block_size, tmp_path, SIZE)
    assert abs(lm_eval_nats - ours) < 0.05, (lm_eval_nats, ours)
