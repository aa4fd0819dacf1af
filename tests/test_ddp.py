"""Two CPU ranks (torchrun, gloo): identical sampler state on every rank, and the same global
block order as a single process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import tiny_config

WORKER = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from conftest import tiny_config
    from lfr.train import train

    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = tiny_config(methods=["lfr"], train={{"batch_size": 4, "epochs": 1}},
                      method_options={{"lfr": {{"reps": 1}}}})
    summary = train(cfg, "nano", "lfr", 0, root / "data", root / "tokenizer", out)
    rank = os.environ["RANK"]
    (out / f"rank{{rank}}.json").write_text(json.dumps(summary))
""")


@pytest.mark.slow
def test_two_ranks_hold_identical_sampler_state(prepared, tmp_path):
    _, root = prepared
    from pathlib import Path

    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(Path(__file__).parent)))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2", str(script), str(root), str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"out/rank{i}.json").read_text()) for i in (0, 1)]
    assert ranks[0]["world_size"] == 2 and ranks[0]["batch_blocks"] == 8
    assert ranks[0]["sampler_state_sha256"] == ranks[1]["sampler_state_sha256"]
    assert ranks[0]["steps"] == ranks[1]["steps"] > 0
    assert (tmp_path / "out/records/phase01_focus.parquet").is_file()
    assert tiny_config().train.batch_size == 8  # the single-process equivalent batch
