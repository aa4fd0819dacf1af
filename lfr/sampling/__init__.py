"""Registry of data-selection methods. Adding one = one module + one entry here."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from lfr.config import ConfigError
from lfr.config_errors import format_errors
from lfr.sampling.base import Batch, BlockScores, RunFacts, RunLengthOptions, Sampler, SamplerOptions
from lfr.sampling.infobatch import InfoBatchSampler
from lfr.sampling.leitner import LeitnerSampler
from lfr.sampling.lfr import LFRRandomDropSampler, LFRReverseSampler, LFRSampler
from lfr.sampling.loss_prop import LossPropSampler
from lfr.sampling.ppl_prune import PplPruneSampler
from lfr.sampling.random import RandomSampler
from lfr.sampling.rho_loss import RhoLossSampler
from lfr.sampling.selective_backprop import SelectiveBackpropSampler

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
    "rho-loss": RhoLossSampler,
    "selective-backprop": SelectiveBackpropSampler,
}


def validated_options(name: str, raw: dict[str, Any]) -> SamplerOptions:
    """The validated options of method `name`; ConfigError naming each bad `method_options` key."""
    if name not in SAMPLERS:
        raise ConfigError(f"method {name!r} is unknown; choose from {sorted(SAMPLERS)}")
    try:
        return SAMPLERS[name].Options.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_errors(err, f"options of method {name!r}",
                                        ("method_options", name))) from None


def build_sampler(name: str, run: RunFacts, options: dict[str, Any]) -> Sampler:
    """Instantiate sampler `name`, validating its options."""
    opts = validated_options(name, options)
    return SAMPLERS[name](run, opts)


__all__ = ["SAMPLERS", "Batch", "BlockScores", "RunFacts", "RunLengthOptions", "Sampler", "SamplerOptions",
           "build_sampler", "validated_options"]
