"""lfr: a reference pipeline for LFR (Learn, Focus, Review) and other data-selection methods."""

__version__ = "0.1.0"
