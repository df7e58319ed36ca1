# Two commands do everything on a fresh machine:
#   make run    set up .venv, train the default policy on the demo data, print the report
#   make test   set up .venv, run the whole test suite (slow tests included)
# torch is installed first, pinned to the CPU wheel, so that nothing pulls a multi-GB CUDA build.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: run test setup lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[serve,dev]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) train.py --overwrite

test: setup
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy data envs agents policies evaluation training serving train.py serve.py

clean:
	rm -rf $(VENV) runs
