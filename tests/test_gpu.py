"""The CUDA paths of training: bf16 autocast, fused AdamW, torch.compile and NCCL DDP. Skipped
without a GPU; on one: `LFR_TEST_GPU=1 .venv/bin/python -m pytest -m gpu`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, run_train, tiny_config

pytestmark = pytest.mark.gpu


def gpu_config(**train):
    return tiny_config(train={"device": "cuda", "epochs": 2, "eval_every": 20, **train})


def test_bf16_training_matches_float32(prepared, tmp_path):
    """bf16 autocast trains like float32 on the same data order (loss within bf16's noise)."""
    _, root = prepared
    a = run_train(gpu_config(dtype="float32"), "random", root, tmp_path / "fp32")
    b = run_train(gpu_config(dtype="bfloat16"), "random", root, tmp_path / "bf16")
    assert a["device"].startswith("cuda") and a["steps"] == b["steps"]
    assert abs(a["val_loss"] - b["val_loss"]) < 0.05, (a["val_loss"], b["val_loss"])
    first = pd.read_parquet(tmp_path / "bf16/metrics.parquet").val_loss.dropna()
    assert first.iloc[-1] < first.iloc[0] - 0.5


def test_training_on_cuda_uses_fused_adamw(prepared, tmp_path, monkeypatch):
    made: list[torch.optim.AdamW] = []

    class Recorded(torch.optim.AdamW):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(torch.optim, "AdamW", Recorded)
    _, root = prepared
    run_train(gpu_config(epochs=1), "random", root, tmp_path / "run")
    assert len(made) == 1 and made[0].defaults["fused"] is True
    assert all(p.is_cuda for group in made[0].param_groups for p in group["params"])


def test_compiled_training_matches_eager(prepared, tmp_path):
    _, root = prepared
    a = run_train(gpu_config(dtype="bfloat16"), "lfr", root, tmp_path / "eager")
    b = run_train(gpu_config(dtype="bfloat16", compile=True), "lfr", root, tmp_path / "compiled")
    assert a["steps"] == b["steps"] and abs(a["val_loss"] - b["val_loss"]) < 0.05
    assert np.isfinite(b["train_tokens_per_s"])


def test_on_cuda_random_waits_only_at_log_rows_and_late_losses_change_no_run(prepared, tmp_path,
                                                                            monkeypatch):
    """The host syncs of the CPU test hold on CUDA (pinned copies, events), the batches come
    pinned from the loader's thread, and LFR's late losses give the run of on-time ones."""
    import lfr.distributed
    from lfr.sampling.lfr import LFRSampler

    _, root = prepared
    before = lfr.distributed.host_syncs
    run_train(gpu_config(epochs=1), "random", root, tmp_path / "random")
    rows = len(pd.read_parquet(tmp_path / "random/metrics.parquet")) - 1
    assert lfr.distributed.host_syncs - before == rows
    late = run_train(gpu_config(), "lfr", root, tmp_path / "late")
    monkeypatch.setattr(LFRSampler, "observes", "now")
    now = run_train(gpu_config(), "lfr", root, tmp_path / "now")
    a, b = (pd.read_parquet(tmp_path / f"{r}/metrics.parquet") for r in ("late", "now"))
    cols = ["step", "phase", "kept_fraction"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert np.allclose(a.train_loss, b.train_loss, rtol=1e-4, equal_nan=True)
    assert late["steps"] == now["steps"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_nccl_ranks_hold_identical_sampler_state(prepared, tmp_path):
    _, root = prepared
    script = (f"import sys, json; sys.path.insert(0, {str(REPO / 'tests')!r}); "
              "from conftest import run_train, tiny_config; from pathlib import Path; import os; "
              "cfg = tiny_config(train={'device': 'cuda', 'batch_size': 4}); "
              f"s = run_train(cfg, 'lfr', Path({str(root)!r}), Path({str(tmp_path)!r})); "
              f"Path({str(tmp_path)!r}, 'rank' + os.environ['RANK']).write_text(json.dumps(s))")
    (tmp_path / "worker.py").write_text(script)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    str(tmp_path / "worker.py")], check=True, cwd=REPO)
    ranks = [json.loads((tmp_path / f"rank{r}").read_text()) for r in (0, 1)]
    assert ranks[0]["sampler_state_sha256"] == ranks[1]["sampler_state_sha256"]
    assert ranks[0]["world_size"] == 2
