# `make demo` runs the embedded default end to end; `make test` runs the test suite.
# Both create .venv on first use (Python >= 3.11; set PYTHON=python3.12 etc. to choose).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# pip installs without bytecode (--no-compile: compiling all ~20,000 files took ~50 CPU-s); Python
# writes it on first import instead, for the ~4,000 modules the pipeline and the tests use. So the
# commands here write bytecode even where the environment says not to.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test test-fast bench gpu-check lint report dry-run schema clean

$(STAMP): requirements.txt requirements-dev.txt constraints-cpu.txt pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-compile -c constraints-cpu.txt -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

# Ends with the headline of results/tables/summary.md (written by rule summarize, from main.csv).
demo: $(STAMP)
	$(OFFLINE) $(BIN)/snakemake --cores $(CORES) all
	@echo; awk '/^\*\*Headline/,/^$$/' results/tables/summary.md; echo "The table in brief: results/tables/summary.md"

# The suite spreads over the cores (pytest-xdist), a file to a worker, the longest files first
# (tests/conftest.py's order, which xdist otherwise replaces by test counts); WORKERS=0 runs it in
# one process (a debugger).
WORKERS ?= auto
XDIST = -n $(WORKERS) --dist loadfile --no-loadscope-reorder
test: $(STAMP)
	$(OFFLINE) $(BIN)/python -m pytest -q $(XDIST)

# The edit loop: the suite without the tests marked slow (DAG runs, DDP, SLURM, fuzzing).
test-fast: $(STAMP)
	$(OFFLINE) $(BIN)/python -m pytest -q $(XDIST) -m "not slow"

bench: $(STAMP)
	$(OFFLINE) $(BIN)/python -m benchmarks --out results/benchmarks.csv

# On a GPU machine, with its own torch (not .venv's CPU wheel): GPU_PYTHON=/path/to/python to choose.
GPU_PYTHON ?= python
gpu-check:
	$(OFFLINE) $(GPU_PYTHON) -m benchmarks --gpu

lint: $(STAMP)
	$(BIN)/ruff check lfr tests benchmarks scripts
	$(BIN)/lint-imports --no-cache
	$(BIN)/snakemake --lint

# The report needs every output of `all`: say so instead of Snakemake's "marked for report but
# does not exist".
report: $(STAMP)
	@if ! $(OFFLINE) $(BIN)/snakemake -n all 2>&1 | grep -q "Nothing to be done"; then \
	  echo "make report: the demo's outputs are missing or out of date; run make demo first" >&2; \
	  exit 2; fi
	$(OFFLINE) $(BIN)/snakemake --report results/report.html

dry-run: $(STAMP)
	$(BIN)/snakemake -n all

# Both generated from lfr/config.py's models and the methods' options; tests/test_config.py checks them.
schema: $(STAMP)
	$(BIN)/python -m lfr schema > workflow/schemas/config.schema.json
	$(BIN)/python -m lfr schema --format markdown > docs/configuration.md

# Keeps results/benchmarks.csv (`make bench`: a measurement of the code, not a pipeline output).
clean:
	rm -rf results/corpora results/corpus results/tokenizer results/data results/runs results/resume \
	  results/profiles results/scores results/eval results/eval_tasks results/tables/*.csv results/tables/summary.md \
	  results/figures results/logs results/benchmarks results/report.html \
	  results/*/tables results/*/figures .snakemake
