"""Training: the loss falls, the LR schedule is right, outputs load in transformers, and an
interrupted run resumes to exactly the same result as an uninterrupted one (CPU)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_config

from lfr.config import TrainConfig, config_hash
from lfr.train import TrainingInterrupted, lr_at, train


def run(cfg, root, out, **kw):
    return train(cfg, "nano", "random", 0, root / "data", root / "tokenizer", out, **kw)


@pytest.fixture(scope="module")
def finished(trained):
    return trained


def test_loss_falls_and_outputs_are_complete(finished):
    cfg, _root, out, summary = finished
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert {"step", "tokens", "phase", "train_loss", "val_loss", "lr", "elapsed_s",
            "tokens_per_s"} <= set(metrics.columns)
    val = metrics.dropna(subset=["val_loss"])
    assert val.step.iloc[0] == 0 and val.step.iloc[-1] == summary["steps"]
    assert np.isfinite(val.val_loss).all()
    assert val.val_loss.iloc[-1] < val.val_loss.iloc[0] - 0.5  # ln(512) = 6.24 at init
    assert summary["tokens"] == summary["steps"] * 8 * cfg.data.block_size


def test_run_json_records_the_settings_used_and_their_hash(finished):
    cfg, _root, out, _ = finished
    run = json.loads((out / "run.json").read_text())
    settings = run["settings"]
    assert settings["data"] == {"block_size": 32, "token_dtype": "auto"}  # as read from the data
    assert settings["tokenizer"]["vocab_size"] == 512 and settings["model"] == {
        "n_layer": 2, "n_head": 2, "n_embd": 64}
    assert settings["corpus"] == cfg.corpus.model_dump(mode="json")
    assert (settings["method"], settings["method_options"]) == ("random", {})
    assert set(cfg.train.model_dump()) - set(settings["train"]) == {"device", "log_every", "ckpt_every"}
    assert "seed" not in settings and "seed" not in settings["train"]  # seeds share the hash
    assert run["config_hash"] == config_hash(settings) != "abc"  # not the caller's


def test_checkpoint_is_a_loadable_hf_model(finished):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, _root, out, summary = finished
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert len(tok) == 512 and tok.model_max_length == 32
    assert sum(p.numel() for p in model.parameters()) == summary["params"]
    x = torch.tensor([tok.encode("In the beginning God created")])
    assert torch.isfinite(model(x).logits).all()


def test_checkpoint_uses_gpt2s_gelu_in_its_fused_form(finished):
    """Our models use torch's tanh-GELU, the function GPT-2's `gelu_new` computes in Python."""
    from transformers import AutoModelForCausalLM
    from transformers.activations import ACT2FN

    model = AutoModelForCausalLM.from_pretrained(finished[2] / "model")
    assert model.config.activation_function == "gelu_pytorch_tanh"
    x = torch.linspace(-8, 8, 10_001)
    act = model.transformer.h[0].mlp.act
    torch.testing.assert_close(act(x), ACT2FN["gelu_new"](x), atol=1e-6, rtol=1e-5)
    assert not torch.equal(act(x), ACT2FN["gelu"](x))  # not the exact erf GELU


def test_lr_warms_up_then_decays_fully():
    cfg = TrainConfig(lr=1.0, min_lr_ratio=0.1, warmup_frac=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] == pytest.approx(0.1)


def test_resume_equals_uninterrupted(finished, tmp_path):
    cfg, root, out, _ = finished
    resume = tmp_path / "resume"
    with pytest.raises(TrainingInterrupted):
        run(cfg, root, tmp_path / "b", resume_dir=resume, stop_at_step=17)
    assert [c.name for c in sorted(resume.glob("ckpt-*.pt"))] == ["ckpt-000000010.pt", "ckpt-000000017.pt"]
    assert not (tmp_path / "b/run.json").exists()
    run(cfg, root, tmp_path / "b", resume_dir=resume)
    cols = ["step", "tokens", "train_loss", "val_loss", "lr"]
    a = pd.read_parquet(out / "metrics.parquet")[cols]
    b = pd.read_parquet(tmp_path / "b/metrics.parquet")[cols]
    pd.testing.assert_frame_equal(a, b)  # bit-exact on CPU
    from safetensors.torch import load_file

    wa, wb = load_file(out / "model/model.safetensors"), load_file(tmp_path / "b/model/model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not resume.exists()  # cleaned up once the run completed


def test_cuda_request_without_gpu_fails_loudly(prepared, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    _, root = prepared
    with pytest.raises(RuntimeError, match="no CUDA device"):
        run(tiny_config(train={"device": "cuda"}), root, tmp_path)


def test_corrupt_checkpoint_falls_back_to_the_previous_one(finished, tmp_path, caplog):
    from lfr import checkpoint

    for step in (10, 20):
        checkpoint.save(tmp_path, step, {"w": torch.full((1000,), float(step))})
    newest = tmp_path / "ckpt-000000020.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # a kill mid-write, outside the atomic rename
    state = checkpoint.load_latest(tmp_path)
    assert state["step"] == 10 and state["w"][0] == 10
    assert "corrupt" in caplog.text
    (tmp_path / "ckpt-000000010.pt").write_bytes(b"junk")
    with pytest.raises(RuntimeError, match="no intact checkpoint"):
        checkpoint.load_latest(tmp_path)
