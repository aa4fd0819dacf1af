"""docs/adding-a-method.md's worked example, taken from the page as printed and trained through
the real loop: it trains exactly the blocks and weights its `batch_ids` returns, observes every
step's losses, and a run stopped and resumed from its checkpoint is the uninterrupted run."""

from __future__ import annotations

import re
import sys
import types

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, random_tokens, run_train, tiny_config

import lfr.train
from lfr.config import ConfigError
from lfr.sampling import SAMPLERS, build_sampler
from lfr.train import TrainingInterrupted

PAGE = REPO / "docs/adding-a-method.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks(kind: str) -> list[tuple[str, str]]:
    """(header, body) of the page's fenced blocks of `kind` (python, yaml, bash)."""
    return [(head, body) for lang, head, body in FENCE.findall(PAGE.read_text()) if lang == kind]


@pytest.fixture
def example(monkeypatch):
    """The page's module, imported as lfr.sampling.loss_weighted and registered as it says."""
    (source,) = [body for head, body in blocks("python") if "lfr/sampling/loss_weighted.py" in head]
    assert len(source.splitlines()) <= 45  # "about 30 lines" of code, with its docstrings
    module = types.ModuleType("lfr.sampling.loss_weighted")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(source, str(PAGE), "exec"), module.__dict__)
    (registry,) = [body for head, body in blocks("python") if "SAMPLERS" in body]
    assert '"loss-weighted": LossWeightedSampler' in registry
    monkeypatch.setitem(SAMPLERS, "loss-weighted", module.LossWeightedSampler)
    (config,) = [yaml.safe_load(body) for _, body in blocks("yaml")]
    return module.LossWeightedSampler, config


@pytest.mark.slow
def test_the_example_trains_the_ids_and_weights_it_returns_and_resumes(prepared, tmp_path, example,
                                                                       monkeypatch):
    sampler_class, config = example
    _, root = prepared
    # two passes (the first sees every block once: its weights are all 1), in few large steps
    cfg = tiny_config(methods=config["methods"], method_options=config["method_options"],
                      train={"batch_size": 32, "epochs": 2})
    assert cfg.method_options["loss-weighted"] == {"power": 2.0}
    returned, trained = [], []
    batch_ids, optimizer_step = sampler_class.batch_ids, lfr.train.optimizer_step

    def record_returned(self, step):
        returned.append(batch_ids(self, step))
        return returned[-1]

    def record_trained(model, optimizer, batch, tc, d):
        trained.append((batch.ids.copy(), None if batch.w is None else batch.w.cpu().numpy()))
        return optimizer_step(model, optimizer, batch, tc, d)

    monkeypatch.setattr(sampler_class, "batch_ids", record_returned)
    monkeypatch.setattr(lfr.train, "optimizer_step", record_trained)
    whole = run_train(cfg, "loss-weighted", root, tmp_path / "a")
    steps = whole["steps"]
    assert steps > 10 and whole["tokens"] == random_tokens(cfg, root)  # random's run length
    assert len(returned) == len(trained) == steps
    for step, ((ids, weights), (ids_trained, w_trained)) in enumerate(zip(returned, trained, strict=True)):
        np.testing.assert_array_equal(ids_trained, ids, err_msg=f"step {step}")
        np.testing.assert_array_equal(w_trained, weights, err_msg=f"step {step}")
    first, second = (np.concatenate([w for _, w in part]) for part in (returned[: steps // 2 - 1],
                                                                       returned[steps // 2 + 1 :]))
    assert (first == 1).all()  # the first pass meets every block for the first time
    assert second.min() < 0.8 and second.max() > 1.25  # easy blocks weigh less, hard ones more

    stop = steps // 2
    with pytest.raises(TrainingInterrupted):
        run_train(cfg, "loss-weighted", root, tmp_path / "b", resume_dir=tmp_path / "resume",
                  stop_at_step=stop)
    resumed = run_train(cfg, "loss-weighted", root, tmp_path / "b", resume_dir=tmp_path / "resume")
    assert resumed["sampler_state_sha256"] == whole["sampler_state_sha256"]
    cols = ["step", "train_loss", "val_loss", "lr"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a/metrics.parquet")[cols],
                                  pd.read_parquet(tmp_path / "b/metrics.parquet")[cols])


def test_the_example_runs_as_long_as_random_and_names_a_bad_option(example):
    from lfr.sampling import RunFacts

    _, config = example
    facts = RunFacts(1000, 8, 32, 0, 4.0, budget=0.5)
    assert (build_sampler("loss-weighted", facts, config["method_options"]["loss-weighted"]).num_steps()
            == build_sampler("random", facts, {}).num_steps() == 250)
    with pytest.raises(ConfigError, match=r"method_options\.loss-weighted\.power.*less than or equal to 4"):
        build_sampler("loss-weighted", facts, {"power": 5})
