# Two entry points for a fresh clone: `make quickstart` (the whole pipeline) and `make test`.
# Both create .venv if missing and install torch 2.13.0 (CPU build) before the project, because a plain
# torch requirement with nothing installed pulls a multi-GB CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl
# setuptools ends every editable install that uses its import finder (our package-dir layout needs one) with an
# information-only note, "Editable installation ... careful with folders ... same name as your package"; the
# layout is deliberate (imitlab/ is the CLI package), so the note is silenced for our own install step only.
EDITABLE_INSTALL := PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install -q -e

.PHONY: setup setup-test quickstart test bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

setup: $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(EDITABLE_INSTALL) .

setup-test: $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(EDITABLE_INSTALL) ".[test]"

quickstart: setup
	$(VENV)/bin/imitlab quickstart

# Two pytest workers (pytest-xdist), a test module per worker at a time so module fixtures are built once; modules
# go out in collection order, which tests/conftest.py starts with the heaviest (HEAVY_MODULES).
# OMP_WAIT_POLICY=PASSIVE: two workers' torch threads share the 2 cores, and spinning OpenMP threads waiting
# for a descheduled sibling slow every parallel op many times over.
test: setup-test
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# Throughput figures quoted in README and issue notes (each script prints its own table).
bench: setup-test
	$(PY) benchmarks/bench_env.py
	$(PY) benchmarks/bench_manipulation.py
	$(PY) benchmarks/bench_town.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_train.py --vs-imitation --sizes 84
	$(PY) benchmarks/bench_loader.py
	$(PY) benchmarks/bench_eval.py --episodes 20 --workers 2
	$(PY) benchmarks/bench_latency.py
	$(PY) benchmarks/bench_heads.py

clean:
	rm -rf runs .pytest_cache
