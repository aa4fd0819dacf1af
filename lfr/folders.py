"""Where a config's outputs live in the working folder, and the checks that keep one config from
replacing another's results.

Everything built from the data (corpus, tokenizer, data, runs, resume checkpoints, reference
scores, evaluations, profiles, and their logs and benchmark files) lives under a *data root*:
`results/` for the data of the embedded default config (config/config.yaml: the demo's paths),
`results/corpora/<key>/` for any other corpus, tokenizer or data setting, `key` a short
fingerprint of those three sections. Configs of the same data share their runs (peers.yaml
reuses the demo's); a config of other data never touches them. Tables and figures go to the
config's result set (`name`), next to the data roots. No torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from lfr.config import ConfigError, ExperimentConfig, config_hash
from lfr.grid import corpus_problems

DATA_SECTIONS = ("corpus", "tokenizer", "data")
CORPORA = "results/corpora"


def data_key(cfg: ExperimentConfig) -> str:
    """Fingerprint of the config sections that make the data."""
    return config_hash(cfg.model_dump(mode="json", include=set(DATA_SECTIONS)))[:8]


def data_root(cfg: ExperimentConfig, home: ExperimentConfig) -> str:
    """The data root of `cfg`: results for the data of `home` (the embedded default config),
    results/corpora/<data_key> for any other."""
    return "results" if data_key(cfg) == data_key(home) else f"{CORPORA}/{data_key(cfg)}"


def check_data_root(cfg: ExperimentConfig, root: str | Path) -> None:
    """Refuse a config whose data root holds data built from other corpus, tokenizer or data
    settings, before any job: its run would rebuild the data and retrain every run on it. That
    happens in `results/` once config/config.yaml's data sections are edited; a keyed root always
    holds its own key's data."""
    meta = Path(root) / "data" / "meta.json"
    if not meta.is_file():
        return
    recorded = json.loads(meta.read_text()).get("built_from", {})
    ours = cfg.model_dump(mode="json", include=set(DATA_SECTIONS))
    differ = [f"{section}.{key}: {recorded[section][key]!r} there, {ours[section][key]!r} here"
              for section in DATA_SECTIONS for key in sorted(recorded.get(section, {}))
              if key in ours[section] and recorded[section][key] != ours[section][key]]
    if differ:
        raise ConfigError("\n".join([
            f"{root}/ holds data built with other settings than this config's, and the runs built "
            "on it; this config would replace them:", *(f"  - {d}" for d in differ),
            f"To keep both, run this config in another working folder (snakemake --directory DIR "
            f"...); to rebuild here, move {root}/ away first."]))


def corpus_files(cfg: ExperimentConfig) -> list[Path]:
    """The files of a `files` corpus (none for the other sources), so that a path or glob that
    matches nothing stops the config check: FileNotFoundError naming the key and the path."""
    if cfg.corpus.source != "files":
        return []
    from lfr.corpus import resolve_paths  # pyarrow: only for a corpus of files

    return resolve_paths(cfg.corpus.paths)[0]


def check_corpus_size(cfg: ExperimentConfig, root: str | Path) -> None:
    """With train.tokens_per_param, refuse a size the corpus is too small for (grid.block_budget),
    before any job, once the data root holds the data: its size is known from then on (the first
    time, each training job checks the same before it trains)."""
    meta = Path(root) / "data" / "meta.json"
    if cfg.train.tokens_per_param is None or not meta.is_file():
        return
    if problems := corpus_problems(cfg, json.loads(meta.read_text())["train_blocks"]):
        raise ConfigError.of("config", problems)

