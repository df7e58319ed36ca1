# Two commands do everything on a fresh machine:
#   make run    set up .venv, train the default policy on the demo data, print the report
#   make test   set up .venv, lint (ruff, mypy), run the whole test suite (slow tests included)
# torch is installed first, pinned to the CPU wheel, so that nothing pulls a multi-GB CUDA build.
# The tests' tools come with the set-up: cmake (PyPI, the dev extra), tensorboard (a dependency), Ray (the ray
# extra), and, for `make test`, a C++ compiler (see `compiler`) and Chromium (see `browser`). With CI=true a skipped test fails (tests/conftest.py).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: run test setup setup-dev lint compiler browser clean bench

# `make run` needs routerl and its service; `make test` adds the tests' tools (the dev and ray extras).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[serve]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[serve,dev,ray]"
	touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

run: setup
	$(PY) train.py --overwrite

test: lint compiler browser
	$(PY) -m pytest -q

# tests/test_cpp.py compiles cpp/ against the torch wheel's libtorch: it needs a C++ compiler. Where none is
# installed and this runs as root with apt-get (CI, on Debian), install g++; elsewhere say what is missing.
compiler:
	@if command -v c++ >/dev/null || command -v g++ >/dev/null || command -v clang++ >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing g++ (apt-get) for tests/test_cpp.py"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null; \
	else echo "no C++ compiler: install g++ or clang++, or tests/test_cpp.py skips (and fails under CI=true)" >&2; fi

# The page tests (tests/test_pages.py, tests/test_serve_ui.py) drive the system's Chromium with Playwright
# (never a browser build of Playwright's own). Where none is installed and this runs as root with apt-get
# (CI, on Debian), install Debian's chromium; elsewhere say what is missing.
browser:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null || [ -n "$$ROUTERL_CHROMIUM" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium (apt-get) for the page tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "no Chromium: install it (e.g. apt-get install chromium) or set ROUTERL_CHROMIUM, or the page tests skip (and fail under CI=true)" >&2; fi

lint: setup-dev
	$(PY) -m ruff check .
	$(PY) -m mypy data envs agents policies evaluation training serving train.py serve.py

clean:
	rm -rf $(VENV) runs

# Quick versions of every benchmark (under 10 minutes on 2 cores); see bench/README.md.
bench: setup-dev
	-$(PY) -m pip install --quiet -e ".[bench]"  # peers; a failed install only skips them
	OPENBLAS_NUM_THREADS=1 $(PY) bench/bench_linucb_fit.py --sizes 10000,100000 --repeats 3 --vw-rows 5000 --per-arm-max 10000
	$(PY) train.py --quiet --out runs/bench-demo --overwrite > /dev/null
	$(PY) bench/bench_inference.py --calls 2000 --loads 3 --no-cpp
	$(PY) bench/bench_e2e.py --queries 20000
	$(PY) bench/bench_quality.py --folds 2
	$(PY) bench/bench_env.py --repeats 3 --ppo-steps 0
	$(PY) bench/bench_follow.py --quick
	$(PY) bench/bench_load.py --queries 10000
	$(PY) bench/bench_ppo_time_to_quality.py --datasets synth --synth-queries 5000 --total-steps 40960
	$(PY) bench/bench_ppo_budget.py --seeds 0 --queries 10000 --set agent.ppo.total_steps=40960
	$(PY) bench/bench_refit.py --repeats 1
	$(PY) bench/bench_ray.py --queries 5000 --shards 4 --workers 2
