"""Two CPU ranks (torchrun, gloo) with 2 micro-batches each (DDP's no_sync on the first) against
one process with the same global batch, in one launch: identical sampler state on every rank, and
the same LFR run: each block's losses land on its own id after the all-gather (the scores and
kept sets of every phase), and the same loss trajectory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

WORKER = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from conftest import run_train, tiny_config

    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = tiny_config(train={{"batch_size": 2, "grad_accum": 2}}, method_options={{"lfr": {{"reps": 1}}}})
    summary = run_train(cfg, "lfr", root, out)
    (out / f"rank{{os.environ['RANK']}}.json").write_text(json.dumps(summary))
""")


def torchrun(script: Path, *args: str) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node=2", str(script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers: no orphan keeps waiting on gloo
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]


@pytest.mark.slow
def test_two_ranks_train_the_same_lfr_run_as_one_process(profiled, tmp_path):
    """`profiled`'s run is the one process: LFR paper-v1, reps 1, batch 8 = 2 ranks x 2 micro-batches
    x 2 (its weight snapshots change nothing in training)."""
    root, prof, _, one_summary, _ = profiled
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER.format(tests=str(Path(__file__).parent)))
    torchrun(worker, str(root), str(tmp_path / "ddp"))
    ranks = [json.loads((tmp_path / f"ddp/rank{i}.json").read_text()) for i in (0, 1)]
    assert ranks[0]["world_size"] == 2 and ranks[0]["batch_blocks"] == one_summary["batch_blocks"] == 8
    assert ranks[0]["sampler_state_sha256"] == ranks[1]["sampler_state_sha256"]
    one, ddp = prof / "run/records", tmp_path / "ddp/records"
    names = sorted(p.name for p in one.glob("*.parquet"))
    assert names == sorted(p.name for p in ddp.glob("*.parquet")) and "phase03_focus.parquet" in names
    for name in names:  # scores are per-block losses: a loss on the wrong id changes them, not a mean
        a, b = pd.read_parquet(one / name), pd.read_parquet(ddp / name)
        exact = ["block_id", "phase", "visits", "last_step", "kept"]
        pd.testing.assert_frame_equal(a[exact], b[exact], obj=name)
        pd.testing.assert_frame_equal(a[["score", "last_loss"]], b[["score", "last_loss"]], rtol=1e-4,
                                      obj=name)  # float sums differ in order across ranks
    cols = ["step", "tokens", "phase", "train_loss", "val_loss"]
    metrics = (pd.read_parquet(d / "metrics.parquet")[cols] for d in (prof / "run", tmp_path / "ddp"))
    pd.testing.assert_frame_equal(*metrics, rtol=1e-4)


CANDIDATES_WORKER = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from conftest import run_train, tiny_config

    root, out, method, scores = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4:]
    cfg = tiny_config(train={{"batch_size": 2, "grad_accum": 2, "epochs": {epochs}}})
    summary = run_train(cfg, method, root, out, block_scores=Path(scores[0]) if scores else None)
    (out / f"rank{{os.environ['RANK']}}.json").write_text(json.dumps(summary))
""")
# ~120 steps of 8 blocks: many candidate pools and keep draws to compare. A launch a method: a
# second run in the same ranks re-creates the process group on the same port, which raced (once,
# rank 1: "Connection reset by peer").
CANDIDATE_EPOCHS = 0.25


@pytest.mark.slow
def test_candidate_scoring_methods_stay_identical_across_two_ranks(prepared, reference, tmp_path):
    """Each rank scores half of every candidate pool and the all-gather gives both ranks all the
    losses in the candidates' order: rho-loss and selective backprop (which draws from its own RNG
    on every rank) pick the same batches on both ranks (the same state: selective backprop's
    holds the losses, which differ from one process's in the last bits) and as one process with
    the same global batch (8 = 2 ranks x 2 micro-batches x 2), and train the same run."""
    from conftest import run_train, tiny_config

    _, root = prepared
    cfg = tiny_config(train={"epochs": CANDIDATE_EPOCHS})
    scores = reference[1] / "block_scores.parquet"
    worker = tmp_path / "worker.py"
    worker.write_text(CANDIDATES_WORKER.format(tests=str(Path(__file__).parent), epochs=CANDIDATE_EPOCHS))
    for method in ("rho-loss", "selective-backprop"):
        given = scores if method == "rho-loss" else None
        torchrun(worker, str(root), str(tmp_path / "ddp" / method), method, *([str(given)] if given else []))
        one = run_train(cfg, method, root, tmp_path / "one" / method, block_scores=given)
        ranks = [json.loads((tmp_path / f"ddp/{method}/rank{i}.json").read_text()) for i in (0, 1)]
        assert ranks[0]["world_size"] == 2 and ranks[0]["batch_blocks"] == one["batch_blocks"] == 8
        assert ranks[0]["sampler_state_sha256"] == ranks[1]["sampler_state_sha256"], method
        if method == "rho-loss":  # its state is its pool; selective backprop's holds the losses
            assert ranks[0]["sampler_state_sha256"] == one["sampler_state_sha256"]
        assert ranks[0]["candidate_tokens"] == one["candidate_tokens"] > 0  # the same keep draws
        cols = ["step", "tokens", "train_loss", "val_loss"]
        metrics = (pd.read_parquet(d / method / "metrics.parquet")[cols] for d in (tmp_path / "one",
                                                                                 tmp_path / "ddp"))
        pd.testing.assert_frame_equal(*metrics, rtol=1e-4, obj=method)
