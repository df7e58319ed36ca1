# Two commands do everything on a fresh machine:
#   make run    set up .venv, train the default policy on the demo data, print the report
#   make test   set up .venv, lint (ruff, mypy), run the whole test suite (slow tests included)
# torch is installed first, pinned to the CPU wheel, so that nothing pulls a multi-GB CUDA build.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: run test setup lint clean bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[serve,dev,ray]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) train.py --overwrite

test: lint
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy data envs agents policies evaluation training serving train.py serve.py

clean:
	rm -rf $(VENV) runs

# Quick versions of every benchmark (under 10 minutes on 2 cores); see bench/README.md.
bench: setup
	-$(PY) -m pip install --quiet -e ".[bench]"  # peers; a failed install only skips them
	OPENBLAS_NUM_THREADS=1 $(PY) bench/bench_linucb_fit.py --sizes 10000,100000 --repeats 3 --vw-rows 5000 --per-arm-max 10000
	$(PY) train.py --quiet --out runs/bench-demo --overwrite > /dev/null
	$(PY) bench/bench_inference.py --calls 2000 --loads 3 --no-cpp
	$(PY) bench/bench_e2e.py --queries 20000
	$(PY) bench/bench_quality.py --folds 2
	$(PY) bench/bench_env.py --repeats 3 --ppo-steps 0
	$(PY) bench/bench_load.py --queries 10000
	$(PY) bench/bench_ppo_time_to_quality.py --datasets synth --synth-queries 5000 --total-steps 40960
	$(PY) bench/bench_ray.py --queries 5000 --shards 4 --workers 2
