"""Stage `prefetch`: download the standard eval tasks' datasets and the reference models.

Run on a networked node; evaluation jobs then read the same cache (`eval.cache_dir`) offline.
"""

from __future__ import annotations

import os
from pathlib import Path

from lfr.config import EvalConfig, ExperimentConfig


def prefetch(cfg: EvalConfig) -> list[str]:
    """Download them into cfg.cache_dir; return what was cached."""
    os.environ["HF_HOME"] = str(Path(cfg.cache_dir).resolve())
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[var] = "0"  # this stage exists to download
    from lm_eval.tasks import TaskManager, get_task_dict

    names = [t for t in cfg.tasks if not t.startswith("lfr_")]
    if names:
        get_task_dict(names, TaskManager())  # builds each task, which downloads its dataset
    from huggingface_hub import snapshot_download

    for model in cfg.references:
        snapshot_download(model)
    return names + cfg.references


def main(cfg: ExperimentConfig) -> str:
    return f"cached: {prefetch(cfg.eval)}"
