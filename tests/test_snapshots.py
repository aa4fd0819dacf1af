"""lfr/snapshots.py: when the loop saves weight snapshots, and the format the profiling pass reads
(the snapshots of a real run: tests/test_profile.py)."""

from __future__ import annotations

import json

import pytest
import torch

from lfr.config import ProfileConfig
from lfr.snapshots import SnapshotWriter, load_weights, read_index, snapshot_steps


def test_snapshot_schedule_by_tokens_and_phase_boundaries():
    spec = ProfileConfig(every_tokens=250, phase_boundaries=True)
    assert snapshot_steps({3, 7}, 10, 100, spec) == [0, 3, 5, 7, 8, 10]  # 250-token marks: 2.5, 5, 7.5
    assert snapshot_steps({3, 7}, 10, 100, spec.model_copy(update={"phase_boundaries": False})) == [
        0, 3, 5, 8, 10]
    assert snapshot_steps(set(), 4, 100, ProfileConfig(every_tokens=50)) == [0, 1, 2, 3, 4]
    assert snapshot_steps(set(), 16, 10, ProfileConfig()) == [0, 2, 4, 6, 8, 10, 12, 14, 16]  # 8 by default


def test_writer_and_reader_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    writer = SnapshotWriter(tmp_path / "partial", ProfileConfig(snapshot_dtype="bfloat16"), [0, 4])
    for step in range(5):
        writer.maybe_save(step, model)
    saved = sorted(p.name for p in (tmp_path / "partial").iterdir())
    assert saved == ["step-000000000.pt", "step-000000004.pt"]
    writer.finish(tmp_path / "run", 64, lambda s: "focus" if s >= 2 else "learn")
    index = read_index(tmp_path / "run")
    assert index == [{"step": 0, "tokens": 0, "file": "step-000000000.pt", "phase": "init"},
                     {"step": 4, "tokens": 256, "file": "step-000000004.pt", "phase": "focus"}]
    weights = load_weights(tmp_path / "run", index[1], torch.device("cpu"))
    assert weights["weight"].dtype == torch.float32
    torch.testing.assert_close(weights["weight"], model.weight.detach().bfloat16().float())
    assert not (tmp_path / "partial").exists()


def test_a_run_without_snapshots_has_an_empty_index_that_says_how_to_fix_it(tmp_path):
    SnapshotWriter(tmp_path / "partial", None, []).finish(tmp_path / "run", 64, str)
    assert json.loads((tmp_path / "run/snapshots/index.json").read_text()) == []
    with pytest.raises(ValueError, match="not selected by `profile:`"):
        read_index(tmp_path / "run")
