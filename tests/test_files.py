"""Atomic outputs: complete or absent, with the modes the user's umask gives."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from lfr.files import atomic_dir, umask, write_json, write_parquet


@pytest.fixture
def set_umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_outputs_get_the_umask_modes_not_mkstemps(tmp_path, set_umask, mask, file_mode, dir_mode):
    set_umask(mask)
    write_json(tmp_path / "a.json", {"x": 1})
    write_parquet(tmp_path / "a.parquet", pd.DataFrame({"x": [1]}))
    with atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "inner.txt").write_text("x")
    assert mode(tmp_path / "a.json") == mode(tmp_path / "a.parquet") == file_mode
    assert mode(tmp_path / "folder") == dir_mode
    assert mode(tmp_path / "folder/inner.txt") == file_mode
    assert umask() == mask  # reading it left it as it was



def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "folder"):
        raise RuntimeError
    write_json(tmp_path / "a.json", {"x": 1})
    with pytest.raises(TypeError):
        write_json(tmp_path / "a.json", {"x": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
