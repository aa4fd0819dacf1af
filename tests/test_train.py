"""Training: the loss falls, the LR schedule is right, outputs load in transformers, and an
interrupted run resumes to exactly the same result as an uninterrupted one (CPU)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_train, tiny_config

from lfr.config import TrainConfig, config_hash
from lfr.train import TrainingInterrupted, lr_at


def run(cfg, root, out, **kw):
    return run_train(cfg, "random", root, out, **kw)


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


# 50, 2 x 20, 30 and 43 draws of 8 blocks: 7, 3, 3, 4 steps, then floor(163 / 8) - 17 = 3 steps.
# The phase ends (7, 10, 13, 17) miss the log_every (5) and eval_every (10) cadence but one.
SCHEDULE = [{"kind": "learn", "tokens": 32 * 50},
            {"kind": "focus", "drop": 0.5, "tokens": 32 * 20, "repeats": 2},
            {"kind": "review", "tokens": 32 * 30}, {"kind": "focus", "drop": 0.3, "tokens": 32 * 43}]


@pytest.fixture(scope="module")
def lfr_run(prepared, tmp_path_factory):
    """(run dir, the sampler's plan, tokens per step) of a tiny LFR run with five phases."""
    from lfr.data import BlockStore
    from lfr.sampling import RunFacts, build_sampler

    cfg, root = prepared
    options = {"schedule": SCHEDULE}
    cfg = cfg.model_copy(update={"method_options": {"lfr": options}})
    out = tmp_path_factory.mktemp("lfr-run")
    run_train(cfg, "lfr", root, out, run_info={"config_hash": "h", "git_commit": "c"})
    facts = RunFacts(BlockStore.open(root / "data", "train").num_blocks, 8, 32, 0, 1.0)
    return out, build_sampler("lfr", facts, options).plan, 8 * 32


def test_every_phase_is_logged_at_its_last_step(lfr_run):
    out, plan, tokens_per_step = lfr_run
    assert [p.num_steps for p in plan] == [7, 3, 3, 4, 3]
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert list(dict.fromkeys(metrics.phase)) == [p.name for p in plan]
    for p in plan:  # the row after step start + num - 1 (its last step) is labelled with its phase
        row = metrics[metrics.step == p.start_step + p.num_steps]
        assert row.phase.tolist() == [p.name], p
        assert row.tokens.item() == (p.start_step + p.num_steps) * tokens_per_step
    assert metrics.step.is_unique and metrics.step.is_monotonic_increasing


def test_phase_figure_draws_the_planned_spans(lfr_run, tmp_path):
    from lfr.report.figures import phase_spans, plot_phases
    from lfr.report.summarize import load_runs

    out, plan, tokens_per_step = lfr_run
    planned = pd.DataFrame({"phase": [p.name for p in plan],
                            "start_tokens": [p.start_step * tokens_per_step for p in plan],
                            "end_tokens": [(p.start_step + p.num_steps) * tokens_per_step for p in plan]})
    spans = phase_spans(pd.read_parquet(out / "metrics.parquet"))
    pd.testing.assert_frame_equal(spans, planned, check_dtype=False)
    fig = plot_phases(load_runs([out], every_row=True)[1], tmp_path / "phases.png")
    drawn = [(round(r.get_x() * 1e6), round((r.get_x() + r.get_width()) * 1e6))
             for r in fig.axes[0].patches]
    assert drawn == list(zip(planned.start_tokens, planned.end_tokens, strict=True))
