"""Training: the loss falls, the LR schedule is right, outputs load in transformers, and an
interrupted run resumes to exactly the same result as an uninterrupted one (CPU)."""

from __future__ import annotations

import itertools
import json
import math
import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_train, tiny_config

from lfr.config import TrainConfig, config_hash
from lfr.data import BlockStore
from lfr.train import TrainingInterrupted, bits_per_byte, lr_at


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
    assert set(cfg.train.model_dump()) - set(settings["train"]) == {"device", "log_every", "ckpt_every",
                                                                   "tensorboard"}
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


def test_bits_per_byte_by_hand():
    """Two blocks of 3 targets with mean losses 2.0 and 1.0 nats over 4 and 8 bytes: 9 nats over 12
    bytes, 9 / (12 ln 2) bits per byte (a ratio of sums, not the mean of the blocks' 2.16, 0.54)."""
    assert bits_per_byte(1.5, 6, 12) == pytest.approx(9 / (12 * math.log(2)))
    assert bits_per_byte(1.5, 6, 12) == pytest.approx(1.0820, abs=1e-4)


def test_val_bpb_is_logged_with_every_val_loss(finished):
    """val_bpb = val_loss x the validation subset's target tokens / (ln 2 x their bytes), in every
    metrics row that has a validation loss and in run.json."""
    from lfr.data import target_bytes
    from lfr.train import val_subset

    cfg, root, out, summary = finished
    ids = val_subset(BlockStore.open(root / "data", "val").num_blocks, cfg.train.eval_blocks)
    tokens, n_bytes = len(ids) * cfg.data.block_size, target_bytes(root / "data", "val")[ids].sum()
    assert 1.5 < n_bytes / tokens < 6  # a 512-token BPE on English: a few bytes a token
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert (metrics.val_loss.notna() == metrics.val_bpb.notna()).all()
    val = metrics.dropna(subset=["val_loss"])
    np.testing.assert_allclose(val.val_bpb, val.val_loss * tokens / (math.log(2) * n_bytes), rtol=1e-12)
    assert summary["val_bpb"] == json.loads((out / "run.json").read_text())["val_bpb"] == val.val_bpb.iloc[-1]


def test_lr_warms_up_then_decays_fully():
    cfg = TrainConfig(lr=1.0, min_lr_ratio=0.1, warmup_frac=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] == pytest.approx(0.1)


@pytest.mark.slow
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


# 50, 2 x 20, 30 and 43 draws of 8 blocks: 7, 3, 3, 4 steps, then floor(163 / 8) - 17 = 3 steps,
# in a run of 163 draws (LFR's `epochs`: 163 / blocks), so the schedule fills it as written.
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
    blocks = BlockStore.open(root / "data", "train").num_blocks
    options = {"schedule": SCHEDULE, "epochs": 163 / blocks}
    cfg = cfg.model_copy(update={"method_options": {"lfr": options}})
    out = tmp_path_factory.mktemp("lfr-run")
    run_train(cfg, "lfr", root, out, run_info={"config_hash": "h", "git_commit": "c"})
    facts = RunFacts(blocks, 8, 32, 0, 1.0)
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


@pytest.mark.slow
def test_lfr_with_dropout_resumes_to_the_same_run(prepared, tmp_path):
    """Dropout draws from torch's global RNG every step, so the resumed run matches only if the
    checkpoint restores the RNGs; LFR resumes mid-focus with its scores, kept set and window."""
    _, root = prepared
    schedule = [{"kind": "learn", "epochs": 1}, {"kind": "focus", "drop": 0.5, "epochs": 1}]
    cfg = tiny_config(train={"dropout": 0.1}, method_options={"lfr": {"schedule": schedule}})
    whole = run_train(cfg, "lfr", root, tmp_path / "a")
    stop = whole["steps"] - 3  # inside the focus phase
    with pytest.raises(TrainingInterrupted):
        run_train(cfg, "lfr", root, tmp_path / "b", resume_dir=tmp_path / "resume", stop_at_step=stop)
    resumed = run_train(cfg, "lfr", root, tmp_path / "b", resume_dir=tmp_path / "resume")
    assert resumed["sampler_state_sha256"] == whole["sampler_state_sha256"]
    cols = ["step", "phase", "train_loss", "val_loss", "lr"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a/metrics.parquet")[cols],
                                  pd.read_parquet(tmp_path / "b/metrics.parquet")[cols])
    for name in ("phase01_focus", "final"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / f"a/records/{name}.parquet"),
                                      pd.read_parquet(tmp_path / f"b/records/{name}.parquet"))


def test_the_logged_lr_is_the_cosine_over_the_whole_plan(finished):
    """Every logged `lr` is the schedule's value at that row's last step, over the run's own step
    count; the schedule is a cosine (its midpoint is halfway between lr and the floor)."""
    cfg, _, out, summary = finished
    metrics = pd.read_parquet(out / "metrics.parquet").dropna(subset=["lr"])
    expected = [lr_at(step - 1, summary["steps"], cfg.train) for step in metrics.step]
    np.testing.assert_allclose(metrics.lr, expected, rtol=0, atol=0)
    tc = TrainConfig(lr=1.0, min_lr_ratio=0.1, warmup_frac=0.0)
    assert lr_at(50, 101, tc) == pytest.approx(0.55)  # cos(pi/2) = 0: the mean of 1.0 and 0.1
    assert lr_at(25, 101, tc) == pytest.approx(0.1 + 0.9 * (1 + np.cos(np.pi / 4)) / 2)


def one_step_gradients(prepared, weights, batch_size=8, grad_accum=1, blocks=8):
    """The parameter change of one optimizer_step with SGD(lr=1) (= minus the gradient), the
    demo-shaped tiny model, fixed ids."""
    from lfr.data import BlockStore
    from lfr.distributed import Dist
    from lfr.loader import StepBatch
    from lfr.model import build_model, model_config
    from lfr.tokenizer import tokenizer_meta
    from lfr.train import optimizer_step

    cfg, root = prepared
    meta = tokenizer_meta(root / "tokenizer")
    torch.manual_seed(0)
    model = build_model(model_config(cfg.model_preset("nano"), meta["vocab_size"], 32, meta["eot_id"]))
    model = model.double()
    before = [p.detach().clone() for p in model.parameters()]
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)
    tc = cfg.train.model_copy(update={"batch_size": batch_size, "grad_accum": grad_accum, "grad_clip": 0})
    store = BlockStore.open(root / "data", "train")
    optimizer_step(model, sgd, StepBatch.load(store, np.arange(blocks), weights), tc, Dist())
    return torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters(), strict=True)])


def test_loss_weights_reach_the_gradient(prepared):
    """A block's loss weight scales its gradient: twice the weights give twice the gradient, and
    weights 1, 1, 0, ... give the gradient of blocks 0 and 1 alone, as 2 of the batch's 8."""
    w_none = one_step_gradients(prepared, None)
    w_two = one_step_gradients(prepared, np.full(8, 2.0, dtype=np.float32))
    torch.testing.assert_close(w_two, 2 * w_none, rtol=1e-5, atol=1e-9)
    first_two = one_step_gradients(prepared, np.array([1, 1, 0, 0, 0, 0, 0, 0], dtype=np.float32))
    alone = one_step_gradients(prepared, None, batch_size=2, blocks=2)
    torch.testing.assert_close(first_two, alone / 4, rtol=1e-5, atol=1e-9)
    assert not torch.allclose(first_two, w_none / 4, rtol=1e-3)  # the other blocks count for nothing


def test_grad_accumulation_equals_one_batch(prepared):
    """grad_accum micro-batches (DDP's no_sync on all but the last) give the gradient of one
    batch of the same blocks."""
    one = one_step_gradients(prepared, None, batch_size=8, grad_accum=1)
    accumulated = one_step_gradients(prepared, None, batch_size=2, grad_accum=4)
    torch.testing.assert_close(accumulated, one, rtol=1e-5, atol=1e-9)


def test_a_non_finite_loss_stops_the_run_naming_the_blocks():
    from lfr.train import check_finite

    ids = np.array([10, 11, 12])
    check_finite(np.array([1.0, 2.0, 3.0]), ids, 5, None)
    with pytest.raises(FloatingPointError, match=r"step 5 \(blocks \[11\]\).*Lower train.lr"):
        check_finite(np.array([1.0, np.nan, 3.0]), ids, 5, None)
    with pytest.raises(FloatingPointError, match="blocks \\[12\\]"):
        check_finite(np.array([1.0, 2.0, np.inf]), ids, 5, None)


def test_a_stop_is_asked_by_sigterm_sigusr1_or_the_deadline():
    import os
    import signal
    import time

    from lfr.train import StopRequest

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        assert StopRequest(time.time(), None).reason() is None  # no limit: never late
        assert StopRequest(time.time(), 60).reason() is None  # 60 min left, 3 min margin
        late = StopRequest(time.time() - 58 * 60, 60)  # 2 min left < the 3 min kept to save
        assert late.reason().startswith("the job's time limit is near; it left 0 s to train")
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            stopper = StopRequest(time.time(), None)
            os.kill(os.getpid(), sig)
            assert stopper.reason() == signal.Signals(sig).name
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_the_deadline_is_the_earlier_of_the_limits_less_the_stop_margin():
    """The limit SLURM enforces (squeue's time left and limit) counts as much as the job's given
    limit; the margin is stop_margin_s, else max(120 s, 5% of the limit). A run whose whole
    budget was shorter than its margin says so when it stops."""
    import signal
    import time

    from lfr.train import StopRequest

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        now = time.time()
        limited = StopRequest(now, 60, stop_margin_s=10, slurm=(30.0, 60.0))  # SLURM's is earlier
        assert limited.deadline == pytest.approx(now + 20, abs=1)
        assert StopRequest(now, 1, slurm=(3000.0, 3600.0)).deadline == pytest.approx(now - 60, abs=1)
        day = StopRequest(now, None, slurm=(86400.0, 86400.0))
        assert day.deadline == pytest.approx(now + 86400 - 4320, abs=1)  # 5% of a day
        short = StopRequest(now, None, slurm=(100.0, 180.0))  # 120 s margin: no time to train
        assert short.reason().startswith("the job's time limit is near; it left 0 s to train: give the "
                                         "job a longer limit (resources.<size>.runtime_min)")
        late = StopRequest(now, 10, stop_margin_s=30)  # trained for most of its job
        late.deadline = time.time() - 1
        assert late.reason() == "the job's time limit is near"
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_a_slurm_jobs_time_comes_from_squeue(tmp_path, monkeypatch):
    from lfr.runtime import slurm_seconds, slurm_time

    assert [slurm_seconds(t) for t in ("1-02:03:04", "02:03:04", "03:04", "5", "2-5", "UNLIMITED", "")] == [
        93784, 7384, 184, 300, 190800, None, None]
    (tmp_path / "squeue").write_text('#!/bin/sh\necho "$@" > "$0.args"; echo "12:30|1:00:00"\n')
    (tmp_path / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert slurm_time({}) is None  # not in a SLURM job
    assert slurm_time({"SLURM_JOB_ID": "42"}) == (750, 3600)
    assert (tmp_path / "squeue.args").read_text().split() == ["--noheader", "--jobs", "42", "--format",
                                                              "%L|%l"]


@pytest.mark.slow
def test_a_padded_vocabulary_is_never_predicted_and_leaves_the_loss_as_it_is(prepared, tmp_path):
    """tokenizer.vocab_multiple: unused tokens up to the multiple (500 -> 512), the text encoded to
    the same ids, so no target is ever padding; the model has the padded rows, and a short run
    (1 epoch, 476 steps) drives their probability to 4e-4: the loss over the whole softmax (the
    tables' val_loss, lm-eval's) is the loss over the real vocabulary within 1e-3 nats (4e-4 here;
    1e-5 after 4 epochs; at paper scale, 10^5 steps, far closer). The saved generation config
    suppresses the padding, so that no generated token is one (lm-eval's generation tasks)."""
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from lfr.tokenize import tokenize
    from lfr.tokenizer import prepare_tokenizer, tokenizer_meta

    _, root = prepared
    tokens = {}
    for multiple in (None, 64):
        cfg = tiny_config(tokenizer={"vocab_size": 500, "vocab_multiple": multiple})
        folder = tmp_path / f"pad{multiple}"
        prepare_tokenizer(cfg.tokenizer, root / "corpus/train.parquet", folder / "tokenizer")
        tokenize(root / "corpus/train.parquet", root / "corpus/val.parquet", folder / "tokenizer", cfg.data,
                 folder / "data")
        tokens[multiple] = [np.fromfile(folder / f"data/{part}.bin", np.uint16) for part in ("train", "val")]
    assert tokenizer_meta(folder / "tokenizer")["vocab_size"] == cfg.vocab_size == 512
    assert all(np.array_equal(a, b) for a, b in zip(tokens[None], tokens[64], strict=True))
    assert max(t.max() for t in tokens[64]) < 500  # never a target
    summary = run_train(cfg, "random", folder, tmp_path / "run")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run/model").eval()
    assert model.get_output_embeddings().weight.shape[0] == 512
    val = BlockStore.open(folder / "data", "val")
    x, y = (torch.from_numpy(a) for a in val.batch(np.arange(val.num_blocks)))
    with torch.no_grad():
        logits = model(input_ids=x).logits
    whole = F.cross_entropy(logits.flatten(0, 1), y.flatten().long()).item()
    real = F.cross_entropy(logits[..., :500].flatten(0, 1), y.flatten().long()).item()
    assert abs(whole - real) < 1e-3 and logits.softmax(-1)[..., 500:].sum(-1).mean() < 1e-3
    assert summary["val_loss"] == pytest.approx(whole, abs=0.2)  # its subset of the blocks
    assert model.generation_config.suppress_tokens == list(range(500, 512))
    prompt = x[:4, :8]
    generated = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=16,
                               do_sample=False)
    assert generated.max() < 500


@pytest.mark.slow
def test_train_batch_blocks_trains_as_the_grad_accum_it_implies(prepared, tmp_path):
    _, root = prepared
    short = {"batch_size": 4, "epochs": 0.2}
    implied = run_train(tiny_config(train=short | {"batch_blocks": 8}), "random", root, tmp_path / "a")
    spelled = run_train(tiny_config(train=short | {"grad_accum": 2}), "random", root, tmp_path / "b")
    assert implied["batch_blocks"] == spelled["batch_blocks"] == 8 and implied["steps"] == spelled["steps"]
    cols = ["step", "tokens", "train_loss", "val_loss"]
    pd.testing.assert_frame_equal(*(pd.read_parquet(tmp_path / d / "metrics.parquet")[cols] for d in "ab"))
    assert implied["settings"]["train"]["batch_blocks"] == 8  # the hash covers the setting as given
    assert implied["settings"]["train"]["grad_accum"] == 1


@pytest.mark.slow
def test_a_budget_is_its_own_run_decayed_at_its_own_end(prepared, tmp_path):
    """A sweep's run at budget 0.5 trains half the steps of the default run (`random`: 0.5 x
    epochs passes) and its LR reaches the floor at its own last step, not halfway down a cosine."""
    cfg, root = prepared
    summary = run_train(cfg, "random", root, tmp_path, budget=0.5)
    blocks = pd.read_parquet(root / "data/train_blocks.parquet")
    assert summary["steps"] == int(cfg.train.epochs * 0.5 * len(blocks)) // cfg.train.batch_size
    assert summary["budget"] == 0.5 and summary["settings"]["budget"] == 0.5
    lr = pd.read_parquet(tmp_path / "metrics.parquet").dropna(subset=["lr"]).lr
    assert lr.iloc[-1] == pytest.approx(cfg.train.lr * cfg.train.min_lr_ratio)
    assert json.loads((tmp_path / "run.json").read_text())["budget"] == 0.5
