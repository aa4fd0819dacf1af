"""The metrics log's live copy: TensorBoard events that hold the same numbers."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
from conftest import run_train, tiny_config


def test_tensorboard_events_hold_the_metrics_log(prepared, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, root = prepared
    cfg = tiny_config(train={"tensorboard": True, "epochs": 0.5})
    run_train(cfg, "random", root, tmp_path)
    metrics = pd.read_parquet(tmp_path / "metrics.parquet")
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    for column, tag in {"train_loss": "loss/train", "val_loss": "loss/val", "val_bpb": "loss/val_bpb",
                        "lr": "optim/lr", "tokens_per_s": "speed/tokens_per_s",
                        "kept_fraction": "sampler/kept_fraction"}.items():
        logged = metrics.dropna(subset=[column])
        scalars = events.Scalars(tag)
        assert [e.step for e in scalars] == logged.step.tolist(), tag
        assert [e.value for e in scalars] == pytest.approx(logged[column].tolist(), rel=1e-6), tag
    assert "speed/mfu" not in events.Tags()["scalars"]  # no peak FLOP/s on a CPU: NaN is left out
    phases = events.Tensors("sampler/phase/text_summary")
    assert [e.step for e in phases] == [0] and phases[0].tensor_proto.string_val == [b"train"]


def test_tensorboard_without_the_package_says_how_to_get_it(prepared, tmp_path, monkeypatch):
    _, root = prepared
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        run_train(tiny_config(train={"tensorboard": True}), "random", root, tmp_path)
    assert not (tmp_path / "metrics.parquet").exists()
