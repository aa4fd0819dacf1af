"""The benchmark suite's driver (the benchmarks themselves are measurements, not tests)."""

from __future__ import annotations

import gc
import importlib.metadata as md
import os
import re
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO
from packaging.requirements import Requirement

from benchmarks.__main__ import main
from benchmarks.gpu_check import COMES_WITH_TRANSFORMERS, DRY
from benchmarks.model_speed import NanoGPT
from lfr.config import MODEL_PRESETS, ModelPreset
from lfr.model import build_model, flops_per_token, model_config


@pytest.mark.slow
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


@pytest.mark.slow
def test_input_pipeline_times_both_feeds_of_the_same_steps(tmp_path):
    out = tmp_path / "benchmarks.csv"
    main(["--only", "input_pipeline", "--repeats", "2", "--steps", "3", "--out", str(out),
          "--demo-results", str(tmp_path / "no-demo")])
    row = pd.read_csv(out).set_index("benchmark").loc["input_pipeline"]
    assert row.repeats == 2 and row.ours > 0 and row.reference > 0 and row.goal == ">= 0.98"
    assert row.ratio_min <= row.ratio_median <= row.ratio_max


BASE = ["torch", "transformers", "numpy", "pandas", "pyarrow"]  # all a GPU machine is assumed to have


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def with_dependencies(names: list[str]) -> set[str]:
    """The installed distributions that pip installs for `names` (their dependencies, no extras)."""
    seen, todo = set(), list(names)
    while todo:
        name = canonical(todo.pop())
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:  # a dependency for another platform or Python
            continue
        seen.add(name)
        for req in map(Requirement, dist.requires or []):
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def only_these(names: set[str], site: Path) -> Path:
    """A site folder that holds only the distributions `names` (links to their files)."""
    site.mkdir()
    for dist in md.distributions():
        if canonical(dist.metadata["Name"]) not in names:
            continue
        for top in {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            if not (site / top).exists():
                (site / top).symlink_to(dist.locate_file(top))
    return site


@pytest.mark.slow
def test_gpu_check_dry_runs_with_only_torch_transformers_numpy_pandas_pyarrow(tmp_path):
    """`python -m benchmarks --gpu --dry` in a Python that sees only the five packages and their
    dependencies (-S: no site-packages) writes every row of the GPU check, with consistent figures."""
    allowed = with_dependencies(BASE)
    assert {canonical(n) for n in COMES_WITH_TRANSFORMERS} <= allowed
    site = only_these(allowed, tmp_path / "site")
    out = tmp_path / "gpu_check.csv"
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}"}
    r = subprocess.run([sys.executable, "-S", "-m", "benchmarks", "--gpu", "--dry", "--out", str(out)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    t = pd.read_csv(out).set_index("benchmark")
    ladder = [f"gpu_ladder:{size}" for size in ("gpt2-7m", "gpt2-12m", "gpt2-26m", "gpt2-58m", "gpt2")]
    assert list(t.index) == ["gpu_mfu", "gpu_train_loop", "gpu_fused_loss", "gpu_fixed_cost", "gpu_lfr_loop",
                             "gpu_lfr_sampler_overhead", "gpu_profile_vs_train", "gpu_profile_memory",
                             *ladder, "gpu_check_wall"]
    # every shape of config/scale-gpu.yaml timed against its estimate at the assumed MFU (1 TFLOP/s)
    assert (t.loc[ladder, "ours"] > 0).all()
    assert t.loc[ladder, "reference"].is_monotonic_decreasing  # larger shapes, fewer tokens/s
    assert t.loc[ladder, "description"].str.contains("GPU-hours measured").all()
    assert t.host.str.endswith("dry run on the CPU").all()
    ours, minimal = t.loc["gpu_train_loop", ["ours", "reference"]]
    assert ours > 0 and t.loc["gpu_train_loop", "ratio_median"] == pytest.approx(ours / minimal)
    # MFU: our tokens/s x FLOPs per token of nano with the padded vocabulary / the nominal 1 TFLOP/s
    model = build_model(model_config(MODEL_PRESETS[DRY.size], DRY.vocab, DRY.block, 0))
    assert t.loc["gpu_mfu", "reference"] == 1.0
    assert t.loc["gpu_mfu", "ours"] == pytest.approx(ours * flops_per_token(model) / 1e12)
    assert t.loc["gpu_mfu", "ratio_median"] == pytest.approx(t.loc["gpu_mfu", "ours"])
    for row in ("gpu_lfr_loop", "gpu_profile_vs_train"):  # against our random run
        assert t.loc[row, "reference"] == pytest.approx(ours)
    assert t.loc["gpu_lfr_sampler_overhead", "reference"] == pytest.approx(1e3 * DRY.tokens_per_step / ours)
    assert 0 < t.loc["gpu_lfr_sampler_overhead", "ours"] < t.loc["gpu_lfr_sampler_overhead", "reference"]
    assert np.isnan(t.loc["gpu_profile_memory", "ours"])  # CUDA only
    assert t.loc["gpu_check_wall", "meets_goal"] == True  # noqa: E712 (read back as a bool)
    assert t.loc[["gpu_mfu", "gpu_train_loop", "gpu_lfr_loop"], "goal"].tolist() == [">= 0.45", ">= 0.95",
                                                                                    ">= 0.98"]


def test_gpu_flags(capsys):
    with pytest.raises(SystemExit) as err:
        main(["--dry"])
    assert err.value.code == 2 and "--dry and --peak-tflops go with --gpu" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match=r"none is visible; on a CPU, `python -m benchmarks --gpu --dry"):
            main(["--gpu"])


def test_nanogpt_reference_frees_its_logits_and_matches_our_model():
    """The model_vs_nanogpt reference: its output is freed when dropped (no cycle keeping every
    step's logits for the garbage collector), its head is tied, its parameters are ours."""
    model = NanoGPT(64, 16, 1, 2, 16)
    gc.disable()
    try:
        out = model(torch.randint(0, 64, (2, 16)))
        logits = weakref.ref(out.logits)
        del out
        assert logits() is None
    finally:
        gc.enable()
    assert model.lm_head.weight is model.wte.weight
    ours = build_model(model_config(ModelPreset(n_layer=1, n_head=2, n_embd=16), 64, 16, 0))
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ours.parameters())


@pytest.mark.slow
def test_profile_memory_is_measured_in_a_fresh_process_and_matches_its_estimate(tmp_path):
    """The accounting behind docs/scale.md's GPU figures (benchmarks/profile_memory.py) predicts the
    CPU pass's measured peak within 30%, logits chunked and not (it counts 13-16% more than is
    measured, alone or beside the rest of the suite, once the measuring process pins its pages)."""
    out = tmp_path / "benchmarks.csv"
    main(["--only", "profile_memory", "--memory-repeats", "1", "--memory-batch", "128", "--out", str(out),
          "--demo-results", str(tmp_path / "no-demo")])
    row = pd.read_csv(out).set_index("benchmark").loc["profile_memory"]
    estimated = [float(mb) for mb in re.findall(r"estimated (\d+) and (\d+) MB", row.description)[0]]
    assert row.ours == pytest.approx(estimated[0], rel=0.3)
    assert row.reference == pytest.approx(estimated[1], rel=0.3)
    assert row.ours < row.reference  # 2 chunks of 64 blocks: about half, at 256 blocks a quarter
