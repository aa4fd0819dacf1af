"""The benchmark suite's driver (the benchmarks themselves are measurements, not tests)."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmarks.__main__ import main


def test_only_replaces_its_own_rows_and_keeps_the_others(tmp_path):
    out = tmp_path / "benchmarks.csv"
    earlier = pd.DataFrame({"benchmark": ["train_loop", "lfr_sampler_overhead", "demo_job:train/x"],
                            "ratio_median": [0.99, 0.5, 1.0], "git_commit": ["old"] * 3})
    earlier.to_csv(out, index=False)
    main(["--only", "lfr_sampler_overhead", "--sampler-repeats", "1", "--sampler-steps", "4",
          "--out", str(out), "--demo-results", str(tmp_path / "no-demo")])
    table = pd.read_csv(out).set_index("benchmark")
    assert sorted(table.index) == ["demo_job:train/x", "lfr_sampler_overhead", "train_loop"]
    assert table.loc["train_loop", "git_commit"] == "old" and table.loc["train_loop", "ratio_median"] == 0.99
    assert table.loc["lfr_sampler_overhead", "git_commit"] != "old"  # measured again


def test_sampler_scale_gives_every_sampler_a_row_against_the_projected_step(tmp_path):
    from benchmarks.sampler_scale import measure
    from lfr.sampling import SAMPLERS

    out = tmp_path / "benchmarks.csv"
    main(["--only", "sampler_scale", "--scale-blocks", "5000", "--scale-steps", "3", "--out", str(out),
          "--demo-results", str(tmp_path / "no-demo")])
    table = pd.read_csv(out).set_index("benchmark")
    assert sorted(table.index) == sorted(f"sampler_scale:{name}" for name in SAMPLERS)
    # GPT-2 124M: 6 x 123,653,376 + 12 x 12 x 1024 x 768 = 855,166,464 FLOPs/token, x 480 x 1024
    # tokens / (989e12 x 0.4)
    step_ms = 480 * 1024 * 855_166_464 / (989e12 * 0.4) * 1e3
    assert table.reference.to_numpy() == pytest.approx(step_ms, rel=1e-9)
    assert table.ratio_median.to_numpy() == pytest.approx((table.ours / step_ms).to_numpy(), rel=1e-9)
    assert (table.goal == "<= 0.01").all() and (table.ours > 0).all()
    assert "16.0 bytes/block" in table.loc["sampler_scale:random", "description"]

    # 20,000 blocks, 480 a step: learn 42 steps from step 0, then the shortest focus phase, the
    # last (paper-v1's 80,000 draws make 166 steps; it starts at 42 + 21 + 42 + 4 x 13 = 157)
    r = measure("lfr", 20_000, 3)
    assert [period for _, _, period in r.boundaries] == [42, 9]
    assert len(r.steady_s) == 2 + 2 and r.per_step_s == r.steady_mean_s + max(
        dt / period for _, dt, period in r.boundaries)
    r = measure("leitner", 5000, 3)
    assert not r.boundaries and len(r.steady_s) == 3
    # box, due, last_seen, last_loss, rank, new_order; 4 boxes' int32 queues; the 4 intervals
    assert r.state_bytes == 5000 * (1 + 8 + 8 + 4 + 8 + 8 + 4 * 4) + 4 * 8


def test_input_pipeline_times_both_feeds_of_the_same_steps(tmp_path):
    out = tmp_path / "benchmarks.csv"
    main(["--only", "input_pipeline", "--repeats", "2", "--steps", "3", "--out", str(out),
          "--demo-results", str(tmp_path / "no-demo")])
    row = pd.read_csv(out).set_index("benchmark").loc["input_pipeline"]
    assert row.repeats == 2 and row.ours > 0 and row.reference > 0 and row.goal == ">= 0.98"
    assert row.ratio_min <= row.ratio_median <= row.ratio_max
