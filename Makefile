# vilab — every target builds .venv from nothing when it is missing or stale.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vilab-installed
BENCH_STAMP := $(VENV)/.vilab-bench-installed

# A Python >= 3.12: $(VILAB_PYTHON) if set, else the first suitable one on PATH,
# else one installed by pyenv (even when not selected), else uv's.
define find_python
for p in "$$VILAB_PYTHON" python3.14 python3.13 python3.12 python3 python \
         $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV) \
         $$(ls -d $$HOME/.local/share/uv/python/cpython-3.1[2-9]*/bin/python3 2>/dev/null | sort -rV); do \
  [ -n "$$p" ] || continue; \
  if "$$p" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then \
    command -v "$$p" || echo "$$p"; exit 0; fi; \
done; exit 1
endef

.PHONY: demo test bench lint notebooks clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@base=$$($(find_python)) || { echo "vilab needs Python >= 3.12: install one (e.g. 'pyenv install 3.12' or 'apt install python3.12-venv') or set VILAB_PYTHON=/path/to/python3.12" >&2; exit 1; }; \
	if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
	  echo "creating $(VENV) with $$base"; rm -rf $(VENV); "$$base" -m venv $(VENV) || exit 1; fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

# `make demo CASE=vae` (or gmm, iris, ...) shows another case.
CASE ?= eight-schools

demo: $(STAMP)
	$(VENV)/bin/vilab compare $(CASE) --out runs/demo --force
	@echo "report: runs/demo/report.html"

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(BENCH_STAMP)
	$(PY) -m benchmarks

lint: $(STAMP)
	$(VENV)/bin/ruff check models guides inference tests benchmarks notebooks/run.py
	$(VENV)/bin/ruff format --check models guides inference tests benchmarks notebooks/run.py

notebooks: $(STAMP)
	$(PY) notebooks/run.py --full

clean:
	rm -rf $(VENV) runs .pytest_cache
