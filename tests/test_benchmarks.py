"""The benchmark suite's driver (the benchmarks themselves are measurements, not tests)."""

from __future__ import annotations

import pandas as pd

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
