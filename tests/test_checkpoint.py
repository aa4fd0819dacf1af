"""lfr/checkpoint.py: atomic, verified resume checkpoints with a fallback to the previous one."""

from __future__ import annotations

import pytest
import torch


def test_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
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


def test_only_the_newest_two_are_kept_with_their_rng_state(tmp_path):
    from lfr import checkpoint

    torch.manual_seed(3)
    for step in (10, 20, 30):
        checkpoint.save(tmp_path, step, {"step_marker": step})
    assert sorted(p.name for p in tmp_path.glob("ckpt-*.pt")) == ["ckpt-000000020.pt", "ckpt-000000030.pt"]
    expected = torch.rand(3)  # the draw right after the save
    torch.manual_seed(99)
    state = checkpoint.load_latest(tmp_path)
    assert state["step"] == 30 and state["step_marker"] == 30
    torch.testing.assert_close(torch.rand(3), expected)  # RNG restored to the saved state
