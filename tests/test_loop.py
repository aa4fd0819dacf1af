"""The training loop's traffic with the host: at most one wait for the device per optimizer step
(none for a sampler that reads no losses, but at log rows and checkpoints), late losses for the
samplers that accept them, and the same run either way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_train

import lfr.distributed
from lfr.data import BlockStore
from lfr.sampling.lfr import LFRSampler

# 50, 2 x 20, 30 and 43 draws of 8 blocks: 7, 3, 3, 4 and 3 steps (20), phase ends 7, 10, 13, 17.
SCHEDULE = [{"kind": "learn", "tokens": 32 * 50},
            {"kind": "focus", "drop": 0.5, "tokens": 32 * 20, "repeats": 2},
            {"kind": "review", "tokens": 32 * 30}, {"kind": "focus", "drop": 0.3, "tokens": 32 * 43}]


def counted(cfg, method, root, out, **job):
    """(summary, host syncs of the run, its metrics)."""
    before = lfr.distributed.host_syncs
    summary = run_train(cfg, method, root, out, **job)
    return summary, lfr.distributed.host_syncs - before, pd.read_parquet(out / "metrics.parquet")


@pytest.mark.slow
def test_random_waits_for_the_device_only_at_log_rows_and_checkpoints(prepared, tmp_path):
    cfg, root = prepared
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"log_every": 4, "eval_every": 8,
                                                                        "epochs": 0.5})})
    summary, syncs, metrics = counted(cfg, "random", root, tmp_path / "a")
    steps = summary["steps"]
    logged = {s for s in range(1, steps + 1) if s % 4 == 0 or s == steps}
    assert steps > 10 and syncs == len(logged) == len(metrics) - 1  # the row at step 0 is no step
    with_ckpt = cfg.model_copy(update={"train": cfg.train.model_copy(update={"ckpt_every": 6})})
    _, syncs, _ = counted(with_ckpt, "random", root, tmp_path / "b", resume_dir=tmp_path / "resume")
    assert syncs == len(logged | {s for s in range(6, steps, 6)})


def recorded(method, name, calls):
    """`method` that first appends (name, step) to `calls`."""
    def wrapper(self, step, *args):
        calls.append((name, step))
        return method(self, step, *args)
    return wrapper


@pytest.fixture(scope="module")
def lfr_calls(prepared, tmp_path_factory):
    """An LFR run with its calls to the sampler recorded in order, once with late losses and once
    without: [(summary, syncs, metrics, out, calls)] x 2."""
    cfg, root = prepared
    blocks = BlockStore.open(root / "data", "train").num_blocks  # a run of the schedule's 163 draws
    cfg = cfg.model_copy(update={"method_options": {"lfr": {"schedule": SCHEDULE, "epochs": 163 / blocks}}})
    runs = []
    for late in (True, False):
        calls: list[tuple[str, int]] = []
        mp = pytest.MonkeyPatch()
        mp.setattr(LFRSampler, "observes", "late" if late else "now")
        mp.setattr(LFRSampler, "batch_ids", recorded(LFRSampler.batch_ids, "ids", calls))
        mp.setattr(LFRSampler, "observe", recorded(LFRSampler.observe, "observe", calls))
        out = tmp_path_factory.mktemp(f"late-{late}")
        try:
            runs.append((*counted(cfg, "lfr", root, out), out, calls))
        finally:
            mp.undo()
    return runs


def test_lfr_waits_once_a_step_and_gets_its_losses_one_step_late_within_a_phase(lfr_calls):
    (summary, syncs, metrics, _, calls), _ = lfr_calls
    steps, ends = summary["steps"], {7, 10, 13, 17}
    assert steps == 20 and syncs == steps
    order = {call: i for i, call in enumerate(calls)}
    assert len(order) == 2 * steps  # each step asked for once and observed once
    logged = set(metrics.step)
    for s in range(steps - 1):
        late = order[("ids", s + 1)] < order[("observe", s)]
        # late unless the next step starts a phase or this one is logged (its row needs the losses)
        assert late == (s + 1 not in ends and s + 1 not in logged), s
    assert any(order[("ids", s + 1)] < order[("observe", s)] for s in range(steps - 1))


def test_late_losses_give_the_same_run(lfr_calls):
    (late, _, late_metrics, late_out, _), (now, syncs, now_metrics, now_out, calls) = lfr_calls
    assert syncs == late["steps"]
    assert all(calls.index(("observe", s)) < calls.index(("ids", s + 1)) for s in range(late["steps"] - 1))
    assert late["sampler_state_sha256"] == now["sampler_state_sha256"]
    cols = ["step", "phase", "train_loss", "val_loss", "lr", "kept_fraction"]
    pd.testing.assert_frame_equal(late_metrics[cols], now_metrics[cols])
    for name in ("phase00_learn", "phase01_focus", "phase03_review", "final"):
        pd.testing.assert_frame_equal(pd.read_parquet(late_out / f"records/{name}.parquet"),
                                      pd.read_parquet(now_out / f"records/{name}.parquet"))


def test_the_log_has_each_phases_kept_fraction(lfr_calls):
    """kept_fraction: the share of all training blocks in the phase's kept set (LFR keeps a share
    of the blocks scored so far, here a few of the tiny corpus's)."""
    (_, _, metrics, out, _), _ = lfr_calls
    rows = metrics.dropna(subset=["kept_fraction"])
    for index, phase in enumerate(dict.fromkeys(rows.phase)):
        kept = pd.read_parquet(out / f"records/phase{index:02d}_{phase.split(':')[1]}.parquet").kept
        assert set(rows[rows.phase == phase].kept_fraction) == {kept.mean()}, phase
    assert set(rows.kept_fraction) >= {1.0} and rows.kept_fraction.min() < 0.1


@pytest.mark.slow
def test_a_sampler_that_takes_no_late_losses_observes_each_step_before_the_next(prepared, tmp_path,
                                                                                monkeypatch):
    from lfr.sampling.loss_prop import LossPropSampler

    cfg, root = prepared
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(LossPropSampler, "batch_ids", recorded(LossPropSampler.batch_ids, "ids", calls))
    monkeypatch.setattr(LossPropSampler, "observe", recorded(LossPropSampler.observe, "observe", calls))
    half = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 0.5})})
    summary, syncs, _ = counted(half, "loss-prop", root, tmp_path)
    steps = summary["steps"]
    assert syncs == steps and calls == [(kind, s) for s in range(steps) for kind in ("ids", "observe")]


def test_a_non_finite_loss_between_syncs_stops_the_run_at_the_next(prepared, tmp_path, monkeypatch):
    """`random` sends no losses between log rows (every 5 steps): a NaN in step 3's losses is
    flagged on the device and stops the run at step 5's sync."""
    import torch

    import lfr.train

    cfg, root = prepared
    step_of_run, calls = lfr.train.optimizer_step, []

    def nan_in_the_third(*args):
        calls.append(1)
        losses = step_of_run(*args)
        return losses * torch.nan if len(calls) == 3 else losses

    monkeypatch.setattr(lfr.train, "optimizer_step", nan_in_the_third)
    with pytest.raises(FloatingPointError, match=r"at a step after step 0, up to step 5; .*Lower train.lr"):
        run_train(cfg, "random", root, tmp_path)
    assert len(calls) == 5


STOP_WORKER = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from conftest import run_train, tiny_config
    from lfr.train import TrainingInterrupted

    root, out, rank = Path(sys.argv[1]), Path(sys.argv[2]), os.environ["RANK"]
    cfg = tiny_config(train={{"batch_size": 4}}, method_options={{"lfr": {{"reps": 1}}}})
    late = {{"time_limit_min": 1.0}} if rank == "1" else {{}}  # past its deadline at once: stop
    try:
        run_train(cfg, "lfr", root, out, resume_dir=out / "resume", **late)
        message = "finished"
    except TrainingInterrupted as err:
        message = str(err)
    out.mkdir(parents=True, exist_ok=True)  # rank 0 makes it when it saves: maybe not yet
    (out / f"rank{{rank}}.txt").write_text(message)
""")


@pytest.mark.slow
def test_under_ddp_one_ranks_stop_request_stops_every_rank_at_the_same_step(prepared, tmp_path):
    """Rank 1 is past its deadline from the start and rank 0 is not: the request travels with the
    first step's losses, which LFR gets one step late, so both ranks save and stop after step 2."""
    _, root = prepared
    worker = tmp_path / "worker.py"
    worker.write_text(STOP_WORKER.format(tests=str(Path(__file__).parent)))
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node=2", str(worker), str(root), str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # no orphan rank waits on gloo
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]
    rank0, rank1 = ((tmp_path / f"out/rank{r}.txt").read_text() for r in (0, 1))
    assert "stopped at step 2/" in rank0 and "another rank was asked to stop" in rank0
    assert "stopped at step 2/" in rank1 and "the job's time limit is near" in rank1
    assert [p.name for p in (tmp_path / "out/resume").glob("ckpt-*.pt")] == ["ckpt-000000002.pt"]
