"""Registry of data-selection methods. Adding one = one module + one entry here."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from lfr.sampling.base import BlockScores, RunFacts, Sampler, SamplerOptions
from lfr.sampling.infobatch import InfoBatchSampler
from lfr.sampling.leitner import LeitnerSampler
from lfr.sampling.lfr import LFRRandomDropSampler, LFRReverseSampler, LFRSampler
from lfr.sampling.loss_prop import LossPropSampler
from lfr.sampling.ppl_prune import PplPruneSampler
from lfr.sampling.random import RandomSampler

SAMPLERS: dict[str, type[Sampler]] = {
    "random": RandomSampler,
    "lfr": LFRSampler,
    "lfr-random-drop": LFRRandomDropSampler,
    "lfr-reverse": LFRReverseSampler,
    # peers (README "Data-selection methods")
    "infobatch": InfoBatchSampler,
    "ppl-prune": PplPruneSampler,
    "loss-prop": LossPropSampler,
    "leitner": LeitnerSampler,
}


def build_sampler(name: str, run: RunFacts, options: dict[str, Any]) -> Sampler:
    """Instantiate sampler `name`, validating its options."""
    if name not in SAMPLERS:
        raise ValueError(f"method {name!r} is unknown; choose from {sorted(SAMPLERS)}")
    cls = SAMPLERS[name]
    try:
        opts = cls.Options.model_validate(options)
    except ValidationError as err:
        from lfr.config import path

        bad = "; ".join(f"{path(('method_options', name, *e['loc']))}: {e['msg']}" for e in err.errors())
        raise ValueError(f"options of method {name!r}: {bad}") from None
    return cls(run, opts)


__all__ = ["SAMPLERS", "BlockScores", "RunFacts", "Sampler", "SamplerOptions", "build_sampler"]
