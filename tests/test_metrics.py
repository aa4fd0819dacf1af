"""The metrics log's live copies: TensorBoard events and a Weights & Biases run (offline) that hold
the same numbers."""

from __future__ import annotations

import json
import struct
import sys

import pandas as pd
import pytest
from conftest import run_train, tiny_config


@pytest.mark.slow
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


def wandb_rows(path) -> list[dict]:
    """The history rows of an offline W&B run's transaction log (run-<id>.wandb): after a 7-byte
    header, the LevelDB log format, 32 KiB blocks of records (crc32, length, type; a record
    spans blocks as FIRST, MIDDLE..., LAST), each a wandb_internal_pb2.Record."""
    from wandb.proto import wandb_internal_pb2

    data, pos, part, rows = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if (room := 32768 - pos % 32768) < 7:  # a block's tail too short for a header: padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        part, pos = part + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(part)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
            part = b""
    return rows


@pytest.mark.slow
def test_an_offline_wandb_run_in_the_run_folder_holds_the_metrics_log(prepared, tmp_path, monkeypatch):
    """train.wandb with the config's `offline` (the default): no network (W&B's server is made
    unreachable), and the run folder's wandb/ holds every metrics row at its step."""
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: any call would fail
    _, root = prepared
    summary = run_train(tiny_config(train={"wandb": True, "epochs": 0.5}), "random", root, tmp_path)
    metrics = pd.read_parquet(tmp_path / "metrics.parquet")
    [log] = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    rows = wandb_rows(log)
    assert [row["_step"] for row in rows] == metrics.step.tolist()
    for column, tag in {"train_loss": "loss/train", "val_loss": "loss/val", "lr": "optim/lr",
                        "tokens": "tokens", "phase": "phase"}.items():
        logged = {row["_step"]: row[tag] for row in rows if tag in row}
        expected = metrics.dropna(subset=[column]).set_index("step")[column].to_dict()
        assert logged == pytest.approx(expected, rel=1e-6) if column != "phase" else logged == expected, tag
    assert summary["config_hash"] == run_train(tiny_config(train={"epochs": 0.5}), "random", root,
                                               tmp_path / "plain")["config_hash"]  # no hash change
