"""Placeholder until the config-split branch lands (it replaces this file)."""

from __future__ import annotations

from lfr.config import ExperimentConfig
from lfr.sampling import SAMPLERS, method_options


def reference_size(cfg: ExperimentConfig, method: str) -> str:
    if not SAMPLERS[method].needs_block_scores:
        raise ValueError(f"method {method!r} uses no reference model")
    return method_options(method, cfg.method_options.get(method, {})).reference_size or cfg.smallest_model()
